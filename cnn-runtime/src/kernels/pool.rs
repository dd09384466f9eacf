//! Pooling: `nn.MaxPool2d` (also with argmax indices, for training), `nn.AvgPool2d`,
//! `nn.AdaptiveAvgPool2d`.
//!
//! Each image plane is independent; planes are spread over the current rayon pool in groups
//! large enough to be worth a task.

use rayon::prelude::*;

use super::Isa;
use crate::geom::{AdaptivePoolGeom, Pool2dGeom, is_plain_2x2, window};
use crate::util::check_len;

/// Runs `f(input_plane, output_plane)` for every plane, in parallel.
fn planes(
    input: &[f32],
    in_plane: usize,
    output: &mut [f32],
    out_plane: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    if output.is_empty() || out_plane == 0 {
        return;
    }
    let min = (1 << 14) / (in_plane + out_plane).max(1) + 1;
    output
        .par_chunks_mut(out_plane)
        .zip(input.par_chunks(in_plane.max(1)))
        .with_min_len(min)
        .for_each(|(y, x)| f(x, y));
}

/// PyTorch's max: a NaN anywhere in the window wins.
#[inline(always)]
fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() { v } else { m }
}

/// `nn.MaxPool2d` forward: the maximum of each window (dilation allowed); padded positions
/// count as −∞ and a NaN in the window makes the output NaN. `out_h`/`out_w` already include
/// `ceil_mode`.
///
/// # Panics
/// If a slice length does not match `g` and `batch`.
pub fn max_pool2d(g: &Pool2dGeom, batch: usize, input: &[f32], output: &mut [f32]) {
    max_pool2d_with(g, batch, input, output, Isa::detect());
}

/// [`max_pool2d`] with a forced instruction set (`isa` must be available).
fn max_pool2d_with(g: &Pool2dGeom, batch: usize, input: &[f32], output: &mut [f32], isa: Isa) {
    assert!(
        isa.is_available(),
        "max_pool2d: {isa:?} is not supported by this CPU"
    );
    check_len("max_pool2d input", input.len(), batch * g.in_len());
    check_len("max_pool2d output", output.len(), batch * g.out_len());
    let (ih, iw, oh_n, ow_n) = (g.in_h, g.in_w, g.out_h, g.out_w);
    let simple_2x2 = g.kernel_h == 2
        && g.kernel_w == 2
        && g.stride_h == 2
        && g.stride_w == 2
        && g.pad_h == 0
        && g.pad_w == 0
        && g.dilation_h == 1
        && g.dilation_w == 1
        && 2 * oh_n <= ih
        && 2 * ow_n <= iw;
    if simple_2x2 {
        planes(input, ih * iw, output, oh_n * ow_n, |x, y| {
            for (oh, yrow) in y.chunks_exact_mut(ow_n).enumerate() {
                let r0 = &x[2 * oh * iw..][..2 * ow_n];
                let r1 = &x[(2 * oh + 1) * iw..][..2 * ow_n];
                crate::simd::dispatch(isa, Max2x2Row { r0, r1, y: yrow });
            }
        });
        return;
    }
    planes(input, ih * iw, output, oh_n * ow_n, |x, y| {
        for oh in 0..oh_n {
            let h0 = (oh * g.stride_h) as isize - g.pad_h as isize;
            for ow in 0..ow_n {
                let w0 = (ow * g.stride_w) as isize - g.pad_w as isize;
                let mut m = f32::NEG_INFINITY;
                for kh in 0..g.kernel_h {
                    let h = h0 + (kh * g.dilation_h) as isize;
                    if h < 0 || h >= ih as isize {
                        continue;
                    }
                    let row = &x[h as usize * iw..][..iw];
                    for kw in 0..g.kernel_w {
                        let w = w0 + (kw * g.dilation_w) as isize;
                        if w >= 0 && w < iw as isize {
                            m = nan_max(m, row[w as usize]);
                        }
                    }
                }
                y[oh * ow_n + ow] = m;
            }
        }
    });
}

/// One output row of a 2×2, stride-2 max pool: `y[i] = max(r0[2i], r0[2i+1], r1[2i], r1[2i+1])`
/// in that order with PyTorch's rule (a greater value or a NaN takes over), `LANES` outputs per
/// step from the even and odd columns of two vectors of each row; the last partial step reads
/// with masked loads. One source for every instruction set.
struct Max2x2Row<'a> {
    r0: &'a [f32],
    r1: &'a [f32],
    y: &'a mut [f32],
}

impl crate::simd::Kernel for Max2x2Row<'_> {
    type Out = ();

    #[inline(always)]
    fn run<S: crate::simd::Simd>(self, s: S) {
        let Self { r0, r1, y } = self;
        assert!(r0.len() >= 2 * y.len() && r1.len() >= 2 * y.len());
        let l = S::LANES;
        let mut i = 0;
        while i < y.len() {
            let n = (y.len() - i).min(l);
            // SAFETY: elements `2i .. 2i + 2n` of `r0` / `r1` are inside the slices (asserted
            // above).
            let [e0, o0, e1, o1] =
                unsafe { window_2x2(s, r0.as_ptr().add(2 * i), r1.as_ptr().add(2 * i), n) };
            let m = vnan_max(s, vnan_max(s, vnan_max(s, e0, o0), e1), o1);
            // SAFETY: lanes `0..n` are outputs `i .. i + n` of `y`.
            unsafe { s.store_mask(y.as_mut_ptr().add(i), s.mask(((1u64 << n) - 1) as u32), m) };
            i += n;
        }
    }
}

/// The four candidates of `n ≤ LANES` consecutive 2 × 2 windows in window order — the even and
/// the odd columns of the top row `pa`, then of the bottom row `pb` — read with masked loads
/// (`2n` floats from each row). Shared by the inference and training 2 × 2 pools.
///
/// # Safety
/// `pa .. pa + 2n` and `pb .. pb + 2n` must be readable; masked-off lanes are not accessed.
#[inline(always)]
pub(crate) unsafe fn window_2x2<S: crate::simd::Simd>(
    s: S,
    pa: *const f32,
    pb: *const f32,
    n: usize,
) -> [S::V; 4] {
    let l = S::LANES;
    let lo = s.mask(((1u64 << (2 * n).min(l)) - 1) as u32);
    let hi = s.mask(((1u64 << (2 * n).saturating_sub(l)) - 1) as u32);
    // SAFETY: the masks select elements `0 .. 2n` of each row (caller); `wrapping_add` because
    // the second vector's address may lie past the row when its mask is empty.
    let (a0, a1, b0, b1) = unsafe {
        (
            s.load_mask(pa, lo),
            s.load_mask(pa.wrapping_add(l), hi),
            s.load_mask(pb, lo),
            s.load_mask(pb.wrapping_add(l), hi),
        )
    };
    let (e0, o0) = s.deinterleave(a0, a1);
    let (e1, o1) = s.deinterleave(b0, b1);
    [e0, o0, e1, o1]
}

/// [`nan_max`] per lane: `max(v, m)` is `v > m ? v : m`; NaN lanes of `v` are then copied over
/// (NaN lanes of `m` already survive). A function, not a closure: closures do not inherit the
/// caller's target features.
#[inline(always)]
fn vnan_max<S: crate::simd::Simd>(s: S, m: S::V, v: S::V) -> S::V {
    s.select(s.is_nan(v), v, s.max(v, m))
}

/// `nn.AvgPool2d` forward (`dilation` must be 1). The divisor follows PyTorch: the window is
/// first clipped to the padded input (`pool_size`), then to the input; the divisor is
/// `pool_size` with `count_include_pad`, else the clipped window's size.
///
/// # Panics
/// If a slice length does not match `g` and `batch`.
pub fn avg_pool2d(g: &Pool2dGeom, batch: usize, input: &[f32], output: &mut [f32]) {
    check_len("avg_pool2d input", input.len(), batch * g.in_len());
    check_len("avg_pool2d output", output.len(), batch * g.out_len());
    let (ih, iw, oh_n, ow_n) = (g.in_h, g.in_w, g.out_h, g.out_w);
    planes(input, ih * iw, output, oh_n * ow_n, |x, y| {
        for oh in 0..oh_n {
            let (h0, h1, ph) = avg_window(oh, g.stride_h, g.pad_h, g.kernel_h, ih);
            for ow in 0..ow_n {
                let (w0, w1, pw) = avg_window(ow, g.stride_w, g.pad_w, g.kernel_w, iw);
                let mut s = 0.0f32;
                for h in h0..h1 {
                    s += x[h * iw + w0..h * iw + w1.max(w0)].iter().sum::<f32>();
                }
                let div = if g.count_include_pad {
                    (ph * pw) as f32
                } else {
                    (h1.saturating_sub(h0) * w1.saturating_sub(w0)) as f32
                };
                y[oh * ow_n + ow] = s / div;
            }
        }
    });
}

/// PyTorch's average-pooling window along one axis for output `o`: the clipped input range
/// `start..end` (empty when the window lies in padding) and `pool_size`, the window's extent
/// within the padded input, which is the divisor when `count_include_pad` is set
/// (`hend = min(hstart + k, len + pad)`; `pool_size = hend − hstart` before clipping).
/// Shared by the forward and backward kernels.
pub(crate) fn avg_window(
    o: usize,
    stride: usize,
    pad: usize,
    k: usize,
    len: usize,
) -> (usize, usize, isize) {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + k as isize).min((len + pad) as isize);
    let (lo, hi) = (start.max(0), end.min(len as isize));
    (lo as usize, hi.max(lo) as usize, end - start)
}

/// `nn.AdaptiveAvgPool2d` forward: output cell `i` averages input
/// `floor(i·in/out) .. ceil((i+1)·in/out)` along each side.
///
/// # Panics
/// If a slice length does not match `g` and `batch`, or an output side is zero while the
/// input side is not.
pub fn adaptive_avg_pool2d(g: &AdaptivePoolGeom, batch: usize, input: &[f32], output: &mut [f32]) {
    let (ih, iw, oh_n, ow_n) = (g.in_h, g.in_w, g.out_h, g.out_w);
    check_len(
        "adaptive_avg_pool2d input",
        input.len(),
        batch * g.channels * ih * iw,
    );
    check_len(
        "adaptive_avg_pool2d output",
        output.len(),
        batch * g.channels * oh_n * ow_n,
    );
    planes(input, ih * iw, output, oh_n * ow_n, |x, y| {
        for oh in 0..oh_n {
            let h0 = oh * ih / oh_n;
            let h1 = ((oh + 1) * ih).div_ceil(oh_n);
            for ow in 0..ow_n {
                let w0 = ow * iw / ow_n;
                let w1 = ((ow + 1) * iw).div_ceil(ow_n);
                let mut s = 0.0f32;
                for h in h0..h1 {
                    s += x[h * iw + w0..h * iw + w1].iter().sum::<f32>();
                }
                y[oh * ow_n + ow] = s / ((h1 - h0) * (w1 - w0)) as f32;
            }
        }
    });
}

/// Index value for an output whose window holds no input position (cannot happen for a
/// geometry PyTorch accepts); its gradient is dropped.
pub(crate) const NO_INDEX: u32 = u32::MAX;

/// Training forward of `nn.MaxPool2d` (PyTorch `max_pool2d_with_indices`).
///
/// Writes `output` `[batch, C, H_out, W_out]` and, for each output, `indices` (same shape): the
/// position `ih·W + iw` of its maximum inside its own input plane, as PyTorch returns them.
/// Padding counts as `-inf`; ties keep the first maximum in window order (row-major); a NaN
/// wins over any number, and a later NaN over an earlier one, as in PyTorch's CPU kernel.
/// Dilation, padding and `ceil_mode`-shaped outputs (`out_h`/`out_w` from the checker) are
/// supported. Parallel over planes; deterministic.
///
/// # Panics
/// If a slice length disagrees with `g` and `batch`, or a plane has more than `u32::MAX - 1`
/// positions.
pub fn max_pool2d_train_forward(
    g: &Pool2dGeom,
    batch: usize,
    input: &[f32],
    output: &mut [f32],
    indices: &mut [u32],
) {
    max_pool2d_train_forward_with(g, batch, input, output, indices, Some(Isa::detect()));
}

/// [`max_pool2d_train_forward`] with a chosen instruction set for the 2 × 2 vector kernel, or
/// `None` for the scalar loops only (the reference the tests compare with).
pub(crate) fn max_pool2d_train_forward_with(
    g: &Pool2dGeom,
    batch: usize,
    input: &[f32],
    output: &mut [f32],
    indices: &mut [u32],
    isa: Option<Isa>,
) {
    let (ihw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
    check_len(
        "max_pool2d_train_forward input",
        input.len(),
        batch * g.in_len(),
    );
    check_len(
        "max_pool2d_train_forward output",
        output.len(),
        batch * g.out_len(),
    );
    check_len(
        "max_pool2d_train_forward indices",
        indices.len(),
        batch * g.out_len(),
    );
    assert!(
        ihw < NO_INDEX as usize,
        "max_pool2d: plane too large for u32 indices"
    );
    if ohw == 0 || ihw == 0 {
        output.fill(f32::NEG_INFINITY);
        indices.fill(NO_INDEX);
        return;
    }
    let hr: Vec<(usize, usize)> = (0..g.out_h)
        .map(|o| window(o, g.stride_h, g.pad_h, g.dilation_h, g.kernel_h, g.in_h))
        .collect();
    let wr: Vec<(usize, usize)> = (0..g.out_w)
        .map(|o| window(o, g.stride_w, g.pad_w, g.dilation_w, g.kernel_w, g.in_w))
        .collect();
    output
        .par_chunks_mut(ohw)
        .zip(indices.par_chunks_mut(ohw))
        .zip(input.par_chunks(ihw))
        .for_each(|((out, idx), x)| {
            if let Some(isa) = isa.filter(|_| is_plain_2x2(g)) {
                let k = MaxPlane2x2 {
                    x,
                    in_w: g.in_w,
                    out_h: g.out_h,
                    out_w: g.out_w,
                    out,
                    idx,
                };
                crate::simd::dispatch(isa, k);
                return;
            }
            if g.dilation_h == 1 && g.dilation_w == 1 {
                max_plane_dense(x, g.in_w, &hr, &wr, out, idx);
                return;
            }
            for (oh, &(h0, h1)) in hr.iter().enumerate() {
                for (ow, &(w0, w1)) in wr.iter().enumerate() {
                    let mut best = f32::NEG_INFINITY;
                    let mut arg = if h0 < h1 && w0 < w1 {
                        (h0 * g.in_w + w0) as u32
                    } else {
                        NO_INDEX
                    };
                    for ih in (h0..h1).step_by(g.dilation_h) {
                        for iw in (w0..w1).step_by(g.dilation_w) {
                            let v = x[ih * g.in_w + iw];
                            if v > best || v.is_nan() {
                                best = v;
                                arg = (ih * g.in_w + iw) as u32;
                            }
                        }
                    }
                    out[oh * g.out_w + ow] = best;
                    idx[oh * g.out_w + ow] = arg;
                }
            }
        });
}

/// One plane of a plain 2 × 2 max pool ([`is_plain_2x2`]), `LANES` outputs at a time, one
/// source for every instruction set: the two input rows are split into even and odd columns
/// and the four candidates compared in window order with the scalar rules (a greater value or
/// any NaN takes over), as vector selects, so random data costs no mispredicted branches. `x`
/// holds one `[in_h, in_w]` plane with `in_h >= 2·out_h` and `in_w >= 2·out_w`; `out` and
/// `idx` hold `out_h · out_w` values.
struct MaxPlane2x2<'a> {
    x: &'a [f32],
    in_w: usize,
    out_h: usize,
    out_w: usize,
    out: &'a mut [f32],
    idx: &'a mut [u32],
}

impl crate::simd::Kernel for MaxPlane2x2<'_> {
    type Out = ();

    #[inline(always)]
    fn run<S: crate::simd::Simd>(self, s: S) {
        let Self {
            x,
            in_w,
            out_h,
            out_w,
            out,
            idx,
        } = self;
        assert!(x.len() >= 2 * out_h * in_w && in_w >= 2 * out_w);
        assert!(out.len() == out_h * out_w && idx.len() == out_h * out_w);
        assert!(x.len() < u32::MAX as usize);
        let l = S::LANES;
        let offs = [0, 1, in_w, in_w + 1];
        let mut won = [0.0f32; 16];
        for oh in 0..out_h {
            let row_a = 2 * oh * in_w;
            let mut ow = 0;
            while ow < out_w {
                let n = (out_w - ow).min(l);
                let pa = x.as_ptr().wrapping_add(row_a + 2 * ow);
                let pb = pa.wrapping_add(in_w);
                // SAFETY: columns 2·ow .. 2·(ow + n) <= 2·out_w <= in_w of rows 2·oh and
                // 2·oh + 1 < 2·out_h are inside `x` (asserted above).
                let [e0, o0, e1, o1] = unsafe { window_2x2(s, pa, pb, n) };
                let mut best = e0;
                let mut k = s.zero();
                for (c, kk) in [(o0, 1.0), (e1, 2.0), (o1, 3.0)] {
                    let take = s.or(s.gt(c, best), s.is_nan(c));
                    best = s.select(take, c, best);
                    k = s.select(take, s.splat(kk), k);
                }
                let o = oh * out_w + ow;
                // SAFETY: outputs o .. o + n of this plane exist (`out` holds out_h·out_w);
                // lanes past n are masked off. `won` holds 16 >= LANES floats.
                unsafe {
                    s.store_mask(
                        out.as_mut_ptr().add(o),
                        s.mask(((1u64 << n) - 1) as u32),
                        best,
                    );
                    s.store(won.as_mut_ptr(), k);
                }
                for (j, (d, &w)) in idx[o..o + n].iter_mut().zip(&won).enumerate() {
                    *d = (row_a + 2 * (ow + j) + offs[w as usize]) as u32;
                }
                ow += n;
            }
        }
    }
}

/// One plane of [`max_pool2d_train_forward`] for dilation 1: the same scan over plain ranges
/// (the general loop's `step_by` divides per window, which cost more than the compares).
fn max_plane_dense(
    x: &[f32],
    in_w: usize,
    hr: &[(usize, usize)],
    wr: &[(usize, usize)],
    out: &mut [f32],
    idx: &mut [u32],
) {
    let rows = out
        .chunks_exact_mut(wr.len())
        .zip(idx.chunks_exact_mut(wr.len()));
    for ((orow, irow), &(h0, h1)) in rows.zip(hr) {
        for ((o, i), &(w0, w1)) in orow.iter_mut().zip(irow.iter_mut()).zip(wr) {
            let mut best = f32::NEG_INFINITY;
            if h1 - h0 == 2 && w1 - w0 == 2 {
                // The usual full 2 × 2 window, unrolled (same order and rules as below).
                let (a, b) = (h0 * in_w + w0, (h0 + 1) * in_w + w0);
                let mut arg = a;
                for j in [a, a + 1, b, b + 1] {
                    let v = x[j];
                    if v > best || v.is_nan() {
                        best = v;
                        arg = j;
                    }
                }
                *o = best;
                *i = arg as u32;
                continue;
            }
            let mut arg = if h0 < h1 && w0 < w1 {
                (h0 * in_w + w0) as u32
            } else {
                NO_INDEX
            };
            for ih in h0..h1 {
                let base = ih * in_w;
                for (iw, &v) in x[base + w0..base + w1].iter().enumerate() {
                    if v > best || v.is_nan() {
                        best = v;
                        arg = (base + w0 + iw) as u32;
                    }
                }
            }
            *o = best;
            *i = arg;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::reference;
    use crate::kernels::testutil::{assert_close, data};

    use crate::kernels::testutil::pool_out_size as out_size;

    #[expect(
        clippy::too_many_arguments,
        reason = "test helper mirroring nn.MaxPool2d"
    )]
    fn geom(
        c: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
        (dh, dw): (usize, usize),
        ceil: bool,
        include_pad: bool,
    ) -> Pool2dGeom {
        Pool2dGeom {
            channels: c,
            in_h: h,
            in_w: w,
            out_h: out_size(h, kh, sh, ph, dh, ceil),
            out_w: out_size(w, kw, sw, pw, dw, ceil),
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            pad_h: ph,
            pad_w: pw,
            dilation_h: dh,
            dilation_w: dw,
            count_include_pad: include_pad,
        }
    }

    fn check_max(g: &Pool2dGeom, batch: usize, x: &[f32]) {
        let mut want = vec![0.0; batch * g.out_len()];
        reference::max_pool2d(g, batch, x, &mut want);
        for isa in Isa::available() {
            let mut got = vec![0.0; batch * g.out_len()];
            max_pool2d_with(g, batch, x, &mut got, isa);
            assert_close(&got, &want, 1, &format!("max_pool2d {g:?} {isa:?}"));
        }
    }

    fn check_avg(g: &Pool2dGeom, batch: usize) {
        let x = data(batch * g.in_len(), 13);
        let mut want = vec![0.0; batch * g.out_len()];
        reference::avg_pool2d(g, batch, &x, &mut want);
        let mut got = vec![0.0; batch * g.out_len()];
        avg_pool2d(g, batch, &x, &mut got);
        assert_close(&got, &want, 1, &format!("avg_pool2d {g:?}"));
    }

    #[test]
    fn seed_max_pools() {
        for (c, h) in [(16, 28), (32, 14)] {
            let g = geom(c, (h, h), (2, 2), (2, 2), (0, 0), (1, 1), false, false);
            check_max(&g, 3, &data(3 * g.in_len(), 12));
        }
    }

    #[test]
    fn max_pool_odd_padded_dilated_ceil() {
        let g = geom(2, (7, 7), (2, 2), (2, 2), (0, 0), (1, 1), true, false);
        assert_eq!(g.out_h, 4);
        check_max(&g, 2, &data(2 * g.in_len(), 1));
        let g = geom(3, (9, 8), (3, 3), (2, 1), (1, 1), (2, 1), true, false);
        check_max(&g, 2, &data(2 * g.in_len(), 2));
    }

    #[test]
    fn max_pool_dilated_2x2_is_not_the_plain_2x2() {
        // Found by proptest: the 2×2/stride-2 fast path must not take dilated windows.
        let g = geom(1, (3, 2), (2, 2), (2, 2), (0, 0), (2, 1), false, false);
        check_max(&g, 1, &data(g.in_len(), 5));
    }

    #[test]
    fn max_pool_propagates_nan() {
        let g = geom(1, (4, 4), (2, 2), (2, 2), (0, 0), (1, 1), false, false);
        let mut x = data(16, 3);
        x[5] = f32::NAN; // window (0, 0), not its first element
        x[10] = f32::NAN; // window (1, 1)
        let mut y = vec![0.0; 4];
        max_pool2d(&g, 1, &x, &mut y);
        assert!(y[0].is_nan() && y[3].is_nan());
        assert!(!y[1].is_nan() && !y[2].is_nan());
        let g = geom(1, (4, 4), (3, 3), (1, 1), (1, 1), (1, 1), false, false);
        check_max(&g, 1, &x);
        // Wide rows (SIMD steps of 16 outputs plus a tail), NaN in each window position.
        let g = geom(2, (6, 42), (2, 2), (2, 2), (0, 0), (1, 1), false, false);
        let mut x = data(2 * g.in_len(), 4);
        for (i, at) in [0usize, 1, 42, 43, 2 * 42 + 30, 2 * 42 + 42 + 33, 252 + 41]
            .iter()
            .enumerate()
        {
            x[at + i % 2 * 252] = f32::NAN;
        }
        check_max(&g, 2, &x);
    }

    #[test]
    fn avg_pool_divisors() {
        for include in [false, true] {
            check_avg(
                &geom(2, (5, 5), (3, 3), (2, 2), (1, 1), (1, 1), true, include),
                2,
            );
            check_avg(
                &geom(2, (6, 7), (2, 3), (2, 2), (1, 1), (1, 1), false, include),
                1,
            );
            check_avg(
                &geom(1, (4, 4), (4, 4), (1, 1), (0, 0), (1, 1), false, include),
                1,
            );
        }
    }

    #[test]
    fn avg_pool_ceil_window_past_padding() {
        // The last window runs past the padded input: PyTorch clips pool_size to it.
        let g = geom(1, (6, 6), (3, 3), (2, 2), (1, 1), (1, 1), true, true);
        assert_eq!(g.out_h, 4);
        check_avg(&g, 1);
        let x = vec![1.0; 36];
        let mut y = vec![0.0; 16];
        avg_pool2d(&g, 1, &x, &mut y);
        // Corner (0,0): window rows -1..2 → 4 real of 9 → 4/9.
        assert!((y[0] - 4.0 / 9.0).abs() < 1e-6);
        // Last window: rows 5..8 clipped to 5..7 (pool 2), real 5..6 (1): 1/(2·2).
        assert!((y[15] - 0.25).abs() < 1e-6);
    }

    #[test]
    fn adaptive() {
        for (h, w, oh, ow) in [(7, 7, 1, 1), (10, 9, 3, 4), (5, 5, 5, 5), (3, 2, 6, 5)] {
            let g = AdaptivePoolGeom {
                channels: 3,
                in_h: h,
                in_w: w,
                out_h: oh,
                out_w: ow,
            };
            let x = data(2 * 3 * h * w, 14);
            let mut want = vec![0.0; 2 * 3 * oh * ow];
            reference::adaptive_avg_pool2d(&g, 2, &x, &mut want);
            let mut got = vec![0.0; want.len()];
            adaptive_avg_pool2d(&g, 2, &x, &mut got);
            assert_close(&got, &want, 1, "adaptive_avg_pool2d");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn pools_match_reference(
            c in 1usize..4, h in 1usize..12, w in 1usize..12, kh in 1usize..4, kw in 1usize..4,
            sh in 1usize..4, sw in 1usize..4, ph in 0usize..2, pw in 0usize..2,
            dh in 1usize..3, dw in 1usize..3, ceil in any::<bool>(), inc in any::<bool>(),
            n in 1usize..3,
        ) {
            // PyTorch requires pad <= kernel/2 and a window that fits the padded input.
            prop_assume!(2 * ph <= kh && 2 * pw <= kw);
            prop_assume!(h + 2 * ph > dh * (kh - 1) && w + 2 * pw > dw * (kw - 1));
            let g = geom(c, (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil, inc);
            check_max(&g, n, &data(n * g.in_len(), 15));
            prop_assume!(h + 2 * ph >= kh && w + 2 * pw >= kw);
            let g = geom(c, (h, w), (kh, kw), (sh, sw), (ph, pw), (1, 1), ceil, inc);
            check_avg(&g, n);
        }
    }
}
