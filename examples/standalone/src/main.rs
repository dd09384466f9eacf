//! The seed MNIST model as a standalone program: the build script turns
//! `examples/models/seed.yaml` into Rust, and the program links only `cnn-runtime` without its
//! default features (no compiler, no training, no dataset or image readers).
//!
//! `cargo run --release -p cnn-standalone -- [weights.safetensors]` prints the logits of two
//! synthetic digits (a vertical bar and a ring), from the weights given or from PyTorch's default
//! initialisation. Exit code 1 with a message when the weights cannot be used.

#![allow(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/seed_cnn.rs"));

/// A 28×28 image with a vertical bar (`ring == false`) or a ring, MNIST-normalised.
fn digit(ring: bool) -> [f32; SeedCnn::INPUT_LEN] {
    let mut x = [0.0f32; SeedCnn::INPUT_LEN];
    for (i, v) in x.iter_mut().enumerate() {
        let (r, c) = ((i / 28) as f32 - 13.5, (i % 28) as f32 - 13.5);
        let on = if ring {
            ((r * r + c * c).sqrt() - 8.0).abs() < 2.0
        } else {
            c.abs() < 2.0 && r.abs() < 10.0
        };
        let pixel = if on { 1.0 } else { 0.0 };
        *v = (pixel - 0.1307) / 0.3081;
    }
    x
}

fn main() -> std::process::ExitCode {
    let model = match std::env::args().nth(1) {
        Some(path) => SeedCnn::from_safetensors(path),
        None => SeedCnn::init(0),
    };
    let mut model = match model {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let batch = [digit(false), digit(true)];
    for (name, logits) in ["bar", "ring"].iter().zip(model.forward(&batch)) {
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0);
        println!("{name}: class {best}, logits {logits:.3?}");
    }
    std::process::ExitCode::SUCCESS
}
