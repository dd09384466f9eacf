//! cnn facade.
pub use cnn_dsl as dsl;
pub use cnn_runtime as runtime;
