//! CPU runtime for `cnn` models: kernels, weights, data and training.
//!
//! Layout conventions: every tensor at a kernel boundary is `f32`, contiguous, NCHW (PyTorch's
//! layout), batch first. Kernels take slices plus a geometry struct from [`geom`]; they never
//! compute an output size themselves (the checker in `cnn-dsl` does). Multi-threaded kernels use
//! the current rayon pool, so callers choose the thread count with `ThreadPool::install`.
#![warn(missing_docs)]

pub use cnn_ir as ir;

pub mod buf;
pub mod data;
pub mod error;
pub mod exec;
pub mod geom;
pub mod grad;
pub mod init;
pub mod lanes;
pub mod support;
pub mod train;
mod util;

pub use error::Error;
pub mod io;
pub mod kernels;
pub mod optim;
pub mod simd;
pub mod weights;
