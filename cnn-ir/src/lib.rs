//! The intermediate representation shared by the `cnn` compiler (`cnn-dsl`) and its runtime
//! (`cnn-runtime`), with no dependencies, so a program that runs a generated model does not link
//! the compiler.
//!
//! One data type per stage:
//! [`ir::Model`] (lowered, attributes with their [`span::Span`]s) → the shape checker in
//! `cnn-dsl`, using [`rules`] → [`checked::CheckedModel`] (every [`checked::Op`] resolved) →
//! [`plan::plan`] → [`plan::Plan`] (kernel calls, fusion, buffers), which the interpreter, the
//! trainer and the code generator all follow. [`geom`] holds the per-kernel geometries.
#![warn(missing_docs)]

pub mod checked;
pub mod geom;
pub mod ir;
pub mod plan;
pub mod rules;
pub mod span;

pub use checked::CheckedModel;
pub use plan::{Mode, Plan};
