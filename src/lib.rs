#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// Lets generated code inside this crate use the same `::cnn::__private` paths as users' code.
extern crate self as cnn;

pub use cnn_dsl as dsl;
pub use cnn_macros::cnn;
pub use cnn_runtime as runtime;
pub use cnn_runtime::Error;

/// What generated code (`cnn!`, build.rs, `cnnc gen`) calls. Not a stable API.
#[doc(hidden)]
pub use cnn_runtime::__private;

pub mod memory;

/// Models compiled into this crate from `examples/models` by its build script.
pub mod models {
    include!(concat!(env!("OUT_DIR"), "/seed_cnn.rs"));
}
