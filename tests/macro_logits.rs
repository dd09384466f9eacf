//! The three `cnn!` paths (inline, included YAML, included `.cnn`) and the build.rs path
//! (`cnn::models::SeedCnn`) compute the same logits as `cnnc run` for the golden weights and
//! input, to 1e-6, and match the independent numpy reference (tests/golden) to 1e-5.

use std::path::Path;

/// The seed model inline: the text of examples/models/seed.cnn.
mod inline {
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
                maxpool2d(2),
            }
            block conv3 {
                conv2d(out_channels = 64, kernel_size = 5, padding = 2),
                relu,
            }
            flatten,
            out: linear(in_features = 64*7*7, out_features = 10),
        }
    }
}

/// Included YAML, relative to this file.
mod yaml {
    cnn::cnn!(include "../examples/models/seed.yaml");
}

/// Included `.cnn`, relative to this file.
mod dsl {
    cnn::cnn!(include "../examples/models/seed.cnn");
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `cnnc run` on the golden weights and input.
fn cnnc_run_logits() -> Vec<f32> {
    let out = std::env::temp_dir().join(format!("cnn-macro-logits-{}.npy", std::process::id()));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .current_dir(root())
        .args(["run", "examples/models/seed.yaml"])
        .args(["--weights", "tests/golden/seed_weights.safetensors"])
        .args(["--input", "tests/golden/seed_input.npy"])
        .arg("--output")
        .arg(&out)
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs");
    assert!(
        run.status.success(),
        "cnnc run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let logits = cnn::runtime::io::read_npy(&out).expect("cnnc wrote logits");
    let _ = std::fs::remove_file(&out);
    logits.iter().copied().collect()
}

macro_rules! logits_of {
    ($ty:ty, $weights:expr, $samples:expr) => {{
        let mut m = <$ty>::from_safetensors($weights).expect("golden weights fit");
        let got: Vec<f32> = m.forward($samples).as_flattened().to_vec();
        got
    }};
}

#[test]
fn all_paths_agree_with_cnnc_run_and_numpy() {
    let weights = root().join("tests/golden/seed_weights.safetensors");
    let x = cnn::runtime::io::read_npy(&root().join("tests/golden/seed_input.npy")).unwrap();
    let numpy = cnn::runtime::io::read_npy(&root().join("tests/golden/seed_logits.npy")).unwrap();
    let numpy = numpy.as_slice().unwrap();
    let samples: &[[f32; 784]] = x.as_slice().unwrap().as_chunks::<784>().0;
    assert_eq!(samples.len(), 32);

    let cli = cnnc_run_logits();
    let paths = [
        (
            "inline cnn!",
            logits_of!(inline::SeedCnn, &weights, samples),
        ),
        (
            "cnn!(include yaml)",
            logits_of!(yaml::SeedCnn, &weights, samples),
        ),
        (
            "cnn!(include cnn)",
            logits_of!(dsl::SeedCnn, &weights, samples),
        ),
        (
            "build.rs",
            logits_of!(cnn::models::SeedCnn, &weights, samples),
        ),
    ];
    assert!(max_abs_diff(&cli, numpy) <= 1e-5, "cnnc run vs numpy");
    for (name, got) in &paths {
        let d = max_abs_diff(got, &cli);
        assert!(d <= 1e-6, "{name} vs cnnc run: max |Δ| = {d}");
        let d = max_abs_diff(got, numpy);
        assert!(d <= 1e-5, "{name} vs numpy: max |Δ| = {d}");
    }
}

#[test]
fn all_paths_describe_the_same_model() {
    assert_eq!(inline::SeedCnn::SUMMARY, cnn::models::SeedCnn::SUMMARY);
    assert_eq!(yaml::SeedCnn::SUMMARY, cnn::models::SeedCnn::SUMMARY);
    assert_eq!(dsl::SeedCnn::SUMMARY, cnn::models::SeedCnn::SUMMARY);
    assert_eq!(inline::SeedCnn::param_count(), 121_514);
    assert_eq!(dsl::SeedCnn::TENSOR_NAMES, yaml::SeedCnn::TENSOR_NAMES);
    assert_eq!(inline::SeedCnn::OUTPUT_SHAPE, [10]);
    // Like the build.rs type, the macro types carry their training plan (for `trainer()`),
    // the same whichever front-end declared the model.
    let built = cnn::models::SeedCnn::train_plan();
    assert_eq!(built.mode, cnn::runtime::ir::Mode::Train);
    assert_eq!(yaml::SeedCnn::train_plan(), built);
    assert_eq!(dsl::SeedCnn::train_plan(), built);
    assert_eq!(inline::SeedCnn::train_plan(), built);
    let out = built.steps.last().expect("steps");
    assert_eq!(
        (out.path.as_str(), out.in_len, out.out_len),
        ("out", 64 * 7 * 7, 10)
    );
}
