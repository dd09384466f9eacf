//! CPU runtime for `cnn` models: kernels, weights, data and training.
//!
//! Layout conventions: every tensor at a kernel boundary is `f32`, contiguous, NCHW (PyTorch's
//! layout), batch first. Kernels take slices plus a geometry struct from [`geom`]; they never
//! compute an output size themselves (the checker in `cnn-dsl` does). Multi-threaded kernels use
//! the current rayon pool, so callers choose the thread count with `ThreadPool::install`.
#![warn(missing_docs)]

pub use cnn_ir as ir;

pub mod buf;
#[cfg(feature = "data")]
pub mod data;
pub mod error;
pub mod exec;
pub mod geom;
#[cfg(feature = "train")]
pub mod grad;
pub mod init;
pub mod io;
pub mod kernels;
pub mod lanes;
#[cfg(feature = "train")]
pub mod optim;
pub mod simd;
mod step;
pub mod support;
#[cfg(feature = "train")]
pub mod train;
mod util;
pub mod weights;

pub use error::Error;

/// What generated code calls (`::cnn::__private` through the facade, or
/// `::cnn_runtime::__private` for a program that depends on the runtime alone). Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::Error;
    pub use crate::geom::{AdaptivePoolGeom, BatchNormGeom, Conv2dGeom, LinearGeom, Pool2dGeom};
    pub use crate::ir;
    pub use crate::kernels;
    pub use crate::kernels::{Activation as KernelActivation, PackedConv};
    pub use crate::lanes;
    #[cfg(feature = "train")]
    pub use crate::optim::Optimizer;
    pub use crate::support::*;
    #[cfg(feature = "train")]
    pub use crate::train::Trainer;
    pub use crate::weights::{ParamKind, ParamSpec, Weights};
    pub use ndarray;
}
