//! The cnn compiler driver.
fn main() {}
