//! The seed MNIST model included from a YAML spec with `cnn!(include "…")`. The path is relative
//! to this source file, like `include_str!`, and editing the spec rebuilds the example. Shape
//! errors in the file are compile errors at the path literal, with the file's line:col and
//! snippet.
//!
//! `cargo run --release --example include_yaml`

cnn::cnn!(include "models/seed.yaml");

fn main() -> Result<(), cnn::Error> {
    print!("{}", SeedCnn::SUMMARY);
    let mut model = SeedCnn::init(1)?;
    let batch = vec![[0.5f32; SeedCnn::INPUT_LEN]; 4];
    for (i, logits) in model.forward(&batch).iter().enumerate() {
        println!("image {i}: logits {logits:.3?}");
    }
    Ok(())
}
