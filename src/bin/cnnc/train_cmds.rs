//! `cnnc train`, `cnnc eval` and `cnnc compare`.

use crate::exit;
use crate::flags;
use crate::outputs;
use crate::plot::{self, Series};
use crate::spec_cmds::load_model;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use cnn::dsl::CheckedModel;
use cnn::dsl::summary::thousands;
use cnn::runtime::data::{Dataset, Normalize, TrainTest, load_folder};
use cnn::runtime::exec::param_specs;
use cnn::runtime::optim::{Adam, LrSchedule, Optimizer, Sgd};
use cnn::runtime::train::{
    EpochRecord, EvalReport, Event, FitConfig, HandlerError, Trainer, evaluate_dataset, fit,
};
use cnn::runtime::weights;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Optimizers.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OptKind {
    /// torch.optim.Adam
    Adam,
    /// torch.optim.AdamW
    Adamw,
    /// torch.optim.SGD
    Sgd,
}

/// Learning-rate schedules (stepped per epoch).
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Sched {
    /// Constant.
    Constant,
    /// StepLR(step_size, gamma).
    Step,
    /// CosineAnnealingLR(T_max = epochs, eta_min).
    Cosine,
}

/// Options shared by `train` and `compare`.
#[derive(Args, Clone, Debug)]
pub struct TrainOpts {
    /// Folder of IDX files (default: the bundled data/mnist).
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs (at least 1).
    #[arg(long, default_value_t = 3, value_parser = flags::at_least_one)]
    pub epochs: usize,
    /// Batch size (at least 1; larger than the training set means the whole set).
    #[arg(long, default_value_t = 64, value_parser = flags::at_least_one)]
    pub batch: usize,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptKind::Adam)]
    pub optimizer: OptKind,
    /// Learning rate, above 0 (default 1e-3 for Adam/AdamW, 0.01 for SGD).
    #[arg(long, value_parser = flags::positive, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// SGD momentum, 0 ≤ m < 1.
    #[arg(long, default_value_t = 0.9, value_parser = flags::momentum, allow_negative_numbers = true)]
    pub momentum: f64,
    /// Weight decay, 0 or more (default 0; AdamW 0.01).
    #[arg(long, value_parser = flags::non_negative, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = Sched::Constant)]
    pub schedule: Sched,
    /// StepLR: epochs between decays (at least 1).
    #[arg(long, default_value_t = 1, value_parser = flags::at_least_one)]
    pub step_size: usize,
    /// StepLR: decay factor, above 0.
    #[arg(long, default_value_t = 0.5, value_parser = flags::positive, allow_negative_numbers = true)]
    pub gamma: f64,
    /// Seed for initialisation, shuffling, the validation split and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0 = one per core; at most 4 per core, 256 in all).
    #[arg(long, default_value_t = 0, value_parser = flags::threads)]
    pub threads: usize,
    /// Training images held out for validation.
    #[arg(long, default_value_t = 5000)]
    pub val: usize,
    /// Use only the first N training images (quick runs; at least 1).
    #[arg(long, value_parser = flags::at_least_one)]
    pub limit: Option<usize>,
}

/// Floats of optimizer state per parameter (for the memory estimate).
pub fn optimizer_state(kind: OptKind, momentum: f64) -> u32 {
    match kind {
        OptKind::Adam | OptKind::Adamw => 2,
        OptKind::Sgd => u32::from(momentum > 0.0),
    }
}

impl TrainOpts {
    /// The memory mode of training on `data` (the batch is at most the training set).
    fn memory_mode(&self, data: &Data) -> crate::memory::Workload {
        crate::memory::Workload::Training {
            batch: self.batch.min(data.train.len()).max(1),
            state: optimizer_state(self.optimizer, self.momentum),
            threads: self.threads,
        }
    }

    fn optimizer(&self) -> Box<dyn Optimizer + Send> {
        match self.optimizer {
            OptKind::Adam => Box::new(
                Adam::new()
                    .with_lr(self.lr.unwrap_or(1e-3))
                    .weight_decay(self.weight_decay.unwrap_or(0.0)),
            ),
            OptKind::Adamw => Box::new(
                Adam::adamw()
                    .with_lr(self.lr.unwrap_or(1e-3))
                    .weight_decay(self.weight_decay.unwrap_or(0.01)),
            ),
            OptKind::Sgd => Box::new(
                Sgd::new(self.lr.unwrap_or(0.01))
                    .momentum(self.momentum)
                    .weight_decay(self.weight_decay.unwrap_or(0.0))
                    .nesterov(self.nesterov),
            ),
        }
    }

    fn base_lr(&self) -> f64 {
        self.lr.unwrap_or(if self.optimizer == OptKind::Sgd {
            0.01
        } else {
            1e-3
        })
    }

    fn schedule(&self) -> LrSchedule {
        match self.schedule {
            Sched::Constant => LrSchedule::Constant,
            Sched::Step => LrSchedule::Step {
                step_size: self.step_size.max(1),
                gamma: self.gamma,
            },
            Sched::Cosine => LrSchedule::Cosine {
                t_max: self.epochs.max(1),
                eta_min: 0.0,
            },
        }
    }
}

/// The data a run trains on, normalised with the training split's statistics.
pub struct Data {
    pub train: Arc<Dataset>,
    pub val: Dataset,
    pub test: Dataset,
    pub normalize: Normalize,
    pub dir: PathBuf,
}

/// The bundled MNIST, found from the working directory or the source tree.
pub fn data_dir(arg: Option<&str>) -> PathBuf {
    if let Some(d) = arg {
        return PathBuf::from(d);
    }
    let here = PathBuf::from("data/mnist");
    if here.exists() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
    }
}

pub fn load_data(opts: &TrainOpts) -> anyhow::Result<Data> {
    let dir = data_dir(opts.data.as_deref());
    let TrainTest { train, test } = load_folder(&dir).with_context(|| {
        format!(
            "loading the dataset from `{}` (pass --data DIR for another folder)",
            dir.display()
        )
    })?;
    let train = match opts.limit {
        Some(n) if n < train.len() => train.subset(&(0..n).collect::<Vec<_>>()),
        _ => train,
    };
    if opts.val >= train.len() {
        return Err(exit::usage(format!(
            "--val {} leaves no training images (the training set has {})",
            opts.val,
            train.len()
        )));
    }
    let (train, val) = train.split(opts.val, opts.seed)?;
    let normalize = train.pixel_stats();
    if !(normalize.std > 0.0 && normalize.std.is_finite()) {
        bail!(
            "every pixel of the {} training images in `{}` has the value {:.4}: there is nothing to learn, and normalising would divide by zero; check that the files hold the images you mean",
            train.len(),
            dir.display(),
            normalize.mean
        );
    }
    Ok(Data {
        train: Arc::new(train),
        val,
        test,
        normalize,
        dir,
    })
}

/// Checks, before any step, that the images of `set` (from `dir`) fit `model`: as many values
/// per image as its input, and no more classes than it has outputs.
pub fn check_data_fits(model: &CheckedModel, set: &Dataset, dir: &Path) -> anyhow::Result<()> {
    let [c, h, w] = set.sample_shape();
    let per_image = c as u64 * h as u64 * w as u64;
    let input = model.input_shape();
    let want: u64 = input.iter().product();
    if per_image != want {
        bail!(
            "the images in `{}` are {c}×{h}×{w} ({per_image} values each), but `{}` takes {} ({want} values): use data of that size, or declare `input: [{c}, {h}, {w}]` in the spec",
            dir.display(),
            model.name(),
            cnn::dsl::check::fmt_dims(input)
        );
    }
    let outputs: u64 = model.output_shape().iter().product();
    if (set.classes() as u64) > outputs {
        bail!(
            "the labels in `{}` have {} classes, but `{}` has {outputs} outputs: give its last layer {} outputs",
            dir.display(),
            set.classes(),
            model.name(),
            set.classes()
        );
    }
    Ok(())
}

/// Progress and reporting choices of one run.
pub struct Report {
    pub progress: bool,
    pub json: bool,
    pub table: bool,
}

/// The result of training one model.
pub struct RunResult {
    pub history: Vec<EpochRecord>,
    pub trainer: Trainer,
    pub test: EvalReport,
    pub interrupted: bool,
    /// Files this run wrote, in the order first written.
    pub written: Vec<PathBuf>,
}

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C exits at once.
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: saving a checkpoint after this batch (Ctrl-C again to quit now)"
            );
        });
    });
}

fn print_header() {
    println!(
        "{:>5}  {:>9}  {:>10}  {:>9}  {:>8}  {:>8}  {:>7}  {:>9}",
        "epoch", "lr", "train loss", "train acc", "val loss", "val acc", "seconds", "images/s"
    );
}

fn print_row(r: &EpochRecord) {
    println!(
        "{:>5}  {:>9.2e}  {:>10.4}  {:>8.2}%  {:>8.4}  {:>7.2}%  {:>7.1}  {:>9}",
        r.epoch,
        r.lr,
        r.train_loss,
        100.0 * r.train_accuracy,
        r.val_loss,
        100.0 * r.val_accuracy,
        r.seconds,
        thousands(r.images_per_s.round() as u64)
    );
}

/// Trains `model` with the library's epoch loop ([`fit`]); checkpoints, `metrics.csv` and the
/// curves go into `run_dir` after every epoch when given.
pub fn train_model(
    model: &CheckedModel,
    opts: &TrainOpts,
    data: &Data,
    report: &Report,
    run_dir: Option<&Path>,
    resume: Option<&Path>,
) -> anyhow::Result<RunResult> {
    let mut trainer = Trainer::new(model, opts.optimizer(), opts.seed, opts.threads)?;
    let config = FitConfig {
        epochs: opts.epochs,
        batch: opts.batch,
        seed: opts.seed,
        base_lr: opts.base_lr(),
        schedule: opts.schedule(),
        normalize: data.normalize,
        prefetch: 4,
        checkpoint: run_dir.map(|d| d.join("checkpoint.safetensors")),
    };
    let show = report.progress && std::io::stderr().is_terminal();
    let mut written: Vec<PathBuf> = Vec::new();
    let mut wrote = |p: PathBuf| {
        if !written.contains(&p) {
            written.push(p);
        }
    };
    let mut bar = ProgressBar::hidden();
    let mut header_printed = false;
    let mut header = |history: &[EpochRecord]| {
        if report.table && !header_printed {
            print_header();
            history.iter().for_each(print_row);
            header_printed = true;
        }
    };
    let mut on = |event: Event<'_>| -> Result<(), HandlerError> {
        match event {
            Event::Resumed { epoch, history } => {
                eprintln!(
                    "resuming `{}` after epoch {epoch} from {}",
                    model.name(),
                    resume.map_or_else(String::new, |p| p.display().to_string())
                );
                header(history);
            }
            Event::EpochStart { epoch, batches, .. } => {
                header(&[]);
                bar = if show {
                    ProgressBar::new(batches as u64)
                } else {
                    ProgressBar::hidden()
                };
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>11} [{bar:30.cyan/blue}] {pos:>4}/{len:4} {msg} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("epoch {}/{}", epoch + 1, opts.epochs));
            }
            Event::Step {
                index,
                loss,
                accuracy,
                images_per_s,
            } => {
                if index % 10 == 0 {
                    bar.set_message(format!(
                        "loss {loss:.4} acc {:5.2}% {} img/s",
                        100.0 * accuracy,
                        thousands(images_per_s as u64)
                    ));
                }
                bar.inc(1);
            }
            Event::Interrupted {
                epoch,
                checkpoint,
                steps,
            } => {
                bar.finish_and_clear();
                if let Some(path) = checkpoint {
                    wrote(path.to_path_buf());
                    eprintln!(
                        "saved {} (weights after {steps} steps; epoch {} restarts on --resume)",
                        path.display(),
                        epoch + 1
                    );
                }
            }
            Event::EpochEnd {
                record, history, ..
            } => {
                bar.finish_and_clear();
                if report.json {
                    println!("{}", record.json());
                }
                if report.table {
                    print_row(record);
                }
                if let Some(dir) = run_dir {
                    wrote(dir.join("checkpoint.safetensors"));
                    write_csv(&dir.join("metrics.csv"), history)?;
                    wrote(dir.join("metrics.csv"));
                    let series = Series {
                        label: model.name().to_string(),
                        train_loss: history.iter().map(|r| r.train_loss).collect(),
                        val_loss: history.iter().map(|r| r.val_loss).collect(),
                        train_acc: history.iter().map(|r| r.train_accuracy).collect(),
                        val_acc: history.iter().map(|r| r.val_accuracy).collect(),
                    };
                    let plots = plot::plot_curves(
                        &dir.join("curves"),
                        &format!("{} on {}", model.name(), data.dir.display()),
                        &[series],
                    )?;
                    plots.into_iter().for_each(&mut wrote);
                }
            }
        }
        Ok(())
    };
    let done = fit(
        &mut trainer,
        &data.train,
        &data.val,
        &config,
        resume,
        &INTERRUPTED,
        &mut on,
    )?;
    let test = evaluate_dataset(&mut trainer, &data.test, opts.batch, data.normalize)?;
    Ok(RunResult {
        history: done.history,
        trainer,
        test,
        interrupted: done.interrupted,
        written,
    })
}

fn write_csv(path: &Path, h: &[EpochRecord]) -> anyhow::Result<()> {
    let mut s = String::from(
        "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds,images_per_s\n",
    );
    for r in h {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_accuracy,
            r.val_loss,
            r.val_accuracy,
            r.seconds,
            r.images_per_s
        ));
    }
    outputs::write(path, s.as_bytes())
}

/// `cnnc train`.
pub fn train(
    spec: &str,
    opts: &TrainOpts,
    out: Option<&str>,
    run_dir: Option<&str>,
    resume: Option<&str>,
    json: bool,
    color: bool,
) -> ExitCode {
    let model = match load_model(spec, color) {
        Ok(m) => m,
        Err(c) => return c,
    };
    match train_inner(&model, opts, out, run_dir, resume, json) {
        Ok(true) => ExitCode::from(exit::INTERRUPTED),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

fn train_inner(
    model: &CheckedModel,
    opts: &TrainOpts,
    out: Option<&str>,
    run_dir: Option<&str>,
    resume: Option<&str>,
    json: bool,
) -> anyhow::Result<bool> {
    install_ctrlc();
    let dir = PathBuf::from(
        run_dir
            .map(str::to_string)
            .unwrap_or_else(|| format!("runs/{}", model.name())),
    );
    let wpath = out
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("weights.safetensors"));
    // Every output place is proven writable before the data is loaded or a step is taken.
    outputs::ensure_writable_dir(&dir)?;
    outputs::ensure_writable_file(&wpath)?;
    outputs::clean_stale_temps(&dir);
    let data = load_data(opts)?;
    check_data_fits(model, &data.train, &data.dir)?;
    crate::memory::check(model, opts.memory_mode(&data))?;
    if !json {
        // The model is already checked (load_model): show what is being trained.
        println!("{}", cnn::dsl::summary::summary(model, false));
        eprintln!(
            "training `{}` ({} parameters) on {} images from {} ({} held out for validation), {} epochs, batch {}, {:?} lr {}, normalised with mean {:.4} std {:.4}",
            model.name(),
            thousands(model.param_count()),
            thousands(data.train.len() as u64),
            data.dir.display(),
            thousands(data.val.len() as u64),
            opts.epochs,
            opts.batch,
            opts.optimizer,
            opts.base_lr(),
            data.normalize.mean,
            data.normalize.std
        );
    }
    let report = Report {
        progress: !json,
        json,
        table: !json,
    };
    let r = train_model(
        model,
        opts,
        &data,
        &report,
        Some(&dir),
        resume.map(Path::new),
    )?;
    let w = r
        .trainer
        .weights()?
        .with_metadata("normalize_mean", data.normalize.mean.to_string())
        .with_metadata("normalize_std", data.normalize.std.to_string())
        .with_metadata("epochs", r.history.len().to_string());
    weights::save_atomic(&wpath, &w)?;
    let mut written = vec![wpath.clone()];
    written.extend(r.written.iter().cloned());
    let peak_mib = r.trainer.memory_bytes() as f64 / (1u64 << 20) as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({"test_accuracy": r.test.accuracy, "test_loss": r.test.loss, "images": r.test.count, "weights": wpath, "files": outputs::existing(&written), "training_memory_mib": peak_mib})
        );
    } else {
        eprintln!("wrote {}", outputs::existing(&written).join(", "));
        println!(
            "test accuracy {:.2}% (loss {:.4}) on {} images; training buffers {:.1} MiB, fixed after the first step",
            100.0 * r.test.accuracy,
            r.test.loss,
            thousands(r.test.count as u64),
            peak_mib
        );
    }
    Ok(r.interrupted)
}

/// Images per evaluation batch.
const EVAL_BATCH: usize = 500;

/// `cnnc eval`.
#[expect(
    clippy::too_many_arguments,
    reason = "one parameter per command-line option"
)]
pub fn eval(
    spec: &str,
    weights_path: &str,
    data: Option<&str>,
    split: &str,
    plot_stem: Option<&str>,
    json: bool,
    threads: usize,
    color: bool,
) -> ExitCode {
    let model = match load_model(spec, color) {
        Ok(m) => m,
        Err(c) => return c,
    };
    match eval_inner(&model, weights_path, data, split, plot_stem, json, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

fn eval_inner(
    model: &CheckedModel,
    weights_path: &str,
    data: Option<&str>,
    split: &str,
    plot_stem: Option<&str>,
    json: bool,
    threads: usize,
) -> anyhow::Result<()> {
    let stem = plot_stem.map(PathBuf::from).unwrap_or_else(|| {
        let p = Path::new(weights_path);
        p.with_file_name(format!(
            "{}_confusion",
            p.file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        ))
    });
    // The plot is written last; prove its folder writable before evaluating.
    outputs::ensure_writable_file(&stem)?;
    crate::memory::check(
        model,
        crate::memory::Workload::Training {
            batch: EVAL_BATCH,
            state: 0,
            threads,
        },
    )?;
    let plan = cnn::dsl::plan::plan(model, cnn::dsl::plan::Mode::Infer);
    let w = weights::load(Path::new(weights_path), &param_specs(&plan))?;
    let meta = |k: &str| w.metadata().get(k).and_then(|v| v.parse::<f32>().ok());
    let normalize = match (meta("normalize_mean"), meta("normalize_std")) {
        (Some(mean), Some(std)) => Normalize::new(mean, std)?,
        _ => Normalize::MNIST,
    };
    let dir = data_dir(data);
    let TrainTest { train, test } = load_folder(&dir)
        .with_context(|| format!("loading the dataset from `{}`", dir.display()))?;
    let set = match split {
        "test" => test,
        "train" => train,
        other => {
            return Err(exit::usage(format!(
                "--split must be `test` or `train`, not `{other}`"
            )));
        }
    };
    check_data_fits(model, &set, &dir)?;
    let mut trainer = Trainer::with_weights(model, &w, Box::new(Sgd::new(0.0)), 0, threads)?;
    let r = evaluate_dataset(&mut trainer, &set, EVAL_BATCH, normalize)?;
    let per_class = r.per_class();
    if json {
        println!(
            "{}",
            serde_json::json!({"accuracy": r.accuracy, "loss": r.loss, "per_class": per_class, "images": r.count, "confusion": r.confusion})
        );
    } else {
        println!(
            "`{}` with {weights_path} on the {split} split of {}: accuracy {:.2}% (loss {:.4}) on {} images",
            model.name(),
            dir.display(),
            100.0 * r.accuracy,
            r.loss,
            thousands(r.count as u64)
        );
        println!("\nper class:");
        for (c, a) in per_class.iter().enumerate() {
            println!(
                "  {c:>3}  {:6.2}%  ({} images)",
                100.0 * a,
                r.confusion[c].iter().sum::<u64>()
            );
        }
        println!("\nconfusion matrix (rows: true class, columns: predicted):");
        print!("     ");
        for c in 0..r.confusion.len() {
            print!("{c:>6}");
        }
        println!();
        for (c, row) in r.confusion.iter().enumerate() {
            print!("  {c:>3}");
            for v in row {
                print!("{v:>6}");
            }
            println!();
        }
    }
    let files = plot::plot_confusion(
        &stem,
        &format!(
            "{} — {split} accuracy {:.2}%",
            model.name(),
            100.0 * r.accuracy
        ),
        &r.confusion,
    )?;
    if !json {
        println!("\nwrote {} and {}", files[0].display(), files[1].display());
    }
    Ok(())
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// `cnnc compare`.
pub fn compare(
    specs: &[String],
    opts: &TrainOpts,
    seeds: u64,
    out_dir: Option<&str>,
    json: bool,
    color: bool,
) -> ExitCode {
    let mut models = Vec::new();
    for s in specs {
        match load_model(s, color) {
            Ok(m) => models.push((s.clone(), m)),
            Err(c) => return c,
        }
    }
    match compare_inner(&models, opts, seeds, out_dir, json) {
        Ok(true) => ExitCode::from(exit::INTERRUPTED),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}

fn compare_inner(
    models: &[(String, CheckedModel)],
    opts: &TrainOpts,
    seeds: u64,
    out_dir: Option<&str>,
    json: bool,
) -> anyhow::Result<bool> {
    install_ctrlc();
    let dir = PathBuf::from(out_dir.unwrap_or("runs/compare"));
    outputs::ensure_writable_dir(&dir)?;
    outputs::clean_stale_temps(&dir);
    // Every model is checked against the data and the memory limit before the first one
    // trains, so a model that cannot run never costs the results of those before it.
    let first = load_data(opts)?;
    for (_, m) in models {
        check_data_fits(m, &first.train, &first.dir)?;
        crate::memory::check(m, opts.memory_mode(&first))?;
    }
    drop(first);
    struct Row {
        name: String,
        params: u64,
        macs: u64,
        runs: Vec<RunResult>,
    }
    let mut rows = Vec::new();
    for (file, m) in models {
        let mut runs = Vec::new();
        for k in 0..seeds {
            let o = TrainOpts {
                seed: opts.seed + k,
                ..opts.clone()
            };
            let data = load_data(&o)?;
            let t = Instant::now();
            eprintln!("training {} ({file}) with seed {} …", m.name(), o.seed);
            let r = train_model(
                m,
                &o,
                &data,
                &Report {
                    progress: !json,
                    json: false,
                    table: false,
                },
                None,
                None,
            )?;
            if let Some(last) = r.history.last() {
                eprintln!(
                    "  {:.0} s: val accuracy {:.2}%, test accuracy {:.2}%, {} images/s",
                    t.elapsed().as_secs_f64(),
                    100.0 * last.val_accuracy,
                    100.0 * r.test.accuracy,
                    thousands(last.images_per_s as u64)
                );
            }
            let interrupted = r.interrupted;
            runs.push(r);
            if interrupted {
                eprintln!("interrupted: no comparison is written");
                return Ok(true);
            }
        }
        rows.push(Row {
            name: m.name().to_string(),
            params: m.param_count(),
            macs: m.macs(),
            runs,
        });
    }
    let stat = |row: &Row, f: &dyn Fn(&RunResult) -> f64| {
        mean_std(&row.runs.iter().map(f).collect::<Vec<_>>())
    };
    let last = |r: &RunResult| r.history.last().cloned().unwrap_or_default();
    if json {
        for row in &rows {
            let j = |f: &dyn Fn(&RunResult) -> f64| {
                let (m, s) = stat(row, f);
                serde_json::json!({"mean": m, "std": s})
            };
            println!(
                "{}",
                serde_json::json!({
                    "model": row.name, "params": row.params, "macs": row.macs, "seeds": seeds, "epochs": opts.epochs,
                    "seconds_per_epoch": j(&|r| r.history.iter().map(|e| e.seconds).sum::<f64>() / r.history.len().max(1) as f64),
                    "train_loss": j(&|r| last(r).train_loss), "train_accuracy": j(&|r| last(r).train_accuracy),
                    "val_loss": j(&|r| last(r).val_loss), "val_accuracy": j(&|r| last(r).val_accuracy),
                    "test_accuracy": j(&|r| r.test.accuracy),
                })
            );
        }
    } else {
        println!(
            "\n{} epochs, batch {}, {:?} lr {}, {} seed(s) each (mean ± std over seeds)\n",
            opts.epochs,
            opts.batch,
            opts.optimizer,
            opts.base_lr(),
            seeds
        );
        println!(
            "{:<14} {:>9} {:>12} {:>12} {:>16} {:>16} {:>16} {:>16} {:>16}",
            "model",
            "params",
            "MACs/image",
            "s/epoch",
            "train loss",
            "train acc %",
            "val loss",
            "val acc %",
            "test acc %"
        );
        for row in &rows {
            let pm = |(m, s): (f64, f64), scale: f64, prec: usize| {
                format!("{:.p$} ± {:.p$}", m * scale, s * scale, p = prec)
            };
            println!(
                "{:<14} {:>9} {:>12} {:>12} {:>16} {:>16} {:>16} {:>16} {:>16}",
                row.name,
                thousands(row.params),
                thousands(row.macs),
                pm(
                    stat(row, &|r| r.history.iter().map(|e| e.seconds).sum::<f64>()
                        / r.history.len().max(1) as f64),
                    1.0,
                    1
                ),
                pm(stat(row, &|r| last(r).train_loss), 1.0, 4),
                pm(stat(row, &|r| last(r).train_accuracy), 100.0, 2),
                pm(stat(row, &|r| last(r).val_loss), 1.0, 4),
                pm(stat(row, &|r| last(r).val_accuracy), 100.0, 2),
                pm(stat(row, &|r| r.test.accuracy), 100.0, 2),
            );
        }
    }
    let series: Vec<Series> = rows
        .iter()
        .map(|row| {
            let n = row.runs.iter().map(|r| r.history.len()).min().unwrap_or(0);
            let avg = |f: &dyn Fn(&EpochRecord) -> f64| {
                (0..n)
                    .map(|e| {
                        row.runs.iter().map(|r| f(&r.history[e])).sum::<f64>()
                            / row.runs.len() as f64
                    })
                    .collect::<Vec<_>>()
            };
            Series {
                label: row.name.clone(),
                train_loss: avg(&|e| e.train_loss),
                val_loss: avg(&|e| e.val_loss),
                train_acc: avg(&|e| e.train_accuracy),
                val_acc: avg(&|e| e.val_accuracy),
            }
        })
        .collect();
    let files = plot::plot_curves(
        &dir.join("compare"),
        &format!("{} seed(s), mean curves", seeds),
        &series,
    )?;
    if !json {
        println!("\nwrote {} and {}", files[0].display(), files[1].display());
    }
    Ok(false)
}
