//! Resolved layer geometries, defined in [`cnn_dsl::geom`] next to the checker that computes
//! them and re-exported here for kernel callers.

pub use cnn_dsl::geom::{AdaptivePoolGeom, BatchNormGeom, Conv2dGeom, LinearGeom, Pool2dGeom};
