//! Training against references: one SGD step of the seed model equals an independent float64
//! numpy computation (tests/golden/make_seed_step.py); whole-model gradients equal finite
//! differences; training is deterministic and its memory does not grow.

use cnn::dsl::{CheckedModel, SourceMap, compile_source};
use cnn::runtime::exec::param_specs;
use cnn::runtime::optim::{Adam, Sgd};
use cnn::runtime::train::Trainer;
use cnn::runtime::{io, weights};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn model(name: &str, text: &str) -> CheckedModel {
    compile_source(&mut SourceMap::new(), name, text).unwrap_or_else(|d| panic!("{d:?}"))
}

fn seed() -> CheckedModel {
    model(
        "seed.yaml",
        &std::fs::read_to_string(root().join("examples/models/seed.yaml")).unwrap(),
    )
}

#[test]
fn one_sgd_step_of_the_seed_model_matches_numpy() {
    let m = seed();
    let p = cnn::dsl::plan::plan(&m, cnn::dsl::plan::Mode::Infer);
    let w = weights::load(
        &root().join("tests/golden/seed_weights.safetensors"),
        &param_specs(&p),
    )
    .unwrap();
    let want = weights::load(
        &root().join("tests/golden/seed_step_weights.safetensors"),
        &param_specs(&p),
    )
    .unwrap();
    let x = io::read_npy(&root().join("tests/golden/seed_input.npy")).unwrap();
    let labels: Vec<usize> = io::read_npy(&root().join("tests/golden/seed_labels.npy"))
        .unwrap()
        .iter()
        .map(|v| *v as usize)
        .collect();
    let want_loss = std::fs::read(root().join("tests/golden/seed_step_loss.npy")).unwrap();
    let want_loss = f64::from_le_bytes(want_loss[want_loss.len() - 8..].try_into().unwrap());
    for threads in [1, 2] {
        let mut t = Trainer::with_weights(&m, &w, Box::new(Sgd::new(0.1)), 0, threads).unwrap();
        let stats = t.train_step(x.as_slice().unwrap(), &labels).unwrap();
        assert!(
            (stats.loss - want_loss).abs() <= 1e-5 * want_loss,
            "loss {} vs {want_loss}",
            stats.loss
        );
        let got = t.weights().unwrap();
        for (spec, v) in want.iter() {
            let g = got.get(&spec.name).unwrap();
            let d = g
                .iter()
                .zip(v)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d <= 2e-6, "{}: max |Δ| {d} ({threads} threads)", spec.name);
        }
    }
}

/// A model with every trainable layer kind: conv (strided, grouped), batch norm, all
/// activations, both poolings, adaptive pooling, linear and a final log_softmax.
const ZOO: &str = "model Zoo(input = [2, 9, 9]) {
    conv2d(2, 4, 3, stride = 2, padding = 1), batchnorm2d, leaky_relu(0.1),
    conv2d(4, 4, 3, padding = 1, groups = 2), tanh,
    maxpool2d(2, stride = 1), sigmoid,
    conv2d(4, 6, kernel_size = [2, 3], dilation = [1, 2], padding = [1, 2]), gelu,
    avgpool2d(2, ceil_mode = true, count_include_pad = false),
    adaptive_avgpool2d([2, 2]), flatten, linear(out_features = 5), relu, linear(out_features = 3), log_softmax,
}";

#[test]
fn whole_model_gradients_match_finite_differences() {
    let m = model("zoo.cnn", ZOO);
    let mut t = Trainer::new(&m, Box::new(Sgd::new(0.0)), 11, 1).unwrap();
    let n = 4;
    let mut rng = cnn::runtime::init::Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..n * 2 * 81).map(|_| rng.normal_f32()).collect();
    let labels = vec![0, 2, 1, 2];
    t.train_step(&x, &labels).unwrap(); // lr 0: computes gradients, weights unchanged
    let grads: Vec<(String, Vec<f32>)> = t
        .gradients()
        .into_iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(n, g)| (n.to_string(), g.to_vec()))
        .collect();
    assert_eq!(
        grads.len(),
        12,
        "4 conv/linear weights+biases, batchnorm weight+bias"
    );
    let h = 1e-2f32;
    for (name, g) in &grads {
        for i in (0..g.len()).step_by((g.len() / 6).max(1)) {
            let orig = t.tensor_mut(name).unwrap()[i];
            t.tensor_mut(name).unwrap()[i] = orig + h;
            let lp = t.train_loss(&x, &labels).unwrap();
            t.tensor_mut(name).unwrap()[i] = orig - h;
            let lm = t.train_loss(&x, &labels).unwrap();
            t.tensor_mut(name).unwrap()[i] = orig;
            let fd = (lp - lm) / (2.0 * f64::from(h));
            let an = f64::from(g[i]);
            assert!(
                (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
                "{name}[{i}]: analytic {an}, finite difference {fd}"
            );
        }
    }
}

#[test]
fn training_is_deterministic_and_memory_is_bounded() {
    let m = seed();
    let mut rng = cnn::runtime::init::Rng::seed_from_u64(5);
    let x: Vec<f32> = (0..16 * 784).map(|_| rng.uniform_f32()).collect();
    let labels: Vec<usize> = (0..16).map(|i| i % 10).collect();
    let run = |threads| {
        let mut t = Trainer::new(&m, Box::new(Adam::new().with_lr(1e-3)), 42, threads).unwrap();
        let mut mem = Vec::new();
        for _ in 0..4 {
            t.train_step(&x, &labels).unwrap();
            t.train_step(&x[..8 * 784], &labels[..8]).unwrap();
            mem.push(t.memory_bytes());
        }
        assert!(mem.windows(2).all(|w| w[0] == w[1]), "memory grew: {mem:?}");
        t.weights().unwrap()
    };
    let a = run(2);
    let b = run(2);
    assert_eq!(a, b, "same seed and threads, same weights");
    let c = run(1);
    assert_eq!(a, c, "the kernels do not depend on the thread count");
}

#[test]
fn bad_batches_are_errors() {
    let m = seed();
    let mut t = Trainer::new(&m, Box::new(Sgd::new(0.1)), 1, 1).unwrap();
    assert!(
        t.train_step(&[0.0; 784], &[10])
            .unwrap_err()
            .to_string()
            .contains("label 10")
    );
    assert!(t.train_step(&[0.0; 700], &[1]).is_err());
    let mut t = Trainer::new(&m, Box::new(Sgd::new(1e30)), 1, 1).unwrap();
    let x = vec![1.0f32; 784 * 2];
    let r1 = t.train_step(&x, &[1, 2]);
    let r2 = t.train_step(&x, &[1, 2]);
    assert!(r1.is_err() || r2.is_err(), "a diverging loss is reported");
}

#[test]
fn generated_types_train_with_the_same_kernels() {
    use cnn::models::SeedCnn;
    let mut model = SeedCnn::init(9).unwrap();
    let mut t = model.trainer(Box::new(Sgd::new(0.05)), 9, 1).unwrap();
    let x = io::read_npy(&root().join("tests/golden/seed_input.npy")).unwrap();
    let labels: Vec<usize> = io::read_npy(&root().join("tests/golden/seed_labels.npy"))
        .unwrap()
        .iter()
        .map(|v| *v as usize)
        .collect();
    let first = t.train_step(x.as_slice().unwrap(), &labels).unwrap().loss;
    for _ in 0..5 {
        t.train_step(x.as_slice().unwrap(), &labels).unwrap();
    }
    let later = t.train_loss(x.as_slice().unwrap(), &labels).unwrap();
    assert!(later < first, "loss went from {first} to {later}");
    let before = model
        .forward(x.as_slice().unwrap().as_chunks::<784>().0)
        .to_vec();
    model.load_trained(&t).unwrap();
    let after = model
        .forward(x.as_slice().unwrap().as_chunks::<784>().0)
        .to_vec();
    assert_ne!(before, after);
}

/// A model whose leading layers take the lane path in every way it can end: leaky ReLU fused
/// into a convolution, a standalone activation, an overlapping max pool, then a strided
/// convolution (no lane input gradient) that ends the lane region.
const LANES_ZOO: &str = "model LanesZoo(input = [3, 12, 11]) {
    conv2d(3, 8, 3, padding = 1), leaky_relu(0.1),
    conv2d(8, 6, [3, 5], padding = [1, 2]), relu,
    maxpool2d(3, stride = 2, padding = 1), tanh,
    conv2d(6, 5, 3, dilation = 2, padding = 2), relu, maxpool2d(2),
    conv2d(5, 4, 3, stride = 2, padding = 1), relu,
    flatten, linear(out_features = 10),
}";

#[test]
fn the_lane_path_matches_the_image_path() {
    for (m, per, lane_layers) in [(seed(), 784, 6), (model("lz.cnn", LANES_ZOO), 3 * 132, 6)] {
        for batch in [64, 28] {
            let mut rng = cnn::runtime::init::Rng::seed_from_u64(batch as u64);
            let x: Vec<f32> = (0..batch * per).map(|_| rng.normal_f32()).collect();
            let labels: Vec<usize> = (0..batch).map(|i| (i * 7) % 10).collect();
            let grads = |lanes: bool| {
                let mut t = Trainer::new(&m, Box::new(Sgd::new(0.0)), 3, 2).unwrap();
                t.set_lanes(lanes);
                let s = t.train_step(&x, &labels).unwrap();
                let g: Vec<(String, Vec<f32>)> = t
                    .gradients()
                    .into_iter()
                    .map(|(n, g)| (n.to_string(), g.to_vec()))
                    .collect();
                (t.lane_layers(), s, g)
            };
            let (layers, s_lanes, g_lanes) = grads(true);
            let (_, s_images, g_images) = grads(false);
            if layers == 0 {
                eprintln!("no lane path on this CPU");
                return;
            }
            assert_eq!(layers, lane_layers, "{}", m.name());
            assert!((s_lanes.loss - s_images.loss).abs() <= 1e-5 * s_images.loss.abs().max(1.0));
            assert_eq!(s_lanes.correct, s_images.correct);
            for ((name, a), (_, b)) in g_lanes.iter().zip(&g_images) {
                let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
                for (i, (u, v)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (u - v).abs() <= 1e-4 * scale,
                        "{} batch {batch} {name}[{i}]: lanes {u}, images {v}",
                        m.name()
                    );
                }
            }
        }
    }
}

#[test]
fn trainer_and_executor_each_take_only_their_own_plan() {
    use cnn::dsl::plan::{Loc, Mode, plan};
    use cnn::runtime::exec::{ExecError, Executor};
    use cnn::runtime::train::TrainError;
    let m = seed();
    let w = cnn::runtime::exec::init_weights(&plan(&m, Mode::Infer), 0).unwrap();
    // The generated type's embedded plan is the planner's.
    assert_eq!(cnn::models::SeedCnn::train_plan(), plan(&m, Mode::Train));
    let opt = || Box::new(Sgd::new(0.1));
    let err = Trainer::from_plan(plan(&m, Mode::Infer), &w, opt(), 0, 1).unwrap_err();
    assert!(matches!(err, TrainError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("inference plan"), "{err}");
    let err = Executor::new(plan(&m, Mode::Train), w.clone(), 1).unwrap_err();
    assert!(matches!(err, ExecError::Plan { .. }), "{err}");
    // A hand-edited plan that routes a step wrongly is refused, not run out of bounds.
    let mut bad = plan(&m, Mode::Train);
    bad.steps[2].src = Loc::Buf(7);
    assert!(Trainer::from_plan(bad, &w, opt(), 0, 1).is_err());
    let mut bad = plan(&m, Mode::Train);
    bad.steps[0].params = vec![0, 0];
    assert!(Trainer::from_plan(bad, &w, opt(), 0, 1).is_err());
    let mut bad = plan(&m, Mode::Infer);
    bad.steps[1].dst = Loc::Buf(2);
    assert!(Executor::new(bad, w.clone(), 1).is_err());
    let mut bad = plan(&m, Mode::Infer);
    bad.steps[0].params = vec![99];
    assert!(Executor::new(bad, w, 1).is_err());
}

/// A tiny separable dataset: class = which half of a 6×6 image is bright.
fn halves(n: usize) -> cnn::runtime::data::Dataset {
    let mut images = Vec::with_capacity(n * 36);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let y = (i % 2) as u8;
        for p in 0..36 {
            let left = p % 6 < 3;
            let noise = ((i * 31 + p * 17) % 40) as u8;
            images.push(if left == (y == 0) { 200 + noise } else { noise });
        }
        labels.push(y);
    }
    cnn::runtime::data::Dataset::new(images, labels, [1, 6, 6], 2).unwrap()
}

#[test]
fn fit_runs_epochs_resumes_to_the_same_weights_and_stops_on_request() {
    use cnn::runtime::data::Normalize;
    use cnn::runtime::optim::LrSchedule;
    use cnn::runtime::train::{Event, FitConfig, fit};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let m = model(
        "m.cnn",
        "model M(input = [1, 6, 6]) { conv2d(1, 4, 3), relu, flatten, dropout(0.1), linear(4*4*4, 2) }",
    );
    let train = Arc::new(halves(64));
    let val = halves(16);
    let dir = std::env::temp_dir().join(format!("cnn-fit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("c.safetensors");
    let config = |epochs| FitConfig {
        epochs,
        batch: 8,
        seed: 5,
        base_lr: 0.1,
        schedule: LrSchedule::Step {
            step_size: 1,
            gamma: 0.5,
        },
        normalize: Normalize::new(0.5, 0.25).unwrap(),
        prefetch: 2,
        checkpoint: Some(ckpt.clone()),
    };
    let run = |epochs, resume: Option<&Path>, stop: &AtomicBool| {
        let mut t = Trainer::new(&m, Box::new(Sgd::new(0.1)), 1, 1).unwrap();
        let mut lrs = Vec::new();
        let done = fit(
            &mut t,
            &train,
            &val,
            &config(epochs),
            resume,
            stop,
            &mut |e| {
                if let Event::EpochStart { lr, .. } = e {
                    lrs.push(lr);
                }
                Ok(())
            },
        )
        .unwrap();
        (done, t.weights().unwrap(), lrs)
    };
    let go = AtomicBool::new(false);
    let (full, w_full, lrs) = run(3, None, &go);
    assert_eq!(lrs, [0.1, 0.05, 0.025]);
    assert_eq!(full.history.len(), 3);
    assert!(!full.interrupted);
    assert!(full.history[2].val_accuracy > 0.9, "{:?}", full.history[2]);
    // Two epochs, then resume for the third: same weights, same history length.
    let _ = run(2, None, &go);
    let (resumed, w_resumed, lrs) = run(3, Some(&ckpt), &go);
    assert_eq!(lrs, [0.025]);
    assert_eq!(resumed.history.len(), 3);
    for ((name, a), (_, b)) in w_full.iter().zip(w_resumed.iter()) {
        assert_eq!(a, b, "{}", name.name);
    }
    // A raised stop flag ends the run after one step, with a checkpoint marked interrupted.
    let stop = AtomicBool::new(true);
    let (stopped, _, _) = run(3, None, &stop);
    assert!(stopped.interrupted);
    assert!(stopped.history.is_empty());
    let mut t = Trainer::new(&m, Box::new(Sgd::new(0.1)), 1, 1).unwrap();
    let meta = cnn::runtime::train::load_checkpoint(&mut t, &ckpt).unwrap();
    assert_eq!(meta.get("interrupted").map(String::as_str), Some("true"));
    assert_eq!(meta.get("epoch").map(String::as_str), Some("0"));
    assert_eq!(t.steps(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batch_norm_over_one_value_is_an_error_not_a_panic() {
    // After global pooling each channel has one value per image: a batch of one cannot give
    // batch statistics (PyTorch: "Expected more than 1 value per channel when training").
    let m = model(
        "m.cnn",
        "model M(input = [1, 4, 4]) { conv2d(1, 3, 3), adaptive_avgpool2d(1), bn: batchnorm2d, flatten, linear(3, 2) }",
    );
    let mut t = Trainer::new(&m, Box::new(Sgd::new(0.1)), 0, 1).unwrap();
    let e = t.train_step(&[0.5; 16], &[1]).unwrap_err();
    assert!(
        e.to_string()
            .contains("`bn` (batchnorm2d) sees one value per channel"),
        "{e}"
    );
    // Two images are enough, and evaluation (running statistics) works at any batch.
    t.train_step(&[0.5; 32], &[1, 0]).unwrap();
    t.evaluate(&[0.5; 16], &[1]).unwrap();
}
