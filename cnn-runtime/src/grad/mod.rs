//! Backward kernels (placeholder; being written).
