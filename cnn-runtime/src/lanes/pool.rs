//! `nn.MaxPool2d` forward (with argmax) and backward on lane tensors.

use rayon::prelude::*;

use super::LANES;
use crate::geom::Pool2dGeom;
use crate::grad::{check_len, window};

/// Index of an empty window (all padding): its output is `-inf` and gets no gradient.
const NO_INDEX: u32 = u32::MAX;

/// Max pooling of `slots` slots of lane tensors (`[slots][C][H][W][16]` →
/// `[slots][C][H_out][W_out][16]`), saving per output lane the plane index of its maximum, as
/// [`crate::grad::max_pool2d_train_forward`] does per image: PyTorch's rules (the first
/// maximum in window order wins, a NaN wins and propagates, padding is `-inf`).
///
/// # Panics
/// If a slice length disagrees with `g` and `slots`, or a plane has `u32::MAX` or more elements.
pub fn max_pool2d_lanes_forward(
    g: &Pool2dGeom,
    slots: usize,
    input: &[f32],
    output: &mut [f32],
    indices: &mut [u32],
) {
    let (ihw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
    check_len(
        "max_pool2d_lanes input",
        input.len(),
        slots * g.in_len() * LANES,
    );
    check_len(
        "max_pool2d_lanes output",
        output.len(),
        slots * g.out_len() * LANES,
    );
    check_len(
        "max_pool2d_lanes indices",
        indices.len(),
        slots * g.out_len() * LANES,
    );
    assert!(
        ihw < NO_INDEX as usize,
        "max_pool2d: plane too large for u32 indices"
    );
    if ohw == 0 {
        return;
    }
    if ihw == 0 {
        output.fill(f32::NEG_INFINITY);
        indices.fill(NO_INDEX);
        return;
    }
    output
        .par_chunks_mut(ohw * LANES)
        .zip(indices.par_chunks_mut(ohw * LANES))
        .zip(input.par_chunks(ihw * LANES))
        .for_each(|((out, idx), x)| {
            for oh in 0..g.out_h {
                let (h0, h1) = window(oh, g.stride_h, g.pad_h, g.dilation_h, g.kernel_h, g.in_h);
                for ow in 0..g.out_w {
                    let (w0, w1) =
                        window(ow, g.stride_w, g.pad_w, g.dilation_w, g.kernel_w, g.in_w);
                    let mut best = [f32::NEG_INFINITY; LANES];
                    let mut arg = [if h0 < h1 && w0 < w1 {
                        (h0 * g.in_w + w0) as u32
                    } else {
                        NO_INDEX
                    }; LANES];
                    for ih in (h0..h1).step_by(g.dilation_h) {
                        for iw in (w0..w1).step_by(g.dilation_w) {
                            let pos = ih * g.in_w + iw;
                            let v: &[f32; LANES] =
                                x[pos * LANES..][..LANES].try_into().expect("one vector");
                            for l in 0..LANES {
                                let take = v[l] > best[l] || v[l].is_nan();
                                best[l] = if take { v[l] } else { best[l] };
                                arg[l] = if take { pos as u32 } else { arg[l] };
                            }
                        }
                    }
                    let o = (oh * g.out_w + ow) * LANES;
                    out[o..o + LANES].copy_from_slice(&best);
                    idx[o..o + LANES].copy_from_slice(&arg);
                }
            }
        });
}

/// Backward of [`max_pool2d_lanes_forward`]: `d_input` (overwritten) gets each output lane's
/// gradient at its saved argmax (summed where windows overlap). With `relu_out` (the pool's
/// output, when the pool's input is a ReLU's output), a gradient whose maximum is not positive
/// is dropped: the ReLU's backward folded in, as in [`crate::grad::max_pool2d_relu_backward`].
///
/// # Panics
/// If a slice length disagrees with `g` and `slots`.
pub fn max_pool2d_lanes_backward(
    g: &Pool2dGeom,
    slots: usize,
    indices: &[u32],
    relu_out: Option<&[f32]>,
    d_out: &[f32],
    d_input: &mut [f32],
) {
    let (ihw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let out_len = slots * g.out_len() * LANES;
    check_len("max_pool2d_lanes_backward indices", indices.len(), out_len);
    check_len("max_pool2d_lanes_backward d_out", d_out.len(), out_len);
    if let Some(y) = relu_out {
        check_len("max_pool2d_lanes_backward relu_out", y.len(), out_len);
    }
    check_len(
        "max_pool2d_lanes_backward d_input",
        d_input.len(),
        slots * g.in_len() * LANES,
    );
    if ihw == 0 {
        return;
    }
    if ohw == 0 {
        d_input.fill(0.0);
        return;
    }
    d_input
        .par_chunks_mut(ihw * LANES)
        .enumerate()
        .for_each(|(p, dx)| {
            dx.fill(0.0);
            let idx = &indices[p * ohw * LANES..][..ohw * LANES];
            let dy = &d_out[p * ohw * LANES..][..ohw * LANES];
            let y = relu_out.map(|y| &y[p * ohw * LANES..][..ohw * LANES]);
            for (o, (iv, dv)) in idx
                .chunks_exact(LANES)
                .zip(dy.chunks_exact(LANES))
                .enumerate()
            {
                for l in 0..LANES {
                    let i = iv[l];
                    if i == NO_INDEX {
                        continue;
                    }
                    let keep = y.is_none_or(|y| y[o * LANES + l] > 0.0);
                    if keep {
                        dx[i as usize * LANES + l] += dv[l];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::{max_pool2d_backward, max_pool2d_relu_backward, max_pool2d_train_forward};
    use crate::kernels::testutil::data;
    use crate::lanes::{from_lanes, lane_slots, to_lanes};

    fn pool(
        c: usize,
        (h, w): (usize, usize),
        k: usize,
        s: usize,
        p: usize,
        d: usize,
    ) -> Pool2dGeom {
        let out = |i: usize| (i + 2 * p - d * (k - 1) - 1) / s + 1;
        Pool2dGeom {
            channels: c,
            in_h: h,
            in_w: w,
            out_h: out(h),
            out_w: out(w),
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: p,
            pad_w: p,
            dilation_h: d,
            dilation_w: d,
            count_include_pad: false,
        }
    }

    /// Forward, backward and the ReLU-folded backward on lanes give exactly the image path's
    /// results (same comparisons, same sums), ties, NaN and overlapping windows included.
    fn check(g: Pool2dGeom, batch: usize) {
        let mut x = data(batch * g.in_len(), 5);
        // Ties and NaN: a repeated maximum, a NaN, negative values for the ReLU fold.
        x[1] = x[0];
        x[g.in_len() + 3] = f32::NAN;
        for v in x.iter_mut().step_by(3) {
            *v = v.abs().max(0.0) * 0.5;
        }
        let dy = data(batch * g.out_len(), 6);
        let (mut y, mut idx) = (vec![0.0; dy.len()], vec![0; dy.len()]);
        max_pool2d_train_forward(&g, batch, &x, &mut y, &mut idx);
        let mut dx = vec![0.0; x.len()];
        max_pool2d_backward(&g, batch, &idx, &dy, &mut dx);
        let mut dx_relu = vec![0.0; x.len()];
        max_pool2d_relu_backward(&g, batch, &idx, &x, &dy, &mut dx_relu);

        let slots = lane_slots(batch);
        let lanes = |v: &[f32], len: usize| {
            let mut l = vec![0.0; slots * len * LANES];
            to_lanes(batch, len, v, &mut l);
            l
        };
        let images = |l: &[f32], len: usize| {
            let mut v = vec![0.0; batch * len];
            from_lanes(batch, len, l, &mut v);
            v
        };
        let (xl, dyl) = (lanes(&x, g.in_len()), lanes(&dy, g.out_len()));
        let mut yl = vec![f32::NAN; dyl.len()];
        let mut il = vec![7; dyl.len()];
        max_pool2d_lanes_forward(&g, slots, &xl, &mut yl, &mut il);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&images(&yl, g.out_len())), bits(&y), "{g:?} forward");
        for relu in [false, true] {
            let mut dxl = vec![f32::NAN; xl.len()];
            max_pool2d_lanes_backward(&g, slots, &il, relu.then_some(&yl[..]), &dyl, &mut dxl);
            let want = if relu { &dx_relu } else { &dx };
            assert_eq!(
                bits(&images(&dxl, g.in_len())),
                bits(want),
                "{g:?} relu {relu}"
            );
        }
    }

    #[test]
    fn matches_the_image_path() {
        check(pool(3, (8, 8), 2, 2, 0, 1), 16);
        check(pool(2, (7, 9), 2, 2, 0, 1), 20);
        check(pool(2, (9, 9), 3, 2, 1, 1), 17);
        check(pool(1, (10, 11), 3, 1, 1, 2), 3);
    }
}
