//! `cnnc` end to end: exit codes and output of `check` and `summary`.

use std::process::Command;

fn cnnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("cnnc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_passes_on_the_seed_models() {
    let (code, out, err) = cnnc(&[
        "check",
        "examples/models/seed.yaml",
        "examples/models/seed.cnn",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "one line per file: {out}");
    assert!(out.contains("121,514 parameters"), "{out}");
}

#[test]
fn check_fails_on_the_canonical_bug_with_exit_1() {
    let (code, _, err) = cnnc(&[
        "check",
        "examples/models/seed.yaml",
        "examples/models/seed_bug.yaml",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("error[CNN0301]"), "{err}");
    assert!(err.contains("seed_bug.yaml:21:39"), "{err}");
    assert!(err.contains("write `in_features: 64*7*7`"), "{err}");
}

#[test]
fn json_diagnostics_are_one_object_per_line() {
    let (code, out, _) = cnnc(&[
        "check",
        "--message-format",
        "json",
        "tests/specs/bad/multiple_shape_errors.cnn",
    ]);
    assert_eq!(code, 1);
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    assert_eq!(objs.len(), 3);
    assert!(
        objs.iter()
            .all(|o| o["line"].is_u64() && o["code"].is_string() && o["byte_start"].is_u64())
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(cnnc(&["check", "does/not/exist.yaml"]).0, 2);
    assert_eq!(cnnc(&["check", "Cargo.toml"]).0, 2);
    assert_eq!(cnnc(&["frobnicate"]).0, 2);
    assert_eq!(cnnc(&["--explain", "CNN9999"]).0, 2);
    let (code, out, _) = cnnc(&["--explain", "CNN0301"]);
    assert_eq!(code, 0);
    assert!(out.contains("in_features"));
}

#[test]
fn summary_prints_the_table_and_totals() {
    let (code, out, _) = cnnc(&["summary", "examples/models/seed.yaml"]);
    assert_eq!(code, 0);
    for needle in [
        "conv1.0",
        "Conv2d",
        "[16, 28, 28]",
        "313,600",
        "5,017,600",
        "31,360",
        "121,514 in 10 tensors",
        "10,380,160",
    ] {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
}

#[test]
fn summary_explains_dimensions() {
    let (code, out, _) = cnnc(&["summary", "--explain", "examples/models/seed.cnn"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("64 channels: out_channels of conv3.0"),
        "{out}"
    );
    assert!(
        out.contains(
            "height 7: model input → conv1.2 (maxpool k2 s2) → 14 → conv2.4 (maxpool k2 s2) → 7"
        ),
        "{out}"
    );
}

#[test]
fn summary_of_a_broken_spec_shows_the_layers_up_to_the_error() {
    let (code, out, err) = cnnc(&["summary", "examples/models/seed_bug.yaml"]);
    assert_eq!(code, 1);
    assert!(out.contains("conv3.0") && out.contains("✗ error"), "{out}");
    assert!(err.contains("CNN0301"), "{err}");
}

#[test]
fn run_reproduces_the_reference_logits_and_checks_weights() {
    let out = std::env::temp_dir().join(format!("cnnc-run-{}.npy", std::process::id()));
    let out_s = out.to_string_lossy().to_string();
    let (code, _, err) = cnnc(&[
        "run",
        "examples/models/seed.yaml",
        "--weights",
        "tests/golden/seed_weights.safetensors",
        "--input",
        "tests/golden/seed_input.npy",
        "--output",
        &out_s,
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let got = cnn::runtime::io::read_npy(&out).unwrap();
    let want = cnn::runtime::io::read_npy(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/seed_logits.npy"
    )))
    .unwrap();
    let diff = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-5, "max |Δ| {diff}");
    let _ = std::fs::remove_file(&out);

    let (code, out, _) = cnnc(&[
        "check",
        "examples/models/seed.yaml",
        "--weights",
        "tests/golden/seed_weights.safetensors",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("fits `SeedCnn`"), "{out}");
    // Weights of the seed model do not fit seed+conv: every problem named at once.
    let (code, _, err) = cnnc(&[
        "check",
        "examples/models/seed_plus_conv.yaml",
        "--weights",
        "tests/golden/seed_weights.safetensors",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("conv4.0.weight") && err.contains("conv4.0.bias"),
        "{err}"
    );
}

#[test]
fn run_errors_are_clear() {
    // No weights for a model with parameters.
    let (code, _, err) = cnnc(&[
        "run",
        "examples/models/seed.yaml",
        "--input",
        "tests/golden/seed_input.npy",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--weights") && err.contains("--init"), "{err}");
    // Input of the wrong shape names both shapes.
    let (code, _, err) = cnnc(&[
        "run",
        "examples/models/seed.yaml",
        "--init",
        "1",
        "--input",
        "tests/golden/seed_logits.npy",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("[32, 10]") && err.contains("[N, 1, 28, 28]"),
        "{err}"
    );
    // --init gives a runnable model; top-k is printed.
    let (code, out, err) = cnnc(&[
        "run",
        "examples/models/seed.cnn",
        "--init",
        "3",
        "--input",
        "tests/golden/seed_input.npy",
        "--top-k",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("top-2"), "{out}");
}

#[test]
fn isa_override_runs_the_forced_isa_and_refuses_bad_values() {
    // The portable build runs everywhere; the JSON names the ISA the kernels used.
    for line in bench_json(&["--isa", "portable"]) {
        assert_eq!(line["isa"], "portable", "{line}");
    }
    let (code, _, err) = cnnc(&["bench", "examples/models/seed.yaml", "--isa", "sse9"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown instruction set `sse9`"), "{err}");
    // CNN_ISA is checked by every command before it runs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["check", "examples/models/seed.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CNN_ISA", "avx9000")
        .output()
        .expect("cnnc runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CNN_ISA") && err.contains("avx9000"), "{err}");
    // An ISA the CPU lacks is refused, not run.
    for isa in ["avx512", "avx2"] {
        let available = cnn::runtime::kernels::Isa::parse(isa).is_ok();
        let (code, _, err) = cnnc(&[
            "bench",
            "examples/models/seed.yaml",
            "--isa",
            isa,
            "--batch",
            "1",
            "--seconds",
            "0.01",
        ]);
        if available {
            assert_eq!(code, 0, "{err}");
        } else {
            assert_eq!(code, 2);
            assert!(err.contains("cannot run"), "{err}");
        }
    }
}

/// `cnnc bench` on the seed model, batch 2, one thread, a short timing, `--json` plus `extra`:
/// the JSON lines it printed (it must succeed).
fn bench_json(extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "bench",
        "examples/models/seed.yaml",
        "--batch",
        "2",
        "--threads",
        "1",
        "--seconds",
        "0.05",
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = cnnc(&args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bench_compare_lanes_times_both_paths_or_says_why_not() {
    let args = |batch: &'static str| {
        [
            "bench",
            "examples/models/seed.yaml",
            "--train",
            "--optimizer",
            "sgd",
            "--compare-lanes",
            "--batch",
            batch,
            "--threads",
            "1",
            "--seconds",
            "0.05",
            "--json",
        ]
    };
    // Every instruction set has the lane kernels.
    let (code, out, err) = cnnc(&args("32"));
    assert_eq!(code, 0, "{err}");
    let paths: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
        .collect();
    assert_eq!(paths, ["\"train-lanes\"", "\"train-images\""]);
    // A batch that cannot fill its slots would time the image path twice: refused.
    let (code, _, err) = cnnc(&args("2"));
    assert_eq!(code, 1);
    assert!(err.contains("lane slots idle"), "{err}");
}

#[test]
fn gen_prints_formatted_code_and_bench_prints_json() {
    let (code, out, _) = cnnc(&["gen", "examples/models/seed.cnn"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("// @generated"));
    assert!(out.contains("pub struct SeedCnn"));
    let lines = bench_json(&[]);
    let paths: Vec<_> = lines
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["plan", "specialised"]);
    for l in &lines {
        for k in [
            "batch",
            "threads",
            "images_per_s",
            "latency_us_p50",
            "latency_us_p99",
            "gflops",
        ] {
            assert!(l[k].is_number(), "{k} missing in {l}");
        }
    }
}

#[test]
fn bench_train_names_its_optimizer_and_refuses_it_without_train() {
    for (opt, name) in [("sgd", "SGD"), ("adam", "Adam")] {
        let lines = bench_json(&["--train", "--optimizer", opt]);
        let [v] = &lines[..] else {
            panic!("one JSON line for a training bench: {lines:?}")
        };
        assert_eq!(v["path"], "train");
        assert_eq!(v["optimizer"], name);
        assert!(v["images_per_s"].as_f64().unwrap() > 0.0, "{v}");
    }
    // An optimizer only means something for a training step.
    let (code, _, err) = cnnc(&["bench", "examples/models/seed.yaml", "--optimizer", "sgd"]);
    assert_eq!(code, 2);
    assert!(err.contains("--train"), "{err}");
}
