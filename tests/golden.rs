//! The interpreted plan reproduces logits computed independently (numpy, float64) for the seed
//! model with PyTorch-layout weights. `tests/golden/make_seed_golden.py` made the files.

use cnn::dsl::{
    SourceMap, compile_source,
    plan::{Mode, plan},
};
use cnn::runtime::exec::{Executor, param_specs};
use cnn::runtime::{io, weights};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn seed_plan() -> cnn::dsl::plan::Plan {
    let text = std::fs::read_to_string(root().join("examples/models/seed.yaml")).unwrap();
    let m = compile_source(&mut SourceMap::new(), "seed.yaml", &text).unwrap();
    plan(&m, Mode::Infer)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn seed_logits_match_numpy_reference_for_1_and_2_threads() {
    let p = seed_plan();
    let w = weights::load(
        &root().join("tests/golden/seed_weights.safetensors"),
        &param_specs(&p),
    )
    .expect("weights load");
    let x = io::read_npy(&root().join("tests/golden/seed_input.npy")).unwrap();
    let want = io::read_npy(&root().join("tests/golden/seed_logits.npy")).unwrap();
    assert_eq!(x.shape(), [32, 1, 28, 28]);
    // Batch 32 runs the conv stack on lane tensors (two slots of 16) unless turned off.
    for (threads, lanes) in [(1, true), (2, true), (1, false), (2, false)] {
        let mut exec = Executor::new(p.clone(), w.clone(), threads).unwrap();
        exec.set_lanes(lanes);
        assert_eq!(exec.uses_lanes(32), lanes);
        let got = exec.forward_array(x.view()).unwrap();
        assert_eq!(got.shape(), [32, 10]);
        let diff = max_abs_diff(got.as_slice().unwrap(), want.as_slice().unwrap());
        assert!(
            diff <= 1e-5,
            "threads {threads} lanes {lanes}: max |Δ| = {diff}"
        );
        // A batch that fills its last slot only in part (20 of 32 lanes) on the lane path.
        let part = exec
            .forward(&x.as_slice().unwrap()[..784 * 20], 20)
            .unwrap()
            .to_vec();
        assert!(max_abs_diff(&part, &want.as_slice().unwrap()[..200]) <= 1e-5);
        // Batch 1 gives the same numbers as a batch of 32.
        let one = exec
            .forward(&x.as_slice().unwrap()[784 * 5..784 * 6], 1)
            .unwrap()
            .to_vec();
        assert!(max_abs_diff(&one, &want.as_slice().unwrap()[50..60]) <= 1e-5);
    }
}

#[test]
fn wrong_input_shapes_are_errors_not_panics() {
    let p = seed_plan();
    let mut exec = Executor::with_init(p, 0, 1).unwrap();
    let x = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 3, 28, 28]));
    let e = exec.forward_array(x.view()).unwrap_err();
    assert!(e.to_string().contains("[N, 1, 28, 28]"), "{e}");
    assert!(exec.forward(&[0.0; 100], 1).is_err());
}
