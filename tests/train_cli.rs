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
    let (code, out, err) = cnnc(&args);
    assert_eq!(code, 0, "{err}");
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
    assert_eq!(code, 1);
    assert!(err.contains("no/such/folder"), "{err}");
    let (code, _, err) = cnnc(&[
        "eval",
        "examples/models/seed.yaml",
        "--weights",
        "tests/golden/seed_weights.safetensors",
        "--split",
        "dev",
    ]);
    assert_eq!(code, 1);
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
        .stdout(std::process::Stdio::null())
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
    let _ = std::fs::remove_dir_all(&dir);
}
