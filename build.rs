//! Compiles the bundled seed model to specialised Rust with cnn-dsl's build API, so `cnnc bench`
//! can time the specialised code beside the interpreted plan, and tests can run it.
fn main() {
    if let Err(e) = cnn_dsl::build::Builder::new()
        .spec("examples/models/seed.yaml")
        .compile()
    {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
