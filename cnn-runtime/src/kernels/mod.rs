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
//! The SIMD kernels are written once over [`crate::simd`] and instantiated for AVX-512, AVX2+FMA,
//! NEON and portable Rust, chosen at run time ([`Isa::detect`], `CNN_ISA`); the tests run every
//! instantiation the CPU has, see [`Isa`].

mod activation;
mod conv;
mod dropout;
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
pub use dropout::{DropoutRng, dropout_train_forward};
pub use linear::{gemm_bytes as linear_gemm_bytes, gemm_slab_bytes, linear};
#[cfg(feature = "train")]
pub(crate) use norm::channel_sum;
pub use norm::{BatchNormParams, batch_norm2d, batch_norm2d_inplace, batch_norm2d_train_forward};
#[cfg(feature = "train")]
pub(crate) use pool::NO_INDEX;
#[cfg(feature = "train")]
pub(crate) use pool::avg_window;
#[cfg(all(test, feature = "train"))]
pub(crate) use pool::max_pool2d_train_forward_with;
pub use pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d, max_pool2d_train_forward};

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
/// [`Isa::detect`] picks the best one the CPU supports, unless the `CNN_ISA` environment
/// variable (`avx512`, `avx2` or `portable`) or [`Isa::force`] chose another for the process
/// (tests and benchmarks: an AVX-512 machine then runs its AVX2 code). Forcing
/// [`Isa::Portable`] is always allowed; forcing an ISA the CPU lacks is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F kernels (x86-64 only).
    Avx512,
    /// AVX2 + FMA kernels (x86-64 only), for CPUs without AVX-512.
    Avx2,
    /// Plain Rust written so the compiler vectorises it; runs everywhere.
    Portable,
}

/// Why an ISA name cannot be used on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsaError {
    /// The name is none of `avx512`, `avx2`, `portable`.
    Unknown(String),
    /// The CPU lacks the instructions.
    Unavailable(Isa),
    /// [`Isa::force`] was called after the kernels had already chosen another ISA.
    AlreadyChosen(Isa),
}

impl std::fmt::Display for IsaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(
                f,
                "unknown instruction set `{s}`: expected one of avx512, avx2, portable"
            ),
            IsaError::Unavailable(isa) => write!(
                f,
                "this CPU cannot run {} kernels (best available: {})",
                isa.name(),
                Isa::best().name()
            ),
            IsaError::AlreadyChosen(isa) => write!(
                f,
                "the kernels already run with {}; choose the instruction set before the first kernel call",
                isa.name()
            ),
        }
    }
}

impl std::error::Error for IsaError {}

/// The process-wide choice, made on the first [`Isa::detect`] or [`Isa::force`].
static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();

impl Isa {
    /// Every instruction set, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The instruction set kernels use: `CNN_ISA` or [`Isa::force`] if set, else
    /// [`Isa::best`]. Chosen once per process. An unusable `CNN_ISA` value falls back to
    /// [`Isa::best`] with a warning on stderr; programs that want it to be an error call
    /// [`Isa::from_env`] first (as `cnnc` does).
    pub fn detect() -> Isa {
        *CHOSEN.get_or_init(|| match Isa::from_env() {
            Ok(Some(isa)) => isa,
            Ok(None) => Isa::best(),
            Err(e) => {
                eprintln!("warning: CNN_ISA ignored: {e}");
                Isa::best()
            }
        })
    }

    /// The fastest instruction set this CPU supports.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// The instruction set named by the `CNN_ISA` environment variable, if it is set and not
    /// empty; an error if it names an unknown ISA or one this CPU lacks.
    pub fn from_env() -> Result<Option<Isa>, IsaError> {
        match std::env::var("CNN_ISA") {
            Ok(s) if !s.trim().is_empty() => Isa::parse(&s).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(s)) => {
                Err(IsaError::Unknown(s.to_string_lossy().into_owned()))
            }
        }
    }

    /// Parses `avx512`, `avx2` or `portable` (case-insensitive) and checks that the CPU has it.
    pub fn parse(s: &str) -> Result<Isa, IsaError> {
        let isa = match s.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" => Isa::Avx512,
            "avx2" => Isa::Avx2,
            "portable" | "scalar" => Isa::Portable,
            _ => return Err(IsaError::Unknown(s.to_string())),
        };
        if isa.is_available() {
            Ok(isa)
        } else {
            Err(IsaError::Unavailable(isa))
        }
    }

    /// Makes every later [`Isa::detect`] return `isa`. Must come before the first kernel call
    /// (or any other `detect`), unless it asks for the ISA already chosen.
    pub fn force(isa: Isa) -> Result<(), IsaError> {
        if !isa.is_available() {
            return Err(IsaError::Unavailable(isa));
        }
        let chosen = *CHOSEN.get_or_init(|| isa);
        if chosen == isa {
            Ok(())
        } else {
            Err(IsaError::AlreadyChosen(chosen))
        }
    }

    /// Lower-case name, as `CNN_ISA` and `--isa` take it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The available instruction sets, fastest first: what kernel tests iterate over.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
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
