//! Lane tensors: 16 images per slot, for training and batched inference of the convolutional
//! stack on every instruction set.
//!
//! A lane tensor holds a batch in *slots* of 16 images, each slot `[len][16]` for images of
//! `len` values: for a `[C, H, W]` activation, `[slots][C][H][W][16]`. One slot vector (one
//! AVX-512 register, two AVX2 registers) is then the same element of 16 images, so a convolution tap is either inside the input for all
//! lanes or for none and the zero padding can be skipped exactly ([`conv2d_lanes`]), and
//! element-wise and pooling operations are the scalar ones applied lane by lane. Lanes of
//! images missing from a last, partial slot are zeros on entry ([`to_lanes`]); they carry
//! values through the forward pass (bias, activations) that [`from_lanes`] drops, and zero
//! gradients through the backward pass, so they never reach a result.
//!
//! The trainer keeps activations in this layout from the network input to the first layer it
//! cannot run on lanes (typically the `flatten` before the classifier), converting once at each
//! end instead of per layer.

mod conv;
mod pool;

#[cfg(feature = "train")]
pub(crate) use conv::conv2d_lanes_with;
pub use conv::{conv2d_lanes, conv2d_lanes_scratch_len, conv2d_lanes_usable};
pub use pool::{max_pool2d_lanes, max_pool2d_lanes_backward, max_pool2d_lanes_forward};

use rayon::prelude::*;

use crate::kernels::Isa;
use crate::util::{SendPtr, check_len};

/// Images per slot (one AVX-512 vector of `f32`, two AVX2 vectors, four 4-float vectors).
pub const LANES: usize = 16;

/// Slots holding `batch` images.
pub fn lane_slots(batch: usize) -> usize {
    batch.div_ceil(LANES)
}

/// `[batch][len]` → `[slots][len][16]`: image `16·s + b` goes to lane `b` of slot `s`; lanes of
/// missing images are zero.
///
/// # Panics
/// If `src` is not `batch · len` or `dst` not `lane_slots(batch) · len · 16` floats long.
pub fn to_lanes(batch: usize, len: usize, src: &[f32], dst: &mut [f32]) {
    check_len("to_lanes src", src.len(), batch * len);
    check_len("to_lanes dst", dst.len(), lane_slots(batch) * len * LANES);
    if len == 0 {
        return;
    }
    let isa = Isa::detect();
    dst.par_chunks_mut(len * LANES)
        .enumerate()
        .for_each(|(s, d)| {
            let n = LANES.min(batch - s * LANES);
            let mut rows: [&[f32]; LANES] = [&[]; LANES];
            for (b, r) in rows[..n].iter_mut().enumerate() {
                *r = &src[(s * LANES + b) * len..][..len];
            }
            interleave(isa, &rows[..n], d);
        });
}

/// `[slots][len][16]` → `[batch][len]`, the inverse of [`to_lanes`] (lanes of images past
/// `batch` are dropped).
///
/// # Panics
/// If `src` is not `lane_slots(batch) · len · 16` or `dst` not `batch · len` floats long.
pub fn from_lanes(batch: usize, len: usize, src: &[f32], dst: &mut [f32]) {
    check_len("from_lanes src", src.len(), lane_slots(batch) * len * LANES);
    check_len("from_lanes dst", dst.len(), batch * len);
    if len == 0 {
        return;
    }
    let isa = Isa::detect();
    dst.par_chunks_mut(len * LANES)
        .enumerate()
        .for_each(|(s, d)| {
            let lanes = &src[s * len * LANES..][..len * LANES];
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 {
                // SAFETY: avx512f is available for `Isa::Avx512`; `lanes` holds `len` vectors
                // and `d` whole images of `len` floats (at most 16), as the function requires.
                unsafe { deinterleave_avx512(lanes, len, d) };
                return;
            }
            let _ = isa;
            for (b, img) in d.chunks_exact_mut(len).enumerate() {
                for (k, v) in img.iter_mut().enumerate() {
                    *v = lanes[k * LANES + b];
                }
            }
        });
}

/// [`from_lanes`] for one slot by 16 × 16 in-register transposes: `dst[b·len + k] =
/// src[k·16 + b]` for the `dst.len() / len` images of the slot.
///
/// # Safety
/// avx512f must be available; `src` holds `16·len` floats and `dst` `n·len` with `n ≤ 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_avx512(src: &[f32], len: usize, dst: &mut [f32]) {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_setzero_ps};
    let n = dst.len() / len;
    assert!(src.len() == len * LANES && dst.len() == n * len && n <= LANES);
    let mut k0 = 0;
    while k0 < len {
        let cols = LANES.min(len - k0);
        let mut r = [_mm512_setzero_ps(); LANES];
        for (j, v) in r.iter_mut().enumerate().take(cols) {
            // SAFETY: vector k0 + j < len of `src` (asserted length).
            *v = unsafe { _mm512_loadu_ps(src.as_ptr().add((k0 + j) * LANES)) };
        }
        let t = transpose16(r);
        let mask = ((1u32 << cols) - 1) as u16;
        for (b, row) in t.iter().enumerate().take(n) {
            // SAFETY: image b < n, elements k0 .. k0 + cols ≤ len: inside `dst`; the other
            // lanes are masked off.
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(b * len + k0), mask, *row) };
        }
        k0 += LANES;
    }
}

/// Transposes a 16 × 16 block held as 16 registers: lane `j` of result `i` is lane `i` of
/// input `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(
    r: [std::arch::x86_64::__m512; LANES],
) -> [std::arch::x86_64::__m512; LANES] {
    use std::arch::x86_64::{
        _mm512_castpd_ps, _mm512_castps_pd, _mm512_setzero_ps, _mm512_shuffle_f32x4,
        _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
    };
    macro_rules! lo2 {
        ($a:expr, $b:expr) => {
            _mm512_castpd_ps(_mm512_unpacklo_pd(
                _mm512_castps_pd($a),
                _mm512_castps_pd($b),
            ))
        };
    }
    macro_rules! hi2 {
        ($a:expr, $b:expr) => {
            _mm512_castpd_ps(_mm512_unpackhi_pd(
                _mm512_castps_pd($a),
                _mm512_castps_pd($b),
            ))
        };
    }
    // u[4q + j]: rows 4q..4q+4 of column 4·lane + j, per 128-bit lane.
    let mut u = [_mm512_setzero_ps(); LANES];
    for q in 0..4 {
        let (a, b, c, d) = (r[4 * q], r[4 * q + 1], r[4 * q + 2], r[4 * q + 3]);
        let (t0, t1) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (t2, t3) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        u[4 * q] = lo2!(t0, t2);
        u[4 * q + 1] = hi2!(t0, t2);
        u[4 * q + 2] = lo2!(t1, t3);
        u[4 * q + 3] = hi2!(t1, t3);
    }
    let mut v = [_mm512_setzero_ps(); LANES];
    for j in 0..4 {
        for h in 0..2 {
            let (a, b) = (u[8 * h + j], u[8 * h + 4 + j]);
            v[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
            v[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(a, b);
        }
    }
    let mut out = [_mm512_setzero_ps(); LANES];
    for j in 0..8 {
        out[j] = _mm512_shuffle_f32x4::<0x88>(v[j], v[8 + j]);
        out[j + 8] = _mm512_shuffle_f32x4::<0xdd>(v[j], v[8 + j]);
    }
    out
}

/// `dst[k·16 + b] = rows[b][k]` for every `k`, zero for lanes `b ≥ rows.len()`: up to 16 equal
/// rows (one per image) interleaved into vectors of 16 lanes.
pub(crate) fn interleave(isa: Isa, rows: &[&[f32]], dst: &mut [f32]) {
    let m = dst.len() / LANES;
    assert!(
        rows.len() <= LANES && dst.len() == m * LANES && rows.iter().all(|r| r.len() == m),
        "interleave: {} rows for {} columns",
        rows.len(),
        m
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: avx512f is available for `Isa::Avx512`; the assert above gives every row
        // exactly `m` elements and `dst` `m` vectors, which bound the masked loads and the
        // stores of `interleave_avx512`.
        unsafe { interleave_avx512(rows, dst, m) };
        return;
    }
    let _ = isa;
    for (k, d) in dst.chunks_exact_mut(LANES).enumerate() {
        for (b, v) in d.iter_mut().enumerate() {
            *v = rows.get(b).map_or(0.0, |r| r[k]);
        }
    }
}

/// [`interleave`] by 16 × 16 in-register transposes of masked row loads.
///
/// # Safety
/// avx512f must be available; `rows.len() ≤ 16`, each row has `m` elements, `dst` `16·m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave_avx512(rows: &[&[f32]], dst: &mut [f32], m: usize) {
    use std::arch::x86_64::{_mm512_maskz_loadu_ps, _mm512_setzero_ps, _mm512_storeu_ps};
    let dp = dst.as_mut_ptr();
    let mut k0 = 0;
    while k0 < m {
        let cols = LANES.min(m - k0);
        let mask = ((1u32 << cols) - 1) as u16;
        let mut r = [_mm512_setzero_ps(); LANES];
        for (v, row) in r.iter_mut().zip(rows) {
            // SAFETY: lanes `< cols` read row[k0..k0 + cols], inside the row; masked-off lanes
            // are not accessed.
            *v = unsafe { _mm512_maskz_loadu_ps(mask, row.as_ptr().add(k0)) };
        }
        let t = transpose16(r);
        for (j, col) in t.iter().enumerate().take(cols) {
            // SAFETY: column k0 + j < m, so its vector lies inside `dst` (16·m floats).
            unsafe { _mm512_storeu_ps(dp.add((k0 + j) * LANES), *col) };
        }
        k0 += LANES;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::data;

    #[test]
    fn interleave_matches_definition_on_both_isas() {
        for isa in Isa::available() {
            for m in [1, 7, 16, 17, 33] {
                for n in [1, 5, 16] {
                    let data: Vec<Vec<f32>> = (0..n)
                        .map(|b| (0..m).map(|k| (b * 100 + k) as f32).collect())
                        .collect();
                    let rows: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
                    let mut dst = vec![f32::NAN; m * LANES];
                    interleave(isa, &rows, &mut dst);
                    for k in 0..m {
                        for b in 0..LANES {
                            let want = if b < n { (b * 100 + k) as f32 } else { 0.0 };
                            assert_eq!(dst[k * LANES + b], want, "{isa:?} m={m} n={n} k={k} b={b}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn lanes_round_trip_and_zero_missing_images() {
        for (batch, len) in [(16, 784), (28, 37), (1, 5), (33, 16), (64, 3136)] {
            let x = data(batch * len, 7);
            let mut l = vec![f32::NAN; lane_slots(batch) * len * LANES];
            to_lanes(batch, len, &x, &mut l);
            for b in 0..lane_slots(batch) * LANES {
                for k in 0..len {
                    let got = l[(b / LANES * len + k) * LANES + b % LANES];
                    let want = if b < batch { x[b * len + k] } else { 0.0 };
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "batch {batch} image {b} elem {k}"
                    );
                }
            }
            let mut back = vec![f32::NAN; batch * len];
            from_lanes(batch, len, &l, &mut back);
            assert_eq!(back, x, "batch {batch} len {len}");
        }
    }
}
