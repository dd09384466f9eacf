//! The specialised code generated for the seed model (by this crate's build script, through
//! `cnn_dsl::build::Builder`) compiles, and computes the same logits as the interpreted plan and
//! the independent numpy reference. `cnnc gen` prints the same code (snapshot).

use cnn::dsl::{
    SourceMap, codegen, compile_source,
    plan::{Mode, plan},
};
use cnn::models::SeedCnn;
use cnn::runtime::exec::{Executor, param_specs};
use cnn::runtime::{io, weights};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn specialised_seed_model_matches_plan_and_reference() {
    let model = compile_source(
        &mut SourceMap::new(),
        "seed.yaml",
        &std::fs::read_to_string(root().join("examples/models/seed.yaml")).unwrap(),
    )
    .unwrap();
    let p = plan(&model, Mode::Infer);
    let wpath = root().join("tests/golden/seed_weights.safetensors");
    let w = weights::load(&wpath, &param_specs(&p)).unwrap();
    let x = io::read_npy(&root().join("tests/golden/seed_input.npy")).unwrap();
    let want = io::read_npy(&root().join("tests/golden/seed_logits.npy")).unwrap();

    let mut spec = SeedCnn::from_safetensors(&wpath).unwrap();
    let samples: &[[f32; 784]] = x.as_slice().unwrap().as_chunks::<784>().0;
    let got: Vec<f32> = spec.forward(samples).as_flattened().to_vec();
    let mut exec = Executor::new(p, w, 2).unwrap();
    let interp = exec.forward(x.as_slice().unwrap(), 32).unwrap().to_vec();
    for ((g, i), r) in got.iter().zip(&interp).zip(want.as_slice().unwrap()) {
        assert!((g - i).abs() <= 1e-6, "specialised {g} vs plan {i}");
        assert!((g - r).abs() <= 1e-5, "specialised {g} vs numpy {r}");
    }
    // Batch 32 ran the leading layers on lane tensors; a batch of 8 takes the image path.
    let few: Vec<f32> = spec.forward(&samples[..8]).as_flattened().to_vec();
    for (g, r) in few.iter().zip(&want.as_slice().unwrap()[..80]) {
        assert!(
            (g - r).abs() <= 1e-5,
            "specialised batch 8 {g} vs numpy {r}"
        );
    }
    // The ndarray entry point checks the trailing dimensions once.
    let arr = spec.forward_array(x.view()).unwrap();
    assert_eq!(arr.shape(), [32, 10]);
    let bad = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[4, 28, 28]));
    let e = spec.forward_array(bad.view()).unwrap_err();
    assert!(e.to_string().contains("[N, 1, 28, 28]"), "{e}");
}

#[test]
fn constants_and_summary() {
    assert_eq!(SeedCnn::INPUT_SHAPE, [1, 28, 28]);
    assert_eq!(SeedCnn::OUTPUT_SHAPE, [10]);
    assert_eq!(SeedCnn::param_count(), 121_514);
    assert!(SeedCnn::SUMMARY.contains("conv2.2"));
    assert_eq!(SeedCnn::TENSOR_NAMES.len(), 10);
    // Memory figures at compile time: a user can refuse a model that is too big in a const.
    const _: () = assert!(SeedCnn::WEIGHT_BYTES < 1 << 20);
    assert_eq!(SeedCnn::WEIGHT_BYTES, 121_514 * 4);
    assert_eq!(SeedCnn::BUFFER_BYTES_PER_IMAGE, 2 * 16 * 28 * 28 * 4);
    let a = SeedCnn::init(7).unwrap().weights().unwrap();
    let b = SeedCnn::init(7).unwrap().weights().unwrap();
    assert_eq!(a, b, "same seed, same weights");
}

#[test]
fn missing_weights_file_is_an_error() {
    let e = SeedCnn::from_safetensors("does/not/exist.safetensors").unwrap_err();
    assert!(e.to_string().contains("does/not/exist.safetensors"), "{e}");
}

#[test]
fn generated_source_snapshot() {
    let model = compile_source(
        &mut SourceMap::new(),
        "seed.yaml",
        &std::fs::read_to_string(root().join("examples/models/seed.yaml")).unwrap(),
    )
    .unwrap();
    let src = codegen::source(
        &model,
        &codegen::Options {
            source_name: "examples/models/seed.yaml".into(),
            ..Default::default()
        },
    )
    .unwrap();
    // The build script generated the very same text.
    let built = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/seed_cnn.rs")).unwrap();
    assert_eq!(src, built);
    insta::assert_snapshot!(src);
}
