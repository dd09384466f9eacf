//! Compiles the seed spec to Rust against `cnn_runtime` (no facade), without training support.

fn main() {
    let built = cnn_dsl::build::Builder::new()
        .spec("../models/seed.yaml")
        .runtime_path("::cnn_runtime::__private")
        .training(false)
        .compile();
    if let Err(e) = built {
        // The diagnostics are already rendered; cargo shows them and fails the build.
        eprintln!("{e}");
        std::process::exit(1);
    }
}
