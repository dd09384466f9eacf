//! Forward kernels (placeholder; being written).
