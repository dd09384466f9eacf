//! Fully connected layer (`nn.Linear`): dot-product kernels for narrow layers, `gemm` otherwise.
//!
//! A classifier head such as the seed model's (3136 → 10) is a tall, thin product on which
//! `gemm` reaches about 20 GFLOP/s. The dot-product path takes a block of `NB` images and up to
//! six weight rows, loads each chunk of `x` once and multiply-adds it against every row into
//! `NB × OB` vector accumulators held in registers; the weights are reread from cache once per
//! block of images. When every weight row has the same alignment (`in % 16 == 0`), the AVX-512
//! kernel starts its chunks where the rows' cache lines start, so only the `x` loads straddle
//! lines (split loads halved the speed).
//!
//! Summation order (fixed, independent of the thread count, of the blocking and of addresses):
//! lane `l` of an accumulator sums the products at `i ≡ l (mod lanes)` in increasing `i` (the
//! aligned kernel's lanes are a rotation of these, which the reduction does not see); the lanes
//! are then added by a halving tree (`l + lanes/2`, then `+ lanes/4`, …) and the bias added last.

use rayon::prelude::*;

use super::{Isa, check_len};
use crate::geom::LinearGeom;

/// Widest layer (`out_features`) the dot-product path takes; wider ones go through `gemm`.
const DOT_MAX_OUT: usize = 32;
/// Multiply-adds below which a call stays on the calling thread.
const PAR_MIN_MACS: usize = 1 << 18;
/// Multiply-adds each parallel task gets at least (smaller tasks only add overhead).
const PAR_TASK_MACS: usize = 1 << 17;
/// Images per block of the dot-product kernels.
const NB: usize = 4;

/// `nn.Linear` forward: `y = x · Wᵀ + bias` with `x` `[batch, in]`, `w` `[out, in]` (PyTorch
/// layout, no transpose needed), `bias` `[out]`, `y` `[batch, out]` (overwritten).
///
/// Layers with at most 32 outputs use SIMD dot-product kernels (AVX-512, AVX2+FMA or portable,
/// chosen at run time), which do not allocate; wider ones go through `gemm`, which keeps its
/// packing buffers in thread-local storage, so after the first call on each thread this does
/// not allocate either. Runs on the current rayon pool when the product is large enough to
/// split; results do not depend on the number of threads.
///
/// # Panics
/// If a slice length does not match `g` and `batch`.
pub fn linear(
    g: &LinearGeom,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    linear_with(Isa::detect(), g, batch, x, w, bias, y);
}

/// [`linear`] with the dot-product path's instruction set forced (tests compare them all).
fn linear_with(
    isa: Isa,
    g: &LinearGeom,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (k, o) = (g.in_features, g.out_features);
    check_len("linear x", x.len(), batch * k);
    check_len("linear w", w.len(), o * k);
    check_len("linear y", y.len(), batch * o);
    if let Some(b) = bias {
        check_len("linear bias", b.len(), o);
    }
    if batch == 0 || o == 0 {
        return;
    }
    if k == 0 {
        match bias {
            Some(b) => y.chunks_exact_mut(o).for_each(|row| row.copy_from_slice(b)),
            None => y.fill(0.0),
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && batch * o * k >= PAR_MIN_MACS;
    if o <= DOT_MAX_OUT {
        if parallel && batch > 1 {
            // Tasks of whole images: every output is still computed by one task, in the order
            // `dot_rows` fixes, so the split does not change any result.
            let rows = PAR_TASK_MACS
                .div_ceil(o * k)
                .max(batch.div_ceil(4 * threads))
                .next_multiple_of(NB);
            y.par_chunks_mut(rows * o)
                .zip(x.par_chunks(rows * k))
                .for_each(|(yc, xc)| dot_rows(isa, k, o, xc, w, bias, yc));
        } else {
            dot_rows(isa, k, o, x, w, bias, y);
        }
        return;
    }
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(o) {
            row.copy_from_slice(b);
        }
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: dst is `batch × o` with row stride `o`, column stride 1 (`y` has exactly that
    // many elements); lhs is `x` viewed as `batch × k` (row stride k); rhs is `Wᵀ`, i.e.
    // element (i, j) at `w[j·k + i]` (row stride 1, column stride k): all indices stay inside
    // the checked slices. `y` does not alias `x` or `w` (it is a unique borrow).
    unsafe {
        gemm::gemm(
            batch,
            o,
            k,
            y.as_mut_ptr(),
            1,
            o as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Most weight rows per kernel call: `NB · OB` accumulators plus `NB + 1` operands must fit in
/// the vector registers (32 with AVX-512, 16 with AVX2).
fn max_ob(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Portable => 6,
        Isa::Avx2 => 2,
    }
}

/// `y = x · Wᵀ + bias` for the whole rows (images) of `x` and `y`: images in blocks of `NB`
/// (then one at a time), each against the weight rows in near-equal blocks of at most
/// `max_ob(isa)`.
fn dot_rows(
    isa: Isa,
    k: usize,
    o: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    // Elements from the last 64-byte boundary to each weight row's start (the same for every
    // row when `k % 16 == 0`); only the AVX-512 kernel uses it.
    let shift = if isa == Isa::Avx512 && k.is_multiple_of(16) {
        w.as_ptr() as usize / size_of::<f32>() % 16
    } else {
        0
    };
    let nblk = o.div_ceil(max_ob(isa));
    let full = y.len() / o / NB * NB;
    let (xh, xt) = x.split_at(full * k);
    let (yh, yt) = y.split_at_mut(full * o);
    let heads = xh.chunks_exact(NB * k).zip(yh.chunks_exact_mut(NB * o));
    let tails = xt.chunks_exact(k).zip(yt.chunks_exact_mut(o));
    for (xb, yb) in heads.chain(tails) {
        for blk in 0..nblk {
            let (o0, o1) = (blk * o / nblk, (blk + 1) * o / nblk);
            let b = Block {
                k,
                shift,
                x: xb,
                w: &w[o0 * k..o1 * k],
                bias: bias.map(|b| &b[o0..o1]),
                y: &mut yb[o0..],
                ys: o,
            };
            dot_block(isa, xb.len() / k, o1 - o0, b);
        }
    }
}

/// One call of a dot-product kernel: the images of `x` (rows of `k`) against the rows of `w`,
/// image `n` and row `j` written to `y[n·ys + j]` (plus `bias[j]`).
struct Block<'a> {
    k: usize,
    /// Elements from the last 64-byte boundary to the start of every row of `w` (the AVX-512
    /// kernel aligns its weight loads with it; 0 for the other kernels, which ignore it).
    shift: usize,
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    y: &'a mut [f32],
    ys: usize,
}

impl Block<'_> {
    /// Checks the slice lengths the kernels rely on for `nb` images and `ob` rows.
    fn check(&self, nb: usize, ob: usize) {
        assert!(
            self.k > 0
                && self.shift < 16
                && self.x.len() == nb * self.k
                && self.w.len() == ob * self.k
                && self.bias.is_none_or(|b| b.len() == ob)
                && ob <= self.ys
                && self.y.len() >= (nb - 1) * self.ys + ob,
            "linear: dot block out of bounds"
        );
    }

    /// Writes the finished sums of image `n`, adding the bias.
    #[inline(always)]
    fn store<const OB: usize>(&mut self, n: usize, sums: [f32; OB]) {
        let row = &mut self.y[n * self.ys..n * self.ys + OB];
        match self.bias {
            Some(b) => {
                for ((d, s), b) in row.iter_mut().zip(sums).zip(b) {
                    *d = s + b;
                }
            }
            None => row.copy_from_slice(&sums),
        }
    }
}

/// Runs the kernel for `isa` on `b` (`nb` images, `ob` rows), with `nb` (`NB` or 1) and `ob`
/// (1 to `max_ob(isa)`) as compile-time sizes.
fn dot_block(isa: Isa, nb: usize, ob: usize, b: Block) {
    macro_rules! dispatch {
        ($kernel:ident) => {
            dispatch!($kernel; 1 2 3 4 5 6)
        };
        ($kernel:ident; $($n:literal)*) => {
            match (nb, ob) {
                $((NB, $n) => $kernel::<NB, $n>(b),)*
                $((1, $n) => $kernel::<1, $n>(b),)*
                _ => unreachable!("linear: dot block {nb}×{ob}"),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `Isa::Avx512` is only used after `is_available` confirmed avx512f
            // (`linear` takes `detect`; the tests filter on `is_available`).
            unsafe { dispatch!(dots_avx512) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: as above, for avx2 and fma.
            unsafe { dispatch!(dots_avx2) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 | Isa::Avx2 => unreachable!("linear: {isa:?} is x86-64 only"),
        Isa::Portable => dispatch!(dots_portable),
    }
}

/// Lanes of the portable kernel (AVX-512's width, so both sum in the same order).
const PORTABLE_LANES: usize = 16;

/// Portable dot-product kernel: `N` images × `OB` rows, 16-lane accumulators.
fn dots_portable<const N: usize, const OB: usize>(mut b: Block) {
    b.check(N, OB);
    let k = b.k;
    let mut acc = [[[0.0f32; PORTABLE_LANES]; OB]; N];
    let full = k / PORTABLE_LANES * PORTABLE_LANES;
    for i in (0..full).step_by(PORTABLE_LANES) {
        for j in 0..OB {
            let wc: &[f32; PORTABLE_LANES] = b.w[j * k + i..][..PORTABLE_LANES].try_into().unwrap();
            for (n, a) in acc.iter_mut().enumerate() {
                let xc: &[f32; PORTABLE_LANES] =
                    b.x[n * k + i..][..PORTABLE_LANES].try_into().unwrap();
                for l in 0..PORTABLE_LANES {
                    a[j][l] += xc[l] * wc[l];
                }
            }
        }
    }
    for j in 0..OB {
        for (n, a) in acc.iter_mut().enumerate() {
            let (xc, wc) = (
                &b.x[n * k + full..(n + 1) * k],
                &b.w[j * k + full..(j + 1) * k],
            );
            for ((s, xv), wv) in a[j].iter_mut().zip(xc).zip(wc) {
                *s += xv * wv;
            }
        }
    }
    for (n, a) in acc.iter().enumerate() {
        let sums = a.map(|mut lanes| {
            let mut half = PORTABLE_LANES / 2;
            while half > 0 {
                for l in 0..half {
                    lanes[l] += lanes[l + half];
                }
                half /= 2;
            }
            lanes[0]
        });
        b.store(n, sums);
    }
}

/// Lanes `l` of a 16-lane chunk starting at column `s` (negative before the row) that fall
/// inside a row of `k` columns: `0 <= s + l < k`.
#[inline(always)]
fn lane_mask(s: isize, k: usize) -> u16 {
    let lo = (-s).clamp(0, 16) as u32;
    let hi = (k as isize - s).clamp(0, 16) as u32;
    ((1u32 << hi) - (1u32 << lo)) as u16
}

/// AVX-512 dot-product kernel: `N` images × `OB` rows, 16-lane accumulators.
///
/// Chunks start at column `-shift` (a cache-line boundary of every weight row), so the weight
/// loads are aligned; the partial chunks at either end are read with masked loads (masked-off
/// lanes add `0·0` to an accumulator, which cannot be `-0.0`: a no-op). Lane `l` then sums the
/// columns `≡ l - shift (mod 16)`: the lanes are rotated by `shift`. The halving tree adds
/// lanes `≡ mod 8`, then `mod 4`, `mod 2`: groups that a rotation only permutes, so with each
/// addition commutative the total is the same bits for every `shift`.
///
/// # Safety
/// The CPU must support avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512<const N: usize, const OB: usize>(mut b: Block) {
    use std::arch::x86_64::*;
    b.check(N, OB);
    let k = b.k;
    let (xp, wp) = (b.x.as_ptr(), b.w.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); OB]; N];
    let mut s = -(b.shift as isize);
    if s < 0 {
        // SAFETY: the lanes set in the mask are columns `0..min(16 + s, k)` of each row;
        // masked-off lanes are not read.
        unsafe { fma_step_avx512(&mut acc, xp, wp, k, s, lane_mask(s, k)) };
        s += 16;
    }
    while s + 16 <= k as isize {
        // SAFETY: `0 <= s` and `s + 16 <= k`: all 16 lanes are inside each row.
        unsafe { fma_step_avx512(&mut acc, xp, wp, k, s, !0) };
        s += 16;
    }
    if s < k as isize {
        // SAFETY: the mask selects columns `s..k`; masked-off lanes are not read.
        unsafe { fma_step_avx512(&mut acc, xp, wp, k, s, lane_mask(s, k)) };
    }
    for (n, a) in acc.iter().enumerate() {
        // The halving tree in 512-bit registers: 256- and 128-bit operations would be VEX
        // encoded and pin the accumulators to registers 0–15, spilling the rest.
        b.store(
            n,
            a.map(|v| {
                let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b0100_1110>(v, v));
                let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b1011_0001>(v, v));
                let v = _mm512_add_ps(v, _mm512_permute_ps::<0b0100_1110>(v));
                let v = _mm512_add_ps(v, _mm512_permute_ps::<0b1011_0001>(v));
                _mm512_cvtss_f32(v)
            }),
        );
    }
}

/// One 16-lane step of [`dots_avx512`] at column `s`: `acc[n][j] += x[n][s..] · w[j][s..]` over
/// the lanes set in `m`, rows `k` apart.
///
/// # Safety
/// The CPU must support avx512f, `x` must hold `N` rows and `w` `OB` rows of `k` floats, and
/// the lanes set in `m` must be columns `s + l` inside `0..k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn fma_step_avx512<const N: usize, const OB: usize>(
    acc: &mut [[std::arch::x86_64::__m512; OB]; N],
    x: *const f32,
    w: *const f32,
    k: usize,
    s: isize,
    m: std::arch::x86_64::__mmask16,
) {
    use std::arch::x86_64::*;
    let mut xv = [_mm512_setzero_ps(); N];
    for (n, v) in xv.iter_mut().enumerate() {
        // SAFETY: the lanes set in `m` are inside row `n` (caller); masked-off lanes, which may
        // lie before the row (hence `wrapping_offset`), are not read.
        *v = unsafe { _mm512_maskz_loadu_ps(m, x.wrapping_offset((n * k) as isize + s)) };
    }
    for j in 0..OB {
        // SAFETY: as above, for row `j` of `w`.
        let wv = unsafe { _mm512_maskz_loadu_ps(m, w.wrapping_offset((j * k) as isize + s)) };
        for (a, &v) in acc.iter_mut().zip(&xv) {
            a[j] = _mm512_fmadd_ps(v, wv, a[j]);
        }
    }
}

/// AVX2 + FMA dot-product kernel: `N` images × `OB` rows, 8-lane accumulators, the last
/// partial chunk of each row read with a masked load.
///
/// # Safety
/// The CPU must support avx2 and fma.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2<const N: usize, const OB: usize>(mut b: Block) {
    use std::arch::x86_64::*;
    b.check(N, OB);
    let k = b.k;
    let (xp, wp) = (b.x.as_ptr(), b.w.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); OB]; N];
    let mut i = 0;
    while i + 8 <= k {
        // SAFETY: `i + 8 <= k`, so all 8 lanes of every row are in bounds.
        unsafe { fma_step_avx2::<N, OB, false>(&mut acc, xp, wp, k, i, _mm256_setzero_si256()) };
        i += 8;
    }
    if i < k {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m = _mm256_cmpgt_epi32(_mm256_set1_epi32((k - i) as i32), lanes);
        // SAFETY: `m` selects columns `i..k` of each row; masked-off lanes are not read.
        unsafe { fma_step_avx2::<N, OB, true>(&mut acc, xp, wp, k, i, m) };
    }
    for (n, a) in acc.iter().enumerate() {
        b.store(
            n,
            a.map(|v| {
                let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
                _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
            }),
        );
    }
}

/// One 8-lane step of [`dots_avx2`] at column `i`: `acc[n][j] += x[n][i..] · w[j][i..]`, rows
/// `k` apart; without `MASKED` all 8 lanes are read.
///
/// # Safety
/// The CPU must support avx2 and fma, `x` must hold `N` rows and `w` `OB` rows of `k` floats,
/// and columns `i..i + 8` (those set in `m` when `MASKED`) must be inside `0..k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn fma_step_avx2<const N: usize, const OB: usize, const MASKED: bool>(
    acc: &mut [[std::arch::x86_64::__m256; OB]; N],
    x: *const f32,
    w: *const f32,
    k: usize,
    i: usize,
    m: std::arch::x86_64::__m256i,
) {
    use std::arch::x86_64::*;
    let load = |p: *const f32| {
        if MASKED {
            // SAFETY: the caller guarantees the lanes set in `m` are in bounds.
            unsafe { _mm256_maskload_ps(p, m) }
        } else {
            // SAFETY: the caller guarantees all 8 lanes are in bounds.
            unsafe { _mm256_loadu_ps(p) }
        }
    };
    let mut xv = [_mm256_setzero_ps(); N];
    for (n, v) in xv.iter_mut().enumerate() {
        // SAFETY: `n·k + i` is inside `x` (caller).
        *v = load(unsafe { x.add(n * k + i) });
    }
    for j in 0..OB {
        // SAFETY: `j·k + i` is inside `w` (caller).
        let wv = load(unsafe { w.add(j * k + i) });
        for (a, &v) in acc.iter_mut().zip(&xv) {
            a[j] = _mm256_fmadd_ps(v, wv, a[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::reference;
    use crate::kernels::testutil::{assert_close, data};

    fn isas() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// Checks every ISA on 1, 2 and 3 threads against the reference, and that the thread
    /// count does not change a bit of the result.
    fn check(in_f: usize, out_f: usize, batch: usize, with_bias: bool) {
        let g = LinearGeom {
            in_features: in_f,
            out_features: out_f,
        };
        let x = data(batch * in_f, 4);
        let w = data(out_f * in_f, 5);
        let b = data(out_f, 6);
        let bias = with_bias.then_some(&b[..]);
        let mut want = vec![0.0; batch * out_f];
        reference::linear(&g, batch, &x, &w, bias, &mut want);
        for isa in isas() {
            let mut first = None;
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut got = vec![f32::NAN; batch * out_f];
                pool.install(|| linear_with(isa, &g, batch, &x, &w, bias, &mut got));
                let what = format!("linear {in_f}->{out_f} x{batch} {isa:?} t{threads}");
                assert_close(&got, &want, in_f, &what);
                let first = first.get_or_insert_with(|| got.clone());
                assert!(
                    got.iter()
                        .zip(first.iter())
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{what}: differs from 1 thread"
                );
            }
        }
    }

    #[test]
    fn seed_classifier() {
        check(3136, 10, 1, true);
        check(3136, 10, 64, true);
        check(3136, 10, 3, false);
    }

    #[test]
    fn dot_path_odd_sizes() {
        for (in_f, out_f) in [(3137, 10), (1000, 32), (17, 13), (15, 25), (8, 7), (1, 12)] {
            for batch in [1, 3, 64] {
                check(in_f, out_f, batch, true);
                check(in_f, out_f, batch, false);
            }
        }
    }

    #[test]
    fn large_parallel_and_no_bias() {
        check(300, 200, 33, false);
        check(300, 33, 40, true);
        check(1, 1, 1, false);
        check(7, 1, 5, true);
    }

    /// Each image's outputs are the same bits whatever the batch around it and wherever `x`
    /// and `w` sit in memory (the AVX-512 kernel aligns its loads to the weights' address).
    #[test]
    fn bits_do_not_depend_on_alignment_or_batch() {
        let at = |v: &[f32], off: usize| {
            let mut buf = vec![0.0; v.len() + 16];
            buf[off..off + v.len()].copy_from_slice(v);
            buf
        };
        for (in_f, out_f) in [(3136, 10), (48, 7), (33, 3), (5, 2)] {
            let g = LinearGeom {
                in_features: in_f,
                out_features: out_f,
            };
            let batch = 5;
            let (x, w, b) = (data(batch * in_f, 7), data(out_f * in_f, 8), data(out_f, 9));
            for isa in isas() {
                let mut want = vec![0.0; batch * out_f];
                for (xn, yn) in x.chunks_exact(in_f).zip(want.chunks_exact_mut(out_f)) {
                    linear_with(isa, &g, 1, xn, &w, Some(&b), yn);
                }
                for off in 0..16 {
                    let (xo, wo) = ((off * 7) % 16, off);
                    let (xbuf, wbuf) = (at(&x, xo), at(&w, wo));
                    let mut got = vec![0.0; batch * out_f];
                    let (xs, ws) = (&xbuf[xo..xo + x.len()], &wbuf[wo..wo + w.len()]);
                    linear_with(isa, &g, batch, xs, ws, Some(&b), &mut got);
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{in_f}->{out_f} {isa:?}: offsets x {xo}, w {wo} change the result"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_inputs_give_the_bias() {
        let g = LinearGeom {
            in_features: 0,
            out_features: 3,
        };
        let mut y = [f32::NAN; 6];
        linear(&g, 2, &[], &[], Some(&[1.0, 2.0, 3.0]), &mut y);
        assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        linear(&g, 2, &[], &[], None, &mut y);
        assert_eq!(y, [0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "linear w")]
    fn wrong_weight_length_panics() {
        let g = LinearGeom {
            in_features: 2,
            out_features: 2,
        };
        linear(&g, 1, &[0.0; 2], &[0.0; 3], None, &mut [0.0; 2]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_reference(i in 1usize..80, o in 1usize..40, n in 1usize..9, b in any::<bool>()) {
            check(i, o, n, b);
        }
    }
}
