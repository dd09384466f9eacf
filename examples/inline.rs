//! The seed MNIST model declared inline with `cnn! { … }`: the text is the same grammar as
//! `examples/models/seed.cnn`, shape-checked while this file compiles. A wrong size (try
//! `in_features = 32*7*7`) is a compile error underlining exactly that expression.
//!
//! `cargo run --release --example inline`

cnn::cnn! {
    model SeedCnn(input = [1, 28, 28]) -> [10] {
        block conv1 {
            conv2d(out_channels = 16, kernel_size = 5, stride = 1, padding = 2),
            relu,
            maxpool2d(kernel_size = 2),
        }
        block conv2 {
            conv2d(out_channels = 32, kernel_size = 5, padding = 2),
            relu,
            conv2d(in_channels = 32, out_channels = 32, kernel_size = 5, padding = 2),
            relu,
            maxpool2d(2), // positional: PyTorch's order, kernel_size first
        }
        block conv3 {
            conv2d(out_channels = 64, kernel_size = 5, padding = 2),
            relu,
        }
        flatten,
        out: linear(in_features = 64*7*7, out_features = 10),
    }
}

fn main() -> Result<(), cnn::Error> {
    print!("{}", SeedCnn::SUMMARY);
    // PyTorch's default initialisation, seeded (or `SeedCnn::from_safetensors(path)?`).
    let mut model = SeedCnn::init(0)?;
    // A batch of 8 images, each a `[f32; 1*28*28]`: the sizes are in the types.
    let batch: Vec<[f32; 784]> = (0..8)
        .map(|i| std::array::from_fn(|j| ((i * 784 + j) % 255) as f32 / 255.0))
        .collect();
    let logits: &[[f32; 10]] = model.forward(&batch);
    for (i, l) in logits.iter().enumerate() {
        let class = (0..10).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap_or(0);
        println!("image {i}: class {class}, logits {l:.3?}");
    }
    Ok(())
}
