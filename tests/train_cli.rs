//! `cnnc train`, `eval` and `compare` end to end on a small slice of the bundled MNIST.

use std::path::Path;
use std::process::Command;

fn cnnc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cnnc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn tmp(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("cnn-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.to_string_lossy().into_owned()
}

#[test]
fn train_json_writes_everything_and_resume_continues() {
    let dir = tmp("train");
    let quick = [
        "--limit",
        "700",
        "--val",
        "200",
        "--batch",
        "50",
        "--threads",
        "2",
        "--seed",
        "3",
    ];
    let mut args = vec![
        "train",
        "examples/models/seed.cnn",
        "--epochs",
        "1",
        "--json",
        "--run-dir",
        &dir,
    ];
    args.extend(quick);
    // A temporary file that a killed run left behind is removed at the start.
    std::fs::create_dir_all(&dir).unwrap();
    let stale = Path::new(&dir).join(".checkpoint.safetensors.tmp4999999-0");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let (code, out, err) = cnnc(&args);
    assert_eq!(code, 0, "{err}");
    assert!(!stale.exists(), "stale temporary file kept: {err}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one object per epoch, then the final one: {out}"
    );
    for k in [
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
        "images_per_s",
    ] {
        assert!(lines[0][k].is_number(), "{k} missing: {}", lines[0]);
    }
    assert!(
        lines[1]["test_accuracy"].as_f64().unwrap() > 0.5,
        "{}",
        lines[1]
    );
    for f in [
        "weights.safetensors",
        "checkpoint.safetensors",
        "metrics.csv",
        "curves.png",
        "curves.svg",
    ] {
        assert!(Path::new(&dir).join(f).exists(), "{f} not written");
    }
    let csv = std::fs::read_to_string(Path::new(&dir).join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2);

    // Resume to epoch 2 from the checkpoint: only the second epoch runs.
    let ckpt = format!("{dir}/checkpoint.safetensors");
    let mut args = vec![
        "train",
        "examples/models/seed.cnn",
        "--epochs",
        "2",
        "--json",
        "--run-dir",
        &dir,
        "--resume",
        &ckpt,
    ];
    args.extend(quick);
    let (code, out, err) = cnnc(&args);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["epoch"], 2, "{out}");
    let csv = std::fs::read_to_string(Path::new(&dir).join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "history kept across the resume: {csv}"
    );

    // eval --json on the trained weights.
    let w = format!("{dir}/weights.safetensors");
    let plot = format!("{dir}/confusion");
    let (code, out, err) = cnnc(&[
        "eval",
        "examples/models/seed.yaml",
        "--weights",
        &w,
        "--json",
        "--plot",
        &plot,
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["images"], 10000);
    assert_eq!(j["per_class"].as_array().unwrap().len(), 10);
    assert!(j["accuracy"].as_f64().unwrap() > 0.5);
    assert!(Path::new(&format!("{plot}.png")).exists());

    // `run` on an image uses the normalisation recorded in the trained weights.
    let png_path = format!("{dir}/digit.png");
    let file = std::fs::File::create(&png_path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 28, 28);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..784usize)
        .map(|i| if (i % 28).abs_diff(14) < 3 { 255 } else { 0 })
        .collect();
    enc.write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
    let (code, out, err) = cnnc(&[
        "run",
        "examples/models/seed.yaml",
        "--weights",
        &w,
        "--input",
        &png_path,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("from the weights' metadata"), "{err}");
    assert!(out.contains("top-3"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn same_seed_same_weights() {
    let (a, b) = (tmp("det-a"), tmp("det-b"));
    for d in [&a, &b] {
        let (code, _, err) = cnnc(&[
            "train",
            "examples/models/seed.yaml",
            "--epochs",
            "1",
            "--limit",
            "300",
            "--val",
            "100",
            "--batch",
            "32",
            "--threads",
            "2",
            "--json",
            "--run-dir",
            d,
        ]);
        assert_eq!(code, 0, "{err}");
    }
    // Compare tensors, not bytes: the safetensors header's metadata order is not fixed.
    let load = |d: &str| {
        let path = Path::new(d).join("weights.safetensors");
        let specs: Vec<_> = cnn::runtime::weights::list(&path)
            .unwrap()
            .into_iter()
            .map(|(name, shape, _)| {
                let kind = if name.ends_with("bias") {
                    cnn::runtime::weights::ParamKind::Bias
                } else {
                    cnn::runtime::weights::ParamKind::Weight
                };
                cnn::runtime::weights::ParamSpec::new(name, shape, kind)
            })
            .collect();
        cnn::runtime::weights::load(&path, &specs).unwrap()
    };
    let (wa, wb) = (load(&a), load(&b));
    assert_eq!(wa.len(), 10);
    for ((sa, va), (_, vb)) in wa.iter().zip(wb.iter()) {
        assert!(
            va == vb,
            "{}: same seed and threads must give identical weights",
            sa.name
        );
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn compare_prints_one_table() {
    let dir = tmp("cmp");
    let (code, out, err) = cnnc(&[
        "compare",
        "examples/models/seed.yaml",
        "examples/models/seed_plus_conv.yaml",
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--limit",
        "300",
        "--val",
        "100",
        "--batch",
        "50",
        "--threads",
        "2",
        "--out-dir",
        &dir,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("SeedCnn") && out.contains("SeedPlusConv") && out.contains(" ± "),
        "{out}"
    );
    assert!(Path::new(&dir).join("compare.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_data_folder_is_a_clear_error() {
    let (code, _, err) = cnnc(&[
        "train",
        "examples/models/seed.yaml",
        "--data",
        "no/such/folder",
        "--epochs",
        "1",
    ]);
    assert_eq!(code, 2, "a missing folder is an I/O error");
    assert!(err.contains("no/such/folder"), "{err}");
    let (code, _, err) = cnnc(&[
        "eval",
        "examples/models/seed.yaml",
        "--weights",
        "tests/golden/seed_weights.safetensors",
        "--split",
        "dev",
    ]);
    assert_eq!(code, 2, "a bad flag value is a usage error");
    assert!(err.contains("--split"), "{err}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let dir = tmp("sigint");
    let child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args([
            "train",
            "examples/models/seed.yaml",
            "--epochs",
            "5",
            "--limit",
            "30000",
            "--val",
            "100",
            "--threads",
            "1",
            "--json",
            "--run-dir",
            &dir,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cnnc starts");
    // Let it load the data and take some steps, then interrupt it as a terminal would.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = child.wait_with_output().expect("cnnc exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("checkpoint"), "{err}");
    let ckpt = Path::new(&dir).join("checkpoint.safetensors");
    assert!(ckpt.exists(), "no checkpoint after Ctrl-C: {err}");
    // Only files that exist are reported (no metrics or plots before the first epoch ends).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no final JSON line: {stdout}"));
    let files: Vec<&str> = last["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no `files` in {last}"))
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("checkpoint.safetensors")),
        "{last}"
    );
    for f in &files {
        assert!(Path::new(f).exists(), "reported but missing: {f}");
    }
    if !Path::new(&dir).join("metrics.csv").exists() {
        assert!(files.iter().all(|f| !f.ends_with("metrics.csv")), "{last}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unwritable_outputs_fail_before_training() {
    let dir = tmp("unwritable");
    for (flag, value) in [
        ("--out", "/proc/cnnc-no-such-dir/w.safetensors"),
        ("--run-dir", "/proc/cnnc-no-such-dir"),
        ("--out", "/tmp"),
    ] {
        let t = std::time::Instant::now();
        let mut args = vec![
            "train",
            "examples/models/seed.yaml",
            "--epochs",
            "1",
            "--limit",
            "700",
            "--val",
            "200",
            flag,
            value,
        ];
        if flag != "--run-dir" {
            args.extend(["--run-dir", &dir]);
        }
        let (code, out, err) = cnnc(&args);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(value), "{flag} {value}: {err}");
        assert!(!err.contains("training `"), "training started: {err}");
        assert!(!out.contains("epoch"), "training started: {out}");
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }
    let (code, _, err) = cnnc(&[
        "eval",
        "examples/models/seed.yaml",
        "--weights",
        "tests/golden/seed_weights.safetensors",
        "--plot",
        "/proc/cnnc-no-such-dir/confusion",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/proc/cnnc-no-such-dir"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes an MNIST-style folder of `n` images of `side`×`side` pixels made by `pixel`.
fn idx_folder(name: &str, n: u32, side: u32, pixel: impl Fn(usize) -> u8) -> String {
    let dir = tmp(name);
    std::fs::create_dir_all(&dir).unwrap();
    for prefix in ["train", "t10k"] {
        let mut images = vec![0, 0, 8, 3];
        for d in [n, side, side] {
            images.extend(d.to_be_bytes());
        }
        images.extend((0..(n * side * side) as usize).map(&pixel));
        std::fs::write(format!("{dir}/{prefix}-images-idx3-ubyte"), images).unwrap();
        let mut labels = vec![0, 0, 8, 1];
        labels.extend(n.to_be_bytes());
        labels.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(format!("{dir}/{prefix}-labels-idx1-ubyte"), labels).unwrap();
    }
    dir
}

#[test]
fn data_that_cannot_train_the_model_fails_before_the_first_epoch() {
    let run_dir = tmp("data-run");
    let big = idx_folder("idx-32", 40, 32, |i| (i % 251) as u8);
    let black = idx_folder("idx-black", 40, 28, |_| 0);
    for (data, needles) in [
        (&big, &["32×32", "[1,28,28]"][..]),
        (&black, &["every pixel", "0.0000"][..]),
    ] {
        let (code, out, err) = cnnc(&[
            "train",
            "examples/models/seed.yaml",
            "--data",
            data,
            "--val",
            "10",
            "--epochs",
            "1",
            "--json",
            "--run-dir",
            &run_dir,
        ]);
        assert_eq!(code, 1, "{err}");
        for n in needles {
            assert!(err.contains(n), "no `{n}` in {err}");
        }
        assert!(err.contains(data.as_str()), "names the folder: {err}");
        assert!(out.is_empty(), "no epoch may start: {out}");
    }
    let (code, _, err) = cnnc(&[
        "eval",
        "examples/models/seed.yaml",
        "--weights",
        "tests/golden/seed_weights.safetensors",
        "--data",
        &big,
        "--plot",
        &format!("{run_dir}/confusion"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("32×32"), "{err}");
    for d in [run_dir, big, black] {
        let _ = std::fs::remove_dir_all(d);
    }
}
