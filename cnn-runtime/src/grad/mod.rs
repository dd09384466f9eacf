//! Backward (gradient) kernels. (The training-only forward passes whose saved values they read
//! — max pool with argmax indices, batch norm with batch statistics, dropout with its mask —
//! live with their forward kernels in [`crate::kernels`].)
//!
//! Conventions shared by every function here:
//!
//! - Tensors are `f32`, contiguous, NCHW, batch first, exactly as in [`crate::kernels`]; the
//!   batch size is passed separately from the per-image geometry in [`crate::geom`].
//! - Each backward takes the forward's inputs (or the values it saved) and the gradient of the
//!   loss with respect to the forward's output (`d_out`), and **overwrites** (`=`) every gradient
//!   slice it is given: nothing accumulates across calls, so callers never zero gradients. A
//!   parameter shared by two layers must be summed by the caller.
//! - Slice lengths are a contract with the plan that sized them: a wrong length is a bug, not a
//!   user error, and panics with a message naming the slice and the expected length.
//! - Multi-threaded kernels use the current rayon pool. Results do not depend on the number of
//!   threads: work is split into pieces whose boundaries depend only on the geometry and the
//!   batch size, and partial sums are reduced in a fixed order. Same inputs, same bits.
//! - Semantics follow PyTorch (argmax ties, pooling divisors, batch-norm statistics, dropout
//!   scaling, mean-reduced losses); each function's doc says which PyTorch operation it mirrors.
//!
//! Every backward is checked in its tests against central finite differences of a naive `f64`
//! forward written in the test itself.

mod act;
mod conv;
mod dropout;
mod linear;
mod loss;
mod norm;
mod pool;

#[cfg(test)]
pub(crate) mod testutil;

pub use act::{
    gelu_backward, gelu_backward_inplace, leaky_relu_backward, leaky_relu_backward_inplace,
    relu_backward, relu_backward_inplace, sigmoid_backward, sigmoid_backward_inplace,
    tanh_backward, tanh_backward_inplace,
};
pub use conv::{
    conv2d_backward, conv2d_backward_lanes, conv2d_backward_lanes_scratch_len,
    conv2d_backward_reference, conv2d_backward_scratch_len, lanes_input_grad_supported,
};
pub use dropout::dropout_backward;
pub use linear::linear_backward;
pub use loss::{log_softmax_backward, nll_loss, softmax_backward, softmax_cross_entropy};
pub use norm::batch_norm2d_backward;
pub use pool::{
    adaptive_avg_pool2d_backward, avg_pool2d_backward, max_pool2d_backward,
    max_pool2d_relu_backward,
};

/// Elements per rayon task for element-wise kernels; fixed so splitting never depends on threads.
pub(crate) const ELEMWISE_CHUNK: usize = 1 << 14;

/// A strided view of a row-major-or-not matrix for [`gemm_f32`]: `rows × cols` with the element
/// at `(r, c)` stored at `r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Mat {
    /// A contiguous row-major matrix.
    pub(crate) const fn row_major(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a contiguous row-major `cols × rows` matrix.
    pub(crate) const fn transposed(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }
    /// One past the largest index the view touches (0 for an empty matrix).
    const fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`), single-threaded through the
/// `gemm` crate, after checking that every view lies inside its slice.
pub(crate) fn gemm_f32(
    dst: &mut [f32],
    dv: Mat,
    accumulate: bool,
    lhs: &[f32],
    lv: Mat,
    rhs: &[f32],
    rv: Mat,
) {
    assert!(
        lv.rows == dv.rows && rv.cols == dv.cols && lv.cols == rv.rows,
        "gemm: shape mismatch {}x{} · {}x{} -> {}x{}",
        lv.rows,
        lv.cols,
        rv.rows,
        rv.cols,
        dv.rows,
        dv.cols
    );
    assert!(dv.extent() <= dst.len(), "gemm: dst view out of bounds");
    assert!(lv.extent() <= lhs.len(), "gemm: lhs view out of bounds");
    assert!(rv.extent() <= rhs.len(), "gemm: rhs view out of bounds");
    let (m, n, k) = (dv.rows, dv.cols, lv.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * dv.rs + c * dv.cs] = 0.0;
                }
            }
        }
        return;
    }
    let is = |x: usize| isize::try_from(x).expect("gemm: stride overflows isize");
    // SAFETY: the three asserts above prove every element `(r, c)` of each view, at
    // `r * rs + c * cs`, lies inside its slice; `dst` is borrowed mutably, so it aliases neither
    // input. gemm only reads `dst` when `read_dst` is true, and then it is initialised f32 data.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            is(dv.cs),
            is(dv.rs),
            accumulate,
            lhs.as_ptr(),
            is(lv.cs),
            is(lv.rs),
            rhs.as_ptr(),
            is(rv.cs),
            is(rv.rs),
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_f32_matches_naive_for_strided_views() {
        // lhs 2x3 row-major, rhs given as the transpose of a 4x3 row-major matrix.
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs_t: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let mut dst = vec![1.0f32; 8];
        gemm_f32(
            &mut dst,
            Mat::row_major(2, 4),
            true,
            &lhs,
            Mat::row_major(2, 3),
            &rhs_t,
            Mat::transposed(3, 4),
        );
        for r in 0..2 {
            for c in 0..4 {
                let want: f32 = 1.0
                    + (0..3)
                        .map(|k| lhs[r * 3 + k] * rhs_t[c * 3 + k])
                        .sum::<f32>();
                assert_eq!(dst[r * 4 + c], want, "({r},{c})");
            }
        }
        gemm_f32(
            &mut dst,
            Mat::row_major(2, 4),
            false,
            &lhs,
            Mat::row_major(2, 0),
            &[],
            Mat::row_major(0, 4),
        );
        assert!(dst.iter().all(|&v| v == 0.0));
    }

    #[test]
    #[should_panic(expected = "rhs view out of bounds")]
    fn gemm_f32_rejects_short_slices() {
        let mut dst = [0.0f32; 4];
        gemm_f32(
            &mut dst,
            Mat::row_major(2, 2),
            false,
            &[1.0; 4],
            Mat::row_major(2, 2),
            &[1.0; 3],
            Mat::row_major(2, 2),
        );
    }
}
