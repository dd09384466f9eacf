//! Forward 2-D convolution on lane tensors, one source for every instruction set.
//!
//! A slot holds the same pixel of 16 images, so a kernel tap is inside the input for all
//! lanes or for none, and taps on the zero padding are skipped exactly. (The pixel-vector
//! kernel in [`crate::kernels`] puts 16 pixels of one image in a vector; on a 14 × 14 map such a
//! vector spans two rows and a tap on the padding for some lanes still costs a whole FMA: with
//! 5 × 5 kernels and padding 2, 16% of the multiply-adds on 14 × 14 maps, 31% on 7 × 7.)
//!
//! The register tile is `R` output channels × up to `TM` consecutive pixels of one output
//! row × the `NV = 16 / LANES` vectors of a slot, one accumulator per (channel, pixel, vector):
//! per input channel and tap it broadcasts `R` weights and loads up to `TM · NV` input vectors.
//! The tile follows the register file ([`LaneTile`]): 4 × 6 × 1 on AVX-512 (24 of 32 zmm),
//! 2 × 3 × 2 on AVX2 (12 of 16 ymm), 3 × 1 × 4 for the portable 4-float vectors. For each
//! kernel column, the tile's pixels whose input column falls on the padding are left out of the
//! FMAs; whole kernel rows outside the input are skipped for the output row. Work is split over
//! (slot, output row, row segment of at most [`SEG`] pixels, group, channel block), and each
//! unit stores its tile straight into the lane output after the bias and activation: no copy of
//! the input, no transpose.
//!
//! Weights are packed per call into `[group][block][kh][kw][ci][R]` (zero rows pad the last
//! block), in caller-provided scratch.

use rayon::prelude::*;

use super::LANES;
use crate::geom::{Conv2dGeom, valid_range};
use crate::kernels::{Activation, Isa};
use crate::simd::{Kernel, Simd, dispatch};
use crate::util::check_len;

/// Most output pixels per work unit.
const SEG: usize = 32;
/// Input channels per block of the tap loop (keeps a block's input rows in L1).
const CB: usize = 32;

/// Register tile of one instruction set: `r` output channels × up to `tm` pixels × `nv`
/// vectors per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LaneTile {
    r: usize,
    tm: usize,
}

/// The tile for vectors of `lanes` floats (see the module doc for the measured choices).
const fn lane_tile(lanes: usize) -> LaneTile {
    match lanes {
        16 => LaneTile { r: 4, tm: 6 },
        8 => LaneTile { r: 4, tm: 1 },
        _ => LaneTile { r: 2, tm: 1 },
    }
}

fn isa_lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Portable => 4,
    }
}

fn blocks(g: &Conv2dGeom, r: usize) -> usize {
    (g.out_channels / g.groups).div_ceil(r)
}

fn packed_len(g: &Conv2dGeom, r: usize) -> usize {
    g.groups * blocks(g, r) * g.kernel_h * g.kernel_w * (g.in_channels / g.groups) * r
}

/// Whether [`conv2d_lanes`] can run this geometry: a consistent grouping, a non-empty kernel
/// and positive strides and dilations. (Every instruction set has the kernel.)
pub fn conv2d_lanes_usable(g: &Conv2dGeom) -> bool {
    g.groups > 0
        && g.in_channels.is_multiple_of(g.groups)
        && g.out_channels.is_multiple_of(g.groups)
        && g.kernel_h > 0
        && g.kernel_w > 0
        && g.stride_h > 0
        && g.stride_w > 0
        && g.dilation_h > 0
        && g.dilation_w > 0
}

/// Scratch elements [`conv2d_lanes`] needs (the packed weights; independent of the batch and
/// of the instruction set).
pub fn conv2d_lanes_scratch_len(g: &Conv2dGeom) -> usize {
    [16, 8, 4]
        .map(|lanes| packed_len(g, lane_tile(lanes).r))
        .into_iter()
        .max()
        .unwrap_or(0)
}

/// `packed[((grp·blocks + b)·kk + tap)·cin_g·r + ci·r + i] = weight[grp·cout_g + b·r + i][ci][tap]`
/// (zero past the group's last output channel).
fn pack(g: &Conv2dGeom, r: usize, weight: &[f32], packed: &mut [f32]) {
    let (cin_g, cout_g) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let kk = g.kernel_h * g.kernel_w;
    let nb = blocks(g, r);
    for grp in 0..g.groups {
        for b in 0..nb {
            let blk = &mut packed[(grp * nb + b) * kk * cin_g * r..][..kk * cin_g * r];
            for tap in 0..kk {
                for ci in 0..cin_g {
                    for i in 0..r {
                        let co = b * r + i;
                        blk[(tap * cin_g + ci) * r + i] = if co < cout_g {
                            weight[((grp * cout_g + co) * cin_g + ci) * kk + tap]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// `nn.Conv2d` (with the bias and `act` fused) on `slots` slots of 16 images:
/// `input` is `[slots][C_in][H][W][16]`, `output` `[slots][C_out][H_out][W_out][16]`
/// (overwritten), `weight` in PyTorch layout `[C_out, C_in/groups, kH, kW]`, `scratch` at least
/// [`conv2d_lanes_scratch_len`] floats. Every lane is computed (missing images of a partial
/// slot are whatever the caller put there). Runs with [`Isa::detect`]'s instruction set.
///
/// # Panics
/// If [`conv2d_lanes_usable`] is false or a slice length disagrees with `g` and `slots`.
#[expect(clippy::too_many_arguments, reason = "conv2d_act's operands")]
pub fn conv2d_lanes(
    g: &Conv2dGeom,
    slots: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    conv2d_lanes_with(
        Isa::detect(),
        g,
        slots,
        input,
        weight,
        bias,
        act,
        output,
        scratch,
    );
}

/// [`conv2d_lanes`] with the instruction set chosen by the caller (tests run every one).
#[expect(
    clippy::too_many_arguments,
    reason = "conv2d_act's operands and the ISA"
)]
pub(crate) fn conv2d_lanes_with(
    isa: Isa,
    g: &Conv2dGeom,
    slots: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(
        conv2d_lanes_usable(g),
        "conv2d_lanes: not usable here: {g:?}"
    );
    check_len(
        "conv2d_lanes input",
        input.len(),
        slots * g.in_len() * LANES,
    );
    check_len(
        "conv2d_lanes output",
        output.len(),
        slots * g.out_len() * LANES,
    );
    check_len("conv2d_lanes weight", weight.len(), g.weight_len());
    if let Some(b) = bias {
        check_len("conv2d_lanes bias", b.len(), g.out_channels);
    }
    assert!(
        scratch.len() >= conv2d_lanes_scratch_len(g),
        "conv2d_lanes scratch: {} < {}",
        scratch.len(),
        conv2d_lanes_scratch_len(g)
    );
    if g.out_h * g.out_w == 0 || g.out_channels == 0 || slots == 0 {
        return;
    }
    let isa = if isa.is_available() {
        isa
    } else {
        Isa::Portable
    };
    let r = lane_tile(isa_lanes(isa)).r;
    let packed = &mut scratch[..packed_len(g, r)];
    pack(g, r, weight, packed);
    let packed = &*packed;
    let nseg = g.out_w.div_ceil(SEG);
    let nb = blocks(g, r);
    let units = g.out_h * nseg * g.groups * nb;
    let out_slot = g.out_len() * LANES;
    output
        .par_chunks_mut(out_slot)
        .enumerate()
        .for_each(|(s, out)| {
            let x = &input[s * g.in_len() * LANES..][..g.in_len() * LANES];
            let out = super::SendPtr(out.as_mut_ptr());
            let out = &out;
            (0..units).into_par_iter().for_each(|u| {
                // Unit order: row, segment, group, block — consecutive units read the same
                // input rows with different (small) weight blocks.
                let b = u % nb;
                let grp = (u / nb) % g.groups;
                let seg = (u / (nb * g.groups)) % nseg;
                let y = u / (nb * g.groups * nseg);
                let x0 = seg * SEG;
                let unit = Unit {
                    g,
                    grp,
                    block: b,
                    y,
                    x0,
                    len: SEG.min(g.out_w - x0),
                    packed,
                    xs: x,
                    bias,
                    act,
                    out,
                };
                // `run` reads `x` and `packed` inside the ranges it asserts and writes only
                // this unit's output vectors (channels of its block, its row and segment) of
                // this slot's `out_slot` floats, which no other unit writes.
                dispatch(isa, unit);
            });
        });
}

/// One work unit: one block of output channels × one row segment of one slot.
struct Unit<'a> {
    g: &'a Conv2dGeom,
    grp: usize,
    block: usize,
    y: usize,
    x0: usize,
    len: usize,
    packed: &'a [f32],
    xs: &'a [f32],
    bias: Option<&'a [f32]>,
    act: Activation,
    /// This slot's `[C_out][H_out][W_out][16]` output; the unit's vectors are written by no
    /// other thread.
    out: &'a super::SendPtr,
}

/// Where a tile reads. For kernel rows `kh.0..kh.1`, kernel column `kw`, input channel `ci` and
/// tile pixel `t`, the input column is `col0 + t·sw + kw·dw` and the vector sits at
/// `(kh − kh.0)·khs + column·16 + ci·cs` from the tile's base; columns outside `0..in_w` are
/// padding and not read.
struct Taps {
    kh: (usize, usize),
    khs: usize,
    cs: usize,
    col0: isize,
    sw: usize,
    dw: usize,
    in_w: usize,
    kernel_w: usize,
    cin: usize,
}

impl Kernel for Unit<'_> {
    type Out = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        match S::LANES {
            16 => self.go::<S, 4, 6, 1>(s),
            8 => self.go::<S, 4, 1, 2>(s),
            _ => self.go::<S, 2, 1, 4>(s),
        }
    }
}

impl Unit<'_> {
    #[inline(always)]
    fn go<S: Simd, const R: usize, const TM: usize, const NV: usize>(&self, s: S) {
        assert!(NV * S::LANES == LANES && lane_tile(S::LANES) == LaneTile { r: R, tm: TM });
        let g = self.g;
        let (cin, cout) = (g.in_channels / g.groups, g.out_channels / g.groups);
        let kk = g.kernel_h * g.kernel_w;
        let wblk =
            &self.packed[(self.grp * blocks(g, R) + self.block) * kk * cin * R..][..kk * cin * R];
        let iy0 = (self.y * g.stride_h) as isize - g.pad_top as isize;
        // Kernel rows whose input row iy0 + kh·dh exists.
        let kh = valid_range(g.kernel_h, g.dilation_h, 0, -iy0, g.in_h);
        let mut taps = Taps {
            kh,
            khs: g.dilation_h * g.in_w * LANES,
            cs: g.in_h * g.in_w * LANES,
            col0: 0,
            sw: g.stride_w,
            dw: g.dilation_w,
            in_w: g.in_w,
            kernel_w: g.kernel_w,
            cin,
        };
        let zero = s.zero();
        let ohw = g.out_h * g.out_w;
        // Balanced tiles of at most TM pixels (14 → 5, 5, 4 with TM = 6).
        let ntiles = self.len.div_ceil(TM);
        let mut t = 0;
        for i in 0..ntiles {
            let n = (self.len * (i + 1)) / ntiles - t;
            taps.col0 = ((self.x0 + t) * g.stride_w) as isize - g.pad_left as isize;
            let mut acc = [[[zero; NV]; TM]; R];
            if kh.0 < kh.1 {
                let iy = (iy0 + (kh.0 * g.dilation_h) as isize) as usize;
                let start = (self.grp * cin * g.in_h + iy) * g.in_w * LANES;
                // The furthest read: kernel row kh.1 − 1, the last input column, channel
                // cin − 1.
                let last = start
                    + (kh.1 - 1 - kh.0) * taps.khs
                    + (g.in_w - 1) * LANES
                    + (cin - 1) * taps.cs
                    + LANES;
                assert!(
                    last <= self.xs.len(),
                    "conv2d_lanes: input read out of bounds"
                );
                let wb = &wblk[kh.0 * g.kernel_w * cin * R..];
                let xb = &self.xs[start..];
                // SAFETY: every vector `tile` reads is at or before `last` (it reads only real
                // input columns) and the weights it reads are taps `kh.0·kW ..` of the block
                // (`kk·cin·R` floats).
                unsafe {
                    match n {
                        1 => tile::<S, R, TM, NV, 1>(s, wb, xb, &taps, &mut acc),
                        2 if TM >= 2 => tile::<S, R, TM, NV, 2>(s, wb, xb, &taps, &mut acc),
                        3 if TM >= 3 => tile::<S, R, TM, NV, 3>(s, wb, xb, &taps, &mut acc),
                        4 if TM >= 4 => tile::<S, R, TM, NV, 4>(s, wb, xb, &taps, &mut acc),
                        5 if TM >= 5 => tile::<S, R, TM, NV, 5>(s, wb, xb, &taps, &mut acc),
                        _ => tile::<S, R, TM, NV, TM>(s, wb, xb, &taps, &mut acc),
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let co = self.block * R + r;
                if co >= cout {
                    break;
                }
                let co = self.grp * cout + co;
                let bv = self.bias.map_or(zero, |b| s.splat(b[co]));
                let slope = match self.act {
                    Activation::LeakyRelu(sl) => s.splat(sl),
                    _ => zero,
                };
                for (j, a) in acc_r.iter().enumerate().take(n) {
                    let o = (co * ohw + self.y * g.out_w + self.x0 + t + j) * LANES;
                    for (h, &av) in a.iter().enumerate() {
                        let mut v = s.add(av, bv);
                        match self.act {
                            Activation::Identity => {}
                            // max(0, v) returns its second operand when one is NaN: NaN stays
                            // NaN.
                            Activation::Relu => v = s.max(zero, v),
                            Activation::LeakyRelu(_) => {
                                v = s.select(s.lt(v, zero), s.mul(v, slope), v);
                            }
                        }
                        // SAFETY: channel co < C_out, row y < H_out, column x0 + t + j <
                        // W_out: one slot vector inside this slot's output; only this unit
                        // writes it.
                        unsafe { s.store(self.out.0.add(o + h * S::LANES), v) };
                    }
                }
            }
            t += n;
        }
        debug_assert_eq!(t, self.len);
    }
}

/// Kernel columns whose real-pixel ranges [`tile`] computes once per tile.
const MAX_KW: usize = 32;

/// The tile pixels `ta..tb` (of `t_max`) whose input column `c0 + t·sw` lies in `0..in_w`.
fn real_pixels(c0: isize, sw: usize, in_w: usize, t_max: usize) -> (usize, usize) {
    valid_range(t_max, sw, 0, -c0, in_w)
}

/// `acc[r][t] += Σ_{kh, kw, ci} w[kh][kw][ci][r] · x(kh, kw, t, ci)` for `T` pixels, leaving out
/// the pixels whose input column is padding.
///
/// # Safety
/// Every real-column read described by `taps` from `xb` and `wb[((kh−kh0)·kW + kw)·cin·R ..]`
/// must be in bounds (checked by the caller).
#[inline(always)]
#[expect(
    clippy::needless_range_loop,
    reason = "constant-bound index loops over the accumulator grid keep it in registers"
)]
unsafe fn tile<S: Simd, const R: usize, const TM: usize, const NV: usize, const T: usize>(
    s: S,
    wb: &[f32],
    xb: &[f32],
    taps: &Taps,
    acc: &mut [[[S::V; NV]; TM]; R],
) {
    let mut a = [[[s.zero(); NV]; T]; R];
    let (xp, wp) = (xb.as_ptr(), wb.as_ptr());
    let cin = taps.cin;
    // The real pixels of each kernel column (the same for every kernel row and channel).
    let mut ranges = [(0, 0); MAX_KW];
    for (j, r) in ranges.iter_mut().enumerate().take(taps.kernel_w) {
        *r = real_pixels(taps.col0 + (j * taps.dw) as isize, taps.sw, taps.in_w, T);
    }
    for c0 in (0..cin).step_by(CB) {
        let c1 = (c0 + CB).min(cin);
        for i in 0..taps.kh.1 - taps.kh.0 {
            for j in 0..taps.kernel_w {
                let cbase = taps.col0 + (j * taps.dw) as isize;
                let (ta, tb) = if j < MAX_KW {
                    ranges[j]
                } else {
                    real_pixels(cbase, taps.sw, taps.in_w, T)
                };
                if ta >= tb {
                    continue;
                }
                // Pointer to pixel 0's column (possibly before the row: only formed, never
                // read, for padding columns).
                let x = xp.wrapping_offset((i * taps.khs) as isize + cbase * LANES as isize);
                // Weight (kh, kw) of the block, inside `wb` (caller).
                let w = wp.wrapping_add((i * taps.kernel_w + j) * cin * R);
                let full = ta == 0 && tb == T;
                // Pointers bumped per channel (no index arithmetic in the loop).
                let ts = taps.sw * LANES;
                let mut xq = x.wrapping_add(c0 * taps.cs);
                let mut wq = w.wrapping_add(c0 * R);
                for _ in c0..c1 {
                    let mut wv = [s.zero(); R];
                    for (r, v) in wv.iter_mut().enumerate() {
                        // SAFETY: weight (kh, kw, ci, r) of the block.
                        *v = s.splat(unsafe { *wq.add(r) });
                    }
                    // A constant-bound loop (with a test on edge tiles) keeps the
                    // accumulators in registers; a `ta..tb` loop would index them
                    // dynamically and spill.
                    for tt in 0..T {
                        if !full && (tt < ta || tt >= tb) {
                            continue;
                        }
                        for h in 0..NV {
                            // SAFETY: pixel tt's column is real; in bounds by the caller.
                            let xv = unsafe { s.load(xq.wrapping_add(tt * ts + h * S::LANES)) };
                            for r in 0..R {
                                a[r][tt][h] = s.fmadd(wv[r], xv, a[r][tt][h]);
                            }
                        }
                    }
                    xq = xq.wrapping_add(taps.cs);
                    wq = wq.wrapping_add(R);
                }
            }
        }
    }
    for r in 0..R {
        for tt in 0..T {
            for h in 0..NV {
                acc[r][tt][h] = s.add(acc[r][tt][h], a[r][tt][h]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use crate::kernels::testutil::{assert_close, conv_geom as geom, data};
    use crate::lanes::{from_lanes, lane_slots, to_lanes};

    /// The lane convolution against the f64 reference, with bias and each activation, at 1
    /// and 2 threads; the output and scratch start as NaN so an element the kernel forgets
    /// fails.
    fn check(g: Conv2dGeom, batch: usize) {
        assert!(conv2d_lanes_usable(&g));
        let x = data(batch * g.in_len(), 1);
        let w = data(g.weight_len(), 2);
        let b = data(g.out_channels, 3);
        let k = g.in_channels / g.groups * g.kernel_h * g.kernel_w;
        let slots = lane_slots(batch);
        let mut xl = vec![0.0; slots * g.in_len() * LANES];
        to_lanes(batch, g.in_len(), &x, &mut xl);
        for (bias, act) in [
            (None, Activation::Identity),
            (Some(&b[..]), Activation::Relu),
            (Some(&b[..]), Activation::LeakyRelu(0.1)),
        ] {
            let mut want = vec![0.0; batch * g.out_len()];
            reference::conv2d(&g, batch, &x, &w, bias, &mut want);
            for v in &mut want {
                *v = act.apply(*v);
            }
            for (isa, threads) in Isa::available().into_iter().flat_map(|i| [(i, 1), (i, 2)]) {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut yl = vec![f32::NAN; slots * g.out_len() * LANES];
                let mut scratch = vec![f32::NAN; conv2d_lanes_scratch_len(&g)];
                pool.install(|| {
                    conv2d_lanes_with(isa, &g, slots, &xl, &w, bias, act, &mut yl, &mut scratch)
                });
                let mut got = vec![f32::NAN; batch * g.out_len()];
                from_lanes(batch, g.out_len(), &yl, &mut got);
                assert_close(
                    &got,
                    &want,
                    k,
                    &format!("{isa:?} {g:?} batch {batch} {act:?}"),
                );
                assert!(yl.iter().all(|v| !v.is_nan()), "every lane written");
            }
        }
    }

    #[test]
    fn seed_layers_and_their_input_gradients() {
        let s = (1, 1);
        check(geom(1, 16, (28, 28), (5, 5), s, (2, 2), s, 1), 16);
        check(geom(16, 32, (14, 14), (5, 5), s, (2, 2), s, 1), 64);
        check(geom(32, 32, (14, 14), (5, 5), s, (2, 2), s, 1), 60);
        check(geom(32, 64, (7, 7), (5, 5), s, (2, 2), s, 1), 32);
        // The input gradients' transposed convolutions (C_out → C_in).
        check(geom(64, 32, (7, 7), (5, 5), s, (2, 2), s, 1), 16);
        check(geom(32, 16, (14, 14), (5, 5), s, (2, 2), s, 1), 20);
    }

    #[test]
    fn strides_dilation_groups_and_odd_sizes() {
        check(geom(8, 6, (13, 40), (3, 5), (2, 1), (1, 2), (1, 2), 2), 16);
        check(geom(24, 6, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 6), 3);
        check(geom(5, 9, (10, 70), (1, 1), (1, 3), (0, 0), (1, 1), 1), 30);
        check(geom(4, 5, (6, 6), (7, 7), (1, 1), (3, 3), (1, 1), 1), 16);
        check(geom(40, 5, (3, 3), (3, 3), (1, 1), (1, 1), (1, 1), 1), 16);
        // A kernel wider than the input: every pixel reads padding.
        check(geom(4, 3, (4, 3), (3, 5), (1, 1), (1, 2), (1, 1), 1), 16);
        // Padding larger than the kernel reach: rows and pixels that read nothing but bias.
        check(geom(4, 3, (3, 3), (2, 2), (1, 1), (3, 3), (1, 1), 1), 16);
    }

    #[test]
    fn nan_propagates_and_relu_keeps_it() {
        let g = geom(4, 4, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 1);
        for isa in Isa::available() {
            nan_case(isa, &g);
        }
    }

    fn nan_case(isa: Isa, g: &Conv2dGeom) {
        let g = *g;
        let batch = 16;
        let mut x = data(batch * g.in_len(), 1);
        x[3 * g.in_len() + 12] = f32::NAN; // image 3, channel 0, centre pixel
        let w = data(g.weight_len(), 2);
        let mut xl = vec![0.0; g.in_len() * LANES];
        to_lanes(batch, g.in_len(), &x, &mut xl);
        let mut yl = vec![0.0; g.out_len() * LANES];
        let mut scratch = vec![0.0; conv2d_lanes_scratch_len(&g)];
        conv2d_lanes_with(
            isa,
            &g,
            1,
            &xl,
            &w,
            None,
            Activation::Relu,
            &mut yl,
            &mut scratch,
        );
        let mut got = vec![0.0; batch * g.out_len()];
        from_lanes(batch, g.out_len(), &yl, &mut got);
        let img = &got[3 * g.out_len()..4 * g.out_len()];
        assert!(
            img[12].is_nan() && img[6].is_nan(),
            "NaN reaches its 3x3 neighbourhood"
        );
        assert!(!img[0].is_nan(), "and no further");
        assert!(got[..3 * g.out_len()].iter().all(|v| !v.is_nan()));
    }
}
