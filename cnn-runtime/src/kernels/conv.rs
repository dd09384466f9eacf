//! 2-D convolution (`nn.Conv2d`) as a register-blocked GEMM over output pixels.
//!
//! The output is computed in tiles of [`MR`] output channels × [`NR`] output pixels (one
//! AVX-512 vector), accumulating `Σ_{tap, ci} W[co, ci, tap] · X[ci, pixel + tap]`. Columns (the
//! pixels) run over the whole batch, so small feature maps still fill whole vectors.
//!
//! Two ways to feed the input ("B") side:
//!
//! - **Direct** (stride 1, kernel ≤ 16, see `direct_grid`): columns walk a per-image pixel
//!   grid laid over the input (the input itself for `padding="same"`), so for a fixed tap the
//!   input values of 16 consecutive columns are 16 consecutive input elements, read straight
//!   from the input with a masked load; the mask zeroes taps that fall on padding or wrap into
//!   the next row or image. Taps whose mask is all zero (rows of padding) are skipped; grid
//!   pixels outside the output are computed and not stored. For a batch > 1 (or a grid larger
//!   than the input) the input is first copied to `[C, N, Hv, Wv]` in scratch so one vector
//!   can span images.
//! - **Packed** (strides, or stride-1 convolutions whose grid would be mostly waste): the 16
//!   columns' input values are gathered (im2col, AVX-512 gathers) into a small per-thread
//!   buffer, then the same microkernel runs unmasked.
//!
//! The 16 × 16 tile keeps 16 zmm accumulators; a wider 8 × 32 tile (fewer loads per FMA) was
//! tried and was no faster at batch 64 and slower at batch 1, where it skips fewer padding
//! taps. The microkernel is written once over [`crate::simd`] (`Tile`): with AVX2 + FMA the
//! same tile runs in four passes of 4 output channels over two ymm halves, and the portable
//! build in passes of 2 channels over four 4-float vectors; on AVX2 and AVX-512 the channel
//! loop is unrolled by four. Every instantiation is tested against the reference.
//!
//! Weights are packed once into `[group][panel][tap][ci][MR]` (zero-padded to `MR` rows), see
//! [`PackedConv`]. Bias and the activation are applied in the tile's epilogue.

use rayon::prelude::*;

use super::{Activation, Isa};
use crate::geom::Conv2dGeom;
use crate::simd::{Kernel, Simd};
use crate::util::{SendPtr, check_len};

/// Output channels per tile.
const MR: usize = 16;
/// Output pixels per tile (one AVX-512 vector of `f32`).
const NR: usize = 16;
/// Largest kernel side the direct path handles (its masks live on the stack).
const MAX_DIRECT_KERNEL: usize = 16;

/// Convolution weights packed for the microkernel, plus bias and fused activation.
///
/// Build it once per layer ([`PackedConv::new`], which allocates); [`PackedConv::run`] then
/// does no allocation and needs [`PackedConv::scratch_len`] floats of scratch.
#[derive(Debug, Clone)]
pub struct PackedConv {
    geom: Conv2dGeom,
    isa: Isa,
    act: Activation,
    packed: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl PackedConv {
    /// Packs `weight` (`[C_out, C_in/groups, kH, kW]`, PyTorch layout) and copies `bias`
    /// (`[C_out]`); `act` is applied to every output after the bias.
    ///
    /// # Panics
    /// If a slice length does not match `geom`.
    pub fn new(
        geom: &Conv2dGeom,
        weight: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
    ) -> PackedConv {
        PackedConv::with_isa(geom, weight, bias, act, Isa::detect())
    }

    /// As [`PackedConv::new`], forcing the instruction set (e.g. [`Isa::Portable`]).
    ///
    /// # Panics
    /// If `isa` is not available on this CPU, or a slice length does not match `geom`.
    pub fn with_isa(
        geom: &Conv2dGeom,
        weight: &[f32],
        bias: Option<&[f32]>,
        act: Activation,
        isa: Isa,
    ) -> PackedConv {
        assert!(
            isa.is_available(),
            "conv2d: {isa:?} is not supported by this CPU"
        );
        check_geom(geom);
        check_len("conv2d weight", weight.len(), geom.weight_len());
        if let Some(b) = bias {
            check_len("conv2d bias", b.len(), geom.out_channels);
        }
        let mut packed = vec![0.0; packed_len(geom)];
        pack_weights(geom, weight, &mut packed);
        PackedConv {
            geom: *geom,
            isa,
            act,
            packed,
            bias: bias.map(<[f32]>::to_vec),
        }
    }

    /// Floats a `PackedConv` for `geom` holds (packed weights and bias), for memory estimates.
    pub fn len_for(geom: &Conv2dGeom) -> usize {
        packed_len(geom) + geom.out_channels
    }

    /// [`PackedConv::scratch_len`] before the convolution exists, for memory estimates.
    pub fn scratch_len_for(geom: &Conv2dGeom, batch: usize, threads: usize) -> usize {
        run_scratch_len(geom, batch, threads)
    }

    /// The geometry this convolution was built for.
    pub fn geom(&self) -> &Conv2dGeom {
        &self.geom
    }

    /// Minimum scratch length for [`PackedConv::run`] on `batch` images with `threads` rayon
    /// threads (pass the `current_num_threads()` of the pool you will run in).
    pub fn scratch_len(&self, batch: usize, threads: usize) -> usize {
        run_scratch_len(&self.geom, batch, threads)
    }

    /// Runs the convolution on `batch` images: `input` is `[batch, C_in, H, W]`, `output`
    /// `[batch, C_out, H_out, W_out]` (overwritten).
    ///
    /// # Panics
    /// If a slice is shorter or longer than the geometry says, or `scratch` is shorter than
    /// [`PackedConv::scratch_len`] for the current pool.
    pub fn run(&self, batch: usize, input: &[f32], output: &mut [f32], scratch: &mut [f32]) {
        let core = Core {
            g: &self.geom,
            isa: self.isa,
            act: self.act,
            a: &self.packed,
            bias: self.bias.as_deref(),
        };
        run_core(&core, batch, input, output, scratch);
    }
}

/// Minimum scratch length for [`conv2d`] / [`conv2d_act`] on `batch` images with `threads`
/// rayon threads (the `current_num_threads()` of the pool the call runs in). It includes room
/// to pack the weights, which [`PackedConv`] does once instead.
pub fn conv2d_scratch_len(g: &Conv2dGeom, batch: usize, threads: usize) -> usize {
    packed_len(g) + run_scratch_len(g, batch, threads)
}

/// `nn.Conv2d` forward on `batch` images without prepared weights.
///
/// `input` is `[batch, C_in, H, W]`, `weight` `[C_out, C_in/groups, kH, kW]`, `bias`
/// `[C_out]`, `output` `[batch, C_out, H_out, W_out]` (overwritten). Taps outside the input
/// read zero; `pad_top`/`pad_left` shift the window, and `out_h`/`out_w` decide how far it
/// reaches past the bottom/right edge. Packs the weights into `scratch` on every call; prefer
/// [`PackedConv`] for repeated calls.
///
/// # Panics
/// If a slice length does not match the geometry, or `scratch` is shorter than
/// [`conv2d_scratch_len`].
pub fn conv2d(
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    conv2d_act(
        g,
        batch,
        input,
        weight,
        bias,
        Activation::Identity,
        output,
        scratch,
    );
}

/// [`conv2d`] with an activation fused into the epilogue (`act(conv(x) + bias)`).
///
/// # Panics
/// As [`conv2d`].
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors conv2d's slice-in, slice-out signature plus the fused activation"
)]
pub fn conv2d_act(
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    check_geom(g);
    check_len("conv2d weight", weight.len(), g.weight_len());
    if let Some(b) = bias {
        check_len("conv2d bias", b.len(), g.out_channels);
    }
    let plen = packed_len(g);
    assert!(
        scratch.len() >= plen,
        "conv2d scratch: slice has {} elements, need at least {}",
        scratch.len(),
        conv2d_scratch_len(g, batch, rayon::current_num_threads())
    );
    let (packed, rest) = scratch.split_at_mut(plen);
    pack_weights(g, weight, packed);
    let core = Core {
        g,
        isa: Isa::detect(),
        act,
        a: packed,
        bias,
    };
    run_core(&core, batch, input, output, rest);
}

fn check_geom(g: &Conv2dGeom) {
    assert!(
        g.groups > 0
            && g.in_channels.is_multiple_of(g.groups)
            && g.out_channels.is_multiple_of(g.groups),
        "conv2d: channels ({} in, {} out) not divisible by groups ({})",
        g.in_channels,
        g.out_channels,
        g.groups
    );
    assert!(
        g.stride_h > 0 && g.stride_w > 0 && g.dilation_h > 0 && g.dilation_w > 0,
        "conv2d: zero stride or dilation in {g:?}"
    );
}

fn panels_per_group(g: &Conv2dGeom) -> usize {
    (g.out_channels / g.groups).div_ceil(MR)
}

fn taps(g: &Conv2dGeom) -> usize {
    g.kernel_h * g.kernel_w
}

/// Floats in the packed weights: `[group][panel][tap][ci][MR]`.
fn packed_len(g: &Conv2dGeom) -> usize {
    g.groups * panels_per_group(g) * taps(g) * (g.in_channels / g.groups) * MR
}

fn pack_weights(g: &Conv2dGeom, weight: &[f32], dst: &mut [f32]) {
    let cin = g.in_channels / g.groups;
    let cout = g.out_channels / g.groups;
    let t_n = taps(g);
    let mp = panels_per_group(g);
    let panel = t_n * cin * MR;
    for grp in 0..g.groups {
        for p in 0..mp {
            let d = &mut dst[(grp * mp + p) * panel..][..panel];
            for t in 0..t_n {
                for ci in 0..cin {
                    for r in 0..MR {
                        let co = p * MR + r;
                        d[(t * cin + ci) * MR + r] = if co < cout {
                            weight[((grp * cout + co) * cin + ci) * t_n + t]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Pixel grid `(Hv, Wv)` of the direct (masked shifted load) path, if it applies.
///
/// The direct path needs stride 1. It computes every pixel of a virtual `Hv × Wv` grid per
/// image laid over the input (`Hv = max(H_in, H_out)`, same for W), so that one tap is one
/// constant shift; pixels outside `H_out × W_out` are computed and dropped. When that wastes
/// more than half the lanes (e.g. a "valid" 5×5 conv on 7×7) the packed path is used.
fn direct_grid(g: &Conv2dGeom) -> Option<(usize, usize)> {
    if g.stride_h != 1
        || g.stride_w != 1
        || g.kernel_h > MAX_DIRECT_KERNEL
        || g.kernel_w > MAX_DIRECT_KERNEL
    {
        return None;
    }
    let (hv, wv) = (g.in_h.max(g.out_h), g.in_w.max(g.out_w));
    (2 * g.out_h * g.out_w >= hv * wv).then_some((hv, wv))
}

/// Scratch for the direct path's copy of the input as `[C, N, Hv, Wv]` (each channel
/// [`padded_stride`] floats apart): needed when the grid is larger than the input, or to fold
/// a batch of multi-channel images.
fn transpose_len(g: &Conv2dGeom, batch: usize) -> usize {
    match direct_grid(g) {
        Some((hv, wv)) if (batch > 1 && g.in_channels > 1) || hv != g.in_h || wv != g.in_w => {
            g.in_channels * padded_stride(batch * hv * wv)
        }
        _ => 0,
    }
}

/// Channel stride of the transposed input: `len` rounded up to a whole, odd number of 64-byte
/// cache lines. A tile reads the same pixels of every input channel; with a stride of
/// `64·14·14` floats (784 lines, a multiple of 16) those reads fell into 4 of the 64 L1 sets
/// and evicted each other. An odd number of lines spreads them over all sets (conv 32→32 on
/// 14×14 at batch 64: best of 8 runs 13% faster, median 7%, on a busy machine).
fn padded_stride(len: usize) -> usize {
    let lines = len.div_ceil(16);
    (lines | 1) * 16
}

/// Scratch per thread: the im2col buffer of one column vector (packed path only).
fn per_thread_len(g: &Conv2dGeom) -> usize {
    if direct_grid(g).is_some() {
        0
    } else {
        taps(g) * (g.in_channels / g.groups) * NR
    }
}

fn run_scratch_len(g: &Conv2dGeom, batch: usize, threads: usize) -> usize {
    transpose_len(g, batch) + threads.max(1) * per_thread_len(g)
}

/// Everything a convolution run needs besides the tensors.
struct Core<'a> {
    g: &'a Conv2dGeom,
    isa: Isa,
    act: Activation,
    /// Packed weights, see [`packed_len`].
    a: &'a [f32],
    bias: Option<&'a [f32]>,
}

/// One tile's input side: where the B values are and how to step through them.
struct TileIn<'a> {
    /// Packed weights of this panel: `[tap][ci][MR]`.
    a: &'a [f32],
    /// Buffer the B values are read from (input, transposed input or im2col buffer).
    src: &'a [f32],
    /// Index in `src` of lane 0 at tap (0, 0), channel 0; may lie outside `src` (direct path:
    /// only lanes whose mask bit is set are read, and those are in bounds).
    base: isize,
    cin: usize,
    /// Index step between input channels, kernel rows and kernel columns.
    cs: isize,
    khs: isize,
    kws: isize,
    kh: usize,
    kw: usize,
    /// Direct path: lanes whose kernel row `kh` / column `kw` stays inside the input.
    masks: Option<(&'a [u16], &'a [u16])>,
}

/// One tile's output side.
struct TileOut<'a> {
    out: SendPtr,
    /// Length of the output slice (stores are bounds-checked against it per tile).
    len: usize,
    /// `(lane mask, index offset)` of each run of lanes that is contiguous in the output: lane
    /// `l` of row `co` goes to `out[offset + co * ohw + l]`.
    segs: &'a [(u16, isize)],
    /// First output channel of the tile, and how many of its `MR` rows exist.
    co0: usize,
    rows: usize,
    ohw: usize,
    bias: Option<&'a [f32]>,
    act: Activation,
}

/// Per-column-vector bookkeeping, recomputed when a worker moves to the next vector.
struct ColVec {
    /// Image and pixel (`y·wv + x`) of lane 0 in the column grid.
    n0: usize,
    p0: usize,
    /// Column grid per image: the output (packed path) or the direct path's virtual grid.
    hv: usize,
    wv: usize,
    /// Lanes that exist (16 except in the last vector).
    lanes: usize,
    segs: [(u16, isize); NR],
    nsegs: usize,
    row_mask: [u16; MAX_DIRECT_KERNEL],
    col_mask: [u16; MAX_DIRECT_KERNEL],
}

impl ColVec {
    fn new() -> ColVec {
        ColVec {
            n0: 0,
            p0: 0,
            hv: 1,
            wv: 1,
            lanes: 0,
            segs: [(0, 0); NR],
            nsegs: 0,
            row_mask: [0; MAX_DIRECT_KERNEL],
            col_mask: [0; MAX_DIRECT_KERNEL],
        }
    }

    /// Locates the vector starting at column `c0` of a `[N, hv, wv]` column grid, and its
    /// output segments (runs of lanes contiguous in the output; grid pixels outside the
    /// output are left out).
    fn locate(&mut self, g: &Conv2dGeom, (hv, wv): (usize, usize), c0: usize, total: usize) {
        let ohw = g.out_h * g.out_w;
        let lanes = NR.min(total - c0);
        self.lanes = lanes;
        self.hv = hv;
        self.wv = wv;
        self.n0 = c0 / (hv * wv);
        self.p0 = c0 % (hv * wv);
        self.nsegs = 0;
        if (hv, wv) == (g.out_h, g.out_w) {
            // Every lane is an output pixel; runs break only between images.
            let (mut l, mut n, mut p) = (0, self.n0, self.p0);
            while l < lanes {
                let len = (lanes - l).min(ohw - p);
                let mask = (((1u32 << len) - 1) << l) as u16;
                let off = (n * g.out_channels * ohw + p) as isize - l as isize;
                self.segs[self.nsegs] = (mask, off);
                self.nsegs += 1;
                l += len;
                n += 1;
                p = 0;
            }
            return;
        }
        let (mut n, mut y, mut x) = (self.n0, self.p0 / wv, self.p0 % wv);
        let mut next = isize::MIN; // output index that would continue the current run
        for l in 0..lanes {
            if y < g.out_h && x < g.out_w {
                let o = (n * g.out_channels * ohw + y * g.out_w + x) as isize;
                if o != next {
                    self.segs[self.nsegs] = (0, o - l as isize);
                    self.nsegs += 1;
                }
                self.segs[self.nsegs - 1].0 |= 1 << l;
                next = o + 1;
            } else {
                next = isize::MIN; // a dropped lane ends the run
            }
            x += 1;
            if x == wv {
                x = 0;
                y += 1;
                if y == hv {
                    y = 0;
                    n += 1;
                }
            }
        }
    }

    /// Image, grid row and grid column of each lane (valid for `l < lanes`).
    fn coords(&self) -> ([usize; NR], [usize; NR], [usize; NR]) {
        let (mut n, mut oh, mut ow) = (self.n0, self.p0 / self.wv, self.p0 % self.wv);
        let (mut ns, mut ohs, mut ows) = ([0; NR], [0; NR], [0; NR]);
        for l in 0..self.lanes {
            ns[l] = n;
            ohs[l] = oh;
            ows[l] = ow;
            ow += 1;
            if ow == self.wv {
                ow = 0;
                oh += 1;
                if oh == self.hv {
                    oh = 0;
                    n += 1;
                }
            }
        }
        (ns, ohs, ows)
    }

    /// Direct path: which lanes each kernel row / column keeps inside the input.
    fn direct_masks(&mut self, g: &Conv2dGeom, isa: Isa) {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 && self.hv * self.wv + NR < 1 << 21 {
            // SAFETY: `Isa::Avx512` is only chosen when avx512f is available (see `tile`).
            unsafe { self.direct_masks_avx512(g) };
            return;
        }
        let _ = isa;
        let (_, oh, ow) = self.coords();
        for kh in 0..g.kernel_h {
            let dy = (kh * g.dilation_h) as isize - g.pad_top as isize;
            let mut m = 0u16;
            for (l, &oh) in oh.iter().enumerate().take(self.lanes) {
                let ih = oh as isize + dy;
                if ih >= 0 && ih < g.in_h as isize {
                    m |= 1 << l;
                }
            }
            self.row_mask[kh] = m;
        }
        for kw in 0..g.kernel_w {
            let dx = (kw * g.dilation_w) as isize - g.pad_left as isize;
            let mut m = 0u16;
            for (l, &ow) in ow.iter().enumerate().take(self.lanes) {
                let iw = ow as isize + dx;
                if iw >= 0 && iw < g.in_w as isize {
                    m |= 1 << l;
                }
            }
            self.col_mask[kw] = m;
        }
    }

    /// [`ColVec::direct_masks`] with vector arithmetic: lane pixels `p0 + l` are split into
    /// row and column by multiplying with `f32` reciprocals. That is exact here: `(p + ½)/D`
    /// lies at least `½/D` from an integer, and the two roundings move it by at most
    /// `p·2⁻²³/D`, less than `¼/D` for the pixel counts below 2^21 this is used for.
    ///
    /// # Safety
    /// The CPU must support avx512f.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn direct_masks_avx512(&mut self, g: &Conv2dGeom) {
        use std::arch::x86_64::*;
        let ohw = (self.hv * self.wv) as f32;
        let w = self.wv as f32;
        let iota = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let half = _mm512_set1_ps(0.5);
        let p = _mm512_add_ps(_mm512_set1_ps(self.p0 as f32), iota);
        // p mod (H·W): lanes past the image wrap into the next one(s).
        let img = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(_mm512_add_ps(p, half), _mm512_set1_ps(1.0 / ohw)),
        );
        let p = _mm512_fnmadd_ps(img, _mm512_set1_ps(ohw), p);
        let oh = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(_mm512_add_ps(p, half), _mm512_set1_ps(1.0 / w)),
        );
        let ow = _mm512_fnmadd_ps(oh, _mm512_set1_ps(w), p);
        let (oh, ow) = (_mm512_cvtps_epi32(oh), _mm512_cvtps_epi32(ow));
        let lanes = ((1u32 << self.lanes) - 1) as u16;
        let ih_n = _mm512_set1_epi32(g.in_h as i32);
        for kh in 0..g.kernel_h {
            let dy = (kh * g.dilation_h) as i32 - g.pad_top as i32;
            // Unsigned compare: negative rows wrap to huge values and fail `< H`.
            let ih = _mm512_add_epi32(oh, _mm512_set1_epi32(dy));
            self.row_mask[kh] = _mm512_mask_cmplt_epu32_mask(lanes, ih, ih_n);
        }
        let iw_n = _mm512_set1_epi32(g.in_w as i32);
        for kw in 0..g.kernel_w {
            let dx = (kw * g.dilation_w) as i32 - g.pad_left as i32;
            let iw = _mm512_add_epi32(ow, _mm512_set1_epi32(dx));
            self.col_mask[kw] = _mm512_mask_cmplt_epu32_mask(lanes, iw, iw_n);
        }
    }

    /// Packed path: gathers the vector's input values of group `grp` into `buf` as
    /// `[tap][ci][NR]`, zero where a tap falls on padding or past the last column.
    fn im2col(&self, g: &Conv2dGeom, grp: usize, input: &[f32], buf: &mut [f32], isa: Isa) {
        let (ns, ohs, ows) = self.coords();
        let cin = g.in_channels / g.groups;
        let hw = g.in_h * g.in_w;
        // Gather indices are i32: fall back to scalar copies for huge inputs.
        let gather = isa == Isa::Avx512 && input.len() <= i32::MAX as usize;
        let mut idx = [0usize; NR];
        for kh in 0..g.kernel_h {
            for kw in 0..g.kernel_w {
                let t = kh * g.kernel_w + kw;
                let mut mask = 0u16;
                for l in 0..self.lanes {
                    let ih =
                        (ohs[l] * g.stride_h + kh * g.dilation_h) as isize - g.pad_top as isize;
                    let iw =
                        (ows[l] * g.stride_w + kw * g.dilation_w) as isize - g.pad_left as isize;
                    idx[l] = 0;
                    if ih >= 0 && ih < g.in_h as isize && iw >= 0 && iw < g.in_w as isize {
                        idx[l] = (ns[l] * g.in_channels + grp * cin) * hw
                            + ih as usize * g.in_w
                            + iw as usize;
                        mask |= 1 << l;
                    }
                }
                let dst = &mut buf[t * cin * NR..][..cin * NR];
                #[cfg(target_arch = "x86_64")]
                if gather {
                    // SAFETY: `gather` implies avx512f (`Isa::Avx512` is only used when
                    // available) and indices that fit in i32.
                    unsafe { gather_rows(input, &idx, mask, hw, dst) };
                    continue;
                }
                let _ = gather;
                for (ci, row) in dst.chunks_exact_mut(NR).enumerate() {
                    for (l, v) in row.iter_mut().enumerate() {
                        *v = if mask >> l & 1 == 1 {
                            input[idx[l] + ci * hw]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// `dst[ci·NR + l] = input[idx[l] + ci·step]` for lanes set in `mask`, else 0, for every
/// row `ci` of `dst`, with one AVX-512 gather per row.
///
/// # Safety
/// The CPU must support avx512f; `input.len()` must fit in i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_rows(input: &[f32], idx: &[usize; NR], mask: u16, step: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let rows = dst.len() / NR;
    // Checked here so the unchecked gathers below stay in bounds.
    for (l, &i) in idx.iter().enumerate() {
        if mask >> l & 1 == 1 {
            assert!(rows == 0 || i + (rows - 1) * step < input.len());
        }
    }
    let mut lanes = [0i32; NR];
    for (d, &i) in lanes.iter_mut().zip(idx) {
        *d = i as i32; // < input.len() <= i32::MAX for set lanes; unused otherwise
    }
    // SAFETY: `lanes` is 64 bytes, an unaligned load is fine.
    let mut iv = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
    let stepv = _mm512_set1_epi32(step as i32);
    for row in dst.chunks_exact_mut(NR) {
        // SAFETY: lanes set in `mask` index `input` in bounds (asserted above, and
        // `idx + ci·step` stays below `input.len()` <= i32::MAX so the i32 sum cannot wrap);
        // masked-off lanes are not accessed.
        let v = unsafe {
            _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, iv, input.as_ptr().cast())
        };
        // SAFETY: `row` has exactly NR = 16 floats.
        unsafe { _mm512_storeu_ps(row.as_mut_ptr(), v) };
        iv = _mm512_add_epi32(iv, stepv);
    }
}

fn run_core(c: &Core, batch: usize, input: &[f32], output: &mut [f32], scratch: &mut [f32]) {
    let g = c.g;
    check_geom(g);
    check_len("conv2d input", input.len(), batch * g.in_len());
    check_len("conv2d output", output.len(), batch * g.out_len());
    let nt = rayon::current_num_threads().max(1);
    let need = run_scratch_len(g, batch, nt);
    assert!(
        scratch.len() >= need,
        "conv2d scratch: slice has {} elements, need at least {need} for {nt} threads",
        scratch.len()
    );
    if batch * g.out_h * g.out_w == 0 || g.out_channels == 0 {
        return;
    }
    let grid = direct_grid(g);
    let (hv, wv) = grid.unwrap_or((g.out_h, g.out_w));
    let total = batch * hv * wv;
    let (tbuf, rest) = scratch.split_at_mut(transpose_len(g, batch));
    let tbuf_used = !tbuf.is_empty();
    let (h, w) = (g.in_h, g.in_w);
    let src: &[f32] = if tbuf.is_empty() {
        input
    } else {
        // [N, C, H, W] -> [C, N, Hv, Wv]; grid cells outside the input are never read (the
        // masks only select taps inside H × W), so they are left as they are.
        tbuf.par_chunks_mut(padded_stride(batch * hv * wv))
            .enumerate()
            .for_each(|(ci, dst)| {
                for n in 0..batch {
                    let s = &input[(n * g.in_channels + ci) * h * w..][..h * w];
                    let d = &mut dst[n * hv * wv..][..hv * wv];
                    if wv == w {
                        d[..h * w].copy_from_slice(s);
                    } else {
                        for (d, s) in d.chunks_exact_mut(wv).zip(s.chunks_exact(w)) {
                            d[..w].copy_from_slice(s);
                        }
                    }
                }
            });
        tbuf
    };
    // Channel stride of `src`: the transposed copy's, or H·W of the input itself (one image,
    // or one channel).
    let cs = if tbuf_used {
        padded_stride(total)
    } else {
        total
    };
    let nvec = total.div_ceil(NR);
    let mp = panels_per_group(g);
    let units = nvec * g.groups * mp;
    let work = Work {
        c,
        src,
        cs,
        input,
        grid,
        total,
        mp,
        units,
        out: SendPtr(output.as_mut_ptr()),
        out_len: output.len(),
    };
    let per = per_thread_len(g);
    // Below ~2 µs of work, waking another thread costs more than it saves. (The first layer
    // of the seed model at batch 1, 2^18 lane-FMAs at low efficiency, gains from splitting.)
    let fmas = units * taps(g) * (g.in_channels / g.groups) * MR * NR;
    if nt == 1 || units == 1 || fmas < 1 << 17 {
        work.run(0, 1, &mut rest[..per]);
    } else if per == 0 {
        let w = &work;
        // No per-thread buffers: split finer than the thread count so rayon can balance
        // the load (other processes share the cores).
        let parts = units.min(8 * nt);
        (0..parts)
            .into_par_iter()
            .for_each(|t| w.run(t, parts, &mut []));
    } else {
        let w = &work;
        rest[..nt * per]
            .par_chunks_mut(per)
            .enumerate()
            .for_each(|(t, buf)| w.run(t, nt, buf));
    }
}

/// A convolution split into `units` tiles, ordered column vector, group, panel.
struct Work<'a> {
    c: &'a Core<'a>,
    /// Where the direct path reads (input, or its `[C, N, Hv, Wv]` copy).
    src: &'a [f32],
    /// Distance in `src` between input channels (direct path).
    cs: usize,
    input: &'a [f32],
    /// The direct path's virtual grid, or `None` on the packed path.
    grid: Option<(usize, usize)>,
    /// Columns: `batch · Hv · Wv` (direct) or `batch · H_out · W_out` (packed).
    total: usize,
    mp: usize,
    units: usize,
    out: SendPtr,
    out_len: usize,
}

// SAFETY: `out` is only written through tiles that are disjoint between workers (see `run`);
// everything else is shared read-only data.
unsafe impl Sync for Work<'_> {}

impl Work<'_> {
    /// Worker `t` of `parts` computes tiles `[units·t/parts, units·(t+1)/parts)`. Tiles write
    /// disjoint output elements (distinct column vectors or distinct output channels), so
    /// workers never write the same element.
    fn run(&self, t: usize, parts: usize, buf: &mut [f32]) {
        let g = self.c.g;
        let cin = g.in_channels / g.groups;
        let cout = g.out_channels / g.groups;
        let t_n = taps(g);
        let panel_len = t_n * cin * MR;
        let (u0, u1) = (self.units * t / parts, self.units * (t + 1) / parts);
        let mut cv = ColVec::new();
        let mut cur = (usize::MAX, usize::MAX);
        let per_vec = g.groups * self.mp;
        let ohw = g.out_h * g.out_w;
        // (vector, group, panel) of unit u0, then stepped like an odometer (no divisions in
        // the loop: with one input channel a tile is only a few hundred FMAs).
        let (mut v, mut grp, mut p) = (u0 / per_vec, (u0 % per_vec) / self.mp, u0 % self.mp);
        let direct = self.grid.is_some();
        let (hv, wv) = self.grid.unwrap_or((g.out_h, g.out_w));
        let cs = self.cs as isize;
        for _ in u0..u1 {
            if cur.0 != v {
                cv.locate(g, (hv, wv), v * NR, self.total);
                if direct {
                    cv.direct_masks(g, self.c.isa);
                }
                cur = (v, usize::MAX);
            }
            if !direct && cur.1 != grp {
                cv.im2col(g, grp, self.input, buf, self.c.isa);
                cur.1 = grp;
            }
            let a = &self.c.a[(grp * self.mp + p) * panel_len..][..panel_len];
            let tin = if direct {
                TileIn {
                    a,
                    src: self.src,
                    base: (grp * cin) as isize * cs + (v * NR) as isize
                        - (g.pad_top * wv + g.pad_left) as isize,
                    cin,
                    cs,
                    khs: (g.dilation_h * wv) as isize,
                    kws: g.dilation_w as isize,
                    kh: g.kernel_h,
                    kw: g.kernel_w,
                    masks: Some((&cv.row_mask[..g.kernel_h], &cv.col_mask[..g.kernel_w])),
                }
            } else {
                TileIn {
                    a,
                    src: buf,
                    base: 0,
                    cin,
                    cs: NR as isize,
                    khs: (g.kernel_w * cin * NR) as isize,
                    kws: (cin * NR) as isize,
                    kh: g.kernel_h,
                    kw: g.kernel_w,
                    masks: None,
                }
            };
            let tout = TileOut {
                out: self.out,
                len: self.out_len,
                segs: &cv.segs[..cv.nsegs],
                co0: grp * cout + p * MR,
                rows: MR.min(cout - p * MR),
                ohw,
                bias: self.c.bias,
                act: self.c.act,
            };
            tile(self.c.isa, &tin, &tout);
            p += 1;
            if p == self.mp {
                p = 0;
                grp += 1;
                if grp == g.groups {
                    grp = 0;
                    v += 1;
                }
            }
        }
    }
}

fn tile(isa: Isa, tin: &TileIn, tout: &TileOut) {
    // Cheap bounds check of the unchecked stores below: the first and last element of
    // every segment in the first and last row (a few compares per tile).
    for &(m, off) in tout.segs {
        if m == 0 || tout.rows == 0 {
            continue;
        }
        let lo = off + (tout.co0 * tout.ohw) as isize + m.trailing_zeros() as isize;
        let hi = off
            + ((tout.co0 + tout.rows - 1) * tout.ohw) as isize
            + (15 - m.leading_zeros()) as isize;
        assert!(
            lo >= 0 && (hi as usize) < tout.len,
            "conv2d: tile store out of bounds"
        );
    }
    crate::simd::dispatch(isa, Tile { tin, tout });
}

/// One `MR × NR` tile as a [`Kernel`]: the same source for every instruction set. The 16
/// pixels are `16 / LANES` vectors; the 16 output channels go in passes of as many rows as the
/// register file holds next to them (16 × 1 zmm on AVX-512; 4 rows × 2 ymm per pass on AVX2;
/// 2 rows × 4 vectors per pass in the portable build).
///
/// Safety contract (checked by [`tile`]'s caller): every lane with its mask bit set (all
/// lanes without masks) addresses an element of `tin.src`; `tin.a` holds `taps · cin · MR`
/// floats; `tout` describes output elements that only this call writes.
struct Tile<'a> {
    tin: &'a TileIn<'a>,
    tout: &'a TileOut<'a>,
}

impl Kernel for Tile<'_> {
    type Out = ();

    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (tin, tout) = (self.tin, self.tout);
        macro_rules! rows {
            ($r:literal, $nv:literal, $r0:expr) => {
                match (tin.masks.is_some(), tin.cin == 1) {
                    (true, true) => tile_rows::<S, true, true, $r, $nv>(s, tin, tout, $r0),
                    (true, false) => tile_rows::<S, true, false, $r, $nv>(s, tin, tout, $r0),
                    (false, true) => tile_rows::<S, false, true, $r, $nv>(s, tin, tout, $r0),
                    (false, false) => tile_rows::<S, false, false, $r, $nv>(s, tin, tout, $r0),
                }
            };
        }
        match S::LANES {
            16 => rows!(16, 1, 0),
            8 => {
                // 4 × 2 accumulators, two masks, two B vectors and a broadcast: 13 of the 16
                // ymm registers. (Passes of 6 rows need 17; LLVM then spilled all
                // accumulators on every channel iteration.)
                for r0 in (0..tout.rows).step_by(4) {
                    rows!(4, 2, r0);
                }
            }
            _ => {
                for r0 in (0..tout.rows).step_by(2) {
                    rows!(2, 4, r0);
                }
            }
        }
    }
}

/// Rows `r0 .. r0 + R` (those below `tout.rows`) of a [`Tile`], with `NV` vectors of
/// `S::LANES` pixels each (`NV · S::LANES = NR`).
#[inline(always)]
fn tile_rows<S: Simd, const MASKED: bool, const ONE_CI: bool, const R: usize, const NV: usize>(
    s: S,
    tin: &TileIn,
    tout: &TileOut,
    r0: usize,
) {
    assert!(r0 + R <= MR && NV * S::LANES == NR);
    debug_assert!(!ONE_CI || tin.cin == 1);
    // A constant trip count for one input channel lets the compiler drop the channel loop
    // (and the register shuffling around it) in the common first layer.
    let cin = if ONE_CI { 1 } else { tin.cin };
    // One flat array (entry `r·NV + h`) rather than `[[V; NV]; R]`: with the nested array
    // LLVM stored every accumulator to the stack on each channel iteration (AVX2, R = 6).
    let mut acc = [s.zero(); MR];
    let a = tin.a.as_ptr();
    let src = tin.src.as_ptr();
    assert!(tin.a.len() >= tin.kh * tin.kw * tin.cin * MR);
    let lane_mask = (1u32 << S::LANES) - 1;
    // An explicit tap loop rather than `for_each_tap`'s closure: a closure is compiled on its
    // own, without the caller's target features, and may not be inlined.
    let (rm, cm) = tin.masks.unwrap_or((&[], &[]));
    for kh in 0..tin.kh {
        let rmask = if MASKED {
            rm.get(kh).copied().unwrap_or(0)
        } else {
            u16::MAX
        };
        if rmask == 0 {
            continue;
        }
        for kw in 0..tin.kw {
            let m = if MASKED {
                rmask & cm.get(kw).copied().unwrap_or(0)
            } else {
                u16::MAX
            };
            if m == 0 {
                continue;
            }
            let a_off = (kh * tin.kw + kw) * tin.cin * MR;
            let bp = tin.base + kh as isize * tin.khs + kw as isize * tin.kws;
            let mut mv = [s.mask(0); NV];
            if MASKED {
                for (h, mh) in mv.iter_mut().enumerate() {
                    *mh = s.mask((u32::from(m) >> (h * S::LANES)) & lane_mask);
                }
            }
            // SAFETY: `a_off` starts a tap's `[ci][MR]` block inside `tin.a`, and r0 < MR.
            let ap = unsafe { a.add(a_off + r0) };
            // Four channels per iteration: LLVM copies part of the accumulators between
            // registers on every trip of this loop (a live-range split at the latch: 9 zmm
            // moves per 16 FMAs on AVX-512, 7 ymm moves per 8 on AVX2), and the copies compete
            // with the FMAs for issue slots; unrolling spreads them over four channels
            // (batch-1 seed model: 1.05× AVX-512, 1.03–1.18× AVX2, old/new binaries
            // interleaved). The portable build (2 rows × 4 vectors, no such copies) was 13%
            // slower unrolled, so it keeps one channel per iteration.
            let unroll = if S::LANES >= 8 { 4 } else { 1 };
            let mut ci = 0;
            while unroll > 1 && ci + unroll <= cin {
                for u in 0..unroll {
                    // SAFETY: ci + u < cin (`tile_step`'s contract).
                    unsafe {
                        tile_step::<S, MASKED, R, NV>(
                            s,
                            &mut acc,
                            src,
                            bp,
                            tin.cs,
                            ci + u,
                            ap,
                            &mv,
                        );
                    }
                }
                ci += unroll;
            }
            while ci < cin {
                // SAFETY: ci < cin.
                unsafe { tile_step::<S, MASKED, R, NV>(s, &mut acc, src, bp, tin.cs, ci, ap, &mv) };
                ci += 1;
            }
        }
    }
    let zero = s.zero();
    let slope = match tout.act {
        Activation::LeakyRelu(sl) => s.splat(sl),
        _ => zero,
    };
    for r in 0..R.min(tout.rows.saturating_sub(r0)) {
        let co = tout.co0 + r0 + r;
        let b = s.splat(tout.bias.map_or(0.0, |b| b[co]));
        for h in 0..NV {
            let mut v = s.add(acc[r * NV + h], b);
            match tout.act {
                Activation::Identity => {}
                // max(0, v) returns its second operand when one is NaN, so NaN stays NaN.
                Activation::Relu => v = s.max(zero, v),
                Activation::LeakyRelu(_) => v = s.select(s.lt(v, zero), s.mul(v, slope), v),
            }
            for &(m, off) in tout.segs {
                let mh = (u32::from(m) >> (h * S::LANES)) & lane_mask;
                if mh == 0 {
                    continue;
                }
                let p = tout
                    .out
                    .0
                    .wrapping_offset(off + (co * tout.ohw + h * S::LANES) as isize);
                // SAFETY: lanes set in `m` map to output elements of this tile inside the
                // output slice (`ColVec::locate`); masked-off lanes are not accessed. No other
                // worker writes them (`Work::run`).
                unsafe { s.store_mask(p, s.mask(mh), v) };
            }
        }
    }
}

/// One input channel of a [`tile_rows`] tap: load its `NV` vectors of B (masked by `mv`) and
/// add `R` rows of weights times them into `acc`.
///
/// # Safety
/// `ci` is below the tile's channel count, `ap` points at this tap's `[ci][MR]` weight block
/// (offset by the pass's first row) so that `ap + ci·MR + R` stays inside it, and every lane
/// selected by `mv` (every lane without masks) of `src + bp + ci·cs` addresses an element of
/// the tile's source buffer ([`Tile`]'s contract).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the unrolled body of tile_rows' channel loop; all are loop state"
)]
unsafe fn tile_step<S: Simd, const MASKED: bool, const R: usize, const NV: usize>(
    s: S,
    acc: &mut [S::V; MR],
    src: *const f32,
    bp: isize,
    cs: isize,
    ci: usize,
    ap: *const f32,
    mv: &[S::M; NV],
) {
    let p = src.wrapping_offset(bp + ci as isize * cs);
    let mut bv = [s.zero(); NV];
    for (h, v) in bv.iter_mut().enumerate() {
        let ph = p.wrapping_add(h * S::LANES);
        // SAFETY: lanes selected by `mv[h]` address elements of the source (masked-off lanes
        // are not accessed, so `ph` may point outside it); without masks every lane does.
        *v = unsafe {
            if MASKED {
                s.load_mask(ph, mv[h])
            } else {
                s.load(ph)
            }
        };
    }
    // SAFETY: `ci·MR + r` < cin·MR for this tap's slice of the panel (caller's contract).
    let ar = unsafe { ap.add(ci * MR) };
    for r in 0..R {
        // SAFETY: r < R, inside the block (caller's contract).
        let w = s.splat(unsafe { *ar.add(r) });
        for h in 0..NV {
            acc[r * NV + h] = s.fmadd(w, bv[h], acc[r * NV + h]);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::reference;
    use crate::kernels::testutil::{assert_close, conv_geom as geom, data};

    fn isas() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// Output size PyTorch computes for one side, with extra bottom/right padding `extra`.
    fn out_size(i: usize, k: usize, s: usize, p: usize, extra: usize, d: usize) -> usize {
        (i + p + extra - d * (k - 1) - 1) / s + 1
    }

    /// Checks every ISA, with and without bias and activation, at 1 and 2 threads.
    fn check(g: Conv2dGeom, batch: usize) {
        let x = data(batch * g.in_len(), 1);
        let w = data(g.weight_len(), 2);
        let b = data(g.out_channels, 3);
        let k = g.in_channels / g.groups * g.kernel_h * g.kernel_w;
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
            for isa in isas() {
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let conv = PackedConv::with_isa(&g, &w, bias, act, isa);
                    let mut got = vec![f32::NAN; batch * g.out_len()];
                    let mut scratch = vec![0.0; conv.scratch_len(batch, threads)];
                    pool.install(|| conv.run(batch, &x, &mut got, &mut scratch));
                    assert_close(
                        &got,
                        &want,
                        k,
                        &format!("{g:?} batch {batch} {isa:?} {act:?}"),
                    );
                }
            }
        }
        // The unprepared entry point.
        let mut want = vec![0.0; batch * g.out_len()];
        reference::conv2d(&g, batch, &x, &w, Some(&b), &mut want);
        let mut got = vec![f32::NAN; batch * g.out_len()];
        let mut scratch = vec![0.0; conv2d_scratch_len(&g, batch, rayon::current_num_threads())];
        conv2d(&g, batch, &x, &w, Some(&b), &mut got, &mut scratch);
        assert_close(&got, &want, k, "conv2d");
    }

    #[test]
    fn seed_shapes() {
        check(geom(1, 16, (28, 28), (5, 5), (1, 1), (2, 2), (1, 1), 1), 2);
        check(geom(16, 32, (14, 14), (5, 5), (1, 1), (2, 2), (1, 1), 1), 3);
        check(geom(32, 64, (7, 7), (5, 5), (1, 1), (2, 2), (1, 1), 1), 3);
    }

    #[test]
    fn strided_padded() {
        // Large enough to be split over threads (packed path, per-thread buffers).
        check(geom(16, 32, (24, 24), (3, 3), (2, 2), (1, 1), (1, 1), 1), 3);
        check(geom(3, 8, (11, 9), (3, 3), (2, 2), (1, 1), (1, 1), 1), 2);
        check(geom(2, 5, (10, 10), (4, 2), (3, 1), (2, 0), (1, 1), 1), 1);
    }

    #[test]
    fn dilated() {
        check(geom(3, 17, (12, 13), (3, 3), (1, 1), (2, 2), (2, 2), 1), 2);
        check(geom(2, 4, (9, 9), (3, 2), (1, 2), (0, 1), (3, 2), 1), 2);
    }

    #[test]
    fn grouped_and_depthwise() {
        check(geom(6, 9, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 3), 2);
        check(geom(8, 8, (9, 7), (3, 3), (1, 1), (1, 1), (1, 1), 8), 2);
        check(geom(4, 8, (9, 7), (3, 3), (2, 2), (1, 1), (1, 1), 4), 1);
    }

    #[test]
    fn one_by_one_and_kernel_equals_input() {
        check(geom(5, 33, (6, 7), (1, 1), (1, 1), (0, 0), (1, 1), 1), 3);
        check(geom(3, 20, (5, 6), (5, 6), (1, 1), (0, 0), (1, 1), 1), 4);
        check(geom(2, 3, (1, 1), (1, 1), (1, 1), (0, 0), (1, 1), 1), 5);
    }

    #[test]
    fn stride_one_not_same_uses_a_grid() {
        // valid 5×5 on 28×28 -> 24×24: direct path over a 28×28 grid.
        let g = geom(3, 8, (28, 28), (5, 5), (1, 1), (0, 0), (1, 1), 1);
        assert_eq!(direct_grid(&g), Some((28, 28)));
        check(g, 2);
        // Output larger than the input (padding 2 on a 3×3 kernel): grid of the output.
        let g = geom(2, 5, (6, 5), (3, 3), (1, 1), (2, 2), (1, 1), 1);
        assert_eq!(direct_grid(&g), Some((8, 7)));
        check(g, 3);
        // Found by proptest: a dropped grid column between two images must split the run
        // even though the two images' output pixels are adjacent in memory.
        let g = Conv2dGeom {
            in_w: 2,
            out_w: 1,
            kernel_w: 4,
            ..geom(1, 1, (1, 4), (1, 4), (1, 1), (0, 0), (1, 1), 1)
        };
        check(g, 2);
        // Mostly wasted grid: packed path.
        let g = geom(2, 3, (7, 7), (5, 5), (1, 1), (0, 0), (1, 1), 1);
        assert_eq!(direct_grid(&g), None);
        check(g, 2);
    }

    #[test]
    fn asymmetric_same_padding() {
        // padding="same" with an even kernel: 1 above/left, 2 below/right.
        let mut g = geom(3, 4, (7, 6), (4, 4), (1, 1), (1, 1), (1, 1), 1);
        g.out_h = 7;
        g.out_w = 6;
        check(g, 2);
    }

    #[test]
    fn relu_keeps_nan() {
        let g = geom(1, 1, (4, 4), (1, 1), (1, 1), (0, 0), (1, 1), 1);
        let mut x = vec![1.0; 16];
        x[5] = f32::NAN;
        x[6] = -1.0;
        for isa in isas() {
            let conv = PackedConv::with_isa(&g, &[1.0], None, Activation::Relu, isa);
            let mut y = vec![0.0; 16];
            let mut s = vec![0.0; conv.scratch_len(1, rayon::current_num_threads())];
            conv.run(1, &x, &mut y, &mut s);
            assert!(y[5].is_nan(), "{isa:?}");
            assert_eq!(y[6], 0.0);
            assert_eq!(y[0], 1.0);
        }
    }

    #[test]
    #[should_panic(expected = "conv2d input")]
    fn wrong_input_length_panics() {
        let g = geom(1, 1, (4, 4), (1, 1), (1, 1), (0, 0), (1, 1), 1);
        let conv = PackedConv::new(&g, &[1.0], None, Activation::Identity);
        conv.run(1, &[0.0; 15], &mut [0.0; 16], &mut []);
    }

    prop_compose! {
        fn any_conv()(
            groups in 1usize..=3, cin_g in 1usize..=3, cout_g in 1usize..=18,
            kh in 1usize..=4, kw in 1usize..=4, sh in 1usize..=3, sw in 1usize..=3,
            dh in 1usize..=2, dw in 1usize..=2,
            h in 1usize..=10, w in 1usize..=10, ph in 0usize..=2, pw in 0usize..=2,
            eh in 0usize..=2, ew in 0usize..=2, mode in 0usize..3,
        ) -> Option<Conv2dGeom> {
            // 0: any stride (packed path); 1: stride 1 (direct path when few lanes are wasted);
            // 2: stride 1 with the output as large as the input ("same", no copy at batch 1).
            let (sh, sw) = if mode > 0 { (1, 1) } else { (sh, sw) };
            let same = mode == 2;
            let span_h = dh * (kh - 1) + 1;
            let span_w = dw * (kw - 1) + 1;
            if h + ph + eh < span_h || w + pw + ew < span_w {
                return None;
            }
            let mut g = Conv2dGeom {
                in_channels: cin_g * groups,
                in_h: h,
                in_w: w,
                out_channels: cout_g * groups,
                out_h: out_size(h, kh, sh, ph, eh, dh),
                out_w: out_size(w, kw, sw, pw, ew, dw),
                kernel_h: kh,
                kernel_w: kw,
                stride_h: sh,
                stride_w: sw,
                pad_top: ph,
                pad_left: pw,
                dilation_h: dh,
                dilation_w: dw,
                groups,
            };
            if same && (g.out_h != h || g.out_w != w) {
                // Force the direct path's shape when it is reachable.
                if h + ph + ph >= span_h && w + pw + pw >= span_w {
                    g.out_h = h;
                    g.out_w = w;
                }
            }
            Some(g)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn matches_reference(g in any_conv(), batch in 1usize..=3) {
            if let Some(g) = g {
                check(g, batch);
            }
        }
    }
}
