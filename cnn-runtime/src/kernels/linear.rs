//! Fully connected layer (`nn.Linear`) through the `gemm` crate.

use super::check_len;
use crate::geom::LinearGeom;

/// `nn.Linear` forward: `y = x · Wᵀ + bias` with `x` `[batch, in]`, `w` `[out, in]` (PyTorch
/// layout, no transpose needed), `bias` `[out]`, `y` `[batch, out]` (overwritten).
///
/// Runs on the current rayon pool when the product is large enough to split. `gemm` keeps its
/// packing buffers in thread-local storage, so after the first call on each thread this does
/// not allocate.
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
    let (k, o) = (g.in_features, g.out_features);
    check_len("linear x", x.len(), batch * k);
    check_len("linear w", w.len(), o * k);
    check_len("linear y", y.len(), batch * o);
    if let Some(b) = bias {
        check_len("linear bias", b.len(), o);
        for row in y.chunks_exact_mut(o) {
            row.copy_from_slice(b);
        }
    }
    if batch == 0 || o == 0 {
        return;
    }
    if k == 0 {
        if bias.is_none() {
            y.fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && batch * o * k >= 1 << 18 {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::reference;
    use crate::kernels::testutil::{assert_close, data};

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
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut got = vec![f32::NAN; batch * out_f];
            pool.install(|| linear(&g, batch, &x, &w, bias, &mut got));
            assert_close(
                &got,
                &want,
                in_f,
                &format!("linear {in_f}->{out_f} x{batch}"),
            );
        }
    }

    #[test]
    fn seed_classifier() {
        check(3136, 10, 1, true);
        check(3136, 10, 64, true);
    }

    #[test]
    fn large_parallel_and_no_bias() {
        check(300, 200, 33, false);
        check(1, 1, 1, false);
        check(7, 1, 5, true);
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
