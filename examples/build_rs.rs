//! The seed MNIST model compiled by a build script, prost-build style: the `cnn` crate's own
//! `build.rs` runs
//!
//! ```ignore
//! cnn_dsl::build::Builder::new().spec("examples/models/seed.yaml").compile()?;
//! ```
//!
//! which shape-checks the spec, writes the specialised Rust to `OUT_DIR/seed_cnn.rs` and prints
//! `cargo:rerun-if-changed`; `src/lib.rs` includes it as `cnn::models`. A crate of your own does
//! the same in its build.rs (with `cnn-dsl` as a build-dependency) and
//! `include!(concat!(env!("OUT_DIR"), "/seed_cnn.rs"));`. Shape errors fail the build with the
//! rendered diagnostics. Unlike `cnn!`, the generated code is a file you can read.
//!
//! `cargo run --release --example build_rs [weights.safetensors]`

use cnn::models::SeedCnn;

fn main() -> Result<(), cnn::Error> {
    print!("{}", SeedCnn::SUMMARY);
    let mut model = match std::env::args().nth(1) {
        Some(path) => SeedCnn::from_safetensors(path)?,
        None => SeedCnn::init(3)?,
    };
    let batch = vec![[0.1f32; SeedCnn::INPUT_LEN]; 2];
    for (i, logits) in model.forward(&batch).iter().enumerate() {
        println!("image {i}: logits {logits:.3?}");
    }
    Ok(())
}
