//! Training a model over epochs, as a library function: [`fit`] runs the epoch loop with the
//! learning-rate schedule, validation, per-epoch checkpoints, resume and interruption, and reports
//! what happens through [`Event`]s, so `cnnc train` and a program using a generated type's
//! `trainer()` share one loop. Also here: evaluation over a dataset ([`evaluate_dataset`]) and
//! the checkpoint format ([`save_checkpoint`], [`load_checkpoint`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{TrainError, Trainer};
use crate::data::{BatchConfig, DataError, Dataset, Normalize, Prefetch};
use crate::exec::param_specs;
use crate::optim::LrSchedule;
use crate::weights::{OPTIM_PREFIX, Weights};

/// One epoch's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_accuracy: f64,
    /// Validation loss after the epoch.
    pub val_loss: f64,
    /// Validation accuracy after the epoch.
    pub val_accuracy: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Training images per second (validation excluded).
    pub images_per_s: f64,
}

impl EpochRecord {
    /// The record as a JSON object (the `--json` lines of `cnnc train` and the checkpoint's
    /// history).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "epoch": self.epoch, "lr": self.lr, "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy, "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy, "seconds": self.seconds,
            "images_per_s": self.images_per_s,
        })
    }

    /// A history as a JSON array.
    pub fn history_json(history: &[EpochRecord]) -> String {
        serde_json::Value::Array(history.iter().map(EpochRecord::json).collect()).to_string()
    }

    /// Reads [`EpochRecord::history_json`]'s output; what cannot be read is left out (a missing
    /// number reads as NaN), so a damaged history never stops a resume.
    pub fn history_from_json(s: &str) -> Vec<EpochRecord> {
        let v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let f = |k: &str| e[k].as_f64().unwrap_or(f64::NAN);
                        EpochRecord {
                            epoch: usize::try_from(e["epoch"].as_u64().unwrap_or(0)).unwrap_or(0),
                            lr: f("lr"),
                            train_loss: f("train_loss"),
                            train_accuracy: f("train_accuracy"),
                            val_loss: f("val_loss"),
                            val_accuracy: f("val_accuracy"),
                            seconds: f("seconds"),
                            images_per_s: f("images_per_s"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What [`fit`] does, besides the trainer's own settings (optimizer, seed, threads).
#[derive(Clone, Debug)]
pub struct FitConfig {
    /// Total epochs (a resumed run continues up to this number).
    pub epochs: usize,
    /// Images per step (also per evaluation batch).
    pub batch: usize,
    /// Shuffling seed.
    pub seed: u64,
    /// The learning rate the schedule starts from.
    pub base_lr: f64,
    /// Stepped once per epoch.
    pub schedule: LrSchedule,
    /// Normalisation applied to every batch.
    pub normalize: Normalize,
    /// Batches prepared ahead by a background thread (at least 1).
    pub prefetch: usize,
    /// Written after every epoch and on interruption (atomically), when given.
    pub checkpoint: Option<PathBuf>,
}

/// What [`fit`] reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// Resuming after `epoch` completed epochs; `history` holds their records.
    Resumed {
        /// Completed epochs.
        epoch: usize,
        /// Their records.
        history: &'a [EpochRecord],
    },
    /// An epoch starts (`epoch` is 0-based) with `batches` steps.
    EpochStart {
        /// 0-based epoch.
        epoch: usize,
        /// Steps in the epoch.
        batches: usize,
        /// Learning rate of the epoch.
        lr: f64,
    },
    /// A step finished; running means over the epoch so far.
    Step {
        /// 0-based step within the epoch.
        index: usize,
        /// Mean loss so far.
        loss: f64,
        /// Accuracy so far.
        accuracy: f64,
        /// Training images per second so far.
        images_per_s: f64,
    },
    /// An epoch finished and was validated (and checkpointed, when configured).
    EpochEnd {
        /// The epoch's record (also the last of `history`).
        record: &'a EpochRecord,
        /// Every record so far.
        history: &'a [EpochRecord],
        /// The trainer after the epoch.
        trainer: &'a Trainer,
    },
    /// The stop flag was raised: the run ends after the current step. `checkpoint` is where it
    /// was saved; on resume, epoch `epoch + 1` starts again.
    Interrupted {
        /// 0-based epoch that was interrupted.
        epoch: usize,
        /// Where the state was saved, if anywhere.
        checkpoint: Option<&'a Path>,
        /// Optimizer steps taken so far.
        steps: u64,
    },
}

/// An error from the event handler of [`fit`].
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong in [`fit`].
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// A training step, an evaluation or a checkpoint failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The checkpoint to resume from could not be used.
    #[error("resuming from `{}`: {source}", path.display())]
    Resume {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        source: TrainError,
    },
    /// The training data could not be batched.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The event handler failed (e.g. writing a plot).
    #[error("{0}")]
    Handler(HandlerError),
}

/// The outcome of [`fit`].
#[derive(Debug)]
pub struct Fit {
    /// One record per completed epoch, resumed ones included.
    pub history: Vec<EpochRecord>,
    /// Whether the stop flag ended the run early.
    pub interrupted: bool,
}

/// Trains `trainer` on `train`, validating on `val` after every epoch, from epoch 0 or from the
/// checkpoint `resume` (weights, optimizer state, counters and history; the schedule continues
/// where it stopped). Checks `stop` after every step: when raised, saves a checkpoint (if
/// configured) and returns with `interrupted`. Reports progress through `on`; an error from `on`
/// ends the run.
pub fn fit(
    trainer: &mut Trainer,
    train: &Arc<Dataset>,
    val: &Dataset,
    config: &FitConfig,
    resume: Option<&Path>,
    stop: &AtomicBool,
    on: &mut dyn FnMut(Event<'_>) -> Result<(), HandlerError>,
) -> Result<Fit, FitError> {
    let mut emit = |e: Event<'_>| on(e).map_err(FitError::Handler);
    let mut history = Vec::new();
    let mut start_epoch = 0;
    if let Some(ckpt) = resume {
        let meta = load_checkpoint(trainer, ckpt).map_err(|source| FitError::Resume {
            path: ckpt.to_path_buf(),
            source,
        })?;
        start_epoch = meta.get("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
        history = meta
            .get("history")
            .map(|h| EpochRecord::history_from_json(h))
            .unwrap_or_default();
        history.truncate(start_epoch);
        emit(Event::Resumed {
            epoch: start_epoch,
            history: &history,
        })?;
    }
    let batch_config = BatchConfig::new(config.batch)
        .seed(config.seed)
        .normalize(config.normalize);
    let batches = batch_config.batch_count(train.len());
    let mut interrupted = false;
    for epoch in start_epoch..config.epochs {
        let lr = config.schedule.lr_at(config.base_lr, epoch);
        trainer.optimizer_mut().set_lr(lr);
        emit(Event::EpochStart { epoch, batches, lr })?;
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let prefetch = Prefetch::new(
            Arc::clone(train),
            batch_config,
            epoch as u64,
            config.prefetch,
        )?;
        for (index, batch) in prefetch.enumerate() {
            let s = trainer.train_step(&batch.images, &batch.labels)?;
            loss_sum += s.loss * s.count as f64;
            correct += s.correct;
            seen += s.count;
            emit(Event::Step {
                index,
                loss: loss_sum / seen.max(1) as f64,
                accuracy: correct as f64 / seen.max(1) as f64,
                images_per_s: seen as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            })?;
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
        }
        let train_secs = t0.elapsed().as_secs_f64();
        if interrupted {
            if let Some(path) = &config.checkpoint {
                save_checkpoint(
                    trainer,
                    path,
                    &[
                        ("epoch", epoch.to_string()),
                        ("history", EpochRecord::history_json(&history)),
                        ("interrupted", "true".into()),
                    ],
                )?;
            }
            emit(Event::Interrupted {
                epoch,
                checkpoint: config.checkpoint.as_deref(),
                steps: trainer.steps(),
            })?;
            break;
        }
        // Evaluate in training-sized batches so the buffers stay those of the first step.
        let v = evaluate_dataset(trainer, val, config.batch, config.normalize)?;
        history.push(EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss: v.loss,
            val_accuracy: v.accuracy,
            seconds: t0.elapsed().as_secs_f64(),
            images_per_s: seen as f64 / train_secs.max(1e-9),
        });
        if let Some(path) = &config.checkpoint {
            save_checkpoint(
                trainer,
                path,
                &[
                    ("epoch", (epoch + 1).to_string()),
                    ("history", EpochRecord::history_json(&history)),
                ],
            )?;
        }
        if let Some(record) = history.last() {
            emit(Event::EpochEnd {
                record,
                history: &history,
                trainer,
            })?;
        }
    }
    Ok(Fit {
        history,
        interrupted,
    })
}

/// Accuracy, loss and confusion matrix of a model over a whole dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Mean loss per sample.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Samples evaluated.
    pub count: usize,
}

impl EvalReport {
    /// Accuracy of each true class (NaN for a class with no samples).
    pub fn per_class(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: u64 = row.iter().sum();
                if n == 0 {
                    f64::NAN
                } else {
                    row[c] as f64 / n as f64
                }
            })
            .collect()
    }
}

/// Evaluates `trainer`'s current weights on every sample of `dataset` (evaluation mode).
pub fn evaluate_dataset(
    trainer: &mut Trainer,
    dataset: &crate::data::Dataset,
    batch_size: usize,
    normalize: crate::data::Normalize,
) -> Result<EvalReport, TrainError> {
    let classes = trainer.classes();
    let mut confusion = vec![vec![0u64; classes]; classes];
    let config = crate::data::BatchConfig::new(batch_size.max(1))
        .shuffle(false)
        .normalize(normalize);
    let mut batches = dataset
        .batches(&config, 0)
        .map_err(|e| TrainError::Unsupported {
            model: String::from("dataset"),
            reason: e.to_string(),
        })?;
    let mut batch = crate::data::Batch::default();
    let (mut loss_sum, mut correct, mut count) = (0.0f64, 0usize, 0usize);
    while batches.next_into(&mut batch) {
        let (stats, out) = trainer.evaluate(&batch.images, &batch.labels)?;
        loss_sum += stats.loss * stats.count as f64;
        correct += stats.correct;
        count += stats.count;
        for (row, &y) in out.chunks_exact(classes).zip(&batch.labels) {
            let pred = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            if let Some(r) = confusion.get_mut(y) {
                r[pred] += 1;
            }
        }
    }
    let n = count.max(1) as f64;
    Ok(EvalReport {
        loss: loss_sum / n,
        accuracy: correct as f64 / n,
        confusion,
        count,
    })
}

/// Saves weights, optimizer state and counters atomically (write, then rename) as one
/// safetensors file; `metadata` (e.g. the completed epoch) goes into the header.
pub fn save_checkpoint(
    trainer: &Trainer,
    path: &std::path::Path,
    metadata: &[(&str, String)],
) -> Result<(), TrainError> {
    use crate::weights::{ParamKind, ParamSpec};
    let mut specs = param_specs(&trainer.plan);
    let mut values = trainer.tensors.clone();
    for (name, data) in trainer.optimizer.state_tensors() {
        specs.push(ParamSpec::new(
            format!("{OPTIM_PREFIX}{name}"),
            vec![data.len()],
            ParamKind::Weight,
        ));
        values.push(data.to_vec());
    }
    let mut w = Weights::new(&specs, values)?
        .with_metadata("model", trainer.name.clone())
        .with_metadata("steps", trainer.steps.to_string())
        .with_metadata(
            "optimizer_steps",
            trainer.optimizer.step_count().to_string(),
        )
        .with_metadata("rng_state", trainer.rng.state().to_string());
    for (k, v) in metadata {
        w = w.with_metadata(*k, v.clone());
    }
    crate::weights::save_atomic(path, &w)?;
    Ok(())
}

/// Restores a checkpoint written by [`save_checkpoint`] for the same model and optimizer kind;
/// returns its header metadata.
pub fn load_checkpoint(
    trainer: &mut Trainer,
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, String>, TrainError> {
    use crate::weights::{ParamKind, ParamSpec};
    let listed = crate::weights::list(path)?;
    let mut specs = param_specs(&trainer.plan);
    for (name, shape, _) in &listed {
        if name.starts_with(OPTIM_PREFIX) {
            specs.push(ParamSpec::new(
                name.clone(),
                shape.clone(),
                ParamKind::Weight,
            ));
        }
    }
    let w = crate::weights::load(path, &specs)?;
    let n_model = trainer.tensors.len();
    for (i, (_, v)) in w.iter().take(n_model).enumerate() {
        trainer.tensors[i].copy_from_slice(v);
    }
    let meta = w.metadata().clone();
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let state: Vec<(String, Vec<f32>)> = w
        .iter()
        .skip(n_model)
        .map(|(s, v)| (s.name[OPTIM_PREFIX.len()..].to_string(), v.to_vec()))
        .collect();
    let refs: Vec<(&str, &[f32])> = state.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
    trainer
        .optimizer
        .load_state(num("optimizer_steps"), &refs)
        .map_err(|e| TrainError::Unsupported {
            model: trainer.name.clone(),
            reason: format!(
                "checkpoint `{}` has optimizer state for another optimizer: {e}",
                path.display()
            ),
        })?;
    trainer.restore_counters(num("steps"), num("rng_state"));
    Ok(meta)
}
