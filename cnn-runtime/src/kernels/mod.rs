//! Forward CPU kernels: convolution, linear, pooling, batch norm and activations.
//!
//! Conventions shared by every function here:
//!
//! - Tensors are `f32`, contiguous, NCHW (PyTorch's layout), batch first. Each kernel takes a
//!   geometry struct from [`crate::geom`] for one image and the batch size separately; kernels
//!   never compute an output size themselves.
//! - Slice lengths are a contract with the plan that sized them: a wrong length is a bug, not a
//!   user error, and panics with a message naming the slice and the expected length. Longer
//!   scratch slices than needed are fine.
//! - No heap allocation in steady state. Kernels that need working memory take a caller-provided
//!   `scratch: &mut [f32]` whose minimum length comes from the matching `*_scratch_len` function;
//!   [`PackedConv`] owns its packed weights (allocated once, at construction) and still takes
//!   scratch for per-call buffers. [`linear`] runs its own dot-product kernels for layers with
//!   at most 32 outputs (a classifier head) and delegates wider ones to the `gemm` crate, which
//!   keeps its own thread-local packing buffers after the first call.
//! - Multi-threaded kernels use the current rayon pool (callers choose the thread count with
//!   `ThreadPool::install`). Results do not depend on the number of threads: every output value
//!   is computed by one piece of work in a fixed order.
//! - Semantics follow PyTorch; each function's doc names the operation it mirrors.
//! - [`reference`](mod@reference) holds a naive, obviously correct version of every kernel (accumulating in
//!   `f64`); the tests compare the fast kernels against it.
//!
//! The convolution and the narrow linear layer have AVX-512 and AVX2+FMA paths (chosen at run
//! time with `is_x86_feature_detected!`) and a portable fallback with the same blocking; all
//! three are tested, see [`Isa`].

mod activation;
mod conv;
mod linear;
mod norm;
mod pool;
pub mod reference;
#[cfg(test)]
pub(crate) mod testutil;

pub use activation::{
    gelu, gelu_inplace, leaky_relu, leaky_relu_inplace, log_softmax, relu, relu_inplace, sigmoid,
    sigmoid_inplace, softmax, softmax_channels, tanh, tanh_inplace,
};
pub use conv::{PackedConv, conv2d, conv2d_act, conv2d_scratch_len};
pub use linear::linear;
pub use norm::{BatchNormParams, batch_norm2d, batch_norm2d_inplace};
pub(crate) use pool::avg_window;
pub use pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};

/// Element-wise activation fused into a kernel's epilogue (applied after the bias).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// No activation.
    #[default]
    Identity,
    /// `max(x, 0)` (`nn.ReLU`; NaN stays NaN).
    Relu,
    /// `x` if `x >= 0`, else `slope * x` (`nn.LeakyReLU(slope)`).
    LeakyRelu(f32),
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Activation::LeakyRelu(s) => {
                if v < 0.0 {
                    v * s
                } else {
                    v
                }
            }
        }
    }
}

/// Instruction set a SIMD kernel runs with.
///
/// [`Isa::detect`] picks the best one the CPU supports; forcing [`Isa::Portable`] (for tests or
/// comparisons) is always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F microkernels (x86-64 only).
    Avx512,
    /// AVX2 + FMA microkernels (x86-64 only), for CPUs without AVX-512; kernels that have no
    /// AVX2 version run their portable code under this setting.
    Avx2,
    /// Plain Rust with the same blocking; runs everywhere.
    Portable,
}

impl Isa {
    /// The fastest instruction set this CPU supports.
    pub fn detect() -> Isa {
        if Isa::Avx512.is_available() {
            Isa::Avx512
        } else if Isa::Avx2.is_available() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    /// Whether this CPU can run kernels built for `self`.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            Isa::Portable => true,
        }
    }
}

/// Panics with a message naming `what` unless `len == expected`.
#[track_caller]
fn check_len(what: &str, len: usize, expected: usize) {
    assert!(
        len == expected,
        "{what}: slice has {len} elements, expected {expected}"
    );
}

/// A raw output pointer shared between rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only used to write elements that no other task reads or writes; each
// user documents why its tasks' writes are disjoint.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
