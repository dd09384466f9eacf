//! The vector layer every SIMD kernel is written over: one kernel source, one instantiation
//! per instruction set.
//!
//! A kernel is a type implementing [`Kernel`]: its `run::<S>` body is generic over a [`Simd`]
//! token and marked `#[inline(always)]`. [`dispatch`] calls it through one function per
//! instruction set that carries the matching `#[target_feature]`, so the generic body is
//! compiled once for AVX-512, once for AVX2 + FMA, once for NEON (aarch64) and once as plain
//! Rust ([`Portable`], fixed-size arrays the compiler vectorises with the target's baseline
//! SIMD). This is the pattern of `pulp` and of tract-linalg's generic frame: adding an ISA is
//! one implementation of [`Simd`], not a copy of every kernel.
//!
//! Tokens can only be made where the CPU has the instructions ([`dispatch`] checks), so the
//! operations themselves are safe; only memory access through raw pointers is `unsafe`.
//!
//! Vectors hold [`Simd::LANES`] floats; tile sizes follow [`Simd::REGS`]. Kernels on lane
//! tensors (16 images per slot, [`crate::lanes`]) treat a slot's 16 lanes as `16 / LANES`
//! vectors.

use crate::kernels::Isa;

/// Operations on `f32` vectors of one instruction set.
///
/// `max` and `select` follow x86 semantics everywhere: `max(a, b)` is `a > b ? a : b` (so it
/// returns `b` when either is NaN), comparisons are ordered (false on NaN) unless they say
/// otherwise.
pub trait Simd: Copy + Send + Sync + 'static {
    /// Floats per vector.
    const LANES: usize;
    /// Architectural vector registers (16 for AVX2 and SSE, 32 for AVX-512 and NEON): kernels
    /// size their register tiles from it.
    const REGS: usize;
    /// A vector of `LANES` floats.
    type V: Copy;
    /// A lane mask produced by comparisons.
    type M: Copy;

    /// All lanes zero.
    fn zero(self) -> Self::V;
    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Loads `LANES` floats from `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Stores `LANES` floats to `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + LANES` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// The mask selecting lane `l` where bit `l` of `bits` is set (bits past `LANES` are
    /// ignored). Build it once and reuse it: on AVX2 it costs three instructions.
    fn mask(self, bits: u32) -> Self::M;
    /// Loads the lanes `l` set in `m` from `p + l`, zero in the others; masked-off lanes are
    /// not accessed.
    ///
    /// # Safety
    /// `p + l` must be readable for every lane set in `m`.
    unsafe fn load_mask(self, p: *const f32, m: Self::M) -> Self::V;
    /// Stores the lanes set in `m` to `p + l`; the others are not accessed.
    ///
    /// # Safety
    /// `p + l` must be writable for every lane set in `m`.
    unsafe fn store_mask(self, p: *mut f32, m: Self::M, v: Self::V);
    /// `a · b + c` (fused where the ISA has FMA).
    fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a > b ? a : b` per lane.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// The even and the odd elements of the `2·LANES` sequence `a ‖ b`:
    /// `(a0 a2 … b0 b2 …, a1 a3 … b1 b3 …)`.
    fn deinterleave(self, a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// Sum of the lanes.
    fn reduce_add(self, v: Self::V) -> f32;
    /// `a > b` (false on NaN).
    fn gt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a < b` (false on NaN).
    fn lt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a == b` (false on NaN).
    fn eq(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a` is NaN.
    fn is_nan(self, a: Self::V) -> Self::M;
    /// Lanes set in either mask.
    fn or(self, a: Self::M, b: Self::M) -> Self::M;
    /// `m ? x : y` per lane.
    fn select(self, m: Self::M, x: Self::V, y: Self::V) -> Self::V;
}

/// A kernel body generic over the instruction set; see [`dispatch`].
pub trait Kernel {
    /// What the kernel returns.
    type Out;
    /// Runs the kernel with vectors of `S`. Implementations must be `#[inline(always)]` so
    /// that the body is compiled with the caller's target features.
    fn run<S: Simd>(self, s: S) -> Self::Out;
}

/// Runs `k` with the vectors of `isa`, or with [`Portable`] if the CPU lacks `isa` (so a
/// stray `Isa` value can never execute unsupported instructions).
#[inline]
pub fn dispatch<K: Kernel>(isa: Isa, k: K) -> K::Out {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if Isa::Avx512.is_available() => {
            // SAFETY: avx512f was just detected.
            unsafe { x86::run_avx512(k) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if Isa::Avx2.is_available() => {
            // SAFETY: avx2 and fma were just detected.
            unsafe { x86::run_avx2(k) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Portable => {
            // NEON is part of the aarch64 baseline: the portable choice runs it.
            k.run(neon::Neon(()))
        }
        _ => k.run(Portable(())),
    }
}

/// Runs `f` compiled for `isa`: element-wise loops written in plain Rust (activations,
/// optimizer updates, loss) are auto-vectorised with the ISA's full vector width instead of
/// the target's baseline (SSE2 on x86-64). Only for small loop bodies: the closure is a function
/// of its own, compiled without the ISA's features, and only gains them when LLVM inlines it
/// into the trampoline, which it does for a short loop but not for a large body (the Adam
/// update stayed SSE code this way and is a [`Kernel`] instead). `closures_compile_per_isa`
/// checks the result is the same on every ISA.
#[inline]
pub fn vectorized<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    struct Auto<F>(F);
    impl<R, F: FnOnce() -> R> Kernel for Auto<F> {
        type Out = R;
        #[inline(always)]
        fn run<S: Simd>(self, _: S) -> R {
            (self.0)()
        }
    }
    dispatch(isa, Auto(f))
}

/// Plain Rust on arrays of 4 floats: one SSE or NEON register, so the compiler's baseline
/// vectoriser maps every operation to one instruction (SSE2 has no FMA: `fmadd` is a multiply
/// and an add).
#[derive(Clone, Copy, Debug)]
pub struct Portable(());

macro_rules! lanewise {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $e:expr) => {{
        let (a, b) = ($a, $b);
        let mut r = [0.0f32; 4];
        for i in 0..4 {
            let ($x, $y) = (a[i], b[i]);
            r[i] = $e;
        }
        r
    }};
}

macro_rules! maskwise {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $e:expr) => {{
        let (a, b) = ($a, $b);
        let mut r = [false; 4];
        for i in 0..4 {
            let ($x, $y) = (a[i], b[i]);
            r[i] = $e;
        }
        r
    }};
}

impl Simd for Portable {
    const LANES: usize = 4;
    const REGS: usize = 16;
    type V = [f32; 4];
    type M = [bool; 4];

    #[inline(always)]
    fn zero(self) -> [f32; 4] {
        [0.0; 4]
    }
    #[inline(always)]
    fn splat(self, x: f32) -> [f32; 4] {
        [x; 4]
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> [f32; 4] {
        // SAFETY: the caller guarantees 4 readable floats; `read_unaligned` allows any
        // alignment.
        unsafe { p.cast::<[f32; 4]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: [f32; 4]) {
        // SAFETY: the caller guarantees 4 writable floats.
        unsafe { p.cast::<[f32; 4]>().write_unaligned(v) }
    }
    #[inline(always)]
    fn mask(self, bits: u32) -> [bool; 4] {
        [bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0]
    }
    #[inline(always)]
    unsafe fn load_mask(self, p: *const f32, m: [bool; 4]) -> [f32; 4] {
        let mut r = [0.0f32; 4];
        for (l, v) in r.iter_mut().enumerate() {
            if m[l] {
                // SAFETY: lane l is set, so `p + l` is readable (caller).
                *v = unsafe { *p.add(l) };
            }
        }
        r
    }
    #[inline(always)]
    unsafe fn store_mask(self, p: *mut f32, m: [bool; 4], v: [f32; 4]) {
        for (l, &x) in v.iter().enumerate() {
            if m[l] {
                // SAFETY: lane l is set, so `p + l` is writable (caller).
                unsafe { *p.add(l) = x };
            }
        }
    }
    #[inline(always)]
    fn fmadd(self, a: [f32; 4], b: [f32; 4], c: [f32; 4]) -> [f32; 4] {
        let mut r = [0.0f32; 4];
        for i in 0..4 {
            r[i] = a[i] * b[i] + c[i];
        }
        r
    }
    #[inline(always)]
    fn add(self, a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        lanewise!(a, b, |x, y| x + y)
    }
    #[inline(always)]
    fn sub(self, a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        lanewise!(a, b, |x, y| x - y)
    }
    #[inline(always)]
    fn mul(self, a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        lanewise!(a, b, |x, y| x * y)
    }
    #[inline(always)]
    fn max(self, a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        lanewise!(a, b, |x, y| if x > y { x } else { y })
    }
    #[inline(always)]
    fn deinterleave(self, a: [f32; 4], b: [f32; 4]) -> ([f32; 4], [f32; 4]) {
        ([a[0], a[2], b[0], b[2]], [a[1], a[3], b[1], b[3]])
    }
    #[inline(always)]
    fn reduce_add(self, v: [f32; 4]) -> f32 {
        (v[0] + v[2]) + (v[1] + v[3])
    }
    #[inline(always)]
    fn gt(self, a: [f32; 4], b: [f32; 4]) -> [bool; 4] {
        maskwise!(a, b, |x, y| x > y)
    }
    #[inline(always)]
    fn lt(self, a: [f32; 4], b: [f32; 4]) -> [bool; 4] {
        maskwise!(a, b, |x, y| x < y)
    }
    #[inline(always)]
    fn eq(self, a: [f32; 4], b: [f32; 4]) -> [bool; 4] {
        maskwise!(a, b, |x, y| x == y)
    }
    #[inline(always)]
    fn is_nan(self, a: [f32; 4]) -> [bool; 4] {
        maskwise!(a, a, |x, _y| x.is_nan())
    }
    #[inline(always)]
    fn or(self, a: [bool; 4], b: [bool; 4]) -> [bool; 4] {
        [a[0] | b[0], a[1] | b[1], a[2] | b[2], a[3] | b[3]]
    }
    #[inline(always)]
    fn select(self, m: [bool; 4], x: [f32; 4], y: [f32; 4]) -> [f32; 4] {
        let mut r = [0.0f32; 4];
        for i in 0..4 {
            r[i] = if m[i] { x[i] } else { y[i] };
        }
        r
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Kernel, Simd};

    /// # Safety
    /// The CPU must support avx512f.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_avx512<K: Kernel>(k: K) -> K::Out {
        k.run(Avx512(()))
    }

    /// # Safety
    /// The CPU must support avx2 and fma.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2<K: Kernel>(k: K) -> K::Out {
        k.run(Avx2(()))
    }

    /// AVX-512F: 16 floats per zmm register. Made only by [`super::dispatch`] after detection.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx512(());

    /// AVX2 + FMA: 8 floats per ymm register. Made only by [`super::dispatch`] after detection.
    #[derive(Clone, Copy, Debug)]
    pub struct Avx2(());

    // SAFETY (every `unsafe` block in these two impls that calls an intrinsic without touching
    // memory): a token exists only inside `run_avx512` / `run_avx2`, which `dispatch` calls
    // after detecting the features, so the instructions exist.
    impl Simd for Avx512 {
        const LANES: usize = 16;
        const REGS: usize = 32;
        type V = __m512;
        type M = __mmask16;

        #[inline(always)]
        fn zero(self) -> __m512 {
            // SAFETY: avx512f is available (token).
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m512 {
            // SAFETY: 16 readable floats (caller); avx512f available (token).
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m512) {
            // SAFETY: 16 writable floats (caller); avx512f available (token).
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn mask(self, bits: u32) -> __mmask16 {
            bits as u16
        }
        #[inline(always)]
        unsafe fn load_mask(self, p: *const f32, m: __mmask16) -> __m512 {
            // SAFETY: set lanes are readable (caller); masked-off lanes are not accessed.
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn store_mask(self, p: *mut f32, m: __mmask16, v: __m512) {
            // SAFETY: set lanes are writable (caller); masked-off lanes are not accessed.
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
        #[inline(always)]
        fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: avx512f is available (token).
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: as above. `vmaxps` returns its second operand when either is NaN.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn deinterleave(self, a: __m512, b: __m512) -> (__m512, __m512) {
            // SAFETY: avx512f is available (token).
            unsafe {
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
                (
                    _mm512_permutex2var_ps(a, even, b),
                    _mm512_permutex2var_ps(a, odd, b),
                )
            }
        }
        #[inline(always)]
        fn reduce_add(self, v: __m512) -> f32 {
            // SAFETY: as above.
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        fn gt(self, a: __m512, b: __m512) -> __mmask16 {
            // SAFETY: as above.
            unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) }
        }
        #[inline(always)]
        fn lt(self, a: __m512, b: __m512) -> __mmask16 {
            // SAFETY: as above.
            unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        fn eq(self, a: __m512, b: __m512) -> __mmask16 {
            // SAFETY: as above.
            unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b) }
        }
        #[inline(always)]
        fn is_nan(self, a: __m512) -> __mmask16 {
            // SAFETY: as above.
            unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a) }
        }
        #[inline(always)]
        fn or(self, a: __mmask16, b: __mmask16) -> __mmask16 {
            a | b
        }
        #[inline(always)]
        fn select(self, m: __mmask16, x: __m512, y: __m512) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_mask_blend_ps(m, y, x) }
        }
    }

    /// Bits `0..8` of `m` as an AVX2 lane mask (all ones where the bit is set).
    #[inline(always)]
    fn mask8(m: u32) -> __m256i {
        // SAFETY: only called from `Avx2` methods, whose token proves avx2.
        unsafe {
            let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m as i32), bits), bits)
        }
    }

    impl Simd for Avx2 {
        const LANES: usize = 8;
        const REGS: usize = 16;
        type V = __m256;
        type M = __m256;

        #[inline(always)]
        fn zero(self) -> __m256 {
            // SAFETY: avx2 is available (token).
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m256 {
            // SAFETY: 8 readable floats (caller); avx available (token).
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m256) {
            // SAFETY: 8 writable floats (caller); avx available (token).
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn mask(self, bits: u32) -> __m256 {
            // SAFETY: avx2 is available (token).
            unsafe { _mm256_castsi256_ps(mask8(bits)) }
        }
        #[inline(always)]
        unsafe fn load_mask(self, p: *const f32, m: __m256) -> __m256 {
            // SAFETY: set lanes are readable (caller); `vmaskmovps` does not access (or fault
            // on) masked-off lanes.
            unsafe { _mm256_maskload_ps(p, _mm256_castps_si256(m)) }
        }
        #[inline(always)]
        unsafe fn store_mask(self, p: *mut f32, m: __m256, v: __m256) {
            // SAFETY: set lanes are writable (caller); masked-off lanes are not accessed.
            unsafe { _mm256_maskstore_ps(p, _mm256_castps_si256(m), v) }
        }
        #[inline(always)]
        fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: fma is available (token).
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: avx is available (token).
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as above. `vmaxps` returns its second operand when either is NaN.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn deinterleave(self, a: __m256, b: __m256) -> (__m256, __m256) {
            // SAFETY: avx2 is available (token). Per 128-bit half, shuffle_ps picks
            // (a0 a2 b0 b2 | a4 a6 b4 b6); permute4x64 then orders the 64-bit pairs 0, 2, 1, 3.
            unsafe {
                let e = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
                let o = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
                (
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(e)),
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(o)),
                )
            }
        }
        #[inline(always)]
        fn reduce_add(self, v: __m256) -> f32 {
            // SAFETY: as above.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        fn gt(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
        }
        #[inline(always)]
        fn lt(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        fn eq(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b) }
        }
        #[inline(always)]
        fn is_nan(self, a: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a) }
        }
        #[inline(always)]
        fn or(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_or_ps(a, b) }
        }
        #[inline(always)]
        fn select(self, m: __m256, x: __m256, y: __m256) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_blendv_ps(y, x, m) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::Simd;

    /// NEON (aarch64 baseline): 4 floats per q register.
    #[derive(Clone, Copy, Debug)]
    pub struct Neon(pub(super) ());

    // SAFETY (every intrinsic call below that does not touch memory): NEON is part of the
    // aarch64 baseline, always available.
    impl Simd for Neon {
        const LANES: usize = 4;
        const REGS: usize = 32;
        type V = float32x4_t;
        type M = uint32x4_t;

        #[inline(always)]
        fn zero(self) -> float32x4_t {
            // SAFETY: NEON is always available on aarch64.
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> float32x4_t {
            // SAFETY: 4 readable floats (caller).
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: float32x4_t) {
            // SAFETY: 4 writable floats (caller).
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        fn mask(self, bits: u32) -> uint32x4_t {
            let b = [bits & 1, bits >> 1 & 1, bits >> 2 & 1, bits >> 3 & 1]
                .map(|x| 0u32.wrapping_sub(x));
            // SAFETY: `b` holds 4 u32.
            unsafe { vld1q_u32(b.as_ptr()) }
        }
        #[inline(always)]
        unsafe fn load_mask(self, p: *const f32, m: uint32x4_t) -> float32x4_t {
            let mut bits = [0u32; 4];
            // SAFETY: `bits` holds 4 u32.
            unsafe { vst1q_u32(bits.as_mut_ptr(), m) };
            let mut r = [0.0f32; 4];
            for (l, v) in r.iter_mut().enumerate() {
                if bits[l] != 0 {
                    // SAFETY: lane l is set, so `p + l` is readable (caller).
                    *v = unsafe { *p.add(l) };
                }
            }
            // SAFETY: `r` holds 4 floats.
            unsafe { vld1q_f32(r.as_ptr()) }
        }
        #[inline(always)]
        unsafe fn store_mask(self, p: *mut f32, m: uint32x4_t, v: float32x4_t) {
            let mut bits = [0u32; 4];
            let mut r = [0.0f32; 4];
            // SAFETY: `bits` and `r` hold 4 elements each.
            unsafe {
                vst1q_u32(bits.as_mut_ptr(), m);
                vst1q_f32(r.as_mut_ptr(), v);
            }
            for (l, &x) in r.iter().enumerate() {
                if bits[l] != 0 {
                    // SAFETY: lane l is set, so `p + l` is writable (caller).
                    unsafe { *p.add(l) = x };
                }
            }
        }
        #[inline(always)]
        fn fmadd(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vaddq_f32(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vsubq_f32(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vmulq_f32(a, b) }
        }
        #[inline(always)]
        fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // x86 semantics (b on NaN), not vmaxq's NaN propagation.
            self.select(self.gt(a, b), a, b)
        }
        #[inline(always)]
        fn deinterleave(self, a: float32x4_t, b: float32x4_t) -> (float32x4_t, float32x4_t) {
            // SAFETY: as above.
            unsafe { (vuzp1q_f32(a, b), vuzp2q_f32(a, b)) }
        }
        #[inline(always)]
        fn reduce_add(self, v: float32x4_t) -> f32 {
            // SAFETY: as above.
            unsafe { vaddvq_f32(v) }
        }
        #[inline(always)]
        fn gt(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
            // SAFETY: as above.
            unsafe { vcgtq_f32(a, b) }
        }
        #[inline(always)]
        fn lt(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
            // SAFETY: as above.
            unsafe { vcltq_f32(a, b) }
        }
        #[inline(always)]
        fn eq(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
            // SAFETY: as above.
            unsafe { vceqq_f32(a, b) }
        }
        #[inline(always)]
        fn is_nan(self, a: float32x4_t) -> uint32x4_t {
            // SAFETY: as above.
            unsafe { vmvnq_u32(vceqq_f32(a, a)) }
        }
        #[inline(always)]
        fn or(self, a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
            // SAFETY: as above.
            unsafe { vorrq_u32(a, b) }
        }
        #[inline(always)]
        fn select(self, m: uint32x4_t, x: float32x4_t, y: float32x4_t) -> float32x4_t {
            // SAFETY: as above.
            unsafe { vbslq_f32(m, x, y) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of every available ISA against plain `f32` arithmetic, lane by lane,
    /// including NaN handling of `max` and the comparisons.
    struct OpsCheck;

    impl Kernel for OpsCheck {
        type Out = ();
        #[inline(always)]
        fn run<S: Simd>(self, s: S) {
            let n = S::LANES;
            let a: Vec<f32> = (0..n)
                .map(|i| if i == 1 { f32::NAN } else { i as f32 - 3.5 })
                .collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.75) - 2.0).collect();
            let c: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            // SAFETY: each vector has LANES floats.
            let (va, vb, vc) =
                unsafe { (s.load(a.as_ptr()), s.load(b.as_ptr()), s.load(c.as_ptr())) };
            let get = |v: S::V| {
                let mut o = vec![0.0f32; n];
                // SAFETY: `o` has LANES floats.
                unsafe { s.store(o.as_mut_ptr(), v) };
                o
            };
            let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
            for i in 0..n {
                let (x, y, z) = (a[i], b[i], c[i]);
                assert!(
                    same(get(s.fmadd(va, vb, vc))[i], x.mul_add(y, z))
                        || (get(s.fmadd(va, vb, vc))[i] - (x * y + z)).abs() < 1e-5
                );
                assert!(same(get(s.add(va, vb))[i], x + y));
                assert!(same(get(s.sub(va, vb))[i], x - y));
                assert!(same(get(s.mul(va, vb))[i], x * y));
                assert!(
                    same(get(s.max(va, vb))[i], if x > y { x } else { y }),
                    "max lane {i}"
                );
                let pick = |m: S::M| get(s.select(m, s.splat(1.0), s.zero()))[i] == 1.0;
                assert_eq!(pick(s.gt(va, vb)), x > y);
                assert_eq!(pick(s.lt(va, vb)), x < y);
                assert_eq!(pick(s.eq(va, vb)), x == y);
                assert_eq!(pick(s.eq(va, va)), !x.is_nan());
                assert_eq!(pick(s.is_nan(va)), x.is_nan());
                assert_eq!(pick(s.or(s.is_nan(va), s.gt(vb, vc))), x.is_nan() || y > z);
            }
            for mask in [0u32, 1, 0b1010_0110_0101_1001, (1 << n) - 1] {
                let m = mask & ((1u64 << n) - 1) as u32;
                // SAFETY: every lane of `a` is readable.
                let v = get(unsafe { s.load_mask(a.as_ptr(), s.mask(m)) });
                let mut o = vec![7.0f32; n];
                // SAFETY: every lane of `o` is writable.
                unsafe { s.store_mask(o.as_mut_ptr(), s.mask(m), s.load(b.as_ptr())) };
                for i in 0..n {
                    let on = m >> i & 1 == 1;
                    assert!(
                        same(v[i], if on { a[i] } else { 0.0 }),
                        "load_mask lane {i}"
                    );
                    assert_eq!(o[i], if on { b[i] } else { 7.0 }, "store_mask lane {i}");
                }
            }
            let (ev, od) = s.deinterleave(va, vb);
            let (ev, od) = (get(ev), get(od));
            let ab: Vec<f32> = a.iter().chain(&b).copied().collect();
            for i in 0..n {
                assert!(
                    same(ev[i], ab[2 * i]) && same(od[i], ab[2 * i + 1]),
                    "deinterleave {i}"
                );
            }
            let want: f32 = b.iter().sum();
            assert!((s.reduce_add(vb) - want).abs() < 1e-5);
        }
    }

    #[test]
    fn closures_compile_per_isa() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: Vec<f32> = x.iter().map(|v| v.max(0.0) * 2.0 + 1.0).collect();
        for isa in Isa::available() {
            let got: Vec<f32> =
                vectorized(isa, || x.iter().map(|v| v.max(0.0) * 2.0 + 1.0).collect());
            assert_eq!(got, want, "{isa:?}");
        }
    }

    #[test]
    fn every_op_on_every_isa() {
        for isa in Isa::available() {
            dispatch(isa, OpsCheck);
        }
    }
}
