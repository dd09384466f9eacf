//! `cnnc run`, `cnnc gen`, `cnnc bench` and `cnnc check --weights`.

use crate::exit;
use crate::spec_cmds::load_model;
use anyhow::{Context, bail};
use cnn::dsl::plan::{Mode, Plan, plan};
use cnn::dsl::{CheckedModel, SourceMap, codegen};
use cnn::runtime::exec::{Executor, param_specs};
use cnn::runtime::io;
use cnn::runtime::weights::{self, Weights};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// Weights from `--weights`, `--init`, or none for a parameter-free model.
pub fn load_weights(p: &Plan, weights: Option<&str>, init: Option<u64>) -> anyhow::Result<Weights> {
    match (weights, init) {
        (Some(w), _) => Ok(weights::load(Path::new(w), &param_specs(p))?),
        (None, Some(seed)) => Ok(cnn::runtime::exec::init_weights(p, seed)?),
        (None, None) if p.tensors.is_empty() => Ok(Weights::new(&[], vec![])?),
        (None, None) => Err(exit::usage(format!(
            "`{}` has {} parameter tensors: give --weights FILE.safetensors or --init SEED",
            p.name,
            p.tensors.len()
        ))),
    }
}

fn report(e: anyhow::Error) -> ExitCode {
    exit::report(&e)
}

/// `cnnc check SPEC --weights W`: compare a safetensors file with the spec, without running.
pub fn check_weights(file: &str, weights_path: &str, color: bool) -> ExitCode {
    let model = match load_model(file, color) {
        Ok(m) => m,
        Err(c) => return c,
    };
    let p = plan(&model, Mode::Infer);
    match weights::load(Path::new(weights_path), &param_specs(&p)) {
        Ok(w) => {
            println!(
                "ok: {weights_path} fits `{}`: {} tensors, {} values",
                p.name,
                w.len(),
                w.iter().map(|(_, v)| v.len()).sum::<usize>()
            );
            ExitCode::SUCCESS
        }
        Err(e) => report(e.into()),
    }
}

/// `cnnc gen SPEC [-o FILE]`.
pub fn generate(file: &str, out: Option<&str>, color: bool) -> ExitCode {
    let model = match load_model(file, color) {
        Ok(m) => m,
        Err(c) => return c,
    };
    let opts = codegen::Options {
        source_name: file.to_string(),
        ..Default::default()
    };
    let src = match codegen::source(&model, &opts) {
        Ok(s) => s,
        Err(e) => {
            return report(anyhow::anyhow!(
                "internal error formatting generated code: {e}"
            ));
        }
    };
    match out {
        Some(path) => match crate::outputs::write(Path::new(path), src.as_bytes()) {
            Ok(()) => {
                eprintln!("wrote {path}");
                ExitCode::SUCCESS
            }
            Err(e) => report(e),
        },
        None => {
            print!("{src}");
            ExitCode::SUCCESS
        }
    }
}

/// Options of `cnnc run`.
pub struct RunArgs<'a> {
    pub spec: &'a str,
    pub weights: Option<&'a str>,
    pub init: Option<u64>,
    pub input: &'a str,
    pub output: Option<&'a str>,
    pub threads: usize,
    pub top_k: usize,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// `cnnc run`.
pub fn run(a: RunArgs<'_>, color: bool) -> ExitCode {
    let model = match load_model(a.spec, color) {
        Ok(m) => m,
        Err(c) => return c,
    };
    match run_inner(&a, &model) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

fn run_inner(a: &RunArgs<'_>, model: &CheckedModel) -> anyhow::Result<()> {
    if let Some(path) = a.output {
        crate::outputs::ensure_writable_file(Path::new(path))?;
    }
    let p = plan(model, Mode::Infer);
    // Before the weights are read or initialised: a model too large for one image.
    crate::memory::check(
        model,
        crate::memory::Workload::Inference {
            batch: 1,
            threads: a.threads,
        },
    )?;
    let w = load_weights(&p, a.weights, a.init)?;
    let lower = a.input.to_ascii_lowercase();
    let is_image = [".png", ".jpg", ".jpeg"].iter().any(|e| lower.ends_with(e));
    let (data, batch) = if is_image {
        let shape: [usize; 3] = match p.input_shape.as_slice() {
            [c, h, w] => [*c, *h, *w],
            s => bail!("`{}` takes {:?} inputs, not images", p.name, s),
        };
        let norm = match (&a.mean, &a.std) {
            (Some(m), Some(s)) => Some(io::ChannelNorm::new(m, s)?),
            // Weights trained by `cnnc train` record the normalisation they were trained with.
            (None, None) => {
                let meta = |k: &str| w.metadata().get(k).and_then(|v| v.parse::<f32>().ok());
                match (meta("normalize_mean"), meta("normalize_std")) {
                    (Some(m), Some(s)) => {
                        eprintln!(
                            "normalising the image with mean {m} and std {s} from the weights' metadata (override with --mean/--std)"
                        );
                        Some(io::ChannelNorm::new(
                            &vec![m; shape[0]],
                            &vec![s; shape[0]],
                        )?)
                    }
                    _ => None,
                }
            }
            _ => return Err(exit::usage("give both --mean and --std, or neither")),
        };
        let img = io::read_image(Path::new(a.input), shape, norm.as_ref())?;
        (img.into_raw_vec_and_offset().0, 1)
    } else {
        let x = io::read_npy(Path::new(a.input))?;
        let s = x.shape().to_vec();
        let batch = if s == p.input_shape {
            1
        } else if s.len() == p.input_shape.len() + 1 && s[1..] == p.input_shape[..] {
            s[0]
        } else {
            bail!(
                "`{}` has shape {:?}, but `{}` takes [N, {}] (or one sample of [{}])",
                a.input,
                s,
                p.name,
                p.input_shape
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                p.input_shape
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let flat: Vec<f32> = x.iter().copied().collect();
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            bail!(
                "`{}` holds a non-finite value ({}) at flat index {i}",
                a.input,
                flat[i]
            );
        }
        (flat, batch)
    };
    crate::memory::check(
        model,
        crate::memory::Workload::Inference {
            batch,
            threads: a.threads,
        },
    )?;
    let mut exec = Executor::new(p.clone(), w, a.threads)?;
    let out = exec.forward(&data, batch)?.to_vec();
    let olen = p.output_len();
    if let Some(path) = a.output {
        let mut shape = vec![batch];
        shape.extend(&p.output_shape);
        let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), out.clone())?;
        io::write_npy(Path::new(path), &arr).with_context(|| format!("writing {path}"))?;
        eprintln!("wrote {path}: {batch} × {:?}", p.output_shape);
    }
    if a.output.is_none() || is_image {
        let last = model.layers().last().map(|l| l.layer.kind.name());
        for (i, row) in out.chunks(olen).enumerate().take(16) {
            let probs = match last {
                Some("softmax") => row.to_vec(),
                Some("log_softmax") => row.iter().map(|v| v.exp()).collect(),
                _ => softmax(row),
            };
            let mut idx: Vec<usize> = (0..probs.len()).collect();
            idx.sort_by(|&x, &y| probs[y].total_cmp(&probs[x]));
            let top: Vec<String> = idx
                .iter()
                .take(a.top_k)
                .map(|&c| format!("{c}: {:.4}", probs[c]))
                .collect();
            println!(
                "{}[{i}] top-{}: {}",
                if is_image { a.input } else { "sample" },
                a.top_k.min(probs.len()),
                top.join("  ")
            );
        }
        if batch > 16 {
            println!("… {} more samples (use --output Y.npy for all)", batch - 16);
        }
    }
    Ok(())
}

/// Options of `cnnc bench`.
pub struct BenchArgs<'a> {
    pub spec: &'a str,
    pub batch: usize,
    pub threads: usize,
    pub seconds: f64,
    pub json: bool,
    pub layers: bool,
    pub train: bool,
    pub optimizer: crate::train_cmds::OptKind,
    pub compare_lanes: bool,
}

struct Timing {
    lat: Vec<f64>,
}

impl Timing {
    fn pct(&self, q: f64) -> f64 {
        let mut v = self.lat.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

fn time_loop(seconds: f64, mut f: impl FnMut()) -> Timing {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut lat = Vec::new();
    while start.elapsed().as_secs_f64() < seconds || lat.len() < 10 {
        let t = Instant::now();
        f();
        lat.push(t.elapsed().as_secs_f64());
    }
    Timing { lat }
}

/// `cnnc bench`.
pub fn bench(a: BenchArgs<'_>, color: bool) -> ExitCode {
    let model = match load_model(a.spec, color) {
        Ok(m) => m,
        Err(c) => return c,
    };
    match bench_inner(&a, &model) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

fn bench_inner(a: &BenchArgs<'_>, model: &CheckedModel) -> anyhow::Result<()> {
    use crate::memory::Workload;
    let mode = if a.train {
        Workload::Training {
            batch: a.batch,
            state: crate::train_cmds::optimizer_state(a.optimizer, 0.0),
            threads: a.threads,
        }
    } else {
        Workload::Inference {
            batch: a.batch,
            threads: a.threads,
        }
    };
    crate::memory::check(model, mode)?;
    let p = plan(model, Mode::Infer);
    let flops = 2.0 * model.macs() as f64 * a.batch as f64;
    let input: Vec<f32> = (0..p.input_len() * a.batch)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    if a.train {
        return bench_train(a, model, &p, &input, flops);
    }
    let mut exec = Executor::with_init(p.clone(), 0, a.threads)?;
    let threads = exec.threads();
    let mut results = Vec::new();
    // Time inside the executor's pool (as the specialised code below runs inside one), so both
    // paths measure the kernels rather than the hand-over to a worker thread.
    let pool = exec.pool();
    let t = pool.install(|| {
        time_loop(a.seconds, || {
            let _ = exec.forward(&input, a.batch);
        })
    });
    results.push(("plan", t));
    // The specialised code compiled into cnnc: the bundled seed model.
    let seed = seed_plan();
    if seed
        .as_ref()
        .is_some_and(|s| s.steps == p.steps && s.tensors == p.tensors)
    {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let mut m = cnn::models::SeedCnn::init(0)?;
        let samples: &[[f32; 784]] = input.as_chunks::<784>().0;
        let t = pool.install(|| {
            time_loop(a.seconds, || {
                m.forward(samples);
            })
        });
        results.push(("specialised", t));
    }
    if !a.json {
        println!(
            "{}: batch {}, {} thread(s), {} kernels, {:.2} MFLOP per image",
            p.name,
            a.batch,
            threads,
            cnn::runtime::kernels::Isa::detect().name(),
            2.0 * model.macs() as f64 / 1e6
        );
    }
    for (path, t) in &results {
        let mean = t.lat.iter().sum::<f64>() / t.lat.len() as f64;
        let ips = a.batch as f64 / mean;
        let gflops = flops / mean / 1e9;
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "path": path, "batch": a.batch, "threads": threads, "isa": cnn::runtime::kernels::Isa::detect().name(), "images_per_s": ips,
                    "latency_us_p50": t.pct(0.5) * 1e6, "latency_us_p99": t.pct(0.99) * 1e6, "gflops": gflops,
                    "iterations": t.lat.len(),
                })
            );
        } else {
            println!(
                "  {path:<12} {ips:>10.0} images/s   p50 {:>9.1} µs   p99 {:>9.1} µs   {gflops:>6.1} GFLOP/s   ({} runs)",
                t.pct(0.5) * 1e6,
                t.pct(0.99) * 1e6,
                t.lat.len()
            );
        }
    }
    if results.len() == 2 && !a.json {
        let m = |t: &Timing| t.lat.iter().sum::<f64>() / t.lat.len() as f64;
        println!(
            "  specialised / plan throughput: {:.2}×",
            m(&results[0].1) / m(&results[1].1)
        );
    }
    if a.layers {
        let runs = 20;
        let mut acc: Vec<(String, f64)> = Vec::new();
        for _ in 0..runs {
            for (i, (path, s)) in exec.profile(&input, a.batch)?.into_iter().enumerate() {
                if acc.len() <= i {
                    acc.push((path, 0.0));
                }
                acc[i].1 += s / runs as f64;
            }
        }
        if !a.json {
            println!("  per step (plan, mean of {runs}):");
        }
        for ((path, s), step) in acc.iter().zip(&p.steps) {
            let gf = 2.0 * step.macs as f64 * a.batch as f64 / s / 1e9;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"path": "plan-step", "step": path, "batch": a.batch, "threads": threads, "isa": cnn::runtime::kernels::Isa::detect().name(), "us": s * 1e6, "gflops": gf})
                );
            } else {
                println!("    {path:<18} {:>9.1} µs  {:>7.1} GFLOP/s", s * 1e6, gf);
            }
        }
    }
    Ok(())
}

fn seed_plan() -> Option<Plan> {
    let text = include_str!("../../../examples/models/seed.yaml");
    cnn::dsl::compile_source(&mut SourceMap::new(), "seed.yaml", text)
        .ok()
        .map(|m| plan(&m, Mode::Infer))
}

/// Times forward + backward + Adam update; FLOPs counted as 3× the forward pass.
fn bench_train(
    a: &BenchArgs<'_>,
    model: &CheckedModel,
    p: &Plan,
    input: &[f32],
    flops: f64,
) -> anyhow::Result<()> {
    let labels: Vec<usize> = (0..a.batch).map(|i| i % p.output_len().max(1)).collect();
    use crate::train_cmds::OptKind;
    use cnn::runtime::optim::{Adam, Optimizer, Sgd};
    let (opt, opt_name): (Box<dyn Optimizer + Send>, &str) = match a.optimizer {
        OptKind::Adam => (Box::new(Adam::new()), "Adam"),
        OptKind::Adamw => (Box::new(Adam::adamw()), "AdamW"),
        OptKind::Sgd => (Box::new(Sgd::new(0.01)), "SGD"),
    };
    let mut t = cnn::runtime::train::Trainer::new(model, opt, 0, a.threads)?;
    let threads = t.threads();
    if a.compare_lanes {
        return bench_lanes(a, t, p, input, &labels, flops, opt_name);
    }
    let timing = time_loop(a.seconds, || {
        let _ = t.train_step(input, &labels);
    });
    let mean = timing.lat.iter().sum::<f64>() / timing.lat.len() as f64;
    let ips = a.batch as f64 / mean;
    let gflops = 3.0 * flops / mean / 1e9;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"path": "train", "optimizer": opt_name, "batch": a.batch, "threads": threads, "isa": cnn::runtime::kernels::Isa::detect().name(), "images_per_s": ips,
                "latency_us_p50": timing.pct(0.5) * 1e6, "latency_us_p99": timing.pct(0.99) * 1e6, "gflops": gflops,
                "iterations": timing.lat.len(), "memory_mib": t.memory_bytes() as f64 / (1u64 << 20) as f64})
        );
    } else {
        println!(
            "{}: training step (forward, backward, {opt_name}), batch {}, {} thread(s), {} kernels",
            p.name,
            a.batch,
            threads,
            cnn::runtime::kernels::Isa::detect().name()
        );
        println!(
            "  {:<12} {ips:>10.0} images/s   p50 {:>9.1} µs   p99 {:>9.1} µs   {gflops:>6.1} GFLOP/s (3× forward)   ({} runs, {:.1} MiB of buffers)",
            "train",
            timing.pct(0.5) * 1e6,
            timing.pct(0.99) * 1e6,
            timing.lat.len(),
            t.memory_bytes() as f64 / (1u64 << 20) as f64
        );
    }
    Ok(())
}

/// `bench --train --compare-lanes`: steps alternate between the lane path and the image-major
/// path (same trainer, same process), so machine noise hits both alike.
fn bench_lanes(
    a: &BenchArgs<'_>,
    mut t: cnn::runtime::train::Trainer,
    p: &Plan,
    input: &[f32],
    labels: &[usize],
    flops: f64,
    opt_name: &str,
) -> anyhow::Result<()> {
    if t.lane_layers() == 0 {
        return Err(exit::usage(format!(
            "`{}` has no lane path (it needs a model that starts with a convolution)",
            p.name
        )));
    }
    if !t.uses_lanes(a.batch) {
        return Err(exit::usage(format!(
            "batch {} would leave more than a quarter of its 16-image lane slots idle, so it always takes the image path; use a batch of at least 16, ideally a multiple of 16 (--batch 64)",
            a.batch
        )));
    }
    let mut lat = [Vec::new(), Vec::new()];
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed().as_secs_f64() < 2.0 * a.seconds || lat[1].len() < 10 {
        let lanes = i.is_multiple_of(2);
        t.set_lanes(lanes);
        let s = Instant::now();
        t.train_step(input, labels)?;
        if i >= 4 {
            lat[usize::from(!lanes)].push(s.elapsed().as_secs_f64());
        }
        i += 1;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ml, mi) = (mean(&lat[0]), mean(&lat[1]));
    if a.json {
        for (path, m, n) in [
            ("train-lanes", ml, lat[0].len()),
            ("train-images", mi, lat[1].len()),
        ] {
            println!(
                "{}",
                serde_json::json!({"path": path, "optimizer": opt_name, "batch": a.batch, "threads": t.threads(), "isa": cnn::runtime::kernels::Isa::detect().name(),
                    "images_per_s": a.batch as f64 / m, "gflops": 3.0 * flops / m / 1e9, "iterations": n})
            );
        }
    } else {
        println!(
            "{}: training step (forward, backward, {opt_name}), batch {}, {} thread(s), alternating paths",
            p.name,
            a.batch,
            t.threads()
        );
        for (path, m, n) in [
            (
                format!("lanes ({} layers)", t.lane_layers()),
                ml,
                lat[0].len(),
            ),
            ("images".to_string(), mi, lat[1].len()),
        ] {
            println!(
                "  {path:<18} {:>8.0} images/s   {:>6.1} GFLOP/s (3× forward)   ({n} runs)",
                a.batch as f64 / m,
                3.0 * flops / m / 1e9
            );
        }
        println!("  lanes / images throughput: {:.3}×", mi / ml);
    }
    Ok(())
}
