//! `nn.MaxPool2d` forward (with argmax) and backward on lane tensors.
//!
//! Each (slot, channel) plane is one task. Per output slot vector the window is walked in order
//! with the scalar rules applied lane by lane: as vector compares and selects over the SIMD
//! layer (`PlaneForward`, `PlaneBackward`, one source for every instruction set; plane
//! positions are carried as `f32`, exact below 2^24), or lane by lane in plain Rust
//! (`plane_*_scalar`: the reference the tests compare with, and the path for planes of 2^24
//! positions or more).

use rayon::prelude::*;

use super::LANES;
use crate::geom::Pool2dGeom;
use crate::geom::{is_plain_2x2, window};
use crate::kernels::Isa;
use crate::simd::{Kernel, Simd, dispatch};
use crate::util::check_len;

/// Plane positions below this are exact as `f32` (the vector kernels' index type).
const F32_EXACT: usize = 1 << 24;

/// Index of an empty window (all padding): its output is `-inf` and gets no gradient.
const NO_INDEX: u32 = u32::MAX;

/// Max pooling of `slots` slots of lane tensors (`[slots][C][H][W][16]` →
/// `[slots][C][H_out][W_out][16]`), saving per output lane the plane index of its maximum, as
/// [`crate::kernels::max_pool2d_train_forward`] does per image: PyTorch's rules (the first
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
    forward_with(g, slots, input, output, indices, Isa::detect());
}

/// Max pooling of lane tensors for inference: [`max_pool2d_lanes_forward`] without saving the
/// argmax.
///
/// # Panics
/// If a slice length disagrees with `g` and `slots`.
pub fn max_pool2d_lanes(g: &Pool2dGeom, slots: usize, input: &[f32], output: &mut [f32]) {
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
    if ohw == 0 {
        return;
    }
    if ihw == 0 {
        output.fill(f32::NEG_INFINITY);
        return;
    }
    let isa = Isa::detect();
    output
        .par_chunks_mut(ohw * LANES)
        .zip(input.par_chunks(ihw * LANES))
        .for_each(|(out, x)| {
            // Values only: the position bookkeeping is not needed, so no size limit either.
            let k = PlaneForward {
                g,
                x,
                out,
                idx: None,
            };
            dispatch(isa, k);
        });
}

fn forward_with(
    g: &Pool2dGeom,
    slots: usize,
    input: &[f32],
    output: &mut [f32],
    indices: &mut [u32],
    isa: Isa,
) {
    let (ihw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let out_len = slots * g.out_len() * LANES;
    check_len(
        "max_pool2d_lanes input",
        input.len(),
        slots * g.in_len() * LANES,
    );
    check_len("max_pool2d_lanes output", output.len(), out_len);
    check_len("max_pool2d_lanes indices", indices.len(), out_len);
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
            if ihw < F32_EXACT {
                dispatch(
                    isa,
                    PlaneForward {
                        g,
                        x,
                        out,
                        idx: Some(idx),
                    },
                );
            } else {
                plane_forward_scalar(g, x, out, idx);
            }
        });
}

/// The windows of output `(oh, ow)`: rows `h0..h1` and columns `w0..w1`, in dilation steps.
fn windows(g: &Pool2dGeom, oh: usize, ow: usize) -> ((usize, usize), (usize, usize)) {
    (
        window(oh, g.stride_h, g.pad_h, g.dilation_h, g.kernel_h, g.in_h),
        window(ow, g.stride_w, g.pad_w, g.dilation_w, g.kernel_w, g.in_w),
    )
}

fn plane_forward_scalar(g: &Pool2dGeom, x: &[f32], out: &mut [f32], idx: &mut [u32]) {
    for oh in 0..g.out_h {
        for ow in 0..g.out_w {
            let ((h0, h1), (w0, w1)) = windows(g, oh, ow);
            let mut best = [f32::NEG_INFINITY; LANES];
            let first = if h0 < h1 && w0 < w1 {
                (h0 * g.in_w + w0) as u32
            } else {
                NO_INDEX
            };
            let mut arg = [first; LANES];
            for ih in (h0..h1).step_by(g.dilation_h) {
                for iw in (w0..w1).step_by(g.dilation_w) {
                    let pos = ih * g.in_w + iw;
                    let v = &x[pos * LANES..][..LANES];
                    for l in 0..LANES {
                        if v[l] > best[l] || v[l].is_nan() {
                            best[l] = v[l];
                            arg[l] = pos as u32;
                        }
                    }
                }
            }
            let o = (oh * g.out_w + ow) * LANES;
            out[o..o + LANES].copy_from_slice(&best);
            idx[o..o + LANES].copy_from_slice(&arg);
        }
    }
}

/// [`plane_forward_scalar`] as vector compares and selects, for planes of fewer than 2^24
/// positions (when it saves them); `x` is one `[H][W][16]` plane of `g`, `out` and `idx` one
/// `[H_out][W_out][16]` plane.
struct PlaneForward<'a> {
    g: &'a Pool2dGeom,
    x: &'a [f32],
    out: &'a mut [f32],
    idx: Option<&'a mut [u32]>,
}

impl Kernel for PlaneForward<'_> {
    type Out = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, x, out, mut idx } = self;
        assert!(x.len() == g.in_h * g.in_w * LANES);
        assert!(out.len() == g.out_h * g.out_w * LANES);
        assert!(
            idx.as_ref()
                .is_none_or(|i| i.len() == out.len() && x.len() / LANES < F32_EXACT)
        );
        let with_idx = idx.is_some();
        let mut arg_f = [0.0f32; LANES];
        if is_plain_2x2(g) {
            // `MaxPool2d(2)`: every window is the full 2 × 2 block, so its four vectors are
            // fixed offsets (no window arithmetic per output; 3x faster on the seed's pools).
            let w = g.in_w;
            let offs = [0, LANES, w * LANES, (w + 1) * LANES];
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let p0 = 2 * oh * w + 2 * ow;
                    let pos = [p0, p0 + 1, p0 + w, p0 + w + 1];
                    let base = p0 * LANES;
                    let o = (oh * g.out_w + ow) * LANES;
                    for h in (0..LANES).step_by(S::LANES) {
                        // SAFETY: 2·oh + 1 < in_h and 2·ow + 1 < in_w (`is_plain_2x2`): the
                        // four window vectors are inside `x` (asserted length).
                        let mut best = unsafe { s.load(x.as_ptr().add(base + h)) };
                        let mut arg = s.splat(pos[0] as f32);
                        for k in 1..4 {
                            // SAFETY: as above.
                            let v = unsafe { s.load(x.as_ptr().add(base + offs[k] + h)) };
                            let take = s.or(s.gt(v, best), s.is_nan(v));
                            best = s.select(take, v, best);
                            if with_idx {
                                arg = s.select(take, s.splat(pos[k] as f32), arg);
                            }
                        }
                        // SAFETY: output vector (oh, ow) is inside `out` (asserted length);
                        // `h + S::LANES <= 16` fits `arg_f`.
                        unsafe {
                            s.store(out.as_mut_ptr().add(o + h), best);
                            s.store(arg_f.as_mut_ptr().add(h), arg);
                        }
                    }
                    if let Some(idx) = idx.as_deref_mut() {
                        for (d, &a) in idx[o..o + LANES].iter_mut().zip(&arg_f) {
                            *d = a as u32;
                        }
                    }
                }
            }
            return;
        }
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                let ((h0, h1), (w0, w1)) = windows(g, oh, ow);
                let o = (oh * g.out_w + ow) * LANES;
                for h in (0..LANES).step_by(S::LANES) {
                    let mut best = s.splat(f32::NEG_INFINITY);
                    let mut arg = s.splat(-1.0);
                    for ih in (h0..h1).step_by(g.dilation_h) {
                        for iw in (w0..w1).step_by(g.dilation_w) {
                            let pos = ih * g.in_w + iw;
                            // SAFETY: `window` keeps (ih, iw) inside the plane, so the slot
                            // vector `pos` is inside `x` (asserted length).
                            let v = unsafe { s.load(x.as_ptr().add(pos * LANES + h)) };
                            let take = s.or(s.gt(v, best), s.is_nan(v));
                            best = s.select(take, v, best);
                            if with_idx {
                                arg = s.select(take, s.splat(pos as f32), arg);
                            }
                        }
                    }
                    // SAFETY: output vector (oh, ow) is inside `out` (asserted length);
                    // `h + S::LANES <= 16` fits `arg_f`.
                    unsafe {
                        s.store(out.as_mut_ptr().add(o + h), best);
                        s.store(arg_f.as_mut_ptr().add(h), arg);
                    }
                }
                // The first maximum in window order wins; with no strict winner (all −∞),
                // the window's first position, and no position for an empty window.
                let first = if h0 < h1 && w0 < w1 {
                    (h0 * g.in_w + w0) as u32
                } else {
                    NO_INDEX
                };
                if let Some(idx) = idx.as_deref_mut() {
                    for (d, &a) in idx[o..o + LANES].iter_mut().zip(&arg_f) {
                        *d = if a < 0.0 { first } else { a as u32 };
                    }
                }
            }
        }
    }
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
    backward_with(g, slots, indices, relu_out, d_out, d_input, Isa::detect());
}

fn backward_with(
    g: &Pool2dGeom,
    slots: usize,
    indices: &[u32],
    relu_out: Option<&[f32]>,
    d_out: &[f32],
    d_input: &mut [f32],
    isa: Isa,
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
            if ihw < F32_EXACT {
                dispatch(isa, PlaneBackward { g, idx, y, dy, dx });
            } else {
                plane_backward_scalar(idx, y, dy, dx);
            }
        });
}

fn plane_backward_scalar(idx: &[u32], y: Option<&[f32]>, dy: &[f32], dx: &mut [f32]) {
    for (o, (iv, dv)) in idx
        .chunks_exact(LANES)
        .zip(dy.chunks_exact(LANES))
        .enumerate()
    {
        for l in 0..LANES {
            let i = iv[l];
            // `> 0` is false for NaN too: PyTorch's threshold_backward test.
            let blocked = y.is_some_and(|y| {
                y[o * LANES + l].partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            });
            if i == NO_INDEX || blocked {
                continue;
            }
            dx[i as usize * LANES + l] += dv[l];
        }
    }
}

/// [`plane_backward_scalar`] as vector selects and adds, for planes of fewer than 2^24
/// positions: per output vector, each window position adds the lanes whose saved argmax it
/// is. `idx`, `dy` (and `y`) are one `[H_out][W_out][16]` plane of `g`, `dx` one `[H][W][16]`
/// plane.
struct PlaneBackward<'a> {
    g: &'a Pool2dGeom,
    idx: &'a [u32],
    y: Option<&'a [f32]>,
    dy: &'a [f32],
    dx: &'a mut [f32],
}

impl Kernel for PlaneBackward<'_> {
    type Out = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let Self { g, idx, y, dy, dx } = self;
        let ohw = g.out_h * g.out_w;
        assert!(idx.len() == ohw * LANES && dy.len() == idx.len());
        assert!(y.is_none_or(|y| y.len() == idx.len()));
        assert!(dx.len() == g.in_h * g.in_w * LANES && dx.len() / LANES < F32_EXACT);
        let zero = s.zero();
        let mut idx_f = [0.0f32; LANES];
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                let ((h0, h1), (w0, w1)) = windows(g, oh, ow);
                let o = (oh * g.out_w + ow) * LANES;
                // NO_INDEX becomes 2^32, which matches no position below 2^24.
                for (d, &i) in idx_f.iter_mut().zip(&idx[o..o + LANES]) {
                    *d = i as f32;
                }
                for h in (0..LANES).step_by(S::LANES) {
                    // SAFETY: output vector (oh, ow) is inside `dy` and `y` (asserted), and
                    // `h + S::LANES <= 16` inside `idx_f`.
                    let (iv, mut dv) = unsafe {
                        (
                            s.load(idx_f.as_ptr().add(h)),
                            s.load(dy.as_ptr().add(o + h)),
                        )
                    };
                    if let Some(y) = y {
                        // SAFETY: as above. `> 0` is false for NaN: PyTorch's
                        // threshold_backward test.
                        let yv = unsafe { s.load(y.as_ptr().add(o + h)) };
                        dv = s.select(s.gt(yv, zero), dv, zero);
                    }
                    for ih in (h0..h1).step_by(g.dilation_h) {
                        for iw in (w0..w1).step_by(g.dilation_w) {
                            let pos = ih * g.in_w + iw;
                            let add = s.select(s.eq(iv, s.splat(pos as f32)), dv, zero);
                            // SAFETY: `window` keeps (ih, iw) inside the plane: the slot
                            // vector `pos` is inside `dx` (asserted length).
                            unsafe {
                                let p = dx.as_mut_ptr().add(pos * LANES + h);
                                s.store(p, s.add(s.load(p), add));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::{max_pool2d_backward, max_pool2d_relu_backward};
    use crate::kernels::max_pool2d_train_forward;
    use crate::kernels::testutil::{data, pool_out_size};
    use crate::lanes::{from_lanes, lane_slots, to_lanes};

    fn pool(
        c: usize,
        (h, w): (usize, usize),
        k: usize,
        s: usize,
        p: usize,
        d: usize,
    ) -> Pool2dGeom {
        let out = |i: usize| pool_out_size(i, k, s, p, d, false);
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
        for isa in Isa::available() {
            let mut yl = vec![f32::NAN; dyl.len()];
            let mut il = vec![7; dyl.len()];
            forward_with(&g, slots, &xl, &mut yl, &mut il, isa);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&images(&yl, g.out_len())),
                bits(&y),
                "{isa:?} {g:?} forward"
            );
            for relu in [false, true] {
                let mut dxl = vec![f32::NAN; xl.len()];
                let y = relu.then_some(&yl[..]);
                backward_with(&g, slots, &il, y, &dyl, &mut dxl, isa);
                let want = if relu { &dx_relu } else { &dx };
                assert_eq!(
                    bits(&images(&dxl, g.in_len())),
                    bits(want),
                    "{isa:?} {g:?} relu {relu}"
                );
            }
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
