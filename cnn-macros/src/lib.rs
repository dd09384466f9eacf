//! The `cnn!` macro.
