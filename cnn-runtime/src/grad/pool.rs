//! The pooling backwards (the max pool's forward saving argmax indices is
//! [`crate::kernels::max_pool2d_train_forward`]).

use rayon::prelude::*;

use crate::geom::{AdaptivePoolGeom, Pool2dGeom};
use crate::kernels::NO_INDEX;
use crate::util::check_len;

/// Backward of `nn.MaxPool2d` from the `indices` saved by [`crate::kernels::max_pool2d_train_forward`].
///
/// **Overwrites** `d_input` `[batch, C, H, W]`: each input position receives the sum of the
/// gradients of the outputs whose argmax it is (overlapping windows add), zero elsewhere.
/// Parallel over planes; deterministic.
///
/// # Panics
/// If a slice length disagrees with `g` and `batch`, or an index lies outside its plane.
pub fn max_pool2d_backward(
    g: &Pool2dGeom,
    batch: usize,
    indices: &[u32],
    d_out: &[f32],
    d_input: &mut [f32],
) {
    max_backward_masked(g, batch, indices, None, d_out, d_input);
}

/// The backward of `ReLU → nn.MaxPool2d` in one pass: [`max_pool2d_backward`], then
/// [`relu_backward_inplace`](super::relu_backward_inplace) with the pool's input `relu_out`
/// (the ReLU's output), without the second pass over `d_input`: a gradient is routed to input
/// position `i` only where `relu_out[i] > 0` (PyTorch's `threshold_backward` test, so NaN
/// blocks it too). Bit-identical to the two calls.
///
/// # Panics
/// As [`max_pool2d_backward`], or if `relu_out` is not `[batch, C, H, W]`.
pub fn max_pool2d_relu_backward(
    g: &Pool2dGeom,
    batch: usize,
    indices: &[u32],
    relu_out: &[f32],
    d_out: &[f32],
    d_input: &mut [f32],
) {
    check_len(
        "max_pool2d_relu_backward relu_out",
        relu_out.len(),
        batch * g.in_len(),
    );
    max_backward_masked(g, batch, indices, Some(relu_out), d_out, d_input);
}

fn max_backward_masked(
    g: &Pool2dGeom,
    batch: usize,
    indices: &[u32],
    relu_out: Option<&[f32]>,
    d_out: &[f32],
    d_input: &mut [f32],
) {
    let (ihw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
    check_len(
        "max_pool2d_backward indices",
        indices.len(),
        batch * g.out_len(),
    );
    check_len(
        "max_pool2d_backward d_out",
        d_out.len(),
        batch * g.out_len(),
    );
    check_len(
        "max_pool2d_backward d_input",
        d_input.len(),
        batch * g.in_len(),
    );
    if ihw == 0 {
        return;
    }
    if ohw == 0 {
        d_input.fill(0.0);
        return;
    }
    let scatter = |dx: &mut [f32], dy: &[f32], idx: &[u32], x: Option<&[f32]>| {
        dx.fill(0.0);
        match x {
            None => {
                for (&i, &v) in idx.iter().zip(dy) {
                    if i != NO_INDEX {
                        dx[i as usize] += v;
                    }
                }
            }
            Some(x) => {
                for (&i, &v) in idx.iter().zip(dy) {
                    if i != NO_INDEX {
                        // A select, not a branch: the ReLU mask is unpredictable. Adding +0.0
                        // to the +0.0 the position starts at leaves it +0.0, as the two-pass
                        // form's zeroing does.
                        let j = i as usize;
                        dx[j] += if x[j] > 0.0 { v } else { 0.0 };
                    }
                }
            }
        }
    };
    let planes = d_input
        .par_chunks_mut(ihw)
        .zip(d_out.par_chunks(ohw))
        .zip(indices.par_chunks(ohw));
    match relu_out {
        None => planes.for_each(|((dx, dy), idx)| scatter(dx, dy, idx, None)),
        Some(x) => planes
            .zip(x.par_chunks(ihw))
            .for_each(|(((dx, dy), idx), x)| scatter(dx, dy, idx, Some(x))),
    }
}

/// Backward of `nn.AvgPool2d` (PyTorch `avg_pool2d_backward`, no `divisor_override`).
///
/// **Overwrites** `d_input`. Each output's gradient is spread over its window clipped to the
/// input, divided as PyTorch divides: with `hstart = oh·s − pad`, `hend = min(hstart + k,
/// H + pad)` (likewise for width), the divisor is `(hend − hstart)·(wend − wstart)` when
/// `count_include_pad`, else the area of the window clipped to the input. `ceil_mode` shapes
/// come from `out_h`/`out_w`. Dilation must be 1. Parallel over planes; deterministic.
///
/// # Panics
/// If a slice length disagrees with `g` and `batch`, or the geometry has a dilation other than 1.
pub fn avg_pool2d_backward(g: &Pool2dGeom, batch: usize, d_out: &[f32], d_input: &mut [f32]) {
    let (ihw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
    check_len(
        "avg_pool2d_backward d_out",
        d_out.len(),
        batch * g.out_len(),
    );
    check_len(
        "avg_pool2d_backward d_input",
        d_input.len(),
        batch * g.in_len(),
    );
    assert!(
        g.dilation_h == 1 && g.dilation_w == 1,
        "avg_pool2d_backward: average pooling has no dilation"
    );
    if ihw == 0 {
        return;
    }
    if ohw == 0 {
        d_input.fill(0.0);
        return;
    }
    let axis = crate::kernels::avg_window;
    let hr: Vec<_> = (0..g.out_h)
        .map(|o| axis(o, g.stride_h, g.pad_h, g.kernel_h, g.in_h))
        .collect();
    let wr: Vec<_> = (0..g.out_w)
        .map(|o| axis(o, g.stride_w, g.pad_w, g.kernel_w, g.in_w))
        .collect();
    d_input
        .par_chunks_mut(ihw)
        .zip(d_out.par_chunks(ohw))
        .for_each(|(dx, dy)| {
            dx.fill(0.0);
            for (oh, &(h0, h1, hs)) in hr.iter().enumerate() {
                for (ow, &(w0, w1, ws)) in wr.iter().enumerate() {
                    let div = if g.count_include_pad {
                        hs * ws
                    } else {
                        ((h1 - h0) * (w1 - w0)) as isize
                    };
                    if div <= 0 {
                        continue;
                    }
                    let v = dy[oh * g.out_w + ow] / div as f32;
                    for ih in h0..h1 {
                        for d in &mut dx[ih * g.in_w + w0..ih * g.in_w + w1] {
                            *d += v;
                        }
                    }
                }
            }
        });
}

/// Backward of `nn.AdaptiveAvgPool2d`.
///
/// **Overwrites** `d_input`. Output `i` along an axis averages inputs
/// `floor(i·in/out) .. ceil((i+1)·in/out)`, as in PyTorch; its gradient is spread evenly over
/// that window. Parallel over planes; deterministic.
///
/// # Panics
/// If a slice length disagrees with `g` and `batch`.
pub fn adaptive_avg_pool2d_backward(
    g: &AdaptivePoolGeom,
    batch: usize,
    d_out: &[f32],
    d_input: &mut [f32],
) {
    let (ihw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
    check_len(
        "adaptive_avg_pool2d_backward d_out",
        d_out.len(),
        batch * g.channels * ohw,
    );
    check_len(
        "adaptive_avg_pool2d_backward d_input",
        d_input.len(),
        batch * g.channels * ihw,
    );
    if ihw == 0 {
        return;
    }
    if ohw == 0 {
        d_input.fill(0.0);
        return;
    }
    let axis = |i: usize, inp: usize, out: usize| (i * inp / out, ((i + 1) * inp).div_ceil(out));
    d_input
        .par_chunks_mut(ihw)
        .zip(d_out.par_chunks(ohw))
        .for_each(|(dx, dy)| {
            dx.fill(0.0);
            for oh in 0..g.out_h {
                let (h0, h1) = axis(oh, g.in_h, g.out_h);
                for ow in 0..g.out_w {
                    let (w0, w1) = axis(ow, g.in_w, g.out_w);
                    let v = dy[oh * g.out_w + ow] / ((h1 - h0) * (w1 - w0)) as f32;
                    for ih in h0..h1 {
                        for d in &mut dx[ih * g.in_w + w0..ih * g.in_w + w1] {
                            *d += v;
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::geom::is_plain_2x2;
    use crate::grad::testutil::{Rng, assert_close, dot, fd_grad, to_f64};
    use crate::kernels::{Isa, max_pool2d_train_forward, max_pool2d_train_forward_with};

    use crate::kernels::testutil::pool_out_size as out_size;

    #[expect(clippy::too_many_arguments, reason = "test geometry builder")]
    fn geom(
        c: usize,
        (in_h, in_w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
        (dh, dw): (usize, usize),
        ceil: bool,
        count_include_pad: bool,
    ) -> Pool2dGeom {
        Pool2dGeom {
            channels: c,
            in_h,
            in_w,
            out_h: out_size(in_h, kh, sh, ph, dh, ceil),
            out_w: out_size(in_w, kw, sw, pw, dw, ceil),
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            pad_h: ph,
            pad_w: pw,
            dilation_h: dh,
            dilation_w: dw,
            count_include_pad,
        }
    }

    /// Naive f64 max pooling (padding is -inf).
    fn max_forward(g: &Pool2dGeom, batch: usize, x: &[f64]) -> Vec<f64> {
        let mut y = vec![f64::NEG_INFINITY; batch * g.out_len()];
        for nc in 0..batch * g.channels {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let y = &mut y[(nc * g.out_h + oh) * g.out_w + ow];
                    for kh in 0..g.kernel_h {
                        for kw in 0..g.kernel_w {
                            let ih =
                                (oh * g.stride_h + kh * g.dilation_h) as isize - g.pad_h as isize;
                            let iw =
                                (ow * g.stride_w + kw * g.dilation_w) as isize - g.pad_w as isize;
                            if ih >= 0
                                && iw >= 0
                                && (ih as usize) < g.in_h
                                && (iw as usize) < g.in_w
                            {
                                *y = y.max(x[(nc * g.in_h + ih as usize) * g.in_w + iw as usize]);
                            }
                        }
                    }
                }
            }
        }
        y
    }

    /// Naive f64 average pooling with PyTorch's divisor rule.
    fn avg_forward(g: &Pool2dGeom, batch: usize, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; batch * g.out_len()];
        for nc in 0..batch * g.channels {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let hs = (oh * g.stride_h) as isize - g.pad_h as isize;
                    let ws = (ow * g.stride_w) as isize - g.pad_w as isize;
                    let he = (hs + g.kernel_h as isize).min((g.in_h + g.pad_h) as isize);
                    let we = (ws + g.kernel_w as isize).min((g.in_w + g.pad_w) as isize);
                    let pool = (he - hs) * (we - ws);
                    let (hs, ws) = (hs.max(0), ws.max(0));
                    let (he, we) = (he.min(g.in_h as isize), we.min(g.in_w as isize));
                    let mut sum = 0.0;
                    for ih in hs..he {
                        for iw in ws..we {
                            sum += x[(nc * g.in_h + ih as usize) * g.in_w + iw as usize];
                        }
                    }
                    let div = if g.count_include_pad {
                        pool
                    } else {
                        (he - hs) * (we - ws)
                    };
                    y[(nc * g.out_h + oh) * g.out_w + ow] = sum / div as f64;
                }
            }
        }
        y
    }

    fn adaptive_forward(g: &AdaptivePoolGeom, batch: usize, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; batch * g.channels * g.out_h * g.out_w];
        for nc in 0..batch * g.channels {
            for oh in 0..g.out_h {
                let (h0, h1) = (oh * g.in_h / g.out_h, ((oh + 1) * g.in_h).div_ceil(g.out_h));
                for ow in 0..g.out_w {
                    let (w0, w1) = (ow * g.in_w / g.out_w, ((ow + 1) * g.in_w).div_ceil(g.out_w));
                    let mut sum = 0.0;
                    for ih in h0..h1 {
                        for iw in w0..w1 {
                            sum += x[(nc * g.in_h + ih) * g.in_w + iw];
                        }
                    }
                    y[(nc * g.out_h + oh) * g.out_w + ow] = sum / ((h1 - h0) * (w1 - w0)) as f64;
                }
            }
        }
        y
    }

    fn check_max(g: &Pool2dGeom, batch: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        // Distinct values, so every window has a unique maximum and finite differences with a
        // small step never cross a tie.
        let n = batch * g.in_len();
        let mut x: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        for i in (1..n).rev() {
            x.swap(i, rng.below(i + 1));
        }
        let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
        let mut y = vec![0.0; r.len()];
        let mut idx = vec![0; r.len()];
        max_pool2d_train_forward(g, batch, &x, &mut y, &mut idx);
        let x64 = to_f64(&x);
        let y64 = max_forward(g, batch, &x64);
        if y64.iter().any(|v| v.is_infinite()) {
            return; // A window entirely in padding (dilated): no gradient to check.
        }
        assert_close("output", &y, &y64, 0.0, 0.0);
        let mut dx = vec![f32::NAN; n];
        max_pool2d_backward(g, batch, &idx, &r, &mut dx);
        let want = fd_grad(&x64, 1e-4, |x| dot(&r, &max_forward(g, batch, x)));
        assert_close("d_input", &dx, &want, 1e-5, 1e-5);
    }

    fn check_avg(g: &Pool2dGeom, batch: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let x = rng.vec(batch * g.in_len(), -1.0, 1.0);
        let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
        let mut dx = vec![f32::NAN; x.len()];
        avg_pool2d_backward(g, batch, &r, &mut dx);
        let want = fd_grad(&to_f64(&x), 1e-3, |x| dot(&r, &avg_forward(g, batch, x)));
        assert_close("d_input", &dx, &want, 1e-5, 1e-5);
    }

    #[test]
    fn max_pool_2x2() {
        check_max(
            &geom(3, (6, 8), (2, 2), (2, 2), (0, 0), (1, 1), false, true),
            2,
            1,
        );
    }

    #[test]
    fn max_pool_overlapping_padded_dilated_ceil() {
        check_max(
            &geom(2, (7, 9), (3, 2), (2, 1), (1, 1), (2, 3), true, true),
            2,
            2,
        );
        check_max(
            &geom(1, (5, 5), (3, 3), (2, 2), (1, 1), (1, 1), true, true),
            3,
            3,
        );
    }

    #[test]
    fn relu_fused_backward_equals_pool_then_relu_backward() {
        let g = geom(3, (6, 8), (2, 2), (2, 2), (0, 0), (1, 1), false, true);
        let batch = 2;
        let mut rng = Rng::new(11);
        // A ReLU output: zeros (a third of it), positives, and a NaN that must block.
        let mut x: Vec<f32> = rng
            .vec(batch * g.in_len(), -0.5, 1.0)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        x[5] = f32::NAN;
        let r = rng.vec(batch * g.out_len(), -1.0, 1.0);
        let (mut y, mut idx) = (vec![0.0; r.len()], vec![0; r.len()]);
        max_pool2d_train_forward(&g, batch, &x, &mut y, &mut idx);
        let mut want = vec![f32::NAN; x.len()];
        max_pool2d_backward(&g, batch, &idx, &r, &mut want);
        crate::grad::relu_backward_inplace(&x, &mut want);
        let mut got = vec![f32::NAN; x.len()];
        max_pool2d_relu_backward(&g, batch, &idx, &x, &r, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
        // Some routed gradients were blocked by the mask, so the test sees it.
        let mut unmasked = vec![0.0; x.len()];
        max_pool2d_backward(&g, batch, &idx, &r, &mut unmasked);
        assert_ne!(bits(&unmasked), bits(&want));
    }

    #[test]
    fn max_pool_ties_go_to_the_first_in_window_order() {
        // Every value equal: PyTorch routes each output's gradient to its window's first element.
        let g = geom(1, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), false, true);
        let x = [1.0f32; 16];
        let mut y = [0.0; 9];
        let mut idx = [0u32; 9];
        max_pool2d_train_forward(&g, 1, &x, &mut y, &mut idx);
        assert_eq!(idx, [0, 1, 2, 4, 5, 6, 8, 9, 10]);
        let mut dx = [0.0; 16];
        max_pool2d_backward(&g, 1, &idx, &[1.0; 9], &mut dx);
        let want = [
            1., 1., 1., 0., 1., 1., 1., 0., 1., 1., 1., 0., 0., 0., 0., 0.,
        ];
        assert_eq!(dx, want);
    }

    #[test]
    fn plain_2x2_simd_matches_the_scalar_scan() {
        // Ties, NaNs, infinities and odd sizes (floor mode drops the last row/column).
        let mut rng = Rng::new(7);
        for (h, w) in [
            (2, 2),
            (4, 34),
            (5, 33),
            (28, 28),
            (14, 14),
            (3, 63),
            (2, 40),
        ] {
            let g = geom(3, (h, w), (2, 2), (2, 2), (0, 0), (1, 1), false, true);
            assert!(is_plain_2x2(&g));
            let batch = 2;
            let pick = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                1.0,
                1.0,
            ];
            let x: Vec<f32> = (0..batch * g.in_len())
                .map(|_| {
                    let k = rng.below(12);
                    if k < pick.len() {
                        pick[k]
                    } else {
                        rng.below(5) as f32
                    }
                })
                .collect();
            let n = batch * g.out_len();
            let (mut ys, mut is) = (vec![0.0; n], vec![0; n]);
            // The scalar loops (no vector kernel) are the reference.
            max_pool2d_train_forward_with(&g, batch, &x, &mut ys, &mut is, None);
            for isa in Isa::available() {
                let (mut y, mut i) = (vec![1.5; n], vec![7; n]);
                max_pool2d_train_forward_with(&g, batch, &x, &mut y, &mut i, Some(isa));
                assert_eq!(i, is, "{h}x{w} {isa:?} indices");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&ys), "{h}x{w} {isa:?} values");
            }
        }
    }

    #[test]
    fn max_pool_nan_wins_and_padding_is_never_chosen() {
        let g = geom(1, (2, 2), (2, 2), (1, 1), (1, 1), (1, 1), false, true);
        let x = [-5.0, f32::NAN, -7.0, -6.0];
        let mut y = [0.0; 9];
        let mut idx = [0u32; 9];
        max_pool2d_train_forward(&g, 1, &x, &mut y, &mut idx);
        assert_eq!(idx, [0, 1, 1, 0, 1, 1, 2, 3, 3]);
        assert_eq!(y[0], -5.0);
        assert!(y[1].is_nan());
        assert_eq!(y[8], -6.0);
    }

    #[test]
    fn avg_pool_divisors() {
        for cip in [false, true] {
            check_avg(
                &geom(2, (5, 7), (3, 3), (2, 2), (1, 1), (1, 1), false, cip),
                2,
                4,
            );
            // ceil_mode: the last window hangs past the padded input.
            check_avg(
                &geom(1, (6, 6), (3, 3), (2, 2), (1, 1), (1, 1), true, cip),
                1,
                5,
            );
            check_avg(
                &geom(1, (5, 4), (2, 3), (2, 3), (0, 1), (1, 1), true, cip),
                2,
                6,
            );
        }
    }

    #[test]
    fn avg_pool_known_values() {
        // 3x3 input, k2 s2 p1, count_include_pad=false: windows clipped to 1, 2 or 4 elements.
        let g = geom(1, (3, 3), (2, 2), (2, 2), (1, 1), (1, 1), false, false);
        assert_eq!((g.out_h, g.out_w), (2, 2));
        let mut dx = [0.0; 9];
        avg_pool2d_backward(&g, 1, &[1.0, 2.0, 4.0, 8.0], &mut dx);
        assert_eq!(dx, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
        let g = Pool2dGeom {
            count_include_pad: true,
            ..g
        };
        avg_pool2d_backward(&g, 1, &[1.0, 2.0, 4.0, 8.0], &mut dx);
        assert_eq!(dx, [0.25, 0.5, 0.5, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn adaptive_avg_pool() {
        for (ih, iw, oh, ow) in [(5, 7, 3, 2), (4, 4, 1, 1), (3, 5, 3, 5), (2, 3, 4, 5)] {
            let g = AdaptivePoolGeom {
                channels: 2,
                in_h: ih,
                in_w: iw,
                out_h: oh,
                out_w: ow,
            };
            let mut rng = Rng::new(ih as u64);
            let x = rng.vec(2 * 2 * ih * iw, -1.0, 1.0);
            let r = rng.vec(2 * 2 * oh * ow, -1.0, 1.0);
            let mut dx = vec![f32::NAN; x.len()];
            adaptive_avg_pool2d_backward(&g, 2, &r, &mut dx);
            let want = fd_grad(&to_f64(&x), 1e-3, |x| dot(&r, &adaptive_forward(&g, 2, x)));
            assert_close("d_input", &dx, &want, 1e-5, 1e-5);
        }
    }

    #[test]
    #[should_panic(expected = "max_pool2d_backward d_input")]
    fn wrong_length_panics() {
        let g = geom(1, (4, 4), (2, 2), (2, 2), (0, 0), (1, 1), false, true);
        max_pool2d_backward(&g, 1, &[0; 4], &[0.0; 4], &mut [0.0; 15]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn random_pools_match_finite_differences(
            c in 1usize..3, in_h in 1usize..9, in_w in 1usize..9, kh in 1usize..4, kw in 1usize..4,
            sh in 1usize..4, sw in 1usize..4, ph in 0usize..2, pw in 0usize..2,
            dh in 1usize..3, dw in 1usize..3, ceil: bool, cip: bool, batch in 1usize..3, seed: u64,
        ) {
            // PyTorch: padding at most half the kernel, and the dilated window fits the padded input.
            prop_assume!(2 * ph <= kh && 2 * pw <= kw);
            prop_assume!(in_h + 2 * ph > dh * (kh - 1) && in_w + 2 * pw > dw * (kw - 1));
            check_max(&geom(c, (in_h, in_w), (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil, cip), batch, seed);
            prop_assume!(in_h + 2 * ph >= kh && in_w + 2 * pw >= kw);
            check_avg(&geom(c, (in_h, in_w), (kh, kw), (sh, sw), (ph, pw), (1, 1), ceil, cip), batch, seed);
        }
    }
}
