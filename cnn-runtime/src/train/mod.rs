//! Training: forward with saved activations, backward through every layer, loss and optimizer
//! step, for any checked model.
//!
//! The trainer keeps one output buffer per layer (the backward pass needs each layer's input),
//! two gradient buffers, and per-layer saved state (max-pool argmax indices, batch-norm batch
//! statistics, dropout masks), all sized once for the largest batch seen: memory does not grow
//! across steps or epochs ([`Trainer::memory_bytes`] reports it). A ReLU right after a conv2d is
//! fused into the convolution (forward epilogue; backward from the saved output).
//!
//! On every instruction set the leading convolution, max-pool and activation layers run on lane
//! tensors (16 images per slot, [`crate::lanes`]) for batches that fill their slots of 16 at least
//! three-quarters: the input is converted once, the first other layer (usually the `flatten`
//! before the classifier) gets its input converted back, and the backward pass converts the
//! gradient once on the way in. The convolutions then skip the zero padding exactly, and no
//! layer transposes its operands per call. [`Trainer::set_lanes`] turns it off for comparisons;
//! both paths are tested to give the same gradients.
//!
//! Loss: PyTorch's `cross_entropy` on the logits, or `nll_loss` when the model ends in
//! `log_softmax` (the usual MNIST recipe), or the negative log of the probability when it ends
//! in `softmax`. Same seed, same thread count → identical weights (the kernels are
//! deterministic; dropout masks come from a seeded generator).

use crate::buf::{AlignedBuf, OutOfMemory};
use crate::exec::{ExecError, check_weights_fit, init_weights, param_specs, thread_pool};
use crate::grad;
use crate::kernels::{self, DropoutRng};
use crate::lanes::{self, LANES};
use crate::optim::Optimizer;
use crate::step::{self, Grads, Layout, Params, Running, Saved, Train};

mod fit;
use crate::weights::Weights;
use cnn_ir::CheckedModel;
use cnn_ir::checked::{Activation, Op, TensorRole};
use cnn_ir::ir::PoolKind;
use cnn_ir::plan::{Loc, Mode, Plan, Step, plan};
pub use fit::{
    EpochRecord, EvalReport, Event, Fit, FitConfig, FitError, HandlerError, evaluate_dataset, fit,
    load_checkpoint, save_checkpoint,
};

/// Errors from building or running a trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model cannot be trained as declared.
    #[error("cannot train `{model}`: {reason}")]
    Unsupported {
        /// Model name.
        model: String,
        /// Why.
        reason: String,
    },
    /// Batch data of the wrong size.
    #[error(
        "batch has {images} image values and {labels} labels; {batch} images of {per_image} values were expected"
    )]
    BatchSize {
        /// Image values given.
        images: usize,
        /// Labels given.
        labels: usize,
        /// Batch size implied by the labels.
        batch: usize,
        /// Values per image.
        per_image: usize,
    },
    /// A label outside `0..classes`.
    #[error("label {label} at position {index} is not a class of a model with {classes} outputs")]
    Label {
        /// Position in the batch.
        index: usize,
        /// The label.
        label: usize,
        /// Output count.
        classes: usize,
    },
    /// The loss became NaN or infinite.
    #[error(
        "the loss became {loss} at step {step}: lower the learning rate (--lr) or check the data"
    )]
    NonFinite {
        /// The loss.
        loss: f32,
        /// Optimizer step.
        step: u64,
    },
    /// Building the weights or the pool.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Weights did not fit.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),
}

/// How the loss is computed from the last layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// `cross_entropy(logits, y)`.
    CrossEntropy,
    /// `nll_loss(log_probs, y)` after a final `log_softmax`.
    Nll,
    /// `−log p[y]` after a final `softmax`.
    ProbNll,
}

/// Results of one step or an evaluation pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Correctly classified samples.
    pub correct: usize,
    /// Samples.
    pub count: usize,
}

/// Trains a checked model.
pub struct Trainer {
    name: String,
    /// The training plan ([`Mode::Train`]): one step per layer, convolutions with their fused
    /// activation, each step's output kept for the backward pass.
    plan: Plan,
    loss: LossKind,
    classes: usize,
    /// Parameters and buffers, `state_dict` order.
    tensors: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    trainable: Vec<usize>,
    input: AlignedBuf,
    outs: Vec<AlignedBuf>,
    dbuf: [AlignedBuf; 2],
    pool_idx: Vec<Vec<u32>>,
    bn_mean: Vec<Vec<f32>>,
    bn_inv_std: Vec<Vec<f32>>,
    masks: Vec<Vec<u8>>,
    scratch: AlignedBuf,
    /// Ops `0..lane_end` can run on lane tensors (16 images per vector, see [`crate::lanes`]);
    /// 0 when none can (the first op is not a convolution).
    lane_end: usize,
    /// Whether batches that fill their slots well use the lane path (see [`Trainer::set_lanes`]).
    lanes_on: bool,
    /// The network input as lanes.
    in_lanes: AlignedBuf,
    /// The lane output of op `lane_end − 1` (its `outs` buffer holds it as NCHW for the next op).
    last_lanes: AlignedBuf,
    capacity: usize,
    optimizer: Box<dyn Optimizer + Send>,
    rng: DropoutRng,
    pool: std::sync::Arc<rayon::ThreadPool>,
    steps: u64,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.name)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer with PyTorch's default initialisation from `seed`.
    pub fn new(
        model: &CheckedModel,
        optimizer: Box<dyn Optimizer + Send>,
        seed: u64,
        threads: usize,
    ) -> Result<Self, TrainError> {
        let plan = plan(model, Mode::Train);
        let w = init_weights(&plan, seed)?;
        Self::from_plan(plan, &w, optimizer, seed, threads)
    }

    /// A trainer starting from `weights` (checked against the model's `state_dict`).
    pub fn with_weights(
        model: &CheckedModel,
        weights: &Weights,
        optimizer: Box<dyn Optimizer + Send>,
        seed: u64,
        threads: usize,
    ) -> Result<Self, TrainError> {
        Self::from_plan(plan(model, Mode::Train), weights, optimizer, seed, threads)
    }

    /// A trainer following a training plan (`cnn_ir::plan::plan(model, Mode::Train)`, or the
    /// one a generated model embeds), starting from `weights`.
    pub fn from_plan(
        plan: Plan,
        weights: &Weights,
        optimizer: Box<dyn Optimizer + Send>,
        seed: u64,
        threads: usize,
    ) -> Result<Self, TrainError> {
        let unsupported = |reason: String| TrainError::Unsupported {
            model: plan.name.clone(),
            reason,
        };
        if plan.mode != Mode::Train {
            return Err(unsupported(
                "its plan is an inference plan, not a training plan".into(),
            ));
        }
        check_train_locs(&plan).map_err(unsupported)?;
        let specs = param_specs(&plan);
        check_weights_fit(weights, &specs)?;
        let tensors: Vec<Vec<f32>> = specs
            .iter()
            .map(|s| {
                weights
                    .get(&s.name)
                    .map(<[f32]>::to_vec)
                    .unwrap_or_default()
            })
            .collect();
        let steps = &plan.steps;
        for (k, step) in steps.iter().enumerate() {
            if step.params.iter().any(|&t| t >= plan.tensors.len()) {
                return Err(unsupported(format!(
                    "step `{}` names a tensor the plan does not have",
                    step.path
                )));
            }
            // Weight (and bias) for conv/linear; weight, bias, mean, var for batch norm: each a
            // different tensor, so their gradients can be borrowed together.
            let need = match &step.op {
                Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => 1 + usize::from(*bias),
                Op::BatchNorm2d { .. } => 4,
                _ => 0,
            };
            let mut distinct = step.params.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if step.params.len() < need || distinct.len() != step.params.len() {
                return Err(unsupported(format!(
                    "step `{}` needs {need} distinct tensors, the plan gives {:?}",
                    step.path, step.params
                )));
            }
            if let Op::Softmax { inner, .. } = step.op {
                if inner != 1 {
                    return Err(unsupported(format!(
                        "`{}` takes a softmax over a spatial tensor; training supports it over the features only",
                        step.path
                    )));
                }
                if k + 1 != steps.len() {
                    return Err(unsupported(format!(
                        "`{}` (softmax) must be the last layer for training",
                        step.path
                    )));
                }
            }
        }
        let loss = match steps.last().map(|l| &l.op) {
            Some(Op::Softmax { log: true, .. }) => LossKind::Nll,
            Some(Op::Softmax { log: false, .. }) => LossKind::ProbNll,
            _ => LossKind::CrossEntropy,
        };
        let classes = plan.output_len();
        if plan.output_shape.len() != 1 || classes < 2 {
            return Err(unsupported(format!(
                "classification needs an output of [classes] with at least 2 classes, but the model outputs {:?}",
                plan.output_shape
            )));
        }
        if steps.is_empty() {
            return Err(unsupported("the model has no layers".into()));
        }
        let trainable: Vec<usize> = plan
            .tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.role.trainable())
            .map(|(i, _)| i)
            .collect();
        let grads = plan
            .tensors
            .iter()
            .map(|t| {
                let mut g = Vec::new();
                if t.role.trainable() {
                    try_resize(&mut g, t.numel(), 0.0).map_err(ExecError::from)?;
                }
                Ok(g)
            })
            .collect::<Result<_, TrainError>>()?;
        let pool = thread_pool(threads)?;
        let n = steps.len();
        let lane_end = lane_prefix(steps);
        Ok(Trainer {
            name: plan.name.clone(),
            plan,
            loss,
            classes,
            tensors,
            grads,
            trainable,
            input: AlignedBuf::default(),
            outs: (0..n).map(|_| AlignedBuf::default()).collect(),
            dbuf: [AlignedBuf::default(), AlignedBuf::default()],
            pool_idx: (0..n).map(|_| Vec::new()).collect(),
            bn_mean: (0..n).map(|_| Vec::new()).collect(),
            bn_inv_std: (0..n).map(|_| Vec::new()).collect(),
            masks: (0..n).map(|_| Vec::new()).collect(),
            scratch: AlignedBuf::default(),
            lane_end,
            lanes_on: true,
            in_lanes: AlignedBuf::default(),
            last_lanes: AlignedBuf::default(),
            capacity: 0,
            optimizer,
            rng: DropoutRng::new(seed ^ 0x5EED_D50F_0000_0001),
            pool,
            steps: 0,
        })
    }

    /// The loss the trainer uses.
    pub fn loss_kind(&self) -> LossKind {
        self.loss
    }

    /// Output classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Values per input image.
    pub fn input_len(&self) -> usize {
        self.plan.input_len()
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The optimizer (to set the learning rate per epoch, or read its state).
    pub fn optimizer_mut(&mut self) -> &mut (dyn Optimizer + Send) {
        &mut *self.optimizer
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &(dyn Optimizer + Send) {
        &*self.optimizer
    }

    /// Dropout generator state (for checkpoints).
    pub fn rng_state(&self) -> u64 {
        self.rng.state()
    }

    /// Restores the step count and dropout generator after loading a checkpoint.
    pub fn restore_counters(&mut self, steps: u64, rng_state: u64) {
        self.steps = steps;
        self.rng = DropoutRng::from_state(rng_state);
    }

    /// The current parameters and buffers as [`Weights`] (PyTorch `state_dict` names).
    pub fn weights(&self) -> Result<Weights, TrainError> {
        Ok(
            Weights::new(&param_specs(&self.plan), self.tensors.clone())?
                .with_metadata("model", self.name.clone()),
        )
    }

    /// Bytes held for activations, gradients, saved state and scratch at the current capacity.
    pub fn memory_bytes(&self) -> usize {
        let f = |v: &[Vec<f32>]| v.iter().map(Vec::capacity).sum::<usize>() * 4;
        let a = |v: &[AlignedBuf]| v.iter().map(AlignedBuf::allocated_bytes).sum::<usize>();
        a(&self.outs)
            + a(&self.dbuf)
            + f(&self.bn_mean)
            + f(&self.bn_inv_std)
            + f(&self.grads)
            + self.input.allocated_bytes()
            + self.scratch.allocated_bytes()
            + self.pool_idx.iter().map(Vec::capacity).sum::<usize>() * 4
            + self.masks.iter().map(Vec::capacity).sum::<usize>()
    }

    fn reserve(&mut self, batch: usize) -> Result<(), OutOfMemory> {
        if batch <= self.capacity {
            return Ok(());
        }
        let threads = self.pool.current_num_threads();
        let n = TrainNeeds::of(&self.plan, self.lane_end, batch, threads);
        self.input.try_grow(n.input)?;
        self.in_lanes.try_grow(n.in_lanes)?;
        self.last_lanes.try_grow(n.last_lanes)?;
        for k in 0..self.plan.steps.len() {
            self.outs[k].try_grow(n.outs[k])?;
            if n.pool_idx[k] > 0 {
                try_resize(&mut self.pool_idx[k], n.pool_idx[k], 0)?;
            }
            if n.bn[k] > 0 {
                try_resize(&mut self.bn_mean[k], n.bn[k], 0.0)?;
                try_resize(&mut self.bn_inv_std[k], n.bn[k], 0.0)?;
            }
            if n.masks[k] > 0 {
                try_resize(&mut self.masks[k], n.masks[k], 0)?;
            }
        }
        for d in &mut self.dbuf {
            d.try_grow(n.dbuf)?;
        }
        self.scratch.try_grow(n.scratch)?;
        self.capacity = batch;
        Ok(())
    }

    /// Heap bytes a trainer of `plan` (a training plan) holds once it has taken a step of
    /// `batch` images with `threads` workers (0 = one per core) and an optimizer keeping
    /// `optimizer_state` floats per trainable parameter (Adam 2, SGD with momentum 1): the
    /// parameters twice (the trainer's copy and the weights it starts from), gradients,
    /// optimizer state, what [`Trainer::train_step`] reserves, and `gemm`'s thread-local slabs
    /// and packing buffers — computed without allocating.
    pub fn estimate_bytes(plan: &Plan, batch: usize, threads: usize, optimizer_state: u32) -> u128 {
        let threads = crate::exec::resolve_threads(threads);
        let all: u128 = plan.tensors.iter().map(|t| t.numel() as u128).sum();
        let trainable: u128 = plan
            .tensors
            .iter()
            .filter(|t| t.role.trainable())
            .map(|t| t.numel() as u128)
            .sum();
        let params = 2 * all + trainable * (1 + u128::from(optimizer_state));
        4 * params
            + TrainNeeds::of(plan, lane_prefix(&plan.steps), batch, threads).bytes()
            + Self::gemm_bytes(plan, batch, threads)
    }

    /// The part of [`Trainer::estimate_bytes`] for `gemm`'s own buffers (linear layers, the
    /// image-major convolution backward): an upper bound, since `gemm` decides by its size
    /// heuristics whether to allocate them.
    pub fn gemm_bytes(plan: &Plan, batch: usize, threads: usize) -> u128 {
        let threads = crate::exec::resolve_threads(threads);
        plan.steps
            .iter()
            .map(|s| match &s.op {
                Op::Linear { geom, .. } => kernels::linear_gemm_bytes(geom, batch, threads)
                    .max(kernels::gemm_slab_bytes(threads)),
                Op::Conv2d { .. } => kernels::gemm_slab_bytes(threads),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    fn check_batch(&self, images: &[f32], labels: &[usize]) -> Result<usize, TrainError> {
        let batch = labels.len();
        let per = self.plan.input_len();
        if images.len() != batch * per || batch == 0 {
            return Err(TrainError::BatchSize {
                images: images.len(),
                labels: labels.len(),
                batch,
                per_image: per,
            });
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= self.classes)
        {
            return Err(TrainError::Label {
                index,
                label,
                classes: self.classes,
            });
        }
        Ok(batch)
    }

    /// One optimizer step on a batch (`images` flat `[B, …input]`, `labels` `[B]`).
    pub fn train_step(
        &mut self,
        images: &[f32],
        labels: &[usize],
    ) -> Result<StepStats, TrainError> {
        let batch = self.check_batch(images, labels)?;
        // Batch statistics of one value are undefined (PyTorch raises the same error).
        let lone =
            self.plan.steps.iter().find(
                |s| matches!(&s.op, Op::BatchNorm2d { geom, .. } if batch * geom.spatial <= 1),
            );
        if let Some(step) = lone {
            return Err(TrainError::Unsupported {
                model: self.name.clone(),
                reason: format!(
                    "`{}` (batchnorm2d) sees one value per channel in a batch of {batch}: training needs more than one (a batch of at least 2)",
                    step.path
                ),
            });
        }
        self.reserve(batch).map_err(ExecError::from)?;
        self.input[..images.len()].copy_from_slice(images);
        let pool = std::sync::Arc::clone(&self.pool);
        let result = pool.install(|| {
            self.forward(batch, true);
            let stats = self.loss_and_grad(batch, labels);
            if !stats.loss.is_finite() {
                return Err(TrainError::NonFinite {
                    loss: stats.loss as f32,
                    step: self.steps,
                });
            }
            self.backward(batch);
            Ok(stats)
        });
        let stats = result?;
        let Trainer {
            tensors,
            grads,
            trainable,
            optimizer,
            ..
        } = self;
        let mut params: Vec<&mut [f32]> = Vec::with_capacity(trainable.len());
        let mut gs: Vec<&[f32]> = Vec::with_capacity(trainable.len());
        for (i, (t, g)) in tensors.iter_mut().zip(grads.iter()).enumerate() {
            if trainable.contains(&i) {
                params.push(t);
                gs.push(g);
            }
        }
        self.pool.install(|| optimizer.step(&mut params, &gs));
        // num_batches_tracked counts training forward passes, as in PyTorch.
        for (t, spec) in self.tensors.iter_mut().zip(&self.plan.tensors) {
            if spec.role == TensorRole::NumBatchesTracked
                && let Some(v) = t.first_mut()
            {
                *v += 1.0;
            }
        }
        self.steps += 1;
        Ok(stats)
    }

    /// The training-mode loss on a batch without a backward pass or an update (batch-norm
    /// running statistics still move, as in a PyTorch forward in `train()` mode). For
    /// finite-difference checks.
    pub fn train_loss(&mut self, images: &[f32], labels: &[usize]) -> Result<f64, TrainError> {
        let batch = self.check_batch(images, labels)?;
        self.reserve(batch).map_err(ExecError::from)?;
        self.input[..images.len()].copy_from_slice(images);
        let pool = std::sync::Arc::clone(&self.pool);
        pool.install(|| self.forward(batch, true));
        Ok(self.loss_and_grad(batch, labels).loss)
    }

    /// Mutable access to a parameter or buffer by `state_dict` name (for tests and surgery).
    pub fn tensor_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let i = self.plan.tensors.iter().position(|t| t.name == name)?;
        Some(&mut self.tensors[i])
    }

    /// Loss and accuracy on a batch in evaluation mode (running statistics, no dropout), and
    /// the outputs (`[B, classes]`, flat).
    pub fn evaluate(
        &mut self,
        images: &[f32],
        labels: &[usize],
    ) -> Result<(StepStats, &[f32]), TrainError> {
        let batch = self.check_batch(images, labels)?;
        self.reserve(batch).map_err(ExecError::from)?;
        self.input[..images.len()].copy_from_slice(images);
        let pool = std::sync::Arc::clone(&self.pool);
        pool.install(|| self.forward(batch, false));
        let stats = self.loss_and_grad(batch, labels);
        let last = self.plan.steps.len() - 1;
        Ok((stats, &self.outs[last][..self.classes * batch]))
    }

    /// Whether a batch of `batch` images takes the lane path: it is available, switched on,
    /// and at most a quarter of the slots' lanes would be idle.
    pub fn uses_lanes(&self, batch: usize) -> bool {
        let idle = lanes::lane_slots(batch) * LANES - batch;
        self.lanes_on && self.lane_end > 0 && batch >= LANES && 4 * idle <= batch
    }

    /// Switches the lane path (16 images per vector for the leading convolution, pooling and
    /// activation layers, see [`crate::lanes`]) on or off; it is on by default wherever it is
    /// available. The two paths compute the same function with different summation orders,
    /// so their weights agree to rounding. For comparisons and benchmarks.
    pub fn set_lanes(&mut self, on: bool) {
        self.lanes_on = on;
    }

    /// Number of leading layers that run on lane tensors for large enough batches (0 when the
    /// lane path is unavailable: the model does not start with a convolution).
    pub fn lane_layers(&self) -> usize {
        self.lane_end
    }

    fn forward(&mut self, batch: usize, train: bool) {
        let use_lanes = self.uses_lanes(batch);
        let Trainer {
            plan,
            tensors,
            input,
            outs,
            pool_idx,
            bn_mean,
            bn_inv_std,
            masks,
            scratch,
            rng,
            lane_end,
            in_lanes,
            last_lanes,
            ..
        } = self;
        let ops = &plan.steps;
        let lane_end = if use_lanes { *lane_end } else { 0 };
        let slots = lanes::lane_slots(batch);
        if lane_end > 0 {
            let n = ops[0].in_len;
            lanes::to_lanes(
                batch,
                n,
                &input[..n * batch],
                &mut in_lanes[..n * slots * LANES],
            );
        }
        for (k, op) in ops.iter().enumerate() {
            if elided(ops, k) {
                continue;
            }
            // Steps before `lane_end` read and write lane tensors; the last of them writes
            // `last_lanes`, converted below into its NCHW buffer for the next step.
            let on_lanes = k < lane_end;
            let layout = if on_lanes {
                Layout::Lanes(slots)
            } else {
                Layout::Images(batch)
            };
            let last_lane_op = on_lanes && k + 1 == lane_end;
            let (before, rest) = outs.split_at_mut(k);
            let src: &[f32] = match src_buf(ops, k) {
                None if on_lanes => in_lanes,
                None => input,
                Some(j) => &before[j],
            };
            let dst: &mut [f32] = if last_lane_op {
                last_lanes
            } else {
                &mut rest[0]
            };
            let (p, running) = step_params(tensors, op, train);
            let mut state = train.then(|| Train {
                saved: Saved {
                    pool_idx: &mut pool_idx[k],
                    bn_mean: &mut bn_mean[k],
                    bn_inv_std: &mut bn_inv_std[k],
                    mask: &mut masks[k],
                },
                running,
                rng: &mut *rng,
            });
            step::forward(op, layout, Some(src), dst, &p, state.as_mut(), scratch);
            if last_lane_op {
                lanes::from_lanes(
                    batch,
                    op.out_len,
                    &last_lanes[..op.out_len * slots * LANES],
                    &mut rest[0][..op.out_len * batch],
                );
            }
        }
    }

    /// Loss and its gradient (into `dbuf[0]`) from the last output.
    fn loss_and_grad(&mut self, batch: usize, labels: &[usize]) -> StepStats {
        let c = self.classes;
        let last = self.plan.steps.len() - 1;
        let out = &self.outs[last][..c * batch];
        let d = &mut self.dbuf[0][..c * batch];
        let loss = match self.loss {
            LossKind::CrossEntropy => grad::softmax_cross_entropy(out, labels, c, d),
            LossKind::Nll => grad::nll_loss(out, labels, c, d),
            LossKind::ProbNll => {
                let mut total = 0.0f64;
                d.fill(0.0);
                for (n, &y) in labels.iter().enumerate() {
                    let p = f64::from(out[n * c + y]).max(1e-30);
                    total -= p.ln();
                    d[n * c + y] = (-1.0 / (p * batch as f64)) as f32;
                }
                (total / batch as f64) as f32
            }
        };
        let correct = out
            .chunks_exact(c)
            .zip(labels)
            .filter(|(row, y)| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i)
                    == Some(**y)
            })
            .count();
        StepStats {
            loss: f64::from(loss),
            correct,
            count: batch,
        }
    }

    fn backward(&mut self, batch: usize) {
        let use_lanes = self.uses_lanes(batch);
        let Trainer {
            plan,
            tensors,
            grads,
            input,
            outs,
            dbuf,
            pool_idx,
            bn_mean,
            bn_inv_std,
            masks,
            scratch,
            lane_end,
            in_lanes,
            last_lanes,
            ..
        } = self;
        let ops = &plan.steps;
        let lane_end = if use_lanes { *lane_end } else { 0 };
        let slots = lanes::lane_slots(batch);
        let [da, db] = dbuf;
        let (mut cur, mut next) = (da, db);
        // Set when a max pool's backward already applied the ReLU fused into the step before it.
        let mut relu_applied = false;
        for k in (0..ops.len()).rev() {
            let op = &ops[k];
            if elided(ops, k) {
                // The gradient w.r.t. its input is the one w.r.t. its output, already in `cur`.
                continue;
            }
            let on_lanes = k < lane_end;
            let layout = if on_lanes {
                Layout::Lanes(slots)
            } else {
                Layout::Images(batch)
            };
            let last_lane_op = on_lanes && k + 1 == lane_end;
            if last_lane_op {
                // The gradient enters the lane region.
                let n = op.out_len;
                let lb = slots * LANES;
                lanes::to_lanes(batch, n, &cur[..n * batch], &mut next[..n * lb]);
                std::mem::swap(&mut cur, &mut next);
            }
            let src: &[f32] = match src_buf(ops, k) {
                None if on_lanes => in_lanes,
                None => input,
                Some(j) => &outs[j],
            };
            let out: &[f32] = if last_lane_op { last_lanes } else { &outs[k] };
            let (d_weight, d_bias) = param_grads(grads, op);
            let g = Grads {
                src,
                out,
                d_out: cur,
                d_in: (k > 0).then_some(&mut **next),
                d_weight,
                d_bias,
            };
            let p = Params::of(op, |i| &tensors[i]);
            let saved = Saved {
                pool_idx: &mut pool_idx[k],
                bn_mean: &mut bn_mean[k],
                bn_inv_std: &mut bn_inv_std[k],
                mask: &mut masks[k],
            };
            let relu_before = k > 0 && ops[k - 1].fused == Some(Activation::Relu);
            step::backward(
                op,
                layout,
                g,
                &p,
                &saved,
                relu_before,
                &mut relu_applied,
                scratch,
            );
            std::mem::swap(&mut cur, &mut next);
        }
    }

    /// Gradients of the last step, `state_dict` order (empty for buffers). For tests and
    /// gradient inspection.
    pub fn gradients(&self) -> Vec<(&str, &[f32])> {
        self.plan
            .tensors
            .iter()
            .zip(&self.grads)
            .map(|(t, g)| (t.name.as_str(), &g[..]))
            .collect()
    }
}

/// What [`Trainer`]'s `reserve` allocates for `batch` images, in elements (per step where a
/// vector).
struct TrainNeeds {
    input: usize,
    in_lanes: usize,
    last_lanes: usize,
    /// Each step's output (0 for a flatten that writes nothing).
    outs: Vec<usize>,
    /// Argmax indices (`u32`) of each max pool.
    pool_idx: Vec<usize>,
    /// Batch-norm channels (mean and inverse std each).
    bn: Vec<usize>,
    /// Dropout masks (bytes).
    masks: Vec<usize>,
    /// Each of the two gradient buffers.
    dbuf: usize,
    scratch: usize,
}

impl TrainNeeds {
    fn of(plan: &Plan, lane_end: usize, batch: usize, threads: usize) -> TrainNeeds {
        let steps = &plan.steps;
        let n = steps.len();
        // Room for the lane path's rounded-up batch in the buffers it uses.
        let lb = if lane_end > 0 {
            lanes::lane_slots(batch) * LANES
        } else {
            batch
        };
        let slots = lb / LANES;
        let mut t = TrainNeeds {
            input: plan.input_len().saturating_mul(batch),
            in_lanes: 0,
            last_lanes: 0,
            outs: vec![0; n],
            pool_idx: vec![0; n],
            bn: vec![0; n],
            masks: vec![0; n],
            dbuf: 0,
            scratch: 0,
        };
        if lane_end > 0 {
            t.in_lanes = plan.input_len().saturating_mul(lb);
            t.last_lanes = steps[lane_end - 1].out_len.saturating_mul(lb);
        }
        let mut dmax = plan.input_len();
        for (k, op) in steps.iter().enumerate() {
            let nb = if k < lane_end { lb } else { batch };
            if !elided(steps, k) {
                t.outs[k] = op.out_len.saturating_mul(nb);
            }
            dmax = dmax.max(op.out_len).max(op.in_len);
            match &op.op {
                Op::Pool2d {
                    kind: PoolKind::Max,
                    ..
                } => t.pool_idx[k] = op.out_len.saturating_mul(nb),
                Op::BatchNorm2d { geom, .. } => t.bn[k] = geom.channels,
                Op::Dropout { .. } => t.masks[k] = op.out_len.saturating_mul(batch),
                Op::Conv2d { geom: g, .. } => {
                    t.scratch = t
                        .scratch
                        .max(grad::conv2d_backward_scratch_len(g, batch))
                        .max(kernels::conv2d_scratch_len(g, batch, threads));
                    if k < lane_end {
                        t.scratch = t
                            .scratch
                            .max(lanes::conv2d_lanes_scratch_len(g))
                            .max(grad::conv2d_backward_lanes_scratch_len(g, slots));
                    }
                }
                _ => {}
            }
        }
        t.dbuf = dmax.saturating_mul(lb);
        t
    }

    /// Bytes in all.
    fn bytes(&self) -> u128 {
        let sum = |v: &[usize]| v.iter().map(|&x| x as u128).sum::<u128>();
        4 * (self.input as u128
            + self.in_lanes as u128
            + self.last_lanes as u128
            + sum(&self.outs)
            + sum(&self.pool_idx)
            + 2 * sum(&self.bn)
            + 2 * self.dbuf as u128
            + self.scratch as u128)
            + sum(&self.masks)
    }
}

/// How many leading ops can run on lane tensors ([`crate::lanes`]): convolutions the lane
/// kernels handle (the first one needs no input gradient; later ones need theirs as a lane
/// convolution), max pools and element-wise activations. 0 without a convolution among them.
fn lane_prefix(ops: &[Step]) -> usize {
    let mut end = 0;
    let mut convs = 0;
    for (k, op) in ops.iter().enumerate() {
        // A later convolution also needs its input gradient as a lane convolution.
        let ok = step::runs_on_lanes(&op.op)
            && match &op.op {
                Op::Conv2d { geom, .. } => k == 0 || grad::lanes_input_grad_supported(geom),
                _ => true,
            };
        if !ok || k + 1 == ops.len() {
            break;
        }
        convs += usize::from(matches!(op.op, Op::Conv2d { .. }));
        end = k + 1;
    }
    if convs == 0 { 0 } else { end }
}

/// Whether op `k` writes nothing: a flatten that is not the last op. Flattening contiguous NCHW
/// data is the identity, so the plan routes the next op to the flatten's input buffer and the
/// backward passes the gradient through.
fn elided(ops: &[Step], k: usize) -> bool {
    ops[k].src == ops[k].dst
}

/// The buffer holding op `k`'s input, as the plan routes it: `None` for the network input.
fn src_buf(ops: &[Step], k: usize) -> Option<usize> {
    match ops[k].src {
        Loc::Input => None,
        Loc::Buf(j) => Some(j as usize),
    }
}

/// Checks that a training plan has the routing the trainer relies on: a chain where step `k`
/// reads what the step before it left, and writes buffer `k` — or writes nothing (a flatten
/// before the last step).
fn check_train_locs(plan: &Plan) -> Result<(), String> {
    let mut cur = Loc::Input;
    let n = plan.steps.len();
    for (k, step) in plan.steps.iter().enumerate() {
        let own = u32::try_from(k).ok().map(Loc::Buf);
        let passes = matches!(step.op, Op::Flatten { .. }) && k + 1 < n && step.dst == step.src;
        if step.src != cur || !(passes || Some(step.dst) == own) {
            return Err(format!(
                "step `{}` reads {:?} and writes {:?}, which the trainer cannot route",
                step.path, step.src, step.dst
            ));
        }
        cur = step.dst;
    }
    Ok(())
}

/// The parameters of `step` from the trainer's tensors; for a batch norm in training mode, its
/// running statistics apart, to update.
fn step_params<'a>(
    tensors: &'a mut [Vec<f32>],
    step: &Step,
    train: bool,
) -> (Params<'a>, Option<Running<'a>>) {
    match (&step.op, &step.params[..]) {
        (Op::BatchNorm2d { .. }, &[g, b, m, v, ..]) if train => {
            let Ok([g, b, m, v]) = tensors.get_disjoint_mut([g, b, m, v]) else {
                unreachable!("batch norm tensors are distinct (checked by from_plan)")
            };
            let p = Params {
                tensors: [g, b, &[], &[]],
                packed: None,
            };
            (p, Some((m, v)))
        }
        _ => {
            let t: &'a [Vec<f32>] = tensors;
            (Params::of(step, |i| &t[i]), None)
        }
    }
}

/// The gradients of `step`'s weight and bias (batch norm: gamma and beta), distinct slices of
/// `grads`.
fn param_grads<'a>(
    grads: &'a mut [Vec<f32>],
    step: &Step,
) -> (Option<&'a mut [f32]>, Option<&'a mut [f32]>) {
    let trained = match step.op {
        Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => 1 + usize::from(bias),
        Op::BatchNorm2d { .. } => 2,
        _ => 0,
    };
    match step.params[..trained.min(step.params.len())] {
        [w] => (Some(&mut grads[w]), None),
        [w, b] => {
            let Ok([w, b]) = grads.get_disjoint_mut([w, b]) else {
                unreachable!("parameter tensors are distinct (checked by from_plan)")
            };
            (Some(w), Some(b))
        }
        _ => (None, None),
    }
}

/// Resizes `v` to `len` copies of `value`, reporting a failed allocation instead of aborting.
fn try_resize<T: Clone>(v: &mut Vec<T>, len: usize, value: T) -> Result<(), OutOfMemory> {
    if len > v.len() {
        v.try_reserve_exact(len - v.len())
            .map_err(|_| OutOfMemory { floats: len })?;
    }
    v.resize(len, value);
    Ok(())
}
