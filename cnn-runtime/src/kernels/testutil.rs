//! Helpers shared by the kernel tests.

/// Deterministic pseudo-random values in [-1, 1) (a small LCG, seeded by `seed`).
pub(crate) fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Asserts `|got - want| <= 1e-5 · max(1, |want|) · max(1, k / 256)` element-wise, where `k`
/// is the length of the sums behind each value (f32 rounding grows with it). NaNs must match.
#[track_caller]
pub(crate) fn assert_close(got: &[f32], want: &[f32], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = 1e-5 * (k as f32 / 256.0).max(1.0);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if b.is_nan() {
            assert!(a.is_nan(), "{what}: element {i}: got {a}, want NaN");
            continue;
        }
        let ok = if b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= scale * b.abs().max(1.0)
        };
        assert!(ok, "{what}: element {i}: got {a}, want {b}");
    }
}

/// PyTorch's pooled size along one side, from the checker's formula (the one place sizes are
/// computed); shared by the forward and backward pooling tests.
pub(crate) fn pool_out_size(i: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> usize {
    let u = |x: usize| x as u64;
    cnn_ir::rules::pool_out(
        u(i),
        u(p),
        u(k),
        u(s),
        u(d),
        ceil,
        cnn_ir::ir::PoolKind::Max,
        "height",
    )
    .map(|o| o as usize)
    .unwrap_or_else(|e| panic!("test geometry is not a valid pooling: {e:?}"))
}

/// An `nn.Conv2d` geometry with symmetric padding, output size as PyTorch computes it.
#[expect(clippy::too_many_arguments, reason = "test helper mirroring nn.Conv2d")]
pub(crate) fn conv_geom(
    cin: usize,
    cout: usize,
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
    (dh, dw): (usize, usize),
    groups: usize,
) -> crate::geom::Conv2dGeom {
    let out =
        |i: usize, k: usize, s: usize, p: usize, d: usize| (i + 2 * p - d * (k - 1) - 1) / s + 1;
    crate::geom::Conv2dGeom {
        in_channels: cin,
        in_h: h,
        in_w: w,
        out_channels: cout,
        out_h: out(h, kh, sh, ph, dh),
        out_w: out(w, kw, sw, pw, dw),
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        pad_top: ph,
        pad_left: pw,
        dilation_h: dh,
        dilation_w: dw,
        groups,
    }
}
