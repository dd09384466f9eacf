//! Backward of `nn.Conv2d`: im2col + GEMM, parallel over the batch, deterministic reduction.

use rayon::prelude::*;

use super::{Mat, check_len, gemm_f32};
use crate::geom::Conv2dGeom;

/// Columns (images × output positions) per GEMM: big enough to keep the GEMM efficient, small
/// enough that one group's im2col buffer stays near the L2 cache.
const TARGET_COLS: usize = 512;
/// Most pieces the batch is split into. Fixed (not the thread count) so results are identical
/// for any pool size; each piece owns a slice of the scratch buffer.
const MAX_SLOTS: usize = 8;

/// How a batch is cut into slots (parallel pieces) and chunks (images per GEMM).
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Images handled by each slot (the last may have fewer).
    imgs_per_slot: usize,
    /// Number of slots.
    slots: usize,
    /// Images per GEMM inside a slot (the last chunk may have fewer).
    chunk: usize,
    /// Output positions per image.
    p: usize,
    cin_g: usize,
    cout_g: usize,
    /// Rows of one group's im2col matrix: `C_in/groups · kH · kW`.
    kg: usize,
    col_len: usize,
    dy_len: usize,
    per_slot: usize,
}

fn plan(g: &Conv2dGeom, batch: usize) -> Plan {
    assert!(
        g.groups > 0 && g.in_channels % g.groups == 0 && g.out_channels % g.groups == 0,
        "conv2d_backward: channels {}->{} are not multiples of groups {}",
        g.in_channels,
        g.out_channels,
        g.groups
    );
    assert!(
        g.stride_h > 0 && g.stride_w > 0 && g.dilation_h > 0 && g.dilation_w > 0,
        "conv2d_backward: stride and dilation must be positive"
    );
    let p = g.out_h * g.out_w;
    let slots0 = batch.min(MAX_SLOTS).max(1);
    let imgs_per_slot = batch.div_ceil(slots0).max(1);
    let slots = batch.div_ceil(imgs_per_slot);
    let chunk = (TARGET_COLS / p.max(1)).clamp(1, imgs_per_slot);
    let cin_g = g.in_channels / g.groups;
    let cout_g = g.out_channels / g.groups;
    let kg = cin_g * g.kernel_h * g.kernel_w;
    let col_len = kg * chunk * p;
    let dy_len = g.out_channels * chunk * p;
    let per_slot = col_len + dy_len + g.weight_len() + g.out_channels;
    Plan {
        imgs_per_slot,
        slots,
        chunk,
        p,
        cin_g,
        cout_g,
        kg,
        col_len,
        dy_len,
        per_slot,
    }
}

/// Scratch elements [`conv2d_backward`] needs for `batch` images of geometry `g`.
///
/// Allocate it once per layer (or once for the largest layer: a longer buffer is fine) and reuse
/// it every step. It holds, for each of at most 8 batch slices, one group's im2col matrix, the
/// slice's output gradient regrouped for the GEMM, and a partial weight/bias gradient.
pub fn conv2d_backward_scratch_len(g: &Conv2dGeom, batch: usize) -> usize {
    let pl = plan(g, batch);
    pl.slots * pl.per_slot
}

/// Backward of `nn.Conv2d` (PyTorch `convolution_backward`) for a batch.
///
/// - `input` `[batch, C_in, H, W]` and `weight` `[C_out, C_in/groups, kH, kW]` are the forward's
///   operands; `d_out` `[batch, C_out, H_out, W_out]` is the gradient of the loss w.r.t. its output.
/// - `d_input` (same shape as `input`; `None` for a first layer, which needs none),
///   `d_weight` (same shape as `weight`) and `d_bias` (`[C_out]`; `None` without a bias) are
///   **overwritten**.
/// - `scratch` has at least [`conv2d_backward_scratch_len`]`(g, batch)` elements; its contents on
///   entry and exit are unspecified.
///
/// Stride, top/left padding (bottom/right implied by `out_h`/`out_w`), dilation and groups are
/// all supported. The batch is split into at most 8 slices processed in parallel on the current
/// rayon pool; each slice sums its weight gradient into its own part of `scratch` and the slices
/// are added in order, so the result is bit-identical whatever the number of threads.
///
/// # Panics
/// If a slice length disagrees with `g` and `batch`, or `g` is inconsistent (channels not a
/// multiple of `groups`, zero stride or dilation).
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the operands of the PyTorch op"
)]
pub fn conv2d_backward(
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    let pl = plan(g, batch);
    let (in_len, out_len) = (g.in_len(), g.out_len());
    check_len("conv2d_backward input", input.len(), batch * in_len);
    check_len("conv2d_backward weight", weight.len(), g.weight_len());
    check_len("conv2d_backward d_out", d_out.len(), batch * out_len);
    if let Some(dx) = &d_input {
        check_len("conv2d_backward d_input", dx.len(), batch * in_len);
    }
    check_len("conv2d_backward d_weight", d_weight.len(), g.weight_len());
    if let Some(db) = &d_bias {
        check_len("conv2d_backward d_bias", db.len(), g.out_channels);
    }
    let need = pl.slots * pl.per_slot;
    assert!(
        scratch.len() >= need,
        "conv2d_backward scratch: slice has {} elements, needs at least {need}",
        scratch.len()
    );
    if batch == 0 || in_len == 0 || out_len == 0 {
        d_weight.fill(0.0);
        if let Some(db) = d_bias {
            db.fill(0.0);
        }
        if let Some(dx) = d_input {
            dx.fill(0.0);
        }
        return;
    }
    let scratch = &mut scratch[..need];
    let ips = pl.imgs_per_slot;
    let work = |s: usize, sc: &mut [f32], dx: Option<&mut [f32]>| {
        let i0 = s * ips;
        let n = ips.min(batch - i0);
        slot_backward(
            g,
            &pl,
            n,
            &input[i0 * in_len..(i0 + n) * in_len],
            weight,
            &d_out[i0 * out_len..(i0 + n) * out_len],
            dx,
            sc,
        );
    };
    match d_input {
        Some(dx) => scratch
            .par_chunks_mut(pl.per_slot)
            .zip(dx.par_chunks_mut(ips * in_len))
            .enumerate()
            .for_each(|(s, (sc, dx))| work(s, sc, Some(dx))),
        None => scratch
            .par_chunks_mut(pl.per_slot)
            .enumerate()
            .for_each(|(s, sc)| work(s, sc, None)),
    }
    // Deterministic reduction: slot 0 first, then each later slot in order.
    let part_off = pl.col_len + pl.dy_len;
    let wl = g.weight_len();
    let mut slots = scratch.chunks(pl.per_slot).map(|sc| &sc[part_off..]);
    let first = slots.next().expect("batch > 0 gives one slot");
    d_weight.copy_from_slice(&first[..wl]);
    let mut db = d_bias;
    if let Some(db) = db.as_deref_mut() {
        db.copy_from_slice(&first[wl..wl + g.out_channels]);
    }
    for part in slots {
        for (d, s) in d_weight.iter_mut().zip(&part[..wl]) {
            *d += s;
        }
        if let Some(db) = db.as_deref_mut() {
            for (d, s) in db.iter_mut().zip(&part[wl..wl + g.out_channels]) {
                *d += s;
            }
        }
    }
}

/// One slot: `n` images. Leaves the slot's partial `d_weight`/`d_bias` at the end of `sc`.
#[expect(clippy::too_many_arguments, reason = "internal; one slot's slices")]
fn slot_backward(
    g: &Conv2dGeom,
    pl: &Plan,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    sc: &mut [f32],
) {
    let (col, rest) = sc.split_at_mut(pl.col_len);
    let (dyg, part) = rest.split_at_mut(pl.dy_len);
    let (pw, pb) = part.split_at_mut(g.weight_len());
    let pb = &mut pb[..g.out_channels];
    pb.fill(0.0);
    if let Some(dx) = dx.as_deref_mut() {
        dx.fill(0.0);
    }
    let (p, kg, cout_g, cin_g) = (pl.p, pl.kg, pl.cout_g, pl.cin_g);
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let wg_len = cout_g * kg;
    for (ci, b0) in (0..n).step_by(pl.chunk).enumerate() {
        let nb = pl.chunk.min(n - b0);
        let cols = nb * p;
        // Regroup d_out for these images as a [C_out, nb·P] matrix.
        for b in 0..nb {
            let src = &dy[(b0 + b) * out_len..(b0 + b + 1) * out_len];
            for co in 0..g.out_channels {
                dyg[co * cols + b * p..co * cols + (b + 1) * p]
                    .copy_from_slice(&src[co * p..(co + 1) * p]);
            }
        }
        for (co, d) in pb.iter_mut().enumerate() {
            *d += dyg[co * cols..(co + 1) * cols].iter().sum::<f32>();
        }
        for grp in 0..g.groups {
            for b in 0..nb {
                let img = &x[(b0 + b) * in_len..(b0 + b + 1) * in_len];
                im2col(g, img, grp * cin_g, cin_g, col, cols, b * p);
            }
            let dyg_g = &dyg[grp * cout_g * cols..(grp + 1) * cout_g * cols];
            // d_weight_g (+)= d_out_g [C_out_g, cols] · colᵀ [cols, kg]
            gemm_f32(
                &mut pw[grp * wg_len..(grp + 1) * wg_len],
                Mat::row_major(cout_g, kg),
                ci > 0,
                dyg_g,
                Mat::row_major(cout_g, cols),
                col,
                Mat::transposed(cols, kg),
            );
            if let Some(dx) = dx.as_deref_mut() {
                // d_col [kg, cols] = W_gᵀ [kg, C_out_g] · d_out_g [C_out_g, cols]; reuses `col`.
                gemm_f32(
                    col,
                    Mat::row_major(kg, cols),
                    false,
                    &w[grp * wg_len..(grp + 1) * wg_len],
                    Mat::transposed(kg, cout_g),
                    dyg_g,
                    Mat::row_major(cout_g, cols),
                );
                for b in 0..nb {
                    let img = &mut dx[(b0 + b) * in_len..(b0 + b + 1) * in_len];
                    col2im(g, img, grp * cin_g, cin_g, col, cols, b * p);
                }
            }
        }
    }
    if n == 0 {
        pw.fill(0.0);
    }
}

/// Output positions `o < out` whose input coordinate `o·stride + off − pad` lies in `0..len`,
/// as a half-open range.
fn valid_range(out: usize, stride: usize, off: usize, pad: usize, len: usize) -> (usize, usize) {
    let lo = if off >= pad {
        0
    } else {
        (pad - off).div_ceil(stride)
    };
    let hi = if pad + len <= off {
        0
    } else {
        (pad + len - off).div_ceil(stride)
    };
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// Writes the im2col rows of channels `c0..c0+cin_g` of one image into `col` (row stride `ld`,
/// starting at column `off`): row `(ci·kH + kh)·kW + kw`, column `oh·W_out + ow` holds
/// `x[c0+ci, oh·sh + kh·dh − pt, ow·sw + kw·dw − pl]`, zero outside the image.
fn im2col(
    g: &Conv2dGeom,
    img: &[f32],
    c0: usize,
    cin_g: usize,
    col: &mut [f32],
    ld: usize,
    off: usize,
) {
    let (hw, ow_n) = (g.in_h * g.in_w, g.out_w);
    let p = g.out_h * ow_n;
    for ci in 0..cin_g {
        let plane = &img[(c0 + ci) * hw..(c0 + ci + 1) * hw];
        for kh in 0..g.kernel_h {
            let (h_lo, h_hi) =
                valid_range(g.out_h, g.stride_h, kh * g.dilation_h, g.pad_top, g.in_h);
            for kw in 0..g.kernel_w {
                let (w_lo, w_hi) =
                    valid_range(ow_n, g.stride_w, kw * g.dilation_w, g.pad_left, g.in_w);
                let row = (ci * g.kernel_h + kh) * g.kernel_w + kw;
                let dst = &mut col[row * ld + off..row * ld + off + p];
                dst[..h_lo * ow_n].fill(0.0);
                dst[h_hi * ow_n..].fill(0.0);
                for oh in h_lo..h_hi {
                    let ih = oh * g.stride_h + kh * g.dilation_h - g.pad_top;
                    let d = &mut dst[oh * ow_n..(oh + 1) * ow_n];
                    d[..w_lo].fill(0.0);
                    d[w_hi..].fill(0.0);
                    if w_lo == w_hi {
                        continue;
                    }
                    let src = &plane[ih * g.in_w..(ih + 1) * g.in_w];
                    let iw0 = w_lo * g.stride_w + kw * g.dilation_w - g.pad_left;
                    if g.stride_w == 1 {
                        d[w_lo..w_hi].copy_from_slice(&src[iw0..iw0 + (w_hi - w_lo)]);
                    } else {
                        for (j, v) in d[w_lo..w_hi].iter_mut().enumerate() {
                            *v = src[iw0 + j * g.stride_w];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back into the image position it came from.
fn col2im(
    g: &Conv2dGeom,
    img: &mut [f32],
    c0: usize,
    cin_g: usize,
    col: &[f32],
    ld: usize,
    off: usize,
) {
    let (hw, ow_n) = (g.in_h * g.in_w, g.out_w);
    let p = g.out_h * ow_n;
    for ci in 0..cin_g {
        let plane = &mut img[(c0 + ci) * hw..(c0 + ci + 1) * hw];
        for kh in 0..g.kernel_h {
            let (h_lo, h_hi) =
                valid_range(g.out_h, g.stride_h, kh * g.dilation_h, g.pad_top, g.in_h);
            for kw in 0..g.kernel_w {
                let (w_lo, w_hi) =
                    valid_range(ow_n, g.stride_w, kw * g.dilation_w, g.pad_left, g.in_w);
                if w_lo == w_hi {
                    continue;
                }
                let row = (ci * g.kernel_h + kh) * g.kernel_w + kw;
                let srcrow = &col[row * ld + off..row * ld + off + p];
                for oh in h_lo..h_hi {
                    let ih = oh * g.stride_h + kh * g.dilation_h - g.pad_top;
                    let s = &srcrow[oh * ow_n + w_lo..oh * ow_n + w_hi];
                    let dst = &mut plane[ih * g.in_w..(ih + 1) * g.in_w];
                    let iw0 = w_lo * g.stride_w + kw * g.dilation_w - g.pad_left;
                    if g.stride_w == 1 {
                        for (d, v) in dst[iw0..iw0 + s.len()].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (j, v) in s.iter().enumerate() {
                            dst[iw0 + j * g.stride_w] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Direct-loop backward of `nn.Conv2d`, single-threaded, accumulating in `f64`: the slow, obvious
/// version of [`conv2d_backward`] (same arguments and overwrite semantics, no scratch), kept as
/// the reference for tests and benchmarks.
#[expect(clippy::too_many_arguments, reason = "mirrors conv2d_backward")]
pub fn conv2d_backward_reference(
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
) {
    let pl = plan(g, batch);
    check_len(
        "conv2d_backward_reference input",
        input.len(),
        batch * g.in_len(),
    );
    check_len(
        "conv2d_backward_reference weight",
        weight.len(),
        g.weight_len(),
    );
    check_len(
        "conv2d_backward_reference d_out",
        d_out.len(),
        batch * g.out_len(),
    );
    check_len(
        "conv2d_backward_reference d_weight",
        d_weight.len(),
        g.weight_len(),
    );
    let mut dx = vec![0.0f64; batch * g.in_len()];
    let mut dw = vec![0.0f64; g.weight_len()];
    let mut db = vec![0.0f64; g.out_channels];
    for n in 0..batch {
        for co in 0..g.out_channels {
            let grp = co / pl.cout_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let gy =
                        f64::from(d_out[((n * g.out_channels + co) * g.out_h + oh) * g.out_w + ow]);
                    db[co] += gy;
                    for ci in 0..pl.cin_g {
                        let c = grp * pl.cin_g + ci;
                        for kh in 0..g.kernel_h {
                            let ih =
                                (oh * g.stride_h + kh * g.dilation_h) as isize - g.pad_top as isize;
                            if ih < 0 || ih >= g.in_h as isize {
                                continue;
                            }
                            for kw in 0..g.kernel_w {
                                let iw = (ow * g.stride_w + kw * g.dilation_w) as isize
                                    - g.pad_left as isize;
                                if iw < 0 || iw >= g.in_w as isize {
                                    continue;
                                }
                                let xi = ((n * g.in_channels + c) * g.in_h + ih as usize) * g.in_w
                                    + iw as usize;
                                let wi = ((co * pl.cin_g + ci) * g.kernel_h + kh) * g.kernel_w + kw;
                                dw[wi] += gy * f64::from(input[xi]);
                                dx[xi] += gy * f64::from(weight[wi]);
                            }
                        }
                    }
                }
            }
        }
    }
    for (d, s) in d_weight.iter_mut().zip(&dw) {
        *d = *s as f32;
    }
    if let Some(d) = d_bias {
        check_len("conv2d_backward_reference d_bias", d.len(), g.out_channels);
        for (d, s) in d.iter_mut().zip(&db) {
            *d = *s as f32;
        }
    }
    if let Some(d) = d_input {
        check_len(
            "conv2d_backward_reference d_input",
            d.len(),
            batch * g.in_len(),
        );
        for (d, s) in d.iter_mut().zip(&dx) {
            *d = *s as f32;
        }
    }
}

#[cfg(test)]
mod tests {
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
                                    acc += x[((n * g.in_channels + c) * g.in_h + ih as usize)
                                        * g.in_w
                                        + iw as usize]
                                        * w[((co * cin_g + ci) * g.kernel_h + kh) * g.kernel_w
                                            + kw];
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
        let out = |i: usize, k: usize, s: usize, p: usize, d: usize| {
            (i + 2 * p - d * (k - 1) - 1) / s + 1
        };
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
        // The weight-only path (first layer) gives the same weight gradient.
        let mut dw2 = vec![f32::NAN; w.len()];
        conv2d_backward(g, batch, &x, &w, &r, None, &mut dw2, None, &mut scratch);
        assert_eq!(dw, dw2);
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
    #[should_panic(
        expected = "conv2d_backward d_out: slice has 15 elements, the geometry needs 16"
    )]
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
}
