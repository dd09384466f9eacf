//! Backward of `nn.Conv2d`, parallel over the batch, deterministic reduction.
//!
//! - Weight and bias gradient ([`LanePlan`]): 16 images per vector lane; each slot of 16 images
//!   accumulates `d_out · shifted input` in 4 × 4 register tiles over every output position,
//!   one kernel source for every ISA ([`crate::simd`]); slots are summed in order.
//! - Input gradient, stride 1: the forward convolution kernel ([`kernels::conv2d`]) run on
//!   `d_out` with the flipped, transposed weights, for the whole batch.
//! - Input gradient otherwise (strides, or a transposed padding that would be negative), per
//!   chunk of images with im2col + GEMM: usually `d_col = Wᵀ · d_out`, then col2im adds the
//!   columns back into `d_input`; stride 1 with fewer output than input channels:
//!   `d_input = Wᵀ_flipped · im2col(d_out)`. The same slots can also compute the weight gradient
//!   as `d_out · im2col(x)ᵀ` (the previous path, kept for comparison and tests).

use rayon::prelude::*;

use super::{Mat, gemm_f32};
use crate::geom::Conv2dGeom;
use crate::geom::valid_range;
use crate::kernels::{self, Isa};
use crate::lanes::{LANES, interleave};
use crate::util::check_len;

/// Output columns (images × output positions) per weight-gradient GEMM: big enough to keep the
/// GEMM efficient, small enough that the im2col buffer stays near the L2 cache.
const TARGET_COLS: usize = 256;
/// Im2col elements (128K floats, half of L2) worth gathering into one GEMM when rows are few.
const COL_BUDGET: usize = 1 << 17;
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
    p_out: usize,
    /// Input positions per image.
    p_in: usize,
    cin_g: usize,
    cout_g: usize,
    /// `kH · kW`.
    kk: usize,
    /// The input gradient is computed as a transposed convolution (stride 1).
    transposed: bool,
    /// The input gradient is the forward convolution kernel ([`kernels::conv2d`]) run on
    /// `d_out` with the flipped, transposed weights (geometry [`transposed_geom`]), over the
    /// whole batch, before the slots compute the weight gradient.
    fwd_dx: bool,
    /// Scratch of that forward convolution (0 unless `fwd_dx`).
    fwd_len: usize,
    /// The weight gradient is computed by [`lane_dw`] (images in vector lanes) with this
    /// instruction set; the GEMM slots then only compute the input gradient, if needed.
    lane: Option<LanePlan>,
    /// Length of the shared, flipped and transposed weights (0 unless `transposed` or
    /// `fwd_dx`).
    wt_len: usize,
    col_len: usize,
    /// Length of the zero-padded planes im2col copies from.
    pad_len: usize,
    /// Length of the regrouped `d_out` (0 when chunks are single images: no regrouping).
    dy_len: usize,
    per_slot: usize,
}

fn plan(g: &Conv2dGeom, batch: usize) -> Plan {
    plan_with(g, batch, true, Some(Isa::detect()))
}

/// [`plan`], optionally forbidding the forward-kernel input gradient and choosing the
/// lane weight gradient's instruction set, or the GEMM weight gradient with `None` (tests use
/// this to keep every path covered).
fn plan_with(g: &Conv2dGeom, batch: usize, allow_fwd_dx: bool, lane_isa: Option<Isa>) -> Plan {
    assert!(
        g.groups > 0
            && g.in_channels.is_multiple_of(g.groups)
            && g.out_channels.is_multiple_of(g.groups),
        "conv2d_backward: channels {}->{} are not multiples of groups {}",
        g.in_channels,
        g.out_channels,
        g.groups
    );
    assert!(
        g.stride_h > 0 && g.stride_w > 0 && g.dilation_h > 0 && g.dilation_w > 0,
        "conv2d_backward: stride and dilation must be positive"
    );
    let p_out = g.out_h * g.out_w;
    let p_in = g.in_h * g.in_w;
    let slots0 = batch.clamp(1, MAX_SLOTS);
    let imgs_per_slot = batch.div_ceil(slots0).max(1);
    let slots = batch.div_ceil(imgs_per_slot);
    let cin_g = g.in_channels / g.groups;
    let cout_g = g.out_channels / g.groups;
    let kk = g.kernel_h * g.kernel_w;
    // Enough columns for an efficient GEMM; more when the im2col matrix is short (few rows).
    let chunk = (TARGET_COLS / p_out.max(1))
        .max(COL_BUDGET / (cin_g * kk * p_out).max(1))
        .clamp(1, imgs_per_slot);
    // The transposed convolution unfolds `d_out` (C_out/g·kk rows) instead of scattering a
    // C_in/g·kk-row d_col back; it wins only when it has fewer rows (measured on the seed layers:
    // equal channel counts favour col2im slightly).
    let gt = transposed_geom(g);
    // The forward kernel's scratch must not depend on the pool size (it does only on its
    // packed path, for non-"same"-like grids), so that the scratch length is a function of the
    // geometry and the batch alone.
    let fwd_dx = allow_fwd_dx
        && gt.is_some_and(|gt| {
            kernels::conv2d_scratch_len(&gt, batch, 1) == kernels::conv2d_scratch_len(&gt, batch, 2)
        });
    let fwd_len = match gt {
        Some(gt) if fwd_dx => kernels::conv2d_scratch_len(&gt, batch, 1),
        _ => 0,
    };
    let transposed = !fwd_dx && g.stride_h == 1 && g.stride_w == 1 && cout_g < cin_g;
    let fwd_col = cin_g * kk * chunk * p_out;
    let col_len = if transposed {
        fwd_col.max(cout_g * kk * chunk * p_in)
    } else {
        fwd_col
    };
    let dy_len = if chunk > 1 {
        g.out_channels * chunk * p_out
    } else {
        0
    };
    let pad_len = Unfold::forward(g).pad_len(cin_g).max(if transposed {
        Unfold::transposed(g).pad_len(cout_g)
    } else {
        0
    });
    let per_slot = col_len + pad_len + dy_len + g.weight_len() + g.out_channels;
    let lane = lane_isa.map(|isa| LanePlan::new(g, batch, isa));
    Plan {
        imgs_per_slot,
        slots,
        chunk,
        p_out,
        p_in,
        cin_g,
        cout_g,
        kk,
        transposed,
        fwd_dx,
        fwd_len,
        lane,
        wt_len: if transposed || fwd_dx {
            g.weight_len()
        } else {
            0
        },
        col_len,
        pad_len,
        dy_len,
        per_slot,
    }
}

/// Sums the per-slot partial weight and bias gradients into `d_weight`/`d_bias` in slot order
/// (slot 0 copied, later slots added), so the result does not depend on the thread count. Each
/// part holds `wl` weight values followed by `cout` bias values.
fn reduce_slots<'a>(
    mut parts: impl Iterator<Item = &'a [f32]>,
    wl: usize,
    cout: usize,
    d_weight: &mut [f32],
    mut d_bias: Option<&mut [f32]>,
) {
    let first = parts.next().expect("batch > 0 gives one slot");
    d_weight.copy_from_slice(&first[..wl]);
    if let Some(db) = d_bias.as_deref_mut() {
        db.copy_from_slice(&first[wl..wl + cout]);
    }
    for part in parts {
        for (d, s) in d_weight.iter_mut().zip(&part[..wl]) {
            *d += s;
        }
        if let Some(db) = d_bias.as_deref_mut() {
            for (d, s) in db.iter_mut().zip(&part[wl..wl + cout]) {
                *d += s;
            }
        }
    }
}

/// Scratch elements [`conv2d_backward`] needs for `batch` images of geometry `g`.
///
/// Allocate it once per layer (or once for the largest layer: a longer buffer is fine) and reuse
/// it every step. It holds a rearranged copy of the weights and, for each of at most 8 batch
/// slices, an im2col matrix, the slice's output gradient regrouped for the GEMM, and a partial
/// weight/bias gradient.
pub fn conv2d_backward_scratch_len(g: &Conv2dGeom, batch: usize) -> usize {
    plan(g, batch).scratch_len()
}

impl Plan {
    fn scratch_len(&self) -> usize {
        let lane = self.lane.map_or(0, |l| l.slots * l.per_slot);
        self.wt_len + (self.slots * self.per_slot).max(self.fwd_len).max(lane)
    }
}

/// The geometry of the input gradient as a forward convolution of `d_out` (stride 1 only):
/// `C_out → C_in` channels over the output grid producing the input grid, kernel flipped, top/left
/// padding `(k−1)·d − pad`. `None` for strides, or when that padding would be negative.
fn transposed_geom(g: &Conv2dGeom) -> Option<Conv2dGeom> {
    if g.stride_h != 1 || g.stride_w != 1 || g.kernel_h == 0 || g.kernel_w == 0 {
        return None;
    }
    let pad_top = ((g.kernel_h - 1) * g.dilation_h).checked_sub(g.pad_top)?;
    let pad_left = ((g.kernel_w - 1) * g.dilation_w).checked_sub(g.pad_left)?;
    Some(Conv2dGeom {
        in_channels: g.out_channels,
        in_h: g.out_h,
        in_w: g.out_w,
        out_channels: g.in_channels,
        out_h: g.in_h,
        out_w: g.in_w,
        kernel_h: g.kernel_h,
        kernel_w: g.kernel_w,
        stride_h: 1,
        stride_w: 1,
        pad_top,
        pad_left,
        dilation_h: g.dilation_h,
        dilation_w: g.dilation_w,
        groups: g.groups,
    })
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
    backward_with(
        &plan(g, batch),
        g,
        batch,
        input,
        weight,
        d_out,
        d_input,
        d_weight,
        d_bias,
        scratch,
    );
}

/// [`conv2d_backward`] with a given plan.
#[expect(
    clippy::too_many_arguments,
    reason = "conv2d_backward's operands plus the plan"
)]
fn backward_with(
    pl: &Plan,
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    mut d_input: Option<&mut [f32]>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    let pl = *pl;
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
    let need = pl.scratch_len();
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
    let (wt, scratch) = scratch[..need].split_at_mut(pl.wt_len);
    if d_input.is_some() && (pl.transposed || pl.fwd_dx) {
        flip_transpose(g, &pl, weight, wt);
    }
    let wt = &*wt;
    if pl.fwd_dx
        && let Some(dx) = d_input.take()
    {
        let gt = transposed_geom(g).expect("fwd_dx implies a transposed geometry");
        kernels::conv2d(&gt, batch, d_out, wt, None, dx, &mut scratch[..pl.fwd_len]);
    }
    if let Some(lp) = &pl.lane {
        if let Some(dx) = d_input.take() {
            // Input gradient only, on the GEMM slots; the weight gradient follows.
            slot_pass(
                &pl,
                g,
                batch,
                input,
                weight,
                wt,
                d_out,
                Some(dx),
                false,
                scratch,
            );
        }
        lane_dw(lp, g, batch, input, d_out, d_weight, d_bias, scratch);
        return;
    }
    slot_pass(
        &pl, g, batch, input, weight, wt, d_out, d_input, true, scratch,
    );
    // Deterministic reduction: slot 0 first, then each later slot in order.
    let scratch = &scratch[..pl.slots * pl.per_slot];
    let part_off = pl.col_len + pl.pad_len + pl.dy_len;
    let wl = g.weight_len();
    reduce_slots(
        scratch.chunks(pl.per_slot).map(|sc| &sc[part_off..]),
        wl,
        g.out_channels,
        d_weight,
        d_bias,
    );
}

/// The GEMM slots in parallel: each computes its images' input gradient (if `d_input`) and,
/// with `do_dw`, leaves a partial weight and bias gradient in its part of `scratch`.
#[expect(clippy::too_many_arguments, reason = "the operands of conv2d_backward")]
fn slot_pass(
    pl: &Plan,
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    wt: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    do_dw: bool,
    scratch: &mut [f32],
) {
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let scratch = &mut scratch[..pl.slots * pl.per_slot];
    let ips = pl.imgs_per_slot;
    let work = |s: usize, sc: &mut [f32], dx: Option<&mut [f32]>| {
        let i0 = s * ips;
        let n = ips.min(batch - i0);
        let slot = Slot {
            g,
            pl,
            x: &input[i0 * in_len..(i0 + n) * in_len],
            w: weight,
            wt,
            dy: &d_out[i0 * out_len..(i0 + n) * out_len],
            do_dw,
        };
        slot.run(n, dx, sc);
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
}

/// `wt[grp][ci][co][kh][kw] = w[grp·C_out/g + co][ci][kH−1−kh][kW−1−kw]`: per group, the
/// `[C_in/g, C_out/g·kH·kW]` matrix of the transposed convolution.
fn flip_transpose(g: &Conv2dGeom, pl: &Plan, w: &[f32], wt: &mut [f32]) {
    let (cin_g, cout_g, kk) = (pl.cin_g, pl.cout_g, pl.kk);
    for grp in 0..g.groups {
        for ci in 0..cin_g {
            for co in 0..cout_g {
                let src = &w[((grp * cout_g + co) * cin_g + ci) * kk..][..kk];
                let dst = &mut wt[((grp * cin_g + ci) * cout_g + co) * kk..][..kk];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
}

/// The read-only operands of one slot.
struct Slot<'a> {
    g: &'a Conv2dGeom,
    pl: &'a Plan,
    x: &'a [f32],
    w: &'a [f32],
    wt: &'a [f32],
    dy: &'a [f32],
    /// Compute the partial weight and bias gradient (else only the input gradient).
    do_dw: bool,
}

impl Slot<'_> {
    /// Processes `n` images; leaves the slot's partial `d_weight`/`d_bias` at the end of `sc`.
    fn run(&self, n: usize, mut dx: Option<&mut [f32]>, sc: &mut [f32]) {
        let (g, pl) = (self.g, self.pl);
        let (col, rest) = sc.split_at_mut(pl.col_len);
        let (xp, rest) = rest.split_at_mut(pl.pad_len);
        let (dyg, part) = rest.split_at_mut(pl.dy_len);
        let (pw, pb) = part.split_at_mut(g.weight_len());
        let pb = &mut pb[..g.out_channels];
        pb.fill(0.0);
        if !pl.transposed
            && let Some(dx) = dx.as_deref_mut()
        {
            dx.fill(0.0);
        }
        let (p, kk, cout_g, cin_g) = (pl.p_out, pl.kk, pl.cout_g, pl.cin_g);
        let kg = cin_g * kk;
        let (in_len, out_len, hw) = (g.in_len(), g.out_len(), pl.p_in);
        let wg_len = cout_g * kg;
        let fwd = Unfold::forward(g);
        let tr = Unfold::transposed(g);
        for (ci, b0) in (0..n).step_by(pl.chunk).enumerate() {
            let nb = pl.chunk.min(n - b0);
            let cols = nb * p;
            // d_out for these images as a [C_out, nb·P] matrix: regrouped, or the image itself.
            let dyc: &[f32] = if nb == 1 {
                &self.dy[b0 * out_len..(b0 + 1) * out_len]
            } else {
                for b in 0..nb {
                    let src = &self.dy[(b0 + b) * out_len..(b0 + b + 1) * out_len];
                    for co in 0..g.out_channels {
                        copy_row(
                            &mut dyg[co * cols + b * p..co * cols + (b + 1) * p],
                            &src[co * p..(co + 1) * p],
                        );
                    }
                }
                &dyg[..g.out_channels * cols]
            };
            if self.do_dw {
                for (co, d) in pb.iter_mut().enumerate() {
                    *d += sum_row(&dyc[co * cols..(co + 1) * cols]);
                }
            }
            for grp in 0..g.groups {
                let dy_g = &dyc[grp * cout_g * cols..(grp + 1) * cout_g * cols];
                if self.do_dw {
                    for b in 0..nb {
                        let img = &self.x[(b0 + b) * in_len..(b0 + b + 1) * in_len];
                        let planes = &img[grp * cin_g * hw..(grp + 1) * cin_g * hw];
                        fwd.im2col(planes, cin_g, xp, col, cols, b * p);
                    }
                    // d_weight_g (+)= d_out_g [C_out_g, cols] · colᵀ [cols, kg]
                    gemm_f32(
                        &mut pw[grp * wg_len..(grp + 1) * wg_len],
                        Mat::row_major(cout_g, kg),
                        ci > 0,
                        dy_g,
                        Mat::row_major(cout_g, cols),
                        col,
                        Mat::transposed(cols, kg),
                    );
                }
                let Some(dx) = dx.as_deref_mut() else {
                    continue;
                };
                if pl.transposed {
                    // d_input_g [C_in_g, H·W] = Wt_g [C_in_g, C_out_g·kk] · im2col(d_out_g).
                    let cols_in = nb * hw;
                    for b in 0..nb {
                        let img = &self.dy[(b0 + b) * out_len..(b0 + b + 1) * out_len];
                        let planes = &img[grp * cout_g * p..(grp + 1) * cout_g * p];
                        tr.im2col(planes, cout_g, xp, col, cols_in, b * hw);
                    }
                    for b in 0..nb {
                        let dst = &mut dx[(b0 + b) * in_len + grp * cin_g * hw..][..cin_g * hw];
                        gemm_f32(
                            dst,
                            Mat::row_major(cin_g, hw),
                            false,
                            &self.wt[grp * wg_len..(grp + 1) * wg_len],
                            Mat::row_major(cin_g, cout_g * kk),
                            &col[b * hw..],
                            Mat {
                                rows: cout_g * kk,
                                cols: hw,
                                rs: cols_in,
                                cs: 1,
                            },
                        );
                    }
                } else {
                    // d_col [kg, cols] = W_gᵀ [kg, C_out_g] · d_out_g [C_out_g, cols]; reuses `col`.
                    gemm_f32(
                        col,
                        Mat::row_major(kg, cols),
                        false,
                        &self.w[grp * wg_len..(grp + 1) * wg_len],
                        Mat::transposed(kg, cout_g),
                        dy_g,
                        Mat::row_major(cout_g, cols),
                    );
                    for b in 0..nb {
                        let img = &mut dx[(b0 + b) * in_len..(b0 + b + 1) * in_len];
                        let planes = &mut img[grp * cin_g * hw..(grp + 1) * cin_g * hw];
                        fwd.col2im(planes, cin_g, col, cols, b * p);
                    }
                }
            }
        }
    }
}

mod lanes;
mod reference;
mod unfold;

#[cfg(test)]
mod tests;

use lanes::*;
pub use lanes::{
    conv2d_backward_lanes, conv2d_backward_lanes_scratch_len, lanes_input_grad_supported,
};
pub use reference::conv2d_backward_reference;
use unfold::*;
