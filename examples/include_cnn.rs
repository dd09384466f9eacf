//! The seed MNIST model included from a `.cnn` spec with `cnn!(include "…")` (the same grammar
//! as inline `cnn! { … }`). The path is relative to this source file, like `include_str!`, and
//! editing the spec rebuilds the example.
//!
//! `cargo run --release --example include_cnn`

cnn::cnn!(include "models/seed.cnn");

fn main() -> Result<(), cnn::Error> {
    print!("{}", SeedCnn::SUMMARY);
    println!("{} trainable parameters", SeedCnn::param_count());
    let mut model = SeedCnn::init(2)?;
    // An ndarray batch `[N, 1, 28, 28]`: its trailing dimensions are checked once.
    let batch = ndarray::ArrayD::<f32>::from_elem(vec![3, 1, 28, 28], 0.25);
    let logits = model.forward_array(batch.view())?;
    println!("logits {:?}:\n{logits:.3}", logits.shape());
    Ok(())
}
