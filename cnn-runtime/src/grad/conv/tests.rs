//! Finite-difference and cross-path checks of the convolution backward.

use proptest::prelude::*;

use super::*;
use crate::grad::testutil::{Rng, assert_close, dot, fd_grad, to_f64};

/// Naive f64 forward of `nn.Conv2d`.
fn forward(g: &Conv2dGeom, batch: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let cin_g = g.in_channels / g.groups;
    let cout_g = g.out_channels / g.groups;
    let mut y = vec![0.0; batch * g.out_len()];
    for n in 0..batch {
        for co in 0..g.out_channels {
            let grp = co / cout_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut acc = b[co];
                    for ci in 0..cin_g {
                        for kh in 0..g.kernel_h {
                            for kw in 0..g.kernel_w {
                                let ih = (oh * g.stride_h + kh * g.dilation_h) as isize
                                    - g.pad_top as isize;
                                let iw = (ow * g.stride_w + kw * g.dilation_w) as isize
                                    - g.pad_left as isize;
                                if ih < 0
                                    || iw < 0
                                    || ih >= g.in_h as isize
                                    || iw >= g.in_w as isize
                                {
                                    continue;
                                }
                                let c = grp * cin_g + ci;
                                acc += x[((n * g.in_channels + c) * g.in_h + ih as usize) * g.in_w
                                    + iw as usize]
                                    * w[((co * cin_g + ci) * g.kernel_h + kh) * g.kernel_w + kw];
                            }
                        }
                    }
                    y[((n * g.out_channels + co) * g.out_h + oh) * g.out_w + ow] = acc;
                }
            }
        }
    }
    y
}

#[expect(clippy::too_many_arguments, reason = "test geometry builder")]
fn geom(
    cin: usize,
    cout: usize,
    groups: usize,
    (in_h, in_w): (usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (pt, pl): (usize, usize),
    (dh, dw): (usize, usize),
) -> Conv2dGeom {
    // Symmetric padding output size, as PyTorch computes it.
    let out =
        |i: usize, k: usize, s: usize, p: usize, d: usize| (i + 2 * p - d * (k - 1) - 1) / s + 1;
    Conv2dGeom {
        in_channels: cin,
        in_h,
        in_w,
        out_channels: cout,
        out_h: out(in_h, kh, sh, pt, dh),
        out_w: out(in_w, kw, sw, pl, dw),
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        pad_top: pt,
        pad_left: pl,
        dilation_h: dh,
        dilation_w: dw,
        groups,
    }
}

/// Checks `conv2d_backward` against finite differences of [`forward`].
fn check_fd(g: &Conv2dGeom, batch: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(batch * g.in_len(), -1.0, 1.0);
    let w = rng.vec(g.weight_len(), -1.0, 1.0);
    let b = rng.vec(g.out_channels, -1.0, 1.0);
    let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
    let mut dx = vec![f32::NAN; x.len()];
    let mut dw = vec![f32::NAN; w.len()];
    let mut db = vec![f32::NAN; b.len()];
    let mut scratch = vec![f32::NAN; conv2d_backward_scratch_len(g, batch)];
    conv2d_backward(
        g,
        batch,
        &x,
        &w,
        &r,
        Some(&mut dx),
        &mut dw,
        Some(&mut db),
        &mut scratch,
    );
    let (x64, w64, b64) = (to_f64(&x), to_f64(&w), to_f64(&b));
    let h = 1e-3;
    let want_dx = fd_grad(&x64, h, |x| dot(&r, &forward(g, batch, x, &w64, &b64)));
    let want_dw = fd_grad(&w64, h, |w| dot(&r, &forward(g, batch, &x64, w, &b64)));
    let want_db = fd_grad(&b64, h, |b| dot(&r, &forward(g, batch, &x64, &w64, b)));
    assert_close("d_input", &dx, &want_dx, 1e-4, 1e-4);
    assert_close("d_weight", &dw, &want_dw, 2e-4, 1e-4);
    assert_close("d_bias", &db, &want_db, 2e-4, 1e-4);
    // The other paths: GEMM input and weight gradients (used when the forward kernel is
    // not, and kept as the lane path's alternative), and the portable lane kernel.
    for (fwd, lane) in [(false, None), (true, Some(Isa::Portable))] {
        let mut dx_g = vec![f32::NAN; x.len()];
        let mut dw_g = vec![f32::NAN; w.len()];
        let mut db_g = vec![f32::NAN; b.len()];
        let pl = plan_with(g, batch, fwd, lane);
        let mut scratch_g = vec![f32::NAN; pl.scratch_len()];
        backward_with(
            &pl,
            g,
            batch,
            &x,
            &w,
            &r,
            Some(&mut dx_g),
            &mut dw_g,
            Some(&mut db_g),
            &mut scratch_g,
        );
        let what = format!("fwd {fwd} lane {lane:?}");
        assert_close(&format!("d_input {what}"), &dx_g, &want_dx, 1e-4, 1e-4);
        assert_close(&format!("d_weight {what}"), &dw_g, &want_dw, 2e-4, 1e-4);
        assert_close(&format!("d_bias {what}"), &db_g, &want_db, 2e-4, 1e-4);
    }
    // The weight-only path (first layer) gives the same weight gradient.
    let mut dw2 = vec![f32::NAN; w.len()];
    conv2d_backward(g, batch, &x, &w, &r, None, &mut dw2, None, &mut scratch);
    assert_eq!(dw, dw2);
}

/// [`conv2d_backward_lanes`] against [`conv2d_backward`] (checked against finite
/// differences above) on the same batch converted to lanes; the scratch and outputs start
/// as NaN so anything left unwritten fails.
fn check_lanes(g: &Conv2dGeom, batch: usize, seed: u64) {
    use crate::lanes::{LANES, from_lanes, lane_slots, to_lanes};
    let mut rng = Rng::new(seed);
    let x = rng.vec(batch * g.in_len(), -1.0, 1.0);
    let w = rng.vec(g.weight_len(), -1.0, 1.0);
    let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
    let (mut dx, mut dw, mut db) = (
        vec![0.0; x.len()],
        vec![0.0; w.len()],
        vec![0.0; g.out_channels],
    );
    let mut scratch = vec![0.0; conv2d_backward_scratch_len(g, batch)];
    let dx_arg = lanes_input_grad_supported(g).then_some(&mut dx[..]);
    let with_dx = dx_arg.is_some();
    conv2d_backward(
        g,
        batch,
        &x,
        &w,
        &r,
        dx_arg,
        &mut dw,
        Some(&mut db),
        &mut scratch,
    );
    let slots = lane_slots(batch);
    let mut xl = vec![f32::NAN; slots * g.in_len() * LANES];
    let mut rl = vec![f32::NAN; slots * g.out_len() * LANES];
    to_lanes(batch, g.in_len(), &x, &mut xl);
    to_lanes(batch, g.out_len(), &r, &mut rl);
    for (isa, threads) in Isa::available().into_iter().flat_map(|i| [(i, 1), (i, 2)]) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut dxl = vec![f32::NAN; xl.len()];
        let (mut dw2, mut db2) = (vec![f32::NAN; w.len()], vec![f32::NAN; db.len()]);
        let mut sc = vec![f32::NAN; conv2d_backward_lanes_scratch_len(g, slots)];
        pool.install(|| {
            conv2d_backward_lanes_with(
                isa,
                g,
                slots,
                &xl,
                &w,
                &rl,
                with_dx.then_some(&mut dxl[..]),
                &mut dw2,
                Some(&mut db2),
                &mut sc,
            )
        });
        let what = format!("{isa:?} {g:?} batch {batch} threads {threads}");
        assert_close(&format!("d_weight {what}"), &dw2, &to_f64(&dw), 1e-4, 1e-4);
        assert_close(&format!("d_bias {what}"), &db2, &to_f64(&db), 1e-4, 1e-4);
        if with_dx {
            let mut dx2 = vec![f32::NAN; x.len()];
            from_lanes(batch, g.in_len(), &dxl, &mut dx2);
            assert_close(&format!("d_input {what}"), &dx2, &to_f64(&dx), 1e-4, 1e-4);
            // Lanes of missing images get a zero input gradient.
            for (k, v) in dxl.iter().enumerate() {
                if k >= (slots - 1) * g.in_len() * LANES && (slots - 1) * LANES + k % LANES >= batch
                {
                    assert_eq!(*v, 0.0, "{what}: missing image lane {k}");
                }
            }
        }
    }
}

#[test]
fn lanes_backward_matches_the_image_path() {
    let s = (1, 1);
    // The seed model's layers, full and partial slots.
    check_lanes(&geom(1, 16, 1, (28, 28), (5, 5), s, (2, 2), s), 16, 11);
    check_lanes(&geom(16, 32, 1, (14, 14), (5, 5), s, (2, 2), s), 20, 12);
    check_lanes(&geom(32, 64, 1, (7, 7), (5, 5), s, (2, 2), s), 32, 13);
    // No padding, uneven sizes, groups, dilation, strides (weight gradient only).
    check_lanes(&geom(3, 5, 1, (6, 9), (3, 2), s, (0, 0), s), 17, 14);
    check_lanes(&geom(4, 6, 2, (8, 7), (3, 3), s, (1, 1), s), 16, 15);
    check_lanes(&geom(2, 3, 1, (9, 10), (3, 3), s, (2, 1), (2, 3)), 5, 16);
    check_lanes(&geom(3, 4, 1, (9, 8), (3, 3), (2, 2), (1, 1), s), 16, 17);
    // Whole 4-channel tiles inside groups; wide kernels.
    check_lanes(&geom(6, 8, 2, (7, 6), (3, 3), s, (1, 1), s), 16, 18);
    check_lanes(&geom(3, 5, 1, (9, 10), (7, 7), s, (3, 3), s), 16, 19);
    check_lanes(
        &geom(2, 4, 1, (5, 13), (1, 11), (1, 2), (0, 4), (1, 1)),
        16,
        20,
    );
}

#[test]
fn plain_3x3() {
    check_fd(&geom(3, 4, 1, (6, 5), (3, 3), (1, 1), (0, 0), (1, 1)), 2, 1);
}

#[test]
fn padded_5x5() {
    check_fd(&geom(2, 3, 1, (7, 7), (5, 5), (1, 1), (2, 2), (1, 1)), 3, 2);
}

#[test]
fn strided_and_padded() {
    check_fd(&geom(3, 2, 1, (9, 8), (3, 2), (2, 3), (1, 1), (1, 1)), 2, 3);
}

#[test]
fn dilated() {
    check_fd(
        &geom(2, 3, 1, (9, 10), (3, 3), (1, 2), (2, 1), (2, 3)),
        2,
        4,
    );
}

#[test]
fn grouped() {
    check_fd(&geom(4, 6, 2, (6, 6), (3, 3), (1, 1), (1, 1), (1, 1)), 2, 5);
}

#[test]
fn depthwise_multiplier_2() {
    check_fd(&geom(3, 6, 3, (7, 6), (3, 3), (2, 1), (1, 1), (1, 1)), 3, 6);
}

#[test]
fn asymmetric_same_padding_even_kernel() {
    // padding="same" with k=4: one row/column above/left, two below/right.
    let mut g = geom(2, 2, 1, (6, 5), (4, 4), (1, 1), (1, 1), (1, 1));
    g.out_h = 6;
    g.out_w = 5;
    check_fd(&g, 2, 7);
}

#[test]
fn transposed_path_fewer_outputs_than_inputs() {
    let g = geom(5, 2, 1, (7, 6), (5, 3), (1, 1), (2, 1), (1, 1));
    assert!(plan_with(&g, 3, false, None).transposed);
    check_fd(&g, 3, 11);
    // Dilated, grouped, asymmetric "same" padding and padding wider than the kernel.
    let g = geom(6, 4, 2, (6, 7), (3, 2), (1, 1), (2, 1), (2, 3));
    assert!(plan_with(&g, 2, false, None).transposed);
    check_fd(&g, 2, 12);
    let mut g = geom(4, 2, 1, (6, 5), (4, 4), (1, 1), (1, 1), (1, 1));
    (g.out_h, g.out_w) = (6, 5);
    assert!(plan_with(&g, 2, false, None).transposed);
    check_fd(&g, 2, 13);
    let g = geom(3, 1, 1, (3, 2), (2, 2), (1, 1), (3, 3), (1, 1));
    assert!(plan_with(&g, 2, false, None).transposed);
    check_fd(&g, 2, 14);
}

#[test]
fn padding_wider_than_the_window_span() {
    // Top/left padding beyond every window: the whole output reads zeros (or part of it).
    let mut g = geom(2, 3, 1, (3, 4), (2, 2), (1, 1), (3, 4), (1, 1));
    (g.out_h, g.out_w) = (2, 2);
    check_fd(&g, 2, 15);
    let mut g = geom(2, 3, 1, (3, 4), (2, 2), (1, 1), (3, 4), (1, 1));
    (g.out_h, g.out_w) = (5, 6);
    check_fd(&g, 2, 16);
}

#[test]
fn output_larger_than_input_from_padding() {
    check_fd(&geom(1, 2, 1, (3, 2), (2, 2), (1, 1), (2, 2), (1, 1)), 2, 8);
}

#[test]
fn many_slots_and_ragged_chunks() {
    // P = 4 positions, so 128 images per GEMM chunk; batch 19 gives 7 slots of 3 images,
    // the last with 1.
    check_fd(
        &geom(2, 2, 1, (3, 3), (2, 2), (1, 1), (0, 0), (1, 1)),
        19,
        9,
    );
}

#[test]
fn kernel_larger_than_half_the_image_with_stride() {
    check_fd(
        &geom(1, 1, 1, (4, 4), (3, 3), (3, 3), (1, 1), (1, 1)),
        1,
        10,
    );
}

/// The seed model's layers (28×28, 14×14, 7×7) against the direct-loop reference.
#[test]
fn seed_layers_match_reference() {
    let layers = [
        geom(1, 16, 1, (28, 28), (5, 5), (1, 1), (2, 2), (1, 1)),
        geom(16, 32, 1, (14, 14), (5, 5), (1, 1), (2, 2), (1, 1)),
        geom(32, 64, 1, (7, 7), (5, 5), (1, 1), (2, 2), (1, 1)),
    ];
    for (i, g) in layers.iter().enumerate() {
        let batch = 3;
        let mut rng = Rng::new(100 + i as u64);
        let x = rng.vec(batch * g.in_len(), -1.0, 1.0);
        let w = rng.vec(g.weight_len(), -0.2, 0.2);
        let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
        let mut got = (
            vec![0.0; x.len()],
            vec![0.0; w.len()],
            vec![0.0; g.out_channels],
        );
        let mut want = got.clone();
        let mut scratch = vec![0.0; conv2d_backward_scratch_len(g, batch)];
        conv2d_backward(
            g,
            batch,
            &x,
            &w,
            &r,
            Some(&mut got.0),
            &mut got.1,
            Some(&mut got.2),
            &mut scratch,
        );
        conv2d_backward_reference(
            g,
            batch,
            &x,
            &w,
            &r,
            Some(&mut want.0),
            &mut want.1,
            Some(&mut want.2),
        );
        assert_close("d_input", &got.0, &to_f64(&want.0), 1e-4, 1e-4);
        assert_close("d_weight", &got.1, &to_f64(&want.1), 1e-3, 1e-4);
        assert_close("d_bias", &got.2, &to_f64(&want.2), 1e-3, 1e-4);
        // Full 4-row tiles of the lane weight gradient, on both instruction sets (and a
        // batch that fills one slot and part of the next).
        let isas = Isa::available();
        let batch = 19;
        let x = rng.vec(batch * g.in_len(), -1.0, 1.0);
        let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
        let mut want = (vec![0.0; w.len()], vec![0.0; g.out_channels]);
        conv2d_backward_reference(g, batch, &x, &w, &r, None, &mut want.0, Some(&mut want.1));
        for isa in isas {
            let pl = plan_with(g, batch, true, Some(isa));
            let mut scratch = vec![f32::NAN; pl.scratch_len()];
            let mut got = (vec![f32::NAN; w.len()], vec![f32::NAN; g.out_channels]);
            backward_with(
                &pl,
                g,
                batch,
                &x,
                &w,
                &r,
                None,
                &mut got.0,
                Some(&mut got.1),
                &mut scratch,
            );
            assert_close(
                &format!("d_weight {isa:?}"),
                &got.0,
                &to_f64(&want.0),
                2e-3,
                1e-4,
            );
            assert_close(
                &format!("d_bias {isa:?}"),
                &got.1,
                &to_f64(&want.1),
                2e-3,
                1e-4,
            );
        }
    }
}

/// Several GEMM chunks per slot, the last one short, on both input-gradient paths.
#[test]
fn multi_chunk_slots_match_reference() {
    for (cout, transposed) in [(8, true), (32, false)] {
        let g = geom(32, cout, 1, (10, 10), (5, 5), (1, 1), (2, 2), (1, 1));
        let batch = 27;
        let pl = plan_with(&g, batch, false, None);
        assert_eq!(
            (pl.imgs_per_slot, pl.chunk, pl.transposed),
            (4, 2, transposed)
        );
        let mut rng = Rng::new(cout as u64);
        let x = rng.vec(batch * g.in_len(), -1.0, 1.0);
        let w = rng.vec(g.weight_len(), -0.2, 0.2);
        let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
        let mut got = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; cout]);
        let mut want = got.clone();
        let mut scratch = vec![f32::NAN; pl.scratch_len()];
        backward_with(
            &pl,
            &g,
            batch,
            &x,
            &w,
            &r,
            Some(&mut got.0),
            &mut got.1,
            Some(&mut got.2),
            &mut scratch,
        );
        conv2d_backward_reference(
            &g,
            batch,
            &x,
            &w,
            &r,
            Some(&mut want.0),
            &mut want.1,
            Some(&mut want.2),
        );
        assert_close("d_input", &got.0, &to_f64(&want.0), 1e-4, 1e-4);
        assert_close("d_weight", &got.1, &to_f64(&want.1), 2e-3, 1e-4);
        assert_close("d_bias", &got.2, &to_f64(&want.2), 2e-3, 1e-4);
    }
}

#[test]
fn bit_identical_for_any_thread_count() {
    let g = geom(8, 16, 1, (14, 14), (5, 5), (1, 1), (2, 2), (1, 1));
    let batch = 21;
    let mut rng = Rng::new(11);
    let x = rng.vec(batch * g.in_len(), -1.0, 1.0);
    let w = rng.vec(g.weight_len(), -1.0, 1.0);
    let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut dx = vec![0.0; x.len()];
            let mut dw = vec![0.0; w.len()];
            let mut db = vec![0.0; g.out_channels];
            let mut scratch = vec![0.0; conv2d_backward_scratch_len(&g, batch)];
            conv2d_backward(
                &g,
                batch,
                &x,
                &w,
                &r,
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &mut scratch,
            );
            (dx, dw, db)
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn empty_batch_zeroes_gradients() {
    let g = geom(2, 2, 1, (4, 4), (3, 3), (1, 1), (1, 1), (1, 1));
    let mut dw = vec![1.0; g.weight_len()];
    let mut db = vec![1.0; 2];
    let mut scratch = vec![0.0; conv2d_backward_scratch_len(&g, 0)];
    conv2d_backward(
        &g,
        0,
        &[],
        &[0.5; 36],
        &[],
        Some(&mut []),
        &mut dw,
        Some(&mut db),
        &mut scratch,
    );
    assert!(dw.iter().chain(&db).all(|&v| v == 0.0));
}

#[test]
#[should_panic(expected = "conv2d_backward scratch")]
fn short_scratch_panics() {
    let g = geom(1, 1, 1, (4, 4), (3, 3), (1, 1), (1, 1), (1, 1));
    let mut dw = vec![0.0; 9];
    conv2d_backward(
        &g,
        1,
        &[0.0; 16],
        &[0.0; 9],
        &[0.0; 16],
        None,
        &mut dw,
        None,
        &mut [0.0; 3],
    );
}

#[test]
#[should_panic(expected = "conv2d_backward d_out: slice has 15 elements, the geometry needs 16")]
fn wrong_length_panics_with_name() {
    let g = geom(1, 1, 1, (4, 4), (3, 3), (1, 1), (1, 1), (1, 1));
    let mut dw = vec![0.0; 9];
    let mut scratch = vec![0.0; conv2d_backward_scratch_len(&g, 1)];
    conv2d_backward(
        &g,
        1,
        &[0.0; 16],
        &[0.0; 9],
        &[0.0; 15],
        None,
        &mut dw,
        None,
        &mut scratch,
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_geometries_match_finite_differences(
        cin_g in 1usize..4, cout_g in 1usize..4, groups in 1usize..3,
        in_h in 1usize..8, in_w in 1usize..8, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..3, sw in 1usize..4, pt in 0usize..3, pl in 0usize..3,
        dh in 1usize..3, dw in 1usize..3, batch in 1usize..4, seed in 0u64..1000,
    ) {
        prop_assume!(in_h + 2 * pt > dh * (kh - 1) && in_w + 2 * pl > dw * (kw - 1));
        let g = geom(cin_g * groups, cout_g * groups, groups, (in_h, in_w), (kh, kw), (sh, sw), (pt, pl), (dh, dw));
        check_fd(&g, batch, seed);
    }
}
