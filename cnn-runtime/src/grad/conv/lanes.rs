//! The lane weight gradient: 16 images per vector lane, register tiles written once over
//! [`crate::simd`], slots summed in order; and the lane input gradient built on the forward
//! lane convolution.

use super::*;

/// Output channels per register tile of the lane weight gradient.
pub(super) const LR: usize = 4;
/// Kernel taps per register tile (`LR × LT` accumulators, `LR + LT` loads per output position;
/// 4 × 5 was measured slower: LLVM spilled its 20 accumulators).
pub(super) const LT: usize = 4;
const _: () = assert!(LT == 4, "tile_dispatch instantiates T = 1..=4");
/// Output positions per band of the lane weight gradient: the band's `d_out` (`LR` channels,
/// 32 KiB) and input rows stay in L1 while every tap group sweeps them. Chosen by timing the
/// seed's 14 × 14 weight gradients on one thread (commit b07152f): 86 nominal GFLOP/s
/// unbanded, 94 / 110 / 116 / 120 / 101 with bands of 32 / 64 / 96 / 128 / 160 positions.
pub(super) const BAND_POSITIONS: usize = 128;

/// The weight gradient with images in vector lanes: each slot takes 16 images, copies its
/// input zero-padded as `[C_in/g][Hp][Wp][16]` and its `d_out` as `[C_out/g][P][16]`, and
/// accumulates `d_w[co][ci][tap] = Σ_{p, image} d_out[co][p] · x[ci][p·stride + tap]` in
/// register tiles of 4 output channels × 4 taps, one vector of 16 images per accumulator,
/// over every output position; nothing is unfolded (every tap is one shifted load), and no
/// lane is wasted on padding columns. Slots hold 16 images each (a function of the batch only)
/// and are reduced in order.
#[derive(Debug, Clone, Copy)]
pub(super) struct LanePlan {
    pub(super) isa: Isa,
    pub(super) slots: usize,
    /// Padded plane of the input copy (`Unfold::forward(g).padded_dims()`).
    pub(super) hp: usize,
    pub(super) wp: usize,
    pub(super) xt_len: usize,
    pub(super) dyt_len: usize,
    pub(super) per_slot: usize,
}

impl LanePlan {
    pub(super) fn new(g: &Conv2dGeom, batch: usize, isa: Isa) -> Self {
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
pub(super) struct TileGeom {
    pub(super) oh0: usize,
    pub(super) oh1: usize,
    pub(super) out_h: usize,
    pub(super) out_w: usize,
    pub(super) sh: usize,
    pub(super) sw: usize,
    pub(super) wp: usize,
    /// Output positions (`out_h · out_w`): the row stride of the `d_out` copy, in vectors.
    pub(super) p: usize,
}

/// Weight and bias gradient of the whole batch through [`LanePlan`] slots, in parallel.
#[expect(clippy::too_many_arguments, reason = "the operands of conv2d_backward")]
pub(super) fn lane_dw(
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
    pub(super) fn for_lanes(g: &Conv2dGeom, slots: usize, isa: Isa) -> Self {
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
pub(super) enum LaneSrc<'a> {
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
pub(super) fn lane_slot(lp: &LanePlan, g: &Conv2dGeom, src: LaneSrc, sc: &mut [f32]) {
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
pub(super) fn tile_dispatch<const R: usize>(
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
pub(super) struct DwTile<'a, const R: usize> {
    pub(super) nt: usize,
    pub(super) dy: &'a [f32],
    pub(super) x: &'a [f32],
    pub(super) offs: &'a [usize; LT],
    pub(super) geo: &'a TileGeom,
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
pub(super) unsafe fn dw_tile<S: crate::simd::Simd, const R: usize, const T: usize>(
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
