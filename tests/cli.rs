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
    assert_eq!(code, 2, "a missing flag is a usage error");
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
    assert_eq!(code, 2);
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

/// A spec that does not check, and a file that does not exist.
const BAD_SPEC: &str = "examples/models/seed_bug.yaml";
const NO_FILE: &str = "does/not/exist.safetensors";

#[test]
fn every_subcommand_follows_one_exit_code_policy() {
    let seed = "examples/models/seed.yaml";
    let weights = "tests/golden/seed_weights.safetensors";
    let input = "tests/golden/seed_input.npy";
    let unwritable = "/proc/cnnc-cannot-write-here/model.rs";
    #[rustfmt::skip]
    let cases: &[(&[&str], i32)] = &[
        (&["check", seed], 0),
        (&["check", BAD_SPEC], 1),
        (&["check", "no/such/spec.yaml"], 2),
        (&["check", seed, "--weights", weights], 0),
        (&["check", "examples/models/seed_plus_conv.yaml", "--weights", weights], 1),
        (&["check", seed, "--weights", NO_FILE], 2),
        (&["check", seed, "--weights", input], 1),
        (&["summary", seed], 0),
        (&["summary", BAD_SPEC], 1),
        (&["summary", "no/such/spec.cnn"], 2),
        (&["gen", BAD_SPEC], 1),
        (&["gen", "no/such/spec.cnn"], 2),
        (&["gen", seed, "-o", unwritable], 2),
        (&["run", BAD_SPEC, "--init", "0", "--input", input], 1),
        (&["run", seed, "--weights", NO_FILE, "--input", input], 2),
        (&["run", seed, "--weights", input, "--input", input], 1),
        (&["run", seed, "--init", "0", "--input", "no/such/input.npy"], 2),
        (&["run", seed, "--init", "0", "--input", "tests/golden/seed_logits.npy"], 1),
        (&["run", seed, "--input", input], 2),
        (&["bench", BAD_SPEC], 1),
        (&["bench", "no/such/spec.yaml"], 2),
        (&["eval", BAD_SPEC, "--weights", weights], 1),
        (&["eval", seed, "--weights", NO_FILE], 2),
        (&["eval", "examples/models/seed_plus_conv.yaml", "--weights", weights], 1),
        (&["train", BAD_SPEC, "--epochs", "1"], 1),
        (&["train", seed, "--data", "no/such/folder", "--epochs", "1"], 2),
        (&["compare", seed, BAD_SPEC], 1),
        (&["compare", seed, "no/such/spec.yaml"], 2),
        (&["frobnicate"], 2),
    ];
    for (args, want) in cases {
        let (code, _, err) = cnnc(args);
        assert_eq!(code, *want, "cnnc {}\n{err}", args.join(" "));
        if *want != 0 {
            assert!(
                err.contains("error"),
                "cnnc {}: no message\n{err}",
                args.join(" ")
            );
        }
    }
    let (code, out, _) = cnnc(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes: 0 success; 1 the spec"), "{out}");
}

#[test]
fn io_errors_name_the_file_and_the_os_error_once() {
    for args in [
        &[
            "run",
            "examples/models/seed.yaml",
            "--weights",
            NO_FILE,
            "--input",
            "x.npy",
        ][..],
        &["check", "examples/models/seed.yaml", "--weights", NO_FILE],
        &["check", "no/such/spec.yaml"],
    ] {
        let (code, _, err) = cnnc(args);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    }
}

#[test]
fn absurd_flags_are_usage_errors_before_any_work() {
    let seed = "examples/models/seed.yaml";
    let input = "tests/golden/seed_input.npy";
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let too_many = (4 * cores).min(256) + 1;
    let too_many = too_many.to_string();
    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["bench", seed, "--threads", "10000"], "core"),
        (&["bench", seed, "--threads", &too_many], "core"),
        (&["run", seed, "--init", "0", "--input", input, "--threads", "10000"], "core"),
        (&["eval", seed, "--weights", "w.safetensors", "--threads", "10000"], "core"),
        (&["train", seed, "--threads", "10000"], "core"),
        (&["bench", seed, "--seconds", "inf"], "finite"),
        (&["bench", seed, "--seconds", "nan"], "finite"),
        (&["bench", seed, "--seconds", "0"], "above 0"),
        (&["bench", seed, "--seconds", "-3"], "above 0"),
        (&["bench", seed, "--batch", "100000000"], "at most 65536"),
        (&["bench", seed, "--batch", "0"], "at least 1"),
        (&["train", seed, "--lr", "nan"], "finite"),
        (&["train", seed, "--lr", "-1"], "above 0"),
        (&["train", seed, "--momentum", "nan"], "finite"),
        (&["train", seed, "--momentum", "-0.5"], "0 or more"),
        (&["train", seed, "--momentum", "1.5"], "below 1"),
        (&["train", seed, "--gamma", "nan"], "finite"),
        (&["train", seed, "--gamma", "0"], "above 0"),
        (&["train", seed, "--weight-decay", "-5"], "0 or more"),
        (&["train", seed, "--weight-decay", "inf"], "finite"),
        (&["train", seed, "--step-size", "0"], "at least 1"),
        (&["train", seed, "--epochs", "0"], "at least 1"),
        (&["train", seed, "--batch", "0"], "at least 1"),
        (&["compare", seed, seed, "--seeds", "0"], "at least 1"),
        (&["run", seed, "--init", "0", "--input", input, "--mean", "0.1", "--std", "0"], "above 0"),
        (&["run", seed, "--init", "0", "--input", input, "--mean", "nan", "--std", "1"], "finite"),
        (&["eval", seed, "--weights", "w.safetensors", "--split", "dev"], "--split"),
    ];
    for (args, needle) in cases {
        let t = std::time::Instant::now();
        let (code, _, err) = cnnc(args);
        assert_eq!(code, 2, "cnnc {}\n{err}", args.join(" "));
        assert!(
            err.contains(needle),
            "cnnc {}: no `{needle}` in\n{err}",
            args.join(" ")
        );
        assert!(
            t.elapsed().as_secs() < 10,
            "cnnc {} took {:?}",
            args.join(" "),
            t.elapsed()
        );
    }
    let (_, _, err) = cnnc(&["bench", seed, "--threads", "10000"]);
    assert!(
        err.contains(&format!("{cores} core")),
        "names the core count: {err}"
    );
}

#[test]
fn broken_weights_and_checkpoints_are_named_by_check_and_run() {
    use cnn::runtime::{exec::param_specs, optim::Adam, train, weights};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/models/seed.yaml")).unwrap();
    let model = cnn::dsl::compile_source(&mut cnn::dsl::SourceMap::new(), "seed.yaml", &text)
        .expect("seed checks");
    let specs = param_specs(&cnn::dsl::plan::plan(&model, cnn::dsl::plan::Mode::Infer));
    let golden = weights::load(&root.join("tests/golden/seed_weights.safetensors"), &specs)
        .expect("golden weights");
    let dir = std::env::temp_dir().join(format!("cnnc-bad-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut values = golden.clone().into_values();
    values[0][5] = f32::NAN;
    values[0][9] = f32::INFINITY;
    let nan = dir.join("nan.safetensors");
    weights::save(&nan, &weights::Weights::new(&specs, values).unwrap()).unwrap();

    let mut trainer = train::Trainer::new(&model, Box::new(Adam::new()), 0, 1).unwrap();
    // One step, so that the optimizer has state to save.
    trainer.train_step(&[0.5; 784], &[3]).unwrap();
    let ckpt = dir.join("checkpoint.safetensors");
    train::save_checkpoint(&trainer, &ckpt, &[]).unwrap();

    let (nan, ckpt) = (nan.to_string_lossy(), ckpt.to_string_lossy());
    for cmd in ["check", "run"] {
        let args = |w: &str| {
            let mut a = vec![cmd, "examples/models/seed.yaml", "--weights"];
            a.push(w);
            if cmd == "run" {
                a.extend(["--input", "tests/golden/seed_input.npy"]);
            }
            a.into_iter().map(String::from).collect::<Vec<_>>()
        };
        let run = |a: Vec<String>| cnnc(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let (code, _, err) = run(args(&nan));
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("conv1.0.weight")
                && err.contains("2 non-finite values")
                && err.contains("flat index 5"),
            "{err}"
        );
        let (code, _, err) = run(args(&ckpt));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("this is a training checkpoint"), "{err}");
        assert!(err.contains("--resume"), "{err}");
        assert!(!err.contains("unexpected tensor"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn models_too_large_for_memory_are_refused_before_allocating() {
    let dir = std::env::temp_dir().join(format!("cnnc-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let huge = dir.join("huge.cnn");
    std::fs::write(
        &huge,
        "model Huge(input = [1, 28, 28]) { conv2d(out_channels = 4096, kernel_size = 3, padding = 1), flatten, out: linear(out_features = 100000) }",
    )
    .unwrap();
    let wide = dir.join("wide.yaml");
    std::fs::write(
        &wide,
        "name: Wide\ninput: [1, 28, 28]\nlayers:\n  - conv2d: { name: wide, out_channels: 99999999, kernel_size: 1 }\n  - flatten\n  - linear: { out_features: 1 }\n",
    )
    .unwrap();
    let (huge, wide) = (huge.to_string_lossy(), wide.to_string_lossy());
    let input = "tests/golden/seed_input.npy";
    // A limit far above this machine's memory but far below the 1.17 TiB the model needs.
    // Inference holds the weights once; Adam training holds weights, gradients and 2 moments.
    let (once, adam) = (
        "`out` needs 1.17 TiB of weights",
        "`out` needs 4.67 TiB of weights",
    );
    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["run", &huge, "--init", "0", "--input", input], once),
        (&["bench", &huge, "--batch", "1"], once),
        (&["bench", &huge, "--batch", "1", "--train"], adam),
        (&["train", &huge, "--epochs", "1", "--limit", "700", "--val", "200", "--run-dir", dir.to_str().unwrap()], adam),
        (&["compare", "examples/models/seed.yaml", &huge, "--epochs", "1", "--limit", "700", "--val", "200", "--out-dir", dir.to_str().unwrap()], adam),
        (&["run", &huge, "--init", "0", "--input", input, "--max-memory", "512G"], once),
    ];
    for (args, figure) in cases {
        let t = std::time::Instant::now();
        let (code, out, err) = cnnc(args);
        assert_eq!(code, 1, "cnnc {}\n{err}", args.join(" "));
        assert!(err.contains(figure), "{err}");
        assert!(err.contains("--max-memory"), "{err}");
        assert!(!out.contains("epoch"), "nothing may train: {out}");
        assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    }
    let (_, _, err) = cnnc(&[
        "run",
        &huge,
        "--init",
        "0",
        "--input",
        input,
        "--max-memory",
        "512G",
    ]);
    assert!(err.contains("--max-memory is 512 GiB"), "{err}");
    let (code, _, err) = cnnc(&["run", &wide, "--init", "0", "--input", input]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`wide` needs"), "{err}");
    // The limit applies to small models too, and a bad one is a usage error.
    let (code, _, err) = cnnc(&["bench", "examples/models/seed.yaml", "--max-memory", "1M"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--max-memory is 1.00 MiB"), "{err}");
    assert_eq!(
        cnnc(&["check", "examples/models/seed.yaml", "--max-memory", "0"]).0,
        2
    );
    let _ = std::fs::remove_dir_all(&dir);
}
