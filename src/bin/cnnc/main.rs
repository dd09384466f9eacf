//! `cnnc`: check, summarise, run, generate and train `cnn` models from the command line.
//!
//! Exit codes (see `exit`): 0 success, 1 the spec, weights or data are wrong, 2 usage or I/O
//! errors, 130 training interrupted.

mod exit;
mod flags;
mod memory;
mod outputs;
mod plot;
mod run_cmds;
mod spec_cmds;
mod train_cmds;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// The cnn model compiler.
#[derive(Parser)]
#[command(name = "cnnc", version, about = "Check, explain, run, generate and train declared CNNs", long_about = None, after_help = exit::HELP)]
struct Cli {
    /// Print the long explanation of an error code (e.g. CNN0301), like `rustc --explain`.
    #[arg(long, value_name = "CODE")]
    explain: Option<String>,
    /// Colour in diagnostics.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    /// Refuse to run, train or benchmark a model whose estimated memory exceeds this
    /// (e.g. 8G, 512M; default: the memory the machine has available).
    #[arg(long, value_name = "SIZE", global = true, value_parser = memory::parse_size)]
    max_memory: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// How diagnostics are printed.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum MessageFormat {
    /// Rendered like rustc.
    Human,
    /// One JSON object per diagnostic, one per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check that every spec is well-shaped (YAML `.yaml`/`.yml` or DSL `.cnn`).
    Check {
        /// Spec files.
        #[arg(required = true)]
        files: Vec<String>,
        /// Diagnostic output format.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
        /// Also check a safetensors file against the (single) spec, without running it:
        /// names, shapes, types, NaN/infinite values and negative batch-norm variances.
        #[arg(long, value_name = "W.safetensors")]
        weights: Option<String>,
    },
    /// Print a per-layer table: output shapes, parameters, multiply-adds and totals.
    Summary {
        /// Spec file.
        file: String,
        /// Also say where each dimension of each shape comes from.
        #[arg(long)]
        explain: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Diagnostic output format.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Run a model on an .npy batch or an image.
    Run {
        /// Spec file.
        spec: String,
        /// Weights (safetensors with PyTorch state_dict names).
        #[arg(long, conflicts_with = "init")]
        weights: Option<String>,
        /// Use PyTorch's default initialisation with this seed instead of weights.
        #[arg(long)]
        init: Option<u64>,
        /// Input: .npy of shape [N, …input] (float32), or a PNG/JPEG image.
        #[arg(long)]
        input: String,
        /// Write the outputs as .npy.
        #[arg(long)]
        output: Option<String>,
        /// Worker threads (0 = one per core; at most 4 per core, 256 in all).
        #[arg(long, default_value_t = 0, value_parser = flags::threads)]
        threads: usize,
        /// Classes to print per sample.
        #[arg(long, default_value_t = 3)]
        top_k: usize,
        /// Per-channel mean for image inputs (with --std), e.g. 0.1307.
        #[arg(long, value_delimiter = ',', value_parser = flags::finite_f32, allow_negative_numbers = true, requires = "std")]
        mean: Option<Vec<f32>>,
        /// Per-channel std for image inputs (with --mean), e.g. 0.3081; above 0.
        #[arg(long, value_delimiter = ',', value_parser = flags::positive_f32, allow_negative_numbers = true, requires = "mean")]
        std: Option<Vec<f32>>,
    },
    /// Train on MNIST-style IDX data: progress, per-epoch table, metrics CSV, plots, checkpoints.
    Train {
        /// Spec file.
        spec: String,
        #[command(flatten)]
        opts: train_cmds::TrainOpts,
        /// Final weights (default RUN_DIR/weights.safetensors).
        #[arg(long)]
        out: Option<String>,
        /// Folder for metrics.csv, curves.png/svg and checkpoint.safetensors (default runs/<model>).
        #[arg(long)]
        run_dir: Option<String>,
        /// Continue from a checkpoint written by an earlier (possibly interrupted) run.
        #[arg(long)]
        resume: Option<String>,
        /// One JSON object per epoch on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Accuracy, per-class accuracy and confusion matrix of trained weights.
    Eval {
        /// Spec file.
        spec: String,
        /// Weights (safetensors).
        #[arg(long)]
        weights: String,
        /// Folder of IDX files (default: the bundled data/mnist).
        #[arg(long)]
        data: Option<String>,
        /// `test` or `train`.
        #[arg(long, default_value = "test", value_parser = ["test", "train"])]
        split: String,
        /// Where to write the confusion-matrix plot (`STEM.png`, `STEM.svg`).
        #[arg(long)]
        plot: Option<String>,
        /// Print {"accuracy", "loss", "per_class", "images", "confusion"}.
        #[arg(long)]
        json: bool,
        /// Worker threads (0 = one per core; at most 4 per core, 256 in all).
        #[arg(long, default_value_t = 0, value_parser = flags::threads)]
        threads: usize,
    },
    /// Train several specs with the same data, seeds and schedule; one table, one plot.
    Compare {
        /// Spec files.
        #[arg(required = true, num_args = 2..)]
        specs: Vec<String>,
        #[command(flatten)]
        opts: train_cmds::TrainOpts,
        /// Seeds per spec (mean ± std over them); at least 1.
        #[arg(long, default_value_t = 1, value_parser = flags::at_least_one_u64)]
        seeds: u64,
        /// Folder for the comparison plot (default runs/compare).
        #[arg(long)]
        out_dir: Option<String>,
        /// One JSON object per model.
        #[arg(long)]
        json: bool,
    },
    /// Print the specialised Rust for a spec.
    Gen {
        /// Spec file.
        spec: String,
        /// Write to a file instead of stdout.
        #[arg(short, long)]
        output: Option<String>,
    },
    /// Time inference: images/s, latency percentiles, GFLOP/s.
    Bench {
        /// Spec file.
        spec: String,
        /// Batch size (1 to 65,536).
        #[arg(long, default_value_t = 64, value_parser = flags::bench_batch)]
        batch: usize,
        /// Worker threads (0 = one per core; at most 4 per core, 256 in all).
        #[arg(long, default_value_t = 0, value_parser = flags::threads)]
        threads: usize,
        /// Seconds to time each path (above 0, at most a day; at least 10 runs are timed).
        #[arg(long, default_value_t = 3.0, value_parser = flags::seconds, allow_negative_numbers = true)]
        seconds: f64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Also time each kernel call (GFLOP/s per layer).
        #[arg(long)]
        layers: bool,
        /// Time a training step (forward, backward, optimizer update) instead of inference.
        #[arg(long)]
        train: bool,
        /// The optimizer of the timed training step, at its default settings (Adam lr 1e-3;
        /// SGD lr 0.01 without momentum, as in `../shared/bench/torch_seed.py`).
        #[arg(long, value_enum, default_value_t = train_cmds::OptKind::Adam, requires = "train")]
        optimizer: train_cmds::OptKind,
        /// With --train: alternate steps between the lane path (16 images per vector through
        /// the leading conv/pool layers) and the image-major path in one process, and print
        /// both and their ratio.
        #[arg(long, requires = "train")]
        compare_lanes: bool,
        /// Instruction set of the kernels: avx512, avx2 or portable (default: the best this
        /// CPU has, or the `CNN_ISA` environment variable). One the CPU lacks is refused.
        #[arg(long, value_name = "ISA")]
        isa: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    memory::set_limit(cli.max_memory);
    // A bad CNN_ISA is a usage error here, not a silent fallback to the best ISA.
    if let Err(e) = cnn::runtime::kernels::Isa::from_env() {
        eprintln!("error: CNN_ISA: {e}");
        return ExitCode::from(exit::USAGE_OR_IO);
    }
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none()
        }
    };
    if let Some(code) = cli.explain {
        return match cnn::dsl::diag::explain(&code) {
            Some(c) => {
                println!("{}\n\n{}", c.id, c.explanation);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: no such error code `{code}` (codes look like CNN0301)");
                ExitCode::from(exit::USAGE_OR_IO)
            }
        };
    }
    let Some(command) = cli.command else {
        eprintln!("error: no command given; try `cnnc --help`");
        return ExitCode::from(exit::USAGE_OR_IO);
    };
    match command {
        Command::Check {
            files,
            message_format,
            weights: Some(w),
        } => {
            let _ = message_format;
            if files.len() != 1 {
                eprintln!("error: --weights checks one spec file at a time");
                return ExitCode::from(exit::USAGE_OR_IO);
            }
            run_cmds::check_weights(&files[0], &w, color)
        }
        Command::Check {
            files,
            message_format,
            weights: None,
        } => spec_cmds::check(&files, message_format, color),
        Command::Run {
            spec,
            weights,
            init,
            input,
            output,
            threads,
            top_k,
            mean,
            std,
        } => run_cmds::run(
            run_cmds::RunArgs {
                spec: &spec,
                weights: weights.as_deref(),
                init,
                input: &input,
                output: output.as_deref(),
                threads,
                top_k,
                mean,
                std,
            },
            color,
        ),
        Command::Train {
            spec,
            opts,
            out,
            run_dir,
            resume,
            json,
        } => train_cmds::train(
            &spec,
            &opts,
            out.as_deref(),
            run_dir.as_deref(),
            resume.as_deref(),
            json,
            color,
        ),
        Command::Eval {
            spec,
            weights,
            data,
            split,
            plot,
            json,
            threads,
        } => train_cmds::eval(
            &spec,
            &weights,
            data.as_deref(),
            &split,
            plot.as_deref(),
            json,
            threads,
            color,
        ),
        Command::Compare {
            specs,
            opts,
            seeds,
            out_dir,
            json,
        } => train_cmds::compare(&specs, &opts, seeds, out_dir.as_deref(), json, color),
        Command::Gen { spec, output } => run_cmds::generate(&spec, output.as_deref(), color),
        Command::Bench {
            spec,
            batch,
            threads,
            seconds,
            json,
            layers,
            train,
            optimizer,
            compare_lanes,
            isa,
        } => {
            if let Some(name) = isa {
                use cnn::runtime::kernels::Isa;
                if let Err(e) = Isa::parse(&name).and_then(Isa::force) {
                    eprintln!("error: --isa {name}: {e}");
                    return ExitCode::from(exit::USAGE_OR_IO);
                }
            }
            run_cmds::bench(
                run_cmds::BenchArgs {
                    spec: &spec,
                    batch,
                    threads,
                    seconds,
                    json,
                    layers,
                    train,
                    optimizer,
                    compare_lanes,
                },
                color,
            )
        }
        Command::Summary {
            file,
            explain,
            json,
            message_format,
        } => spec_cmds::summary(&file, explain, json, message_format, color),
    }
}
