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

/// Output channels per register tile of the lane weight gradient.
const LR: usize = 4;
/// Kernel taps per register tile (`LR × LT` accumulators, `LR + LT` loads per output position;
/// 4 × 5 was measured slower: LLVM spilled its 20 accumulators).
const LT: usize = 4;
const _: () = assert!(LT == 4, "tile_dispatch instantiates T = 1..=4");
/// Output positions per band of the lane weight gradient: the band's `d_out` (`LR` channels,
/// 32 KiB) and input rows stay in L1 while every tap group sweeps them. Chosen by timing the
/// seed's 14 × 14 weight gradients on one thread (commit b07152f): 86 nominal GFLOP/s
/// unbanded, 94 / 110 / 116 / 120 / 101 with bands of 32 / 64 / 96 / 128 / 160 positions.
const BAND_POSITIONS: usize = 128;

/// The weight gradient with images in vector lanes: each slot takes 16 images, copies its
/// input zero-padded as `[C_in/g][Hp][Wp][16]` and its `d_out` as `[C_out/g][P][16]`, and
/// accumulates `d_w[co][ci][tap] = Σ_{p, image} d_out[co][p] · x[ci][p·stride + tap]` in
/// register tiles of 4 output channels × 4 taps, one vector of 16 images per accumulator,
/// over every output position; nothing is unfolded (every tap is one shifted load), and no
/// lane is wasted on padding columns. Slots hold 16 images each (a function of the batch only)
/// and are reduced in order.
#[derive(Debug, Clone, Copy)]
struct LanePlan {
    isa: Isa,
    slots: usize,
    /// Padded plane of the input copy (`Unfold::forward(g).padded_dims()`).
    hp: usize,
    wp: usize,
    xt_len: usize,
    dyt_len: usize,
    per_slot: usize,
}

impl LanePlan {
    fn new(g: &Conv2dGeom, batch: usize, isa: Isa) -> Self {
        let cin_g = g.in_channels / g.groups;
        let cout_g = g.out_channels / g.groups;
        let fwd = Unfold::forward(g);
        let (hp, wp) = if fwd.pad_len(1) == 0 {
            (0, 0)
        } else {
            fwd.padded_dims()
        };
        let xt_len = cin_g * hp * wp * LANES;
        let dyt_len = cout_g * g.out_h * g.out_w * LANES;
        Self {
            isa,
            slots: batch.div_ceil(LANES).max(1),
            hp,
            wp,
            xt_len,
            dyt_len,
            // + LANES: room to start the copies on a 64-byte boundary (full-line vector loads).
            per_slot: LANES + xt_len + dyt_len + g.weight_len() + g.out_channels,
        }
    }
}

/// Output-grid walk shared by the tile kernels: output rows `oh0..oh1` (a band), every column.
#[derive(Clone, Copy)]
struct TileGeom {
    oh0: usize,
    oh1: usize,
    out_h: usize,
    out_w: usize,
    sh: usize,
    sw: usize,
    wp: usize,
    /// Output positions (`out_h · out_w`): the row stride of the `d_out` copy, in vectors.
    p: usize,
}

/// Weight and bias gradient of the whole batch through [`LanePlan`] slots, in parallel.
#[expect(clippy::too_many_arguments, reason = "the operands of conv2d_backward")]
fn lane_dw(
    lp: &LanePlan,
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    d_out: &[f32],
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let scratch = &mut scratch[..lp.slots * lp.per_slot];
    scratch
        .par_chunks_mut(lp.per_slot)
        .enumerate()
        .for_each(|(s, sc)| {
            let i0 = s * LANES;
            let n = LANES.min(batch - i0);
            let src = LaneSrc::Images {
                n,
                x: &input[i0 * in_len..(i0 + n) * in_len],
                dy: &d_out[i0 * out_len..(i0 + n) * out_len],
            };
            lane_slot(lp, g, src, sc);
        });
    // Deterministic reduction: slot 0 first, then each later slot in order.
    let part_off = LANES + lp.xt_len + lp.dyt_len;
    let wl = g.weight_len();
    reduce_slots(
        scratch.chunks(lp.per_slot).map(|sc| &sc[part_off..]),
        wl,
        g.out_channels,
        d_weight,
        d_bias,
    );
}

impl LanePlan {
    /// The plan for `slots` slots of lane tensors: no `d_out` copy (it is read in place).
    fn for_lanes(g: &Conv2dGeom, slots: usize, isa: Isa) -> Self {
        let mut lp = LanePlan::new(g, slots * LANES, isa);
        lp.dyt_len = 0;
        lp.per_slot = LANES + lp.xt_len + g.weight_len() + g.out_channels;
        lp
    }
}

/// Whether [`conv2d_backward_lanes`] can compute this convolution's input gradient (stride 1
/// and a padding of at most the kernel's reach, so the input gradient is a forward
/// convolution of `d_out`); the weight gradient is always available.
pub fn lanes_input_grad_supported(g: &Conv2dGeom) -> bool {
    transposed_geom(g).is_some_and(|gt| crate::lanes::conv2d_lanes_usable(&gt))
}

/// Scratch elements [`conv2d_backward_lanes`] needs for `slots` slots.
pub fn conv2d_backward_lanes_scratch_len(g: &Conv2dGeom, slots: usize) -> usize {
    let lp = LanePlan::for_lanes(g, slots, Isa::Portable);
    let dx = transposed_geom(g).map_or(0, |gt| {
        g.weight_len() + crate::lanes::conv2d_lanes_scratch_len(&gt)
    });
    (lp.slots * lp.per_slot).max(dx)
}

/// Backward of `nn.Conv2d` on lane tensors (16 images per vector, see [`crate::lanes`]):
/// `input` `[slots][C_in][H][W][16]`, `d_out` `[slots][C_out][H_out][W_out][16]` (zero in the
/// lanes of missing images), `d_input` like `input`; gradients overwritten as in
/// [`conv2d_backward`]. The input gradient is [`crate::lanes::conv2d_lanes`] on `d_out` with
/// the flipped, transposed weights; the weight gradient is the lane weight gradient reading
/// the lane tensors directly (no interleaving). Deterministic for any thread count.
///
/// # Panics
/// If a slice length disagrees with `g` and `slots`, or `d_input` is asked
/// for a geometry [`lanes_input_grad_supported`] rejects.
#[expect(clippy::too_many_arguments, reason = "the operands of conv2d_backward")]
pub fn conv2d_backward_lanes(
    g: &Conv2dGeom,
    slots: usize,
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    conv2d_backward_lanes_with(
        Isa::detect(),
        g,
        slots,
        input,
        weight,
        d_out,
        d_input,
        d_weight,
        d_bias,
        scratch,
    );
}

/// [`conv2d_backward_lanes`] with the instruction set chosen by the caller (tests run each).
#[expect(
    clippy::too_many_arguments,
    reason = "the operands of conv2d_backward and the ISA"
)]
pub(crate) fn conv2d_backward_lanes_with(
    isa: Isa,
    g: &Conv2dGeom,
    slots: usize,
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
    scratch: &mut [f32],
) {
    let (in_l, out_l) = (g.in_len() * LANES, g.out_len() * LANES);
    check_len("conv2d_backward_lanes input", input.len(), slots * in_l);
    check_len("conv2d_backward_lanes weight", weight.len(), g.weight_len());
    check_len("conv2d_backward_lanes d_out", d_out.len(), slots * out_l);
    check_len(
        "conv2d_backward_lanes d_weight",
        d_weight.len(),
        g.weight_len(),
    );
    if let Some(db) = &d_bias {
        check_len("conv2d_backward_lanes d_bias", db.len(), g.out_channels);
    }
    let need = conv2d_backward_lanes_scratch_len(g, slots);
    assert!(
        scratch.len() >= need,
        "conv2d_backward_lanes scratch: {} < {need}",
        scratch.len()
    );
    if let Some(dx) = d_input {
        check_len("conv2d_backward_lanes d_input", dx.len(), slots * in_l);
        let gt = transposed_geom(g).expect("conv2d_backward_lanes: input gradient unsupported");
        let pl = plan_with(g, 1, false, None);
        let (wt, rest) = scratch.split_at_mut(g.weight_len());
        flip_transpose(g, &pl, weight, wt);
        crate::lanes::conv2d_lanes_with(
            isa,
            &gt,
            slots,
            d_out,
            wt,
            None,
            kernels::Activation::Identity,
            dx,
            rest,
        );
    }
    if slots == 0 || g.in_len() == 0 || g.out_len() == 0 {
        d_weight.fill(0.0);
        if let Some(db) = d_bias {
            db.fill(0.0);
        }
        return;
    }
    let lp = LanePlan::for_lanes(g, slots, isa);
    let scratch = &mut scratch[..lp.slots * lp.per_slot];
    scratch
        .par_chunks_mut(lp.per_slot)
        .enumerate()
        .for_each(|(s, sc)| {
            let src = LaneSrc::Lanes {
                x: &input[s * in_l..][..in_l],
                dy: &d_out[s * out_l..][..out_l],
            };
            lane_slot(&lp, g, src, sc);
        });
    let part_off = LANES + lp.xt_len;
    reduce_slots(
        scratch.chunks(lp.per_slot).map(|sc| &sc[part_off..]),
        g.weight_len(),
        g.out_channels,
        d_weight,
        d_bias,
    );
}

/// The operands of one slot of [`lane_slot`].
#[derive(Clone, Copy)]
enum LaneSrc<'a> {
    /// `n ≤ 16` images, NCHW: interleaved into the slot's scratch.
    Images {
        n: usize,
        x: &'a [f32],
        dy: &'a [f32],
    },
    /// A slot of lane tensors (`[C][H][W][16]`, see [`crate::lanes`]): the input rows are
    /// copied into the zero-padded scratch planes, `d_out` is read in place.
    Lanes { x: &'a [f32], dy: &'a [f32] },
}

/// One slot of at most 16 images: overwrites its partial `d_weight`/`d_bias` at the end of `sc`.
fn lane_slot(lp: &LanePlan, g: &Conv2dGeom, src: LaneSrc, sc: &mut [f32]) {
    // Align the copies to 64 bytes; the partial gradients stay at a fixed offset (`LANES`
    // floats past the copies, see `lane_dw`), so the skipped prefix goes at the end.
    let skip = sc.as_ptr().align_offset(64).min(LANES);
    let (sc, tail) = sc.split_at_mut(LANES + lp.xt_len + lp.dyt_len);
    let (xt, rest) = sc[skip..].split_at_mut(lp.xt_len);
    let (dyt, _) = rest.split_at_mut(lp.dyt_len);
    let part = tail;
    let (pw, pb) = part.split_at_mut(g.weight_len());
    let pb = &mut pb[..g.out_channels];
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let p = g.out_h * g.out_w;
    let hw = g.in_h * g.in_w;
    let cin_g = g.in_channels / g.groups;
    let cout_g = g.out_channels / g.groups;
    let kk = g.kernel_h * g.kernel_w;
    for (co, d) in pb.iter_mut().enumerate() {
        *d = 0.0;
        match src {
            LaneSrc::Images { n, dy, .. } => {
                for b in 0..n {
                    *d += sum_row(&dy[b * out_len + co * p..][..p]);
                }
            }
            // Lanes of missing images hold zero gradients.
            LaneSrc::Lanes { dy, .. } => *d = sum_row(&dy[co * p * LANES..][..p * LANES]),
        }
    }
    if lp.hp == 0 || kk == 0 {
        pw.fill(0.0);
        return;
    }
    let (hp, wp) = (lp.hp, lp.wp);
    let fwd = Unfold::forward(g);
    // Source columns that land in the padded row: padded column `c` holds source `c − pad_w`.
    let c_lo = (fwd.pad_w.max(0) as usize).min(lp.wp);
    let first_src = (-fwd.pad_w).max(0) as usize;
    let n_cols = g
        .in_w
        .saturating_sub(first_src)
        .min(wp.saturating_sub(c_lo));
    let geo = TileGeom {
        oh0: 0,
        oh1: g.out_h,
        out_h: g.out_h,
        out_w: g.out_w,
        sh: g.stride_h,
        sw: g.stride_w,
        wp,
        p,
    };
    for grp in 0..g.groups {
        let mut rows: [&[f32]; LANES] = [&[]; LANES];
        for c in 0..cin_g {
            for r in 0..hp {
                // Zero only the padding; `interleave` writes (and zero-fills missing lanes of)
                // the columns copied from the input.
                let prow = &mut xt[(c * hp + r) * wp * LANES..][..wp * LANES];
                let sr = r as isize - fwd.pad_h;
                if sr < 0 || sr >= g.in_h as isize {
                    prow.fill(0.0);
                    continue;
                }
                prow[..c_lo * LANES].fill(0.0);
                prow[(c_lo + n_cols) * LANES..].fill(0.0);
                let dst = &mut xt[((c * hp + r) * wp + c_lo) * LANES..][..n_cols * LANES];
                let col = sr as usize * g.in_w + first_src;
                match src {
                    LaneSrc::Images { n, x, .. } => {
                        for (b, row) in rows[..n].iter_mut().enumerate() {
                            let plane = &x[b * in_len + (grp * cin_g + c) * hw..][..hw];
                            *row = &plane[col..][..n_cols];
                        }
                        interleave(lp.isa, &rows[..n], dst);
                    }
                    LaneSrc::Lanes { x, .. } => dst.copy_from_slice(
                        &x[((grp * cin_g + c) * hw + col) * LANES..][..n_cols * LANES],
                    ),
                }
            }
        }
        let dyt: &[f32] = match src {
            LaneSrc::Images { n, dy, .. } => {
                for co in 0..cout_g {
                    for (b, row) in rows[..n].iter_mut().enumerate() {
                        *row = &dy[b * out_len + (grp * cout_g + co) * p..][..p];
                    }
                    interleave(lp.isa, &rows[..n], &mut dyt[co * p * LANES..][..p * LANES]);
                }
                dyt
            }
            LaneSrc::Lanes { dy, .. } => &dy[grp * cout_g * p * LANES..][..cout_g * p * LANES],
        };
        // Output rows per band: the band's d_out rows of LR channels (LR · positions vectors)
        // stay in L1 while every tap group sweeps them.
        let band = (BAND_POSITIONS / g.out_w.max(1)).clamp(1, g.out_h.max(1));
        for ci in 0..cin_g {
            let xpl = &xt[ci * hp * wp * LANES..][..hp * wp * LANES];
            for co0 in (0..cout_g).step_by(LR) {
                let rows = LR.min(cout_g - co0);
                for r in 0..rows {
                    pw[((grp * cout_g + co0 + r) * cin_g + ci) * kk..][..kk].fill(0.0);
                }
                for oh0 in (0..g.out_h).step_by(band) {
                    let geo = TileGeom {
                        oh0,
                        oh1: (oh0 + band).min(g.out_h),
                        ..geo
                    };
                    for t0 in (0..kk).step_by(LT) {
                        let nt = LT.min(kk - t0);
                        let mut offs = [0usize; LT];
                        for (t, o) in offs[..nt].iter_mut().enumerate() {
                            let tap = t0 + t;
                            *o = (tap / g.kernel_w) * g.dilation_h * wp
                                + (tap % g.kernel_w) * g.dilation_w;
                        }
                        // Output rows where some tap of the group reads a real input row
                        // (the others read the copy's zero rows): skip the rest of the band.
                        // (A kernel row further down has a range no later: the union of
                        // the group's rows runs from its last row's start to its first row's
                        // end.)
                        let rows_of = |kh: usize| {
                            let (pad, off) = (g.pad_top as isize, kh * g.dilation_h);
                            valid_range(g.out_h, g.stride_h, off, pad, g.in_h)
                        };
                        let (lo, hi) = (
                            rows_of((t0 + nt - 1) / g.kernel_w).0,
                            rows_of(t0 / g.kernel_w).1,
                        );
                        let geo = TileGeom {
                            oh0: geo.oh0.max(lo),
                            oh1: geo.oh1.min(hi),
                            ..geo
                        };
                        if geo.oh0 >= geo.oh1 {
                            continue;
                        }
                        let mut out = [[0.0f32; LT]; LR];
                        if rows == LR {
                            tile_dispatch::<LR>(
                                lp.isa,
                                nt,
                                &dyt[co0 * p * LANES..(co0 + LR) * p * LANES],
                                xpl,
                                &offs,
                                &geo,
                                &mut out,
                            );
                        } else {
                            for r in 0..rows {
                                let (one, _) = out[r..].split_at_mut(1);
                                tile_dispatch::<1>(
                                    lp.isa,
                                    nt,
                                    &dyt[(co0 + r) * p * LANES..(co0 + r + 1) * p * LANES],
                                    xpl,
                                    &offs,
                                    &geo,
                                    one.try_into().expect("one row"),
                                );
                            }
                        }
                        for (r, o) in out[..rows].iter().enumerate() {
                            let dst = &mut pw[((grp * cout_g + co0 + r) * cin_g + ci) * kk + t0..];
                            for (d, v) in dst[..nt].iter_mut().zip(o) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Runs the `R × nt` tile kernel for the instruction set, after checking every load it will
/// make lies inside `dy` and `x`.
fn tile_dispatch<const R: usize>(
    isa: Isa,
    nt: usize,
    dy: &[f32],
    x: &[f32],
    offs: &[usize; LT],
    geo: &TileGeom,
    out: &mut [[f32; LT]; R],
) {
    assert!(geo.oh0 < geo.oh1 && geo.oh1 <= geo.out_h && geo.out_w > 0 && (1..=LT).contains(&nt));
    assert!(
        dy.len() >= R * geo.p * LANES,
        "lane dw: d_out rows out of bounds"
    );
    let last = ((geo.oh1 - 1) * geo.sh * geo.wp
        + (geo.out_w - 1) * geo.sw
        + offs[..nt].iter().copied().max().unwrap_or(0))
        * LANES
        + LANES;
    assert!(last <= x.len(), "lane dw: input window out of bounds");
    *out = crate::simd::dispatch(
        isa,
        DwTile {
            nt,
            dy,
            x,
            offs,
            geo,
        },
    );
}

/// One `R × nt` weight-gradient tile (`R` = 1 or [`LR`]), as a [`crate::simd::Kernel`]; the
/// caller ([`tile_dispatch`]) has checked that every load is in bounds.
struct DwTile<'a, const R: usize> {
    nt: usize,
    dy: &'a [f32],
    x: &'a [f32],
    offs: &'a [usize; LT],
    geo: &'a TileGeom,
}

impl<const R: usize> crate::simd::Kernel for DwTile<'_, R> {
    type Out = [[f32; LT]; R];

    #[inline(always)]
    fn run<S: crate::simd::Simd>(self, s: S) -> [[f32; LT]; R] {
        let mut out = [[0.0f32; LT]; R];
        // R·T accumulators plus R d_out vectors and one input vector must fit the register
        // file: 4 × 4 on 32 registers; with 16, four rows go in two passes of two.
        let pass = if S::REGS >= 32 || R == 1 { R } else { 2 };
        for r0 in (0..R).step_by(pass) {
            let dy = &self.dy[r0 * self.geo.p * LANES..];
            macro_rules! run {
                ($r:literal, $t:literal) => {{
                    let v: [[f32; $t]; $r] =
                        // SAFETY: `tile_dispatch` checked the loads of rows `0..R` and taps
                        // `0..nt`; this pass reads rows `r0..r0 + $r` and taps `0..$t`.
                        unsafe { dw_tile::<S, $r, $t>(s, dy, self.x, self.offs, self.geo) };
                    for (o, v) in out[r0..].iter_mut().zip(&v) {
                        o[..$t].copy_from_slice(v);
                    }
                }};
            }
            match (pass, self.nt) {
                (4, 1) => run!(4, 1),
                (4, 2) => run!(4, 2),
                (4, 3) => run!(4, 3),
                (4, _) => run!(4, 4),
                (2, 1) => run!(2, 1),
                (2, 2) => run!(2, 2),
                (2, 3) => run!(2, 3),
                (2, _) => run!(2, 4),
                (_, 1) => run!(1, 1),
                (_, 2) => run!(1, 2),
                (_, 3) => run!(1, 3),
                (_, _) => run!(1, 4),
            }
        }
        out
    }
}

/// `out[r][t] = Σ_{position, lane} dy[r][position][lane] · x[window(position) + offs[t]][lane]`
/// with the 16 lanes of a slot as `16 / S::LANES` vectors summed into one accumulator per
/// (row, tap), reduced across lanes at the end.
///
/// # Safety
/// Every load (`dy[r·P·16 + q·16..][..16]` for `r < R`, `x[(window + offs[t])·16..][..16]` for
/// `t < T`) must be in bounds.
#[inline(always)]
unsafe fn dw_tile<S: crate::simd::Simd, const R: usize, const T: usize>(
    s: S,
    dy: &[f32],
    x: &[f32],
    offs: &[usize; LT],
    geo: &TileGeom,
) -> [[f32; T]; R] {
    let mut acc = [[s.zero(); T]; R];
    let mut ol = [0usize; T];
    for (o, s) in ol.iter_mut().zip(offs) {
        *o = s * LANES;
    }
    let rs = geo.p * LANES;
    let (dp, xp) = (dy.as_ptr(), x.as_ptr());
    let mut qo = geo.oh0 * geo.out_w * LANES;
    for oh in geo.oh0..geo.oh1 {
        let xrow = oh * geo.sh * geo.wp;
        for ow in 0..geo.out_w {
            let xb = (xrow + ow * geo.sw) * LANES;
            for h in (0..LANES).step_by(S::LANES) {
                let mut d = [s.zero(); R];
                for (r, v) in d.iter_mut().enumerate() {
                    // SAFETY: r·P·16 + q·16 + 16 ≤ R·P·16 ≤ dy.len() (caller).
                    *v = unsafe { s.load(dp.add(r * rs + qo + h)) };
                }
                for t in 0..T {
                    // SAFETY: window + offs[t] is at most the `last` vector checked by the
                    // caller.
                    let xv = unsafe { s.load(xp.add(xb + ol[t] + h)) };
                    for r in 0..R {
                        acc[r][t] = s.fmadd(d[r], xv, acc[r][t]);
                    }
                }
            }
            qo += LANES;
        }
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = s.reduce_add(acc[r][t]);
        }
    }
    out
}

/// One im2col problem: channel planes of `src_h × src_w`, a `kh × kw` window with stride,
/// dilation and top/left padding (possibly negative), over an `out_h × out_w` grid. Row
/// `(c·kh + i)·kw + j`, column `oh·out_w + ow` holds
/// `src[c, oh·sh + i·dh − pad_h, ow·sw + j·dw − pad_w]`, or 0 outside the plane.
#[derive(Debug, Clone, Copy)]
struct Unfold {
    src_h: usize,
    src_w: usize,
    out_h: usize,
    out_w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pad_h: isize,
    pad_w: isize,
}

impl Unfold {
    /// The convolution's own im2col over its input.
    const fn forward(g: &Conv2dGeom) -> Self {
        Self {
            src_h: g.in_h,
            src_w: g.in_w,
            out_h: g.out_h,
            out_w: g.out_w,
            kh: g.kernel_h,
            kw: g.kernel_w,
            sh: g.stride_h,
            sw: g.stride_w,
            dh: g.dilation_h,
            dw: g.dilation_w,
            pad_h: g.pad_top as isize,
            pad_w: g.pad_left as isize,
        }
    }

    /// For stride 1: im2col over `d_out` producing the input grid, with the kernel flipped, so
    /// that `d_input = flipped Wᵀ · unfold(d_out)`. Input row `ih` receives output row
    /// `ih + pad_top − i·dh` for tap `i`, i.e. flipped tap `kH−1−i` at offset
    /// `(kH−1)·dh − pad_top`.
    const fn transposed(g: &Conv2dGeom) -> Self {
        Self {
            src_h: g.out_h,
            src_w: g.out_w,
            out_h: g.in_h,
            out_w: g.in_w,
            kh: g.kernel_h,
            kw: g.kernel_w,
            sh: 1,
            sw: 1,
            dh: g.dilation_h,
            dw: g.dilation_w,
            pad_h: (g.kernel_h.saturating_sub(1) * g.dilation_h) as isize - g.pad_top as isize,
            pad_w: (g.kernel_w.saturating_sub(1) * g.dilation_w) as isize - g.pad_left as isize,
        }
    }

    /// Rows and columns of the zero-padded copy of a plane that [`Unfold::im2col`] reads: the
    /// span of source coordinates any window touches, starting at `−pad`.
    const fn padded_dims(&self) -> (usize, usize) {
        (
            (self.out_h - 1) * self.sh + (self.kh - 1) * self.dh + 1,
            (self.out_w - 1) * self.sw + (self.kw - 1) * self.dw + 1,
        )
    }

    /// Scratch elements [`Unfold::im2col`] needs for `channels` planes.
    const fn pad_len(&self, channels: usize) -> usize {
        if self.out_h == 0 || self.out_w == 0 || self.kh == 0 || self.kw == 0 {
            return 0;
        }
        let (hp, wp) = self.padded_dims();
        channels * hp * wp
    }

    /// Writes the rows of `channels` planes (`planes` holds exactly those) into `col`, row
    /// stride `ld`, starting at column `off`. Copies the planes, zero-padded, into `xp` first
    /// so every window row is one branch-free copy.
    fn im2col(
        &self,
        planes: &[f32],
        channels: usize,
        xp: &mut [f32],
        col: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        if self.pad_len(1) == 0 {
            return;
        }
        let (hw, ow_n) = (self.src_h * self.src_w, self.out_w);
        let (hp, wp) = self.padded_dims();
        let xp = &mut xp[..channels * hp * wp];
        // Source columns present in the padded row: [c_lo, c_hi) at padded offset c_lo + pad_w.
        let c_lo = (self.pad_w.max(0) as usize).min(wp); // first padded column holding source column 0
        let first_src_col = (-self.pad_w).max(0) as usize;
        let n_cols = (self.src_w.saturating_sub(first_src_col)).min(wp.saturating_sub(c_lo));
        for c in 0..channels {
            let plane = &planes[c * hw..(c + 1) * hw];
            for (r, row) in xp[c * hp * wp..(c + 1) * hp * wp]
                .chunks_exact_mut(wp)
                .enumerate()
            {
                let sr = r as isize - self.pad_h;
                if sr < 0 || sr >= self.src_h as isize {
                    row.fill(0.0);
                    continue;
                }
                let src = &plane[sr as usize * self.src_w + first_src_col..][..n_cols];
                row[..c_lo].fill(0.0);
                copy_row(&mut row[c_lo..c_lo + n_cols], src);
                row[c_lo + n_cols..].fill(0.0);
            }
        }
        let xp = &*xp;
        let p = self.out_h * ow_n;
        for c in 0..channels {
            let pl = &xp[c * hp * wp..(c + 1) * hp * wp];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = (c * self.kh + i) * self.kw + j;
                    let dst = &mut col[row * ld + off..row * ld + off + p];
                    for (oh, d) in dst.chunks_exact_mut(ow_n).enumerate() {
                        let start = (oh * self.sh + i * self.dh) * wp + j * self.dw;
                        if self.sw == 1 {
                            copy_row(d, &pl[start..start + ow_n]);
                        } else {
                            for (k, v) in d.iter_mut().enumerate() {
                                *v = pl[start + k * self.sw];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Unfold::im2col`]: adds each column entry back where it came from.
    fn col2im(&self, planes: &mut [f32], channels: usize, col: &[f32], ld: usize, off: usize) {
        let (hw, ow_n) = (self.src_h * self.src_w, self.out_w);
        let p = self.out_h * ow_n;
        for c in 0..channels {
            let plane = &mut planes[c * hw..(c + 1) * hw];
            for i in 0..self.kh {
                let (h_lo, h_hi) =
                    valid_range(self.out_h, self.sh, i * self.dh, self.pad_h, self.src_h);
                for j in 0..self.kw {
                    let (w_lo, w_hi) =
                        valid_range(ow_n, self.sw, j * self.dw, self.pad_w, self.src_w);
                    if w_lo == w_hi {
                        continue;
                    }
                    let row = (c * self.kh + i) * self.kw + j;
                    let srcrow = &col[row * ld + off..row * ld + off + p];
                    for oh in h_lo..h_hi {
                        let ih = ((oh * self.sh + i * self.dh) as isize - self.pad_h) as usize;
                        let s = &srcrow[oh * ow_n + w_lo..oh * ow_n + w_hi];
                        let dst = &mut plane[ih * self.src_w..(ih + 1) * self.src_w];
                        let iw0 = ((w_lo * self.sw + j * self.dw) as isize - self.pad_w) as usize;
                        if self.sw == 1 {
                            add_row(&mut dst[iw0..iw0 + s.len()], s);
                        } else {
                            for (k, v) in s.iter().enumerate() {
                                dst[iw0 + k * self.sw] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `d.copy_from_slice(s)` for short rows, inline (a `memcpy` call per 14-float row costs more
/// than the copy).
#[inline(always)]
fn copy_row(d: &mut [f32], s: &[f32]) {
    assert_eq!(d.len(), s.len());
    let mut dc = d.chunks_exact_mut(8);
    let mut sc = s.chunks_exact(8);
    for (a, b) in (&mut dc).zip(&mut sc) {
        let a: &mut [f32; 8] = a.try_into().expect("chunk of 8");
        let b: &[f32; 8] = b.try_into().expect("chunk of 8");
        *a = *b;
    }
    let (d, s) = (dc.into_remainder(), sc.remainder());
    let mut k = 0;
    if d.len() - k >= 4 {
        let a: &mut [f32; 4] = (&mut d[k..k + 4]).try_into().expect("4");
        *a = s[k..k + 4].try_into().expect("4");
        k += 4;
    }
    if d.len() - k >= 2 {
        let a: &mut [f32; 2] = (&mut d[k..k + 2]).try_into().expect("2");
        *a = s[k..k + 2].try_into().expect("2");
        k += 2;
    }
    if d.len() > k {
        d[k] = s[k];
    }
}

/// Sum of a row in eight interleaved lanes (vectorisable; the order is fixed, so the result is
/// deterministic).
fn sum_row(s: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut it = s.chunks_exact(8);
    for c in &mut it {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let tail: f32 = it.remainder().iter().sum();
    lanes.iter().sum::<f32>() + tail
}

/// `d += s` element-wise for short rows, in fixed-size pieces the compiler keeps in registers.
#[inline(always)]
fn add_row(d: &mut [f32], s: &[f32]) {
    assert_eq!(d.len(), s.len());
    let mut dc = d.chunks_exact_mut(8);
    let mut sc = s.chunks_exact(8);
    for (a, b) in (&mut dc).zip(&mut sc) {
        let a: &mut [f32; 8] = a.try_into().expect("chunk of 8");
        let b: &[f32; 8] = b.try_into().expect("chunk of 8");
        for k in 0..8 {
            a[k] += b[k];
        }
    }
    let (d, s) = (dc.into_remainder(), sc.remainder());
    let mut k = 0;
    if d.len() - k >= 4 {
        for t in k..k + 4 {
            d[t] += s[t];
        }
        k += 4;
    }
    while k < d.len() {
        d[k] += s[k];
        k += 1;
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
                    if k >= (slots - 1) * g.in_len() * LANES
                        && (slots - 1) * LANES + k % LANES >= batch
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
