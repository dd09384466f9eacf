//! Fully connected layer (`nn.Linear`): dot-product kernels for narrow layers, `gemm` otherwise.
//!
//! A classifier head such as the seed model's (3136 → 10) is a tall, thin product on which
//! `gemm` reaches about 20 GFLOP/s. The dot-product path takes a block of `NB` images and up to
//! six weight rows, loads each chunk of `x` once and multiply-adds it against every row into
//! `NB × OB` vector accumulators held in registers; the weights are reread from cache once per
//! block of images. When every weight row has the same alignment (`in % 16 == 0`), the kernel
//! starts its chunks where the rows' vectors start, so only the `x` loads straddle cache lines
//! (split loads halved the speed on AVX-512). One kernel source (`Dots`) serves every
//! instruction set through [`crate::simd`].
//!
//! Summation order (fixed, independent of the thread count, of the blocking and of addresses):
//! lane `l` of an accumulator sums the products at `i ≡ l (mod lanes)` in increasing `i` (the
//! aligned kernel's lanes are a rotation of these, which the reduction does not see); the lanes
//! are then added by a halving tree (`l + lanes/2`, then `+ lanes/4`, …) and the bias added last.

use rayon::prelude::*;

use super::Isa;
use crate::geom::LinearGeom;
use crate::simd::{Kernel, Simd};
use crate::util::check_len;

/// Widest layer (`out_features`) the dot-product path takes; wider ones go through `gemm`.
const DOT_MAX_OUT: usize = 32;
/// Multiply-adds below which a call stays on the calling thread.
const PAR_MIN_MACS: usize = 1 << 18;
/// Multiply-adds each parallel task gets at least (smaller tasks only add overhead).
const PAR_TASK_MACS: usize = 1 << 17;
/// Images per block of the dot-product kernels.
const NB: usize = 4;

/// An upper bound of the bytes `gemm` allocates for one [`linear`] call of `batch` images with
/// `threads` workers, for memory estimates: 0 for the dot-product path and for one image
/// (`gemm`'s matrix-vector path, measured not to allocate); otherwise a slab of the L2 cache's
/// size per thread (`gemm` keeps it thread-local) and its packing buffers for the right-hand
/// side and the left-hand side, at most 512 rows of the shared dimension each.
pub fn gemm_bytes(g: &LinearGeom, batch: usize, threads: usize) -> u128 {
    if g.out_features <= DOT_MAX_OUT || batch <= 1 {
        return 0;
    }
    let kc = g.in_features.min(512) as u128;
    let rows = g.out_features as u128 + batch.next_multiple_of(16) as u128;
    gemm_slab_bytes(threads) + 4 * kc * rows
}

/// The thread-local slabs `gemm` allocates on first use: one of the L2 cache's size per thread
/// (`threads` workers). Training pays them whenever a step goes through `gemm` (linear layers,
/// the image-major convolution backward), which every batch of more than one image does.
pub fn gemm_slab_bytes(threads: usize) -> u128 {
    threads.max(1) as u128 * l2_cache_bytes()
}

/// The L2 cache size `gemm` sizes its slab by, as Linux reports it; 2 MiB where it cannot be
/// read (larger than most L2 caches, so the estimate errs high).
fn l2_cache_bytes() -> u128 {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
        .ok()
        .and_then(|s| {
            let s = s.trim();
            let (num, scale) = match s.strip_suffix('K') {
                Some(n) => (n, 1 << 10),
                None => match s.strip_suffix('M') {
                    Some(n) => (n, 1 << 20),
                    None => (s, 1),
                },
            };
            num.parse::<u128>().ok().map(|n| n * scale)
        })
        .filter(|&b| b > 0 && b <= 1 << 30)
        .unwrap_or(2 << 20)
}

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
/// the vector registers (32 with AVX-512, 16 with AVX2 and the portable build's SSE/NEON).
fn max_ob(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 6,
        Isa::Avx2 | Isa::Portable => 2,
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
    // row when `k % 16 == 0`).
    let shift = if k.is_multiple_of(16) {
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
    /// Elements from the last 64-byte boundary to the start of every row of `w` (the kernel
    /// aligns its weight loads with it, modulo its vector width).
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
    macro_rules! run {
        ($($n:literal)*) => {
            match (nb, ob) {
                $((NB, $n) => crate::simd::dispatch(isa, Dots::<NB, $n>(b)),)*
                $((1, $n) => crate::simd::dispatch(isa, Dots::<1, $n>(b)),)*
                _ => unreachable!("linear: dot block {nb}×{ob}"),
            }
        };
    }
    run!(1 2 3 4 5 6)
}

/// Lanes `l` of a chunk of `lanes` columns starting at column `s` (negative before the row)
/// that fall inside a row of `k` columns: `0 <= s + l < k`.
#[inline(always)]
fn lane_mask(s: isize, k: usize, lanes: usize) -> u32 {
    let lo = (-s).clamp(0, lanes as isize) as u32;
    let hi = (k as isize - s).clamp(0, lanes as isize) as u32;
    ((1u64 << hi) - (1u64 << lo)) as u32
}

/// The dot-product kernel, one source for every instruction set: `N` images × `OB` rows,
/// `LANES`-wide accumulators.
///
/// Chunks start at column `-(shift mod LANES)` (a vector boundary of every weight row, when
/// the rows share one), so the weight loads are aligned; the partial chunks at either end are
/// read with masked loads (masked-off lanes add `0·0` to an accumulator, which cannot be
/// `-0.0`: a no-op). Lane `l` then sums the columns `≡ l - shift (mod LANES)`: the lanes are
/// rotated by the shift. The lane reduction ([`Simd::reduce_add`]) is a halving tree, adding
/// lanes `≡ mod LANES/2`, then `mod LANES/4`, …: groups that a rotation only permutes, so with
/// each addition commutative the total is the same bits for every shift.
struct Dots<'a, const N: usize, const OB: usize>(Block<'a>);

impl<const N: usize, const OB: usize> Kernel for Dots<'_, N, OB> {
    type Out = ();

    #[inline(always)]
    fn run<S: Simd>(self, sv: S) {
        let mut b = self.0;
        b.check(N, OB);
        let k = b.k;
        let lanes = S::LANES;
        let (xp, wp) = (b.x.as_ptr(), b.w.as_ptr());
        let mut acc = [[sv.zero(); OB]; N];
        let mut s = -((b.shift % lanes) as isize);
        if s < 0 {
            // SAFETY: the lanes set in the mask are columns `0..min(LANES + s, k)` of each
            // row; masked-off lanes are not read.
            unsafe { fma_step(sv, &mut acc, xp, wp, k, s, Some(lane_mask(s, k, lanes))) };
            s += lanes as isize;
        }
        while s + lanes as isize <= k as isize {
            // SAFETY: `0 <= s` and `s + LANES <= k`: every lane is inside each row.
            unsafe { fma_step(sv, &mut acc, xp, wp, k, s, None) };
            s += lanes as isize;
        }
        if s < k as isize {
            // SAFETY: the mask selects columns `s..k`; masked-off lanes are not read.
            unsafe { fma_step(sv, &mut acc, xp, wp, k, s, Some(lane_mask(s, k, lanes))) };
        }
        for (n, a) in acc.iter().enumerate() {
            b.store(n, a.map(|v| sv.reduce_add(v)));
        }
    }
}

/// One chunk of [`Dots`] at column `s`: `acc[n][j] += x[n][s..] · w[j][s..]` over the lanes set
/// in `mask` (all of them for `None`), rows `k` apart.
///
/// # Safety
/// `x` must hold `N` rows and `w` `OB` rows of `k` floats, and the lanes read (those set in
/// `mask`, or all) must be columns `s + l` inside `0..k`.
#[inline(always)]
unsafe fn fma_step<S: Simd, const N: usize, const OB: usize>(
    sv: S,
    acc: &mut [[S::V; OB]; N],
    x: *const f32,
    w: *const f32,
    k: usize,
    s: isize,
    mask: Option<u32>,
) {
    // No closure for the load: a closure is compiled without the caller's target features.
    let m = sv.mask(mask.unwrap_or(0));
    let masked = mask.is_some();
    let mut xv = [sv.zero(); N];
    for (n, v) in xv.iter_mut().enumerate() {
        let p = x.wrapping_offset((n * k) as isize + s);
        // SAFETY: the lanes read are inside row `n` (caller); masked-off lanes, which may lie
        // before the row (hence `wrapping_offset`), are not read.
        *v = unsafe {
            if masked {
                sv.load_mask(p, m)
            } else {
                sv.load(p)
            }
        };
    }
    for j in 0..OB {
        let p = w.wrapping_offset((j * k) as isize + s);
        // SAFETY: as above, for row `j` of `w`.
        let wv = unsafe {
            if masked {
                sv.load_mask(p, m)
            } else {
                sv.load(p)
            }
        };
        for (a, &v) in acc.iter_mut().zip(&xv) {
            a[j] = sv.fmadd(v, wv, a[j]);
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
