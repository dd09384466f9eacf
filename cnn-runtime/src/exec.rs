//! The plan interpreter: runs any checked model (sizes known at run time) on the CPU kernels,
//! following the two-buffer plan from `cnn_ir::plan`. After the first call at a given batch
//! size it does no heap allocation.
//!
//! Batches that fill slots of 16 images run the plan's leading convolution, max-pool and
//! activation steps on lane tensors ([`crate::lanes`], as the trainer does): the lane
//! convolution skips the zero padding exactly and keeps more accumulators busy than the
//! pixel-vector kernel (seed layers at batch 64: 1.3–1.5× its GFLOP/s on AVX-512 and on AVX2,
//! `cargo bench -p cnn-runtime --bench kernels -- lanes/`). The rest of the plan runs
//! image-major after one conversion.

use crate::buf::AlignedBuf;
use crate::init::{Rng, default_weights};
use crate::kernels::{self, PackedConv};
use crate::lanes::{self, LANES};
use crate::step::{self, Layout, Params};
use crate::weights::{ParamKind, ParamSpec, Weights};
use cnn_ir::checked::{Op, TensorRole};
use cnn_ir::plan::{Loc, Mode, Plan, Step};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// Errors from building or running an executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The input slice does not hold `batch` images of the model's input shape.
    #[error("input has {found} values, but {batch} image(s) of shape {shape:?} need {expected}")]
    InputLength {
        /// Values given.
        found: usize,
        /// Values needed.
        expected: usize,
        /// Batch size asked for.
        batch: usize,
        /// Per-image input shape.
        shape: Vec<usize>,
    },
    /// An ndarray input whose trailing dimensions differ from the model's input shape.
    #[error("input has shape {found:?}, but the model takes [N, {}]", fmt_shape(.expected))]
    InputShape {
        /// Shape given.
        found: Vec<usize>,
        /// Per-image input shape.
        expected: Vec<usize>,
    },
    /// The weights do not contain a tensor the plan needs, or it has the wrong length.
    #[error("weights do not fit the model: tensor `{name}` {problem}")]
    Weights {
        /// Tensor name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Initialisation failed.
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    /// A buffer could not be allocated.
    #[error(transparent)]
    OutOfMemory(#[from] crate::buf::OutOfMemory),
    /// The thread pool could not be built.
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// Requested threads.
        threads: usize,
        /// The OS's reason.
        message: String,
    },
    /// The plan is not an inference plan the executor can run.
    #[error("plan of `{model}` cannot run for inference: {reason}")]
    Plan {
        /// Model name.
        model: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checks that `plan` is an inference plan over the two ping-pong buffers, whose steps name
/// only tensors it has.
fn check_infer_plan(plan: &Plan) -> Result<(), ExecError> {
    let bad = |reason: String| ExecError::Plan {
        model: plan.name.clone(),
        reason,
    };
    if plan.mode != Mode::Infer {
        return Err(bad("it is a training plan".into()));
    }
    let ok = |l: Loc| matches!(l, Loc::Input | Loc::Buf(0 | 1));
    for step in &plan.steps {
        let in_place = step.src == step.dst;
        if !ok(step.src)
            || !matches!(step.dst, Loc::Buf(0 | 1))
            || (in_place && !step::runs_in_place(&step.op))
        {
            return Err(bad(format!(
                "step `{}` reads {:?} and writes {:?}",
                step.path, step.src, step.dst
            )));
        }
        if step.params.iter().any(|&t| t >= plan.tensors.len()) {
            return Err(bad(format!(
                "step `{}` names a tensor the plan does not have",
                step.path
            )));
        }
    }
    if !ok(plan.output) {
        return Err(bad(format!("its output is {:?}", plan.output)));
    }
    Ok(())
}

fn fmt_shape(s: &[usize]) -> String {
    s.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that `weights` hold every tensor of `specs` with its number of values: the one weights
/// check of the executor, the trainer and generated code.
pub fn check_weights_fit(weights: &Weights, specs: &[ParamSpec]) -> Result<(), ExecError> {
    for s in specs {
        let want = s.numel().unwrap_or(usize::MAX);
        match weights.get(&s.name) {
            Some(v) if v.len() == want => {}
            Some(v) => {
                return Err(ExecError::Weights {
                    name: s.name.clone(),
                    problem: format!("has {} values, expected {want} ({:?})", v.len(), s.shape),
                });
            }
            None => {
                return Err(ExecError::Weights {
                    name: s.name.clone(),
                    problem: "is missing".into(),
                });
            }
        }
    }
    Ok(())
}

/// A rayon pool of `threads` workers (0 = one per core), or why the OS refused it.
pub fn thread_pool(threads: usize) -> Result<std::sync::Arc<rayon::ThreadPool>, ExecError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map(std::sync::Arc::new)
        .map_err(|e| ExecError::Threads {
            threads,
            message: e.to_string(),
        })
}

/// The `state_dict` entries a plan needs, for [`crate::weights::load`].
pub fn param_specs(plan: &Plan) -> Vec<ParamSpec> {
    plan.tensors
        .iter()
        .map(|t| {
            let kind = match t.role {
                TensorRole::Weight => ParamKind::Weight,
                TensorRole::Bias => ParamKind::Bias,
                TensorRole::RunningMean => ParamKind::RunningMean,
                TensorRole::RunningVar => ParamKind::RunningVar,
                TensorRole::NumBatchesTracked => ParamKind::NumBatchesTracked,
            };
            ParamSpec::new(t.name.clone(), t.shape.clone(), kind)
        })
        .collect()
}

/// PyTorch's default initialisation of every tensor of the plan, from `seed`.
pub fn init_weights(plan: &Plan, seed: u64) -> Result<Weights, ExecError> {
    let mut rng = Rng::seed_from_u64(seed);
    Ok(default_weights(&param_specs(plan), &mut rng)?.with_metadata("model", plan.name.clone()))
}

enum Kernel {
    Conv(Box<PackedConv>),
    Plain,
}

/// Runs a [`Plan`] with its weights. Build once, call [`Executor::forward`] many times.
pub struct Executor {
    plan: Plan,
    weights: Weights,
    kernels: Vec<Kernel>,
    bufs: [AlignedBuf; 2],
    scratch: AlignedBuf,
    capacity: usize,
    pool: std::sync::Arc<rayon::ThreadPool>,
    /// Steps `0..lane_end` can run on lane tensors (0: none can).
    lane_end: usize,
    /// Whether batches that fill their slots use the lane path ([`Executor::set_lanes`]).
    lanes_on: bool,
    /// The two lane buffers of the lane prefix.
    lane_bufs: [AlignedBuf; 2],
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("model", &self.plan.name)
            .field("capacity", &self.capacity)
            .field("threads", &self.threads())
            .finish()
    }
}

impl Executor {
    /// Prepares the kernels (packs convolution weights) and a pool of `threads` workers
    /// (0 = one per core).
    pub fn new(plan: Plan, weights: Weights, threads: usize) -> Result<Self, ExecError> {
        check_infer_plan(&plan)?;
        check_weights_fit(&weights, &param_specs(&plan))?;
        let pool = thread_pool(threads)?;
        let kernels = plan
            .steps
            .iter()
            .map(|s| match &s.op {
                &Op::Conv2d { ref geom, bias } => {
                    let p = Params::of(s, |i| tensor(&weights, &plan, i));
                    let b = bias.then_some(p.tensors[1]);
                    let act = step::kernel_act(s.fused);
                    Kernel::Conv(Box::new(PackedConv::new(geom, p.tensors[0], b, act)))
                }
                _ => Kernel::Plain,
            })
            .collect();
        let lane_end = lane_prefix(&plan);
        Ok(Executor {
            plan,
            weights,
            kernels,
            bufs: [AlignedBuf::default(), AlignedBuf::default()],
            scratch: AlignedBuf::default(),
            capacity: 0,
            pool,
            lane_end,
            lanes_on: true,
            lane_bufs: [AlignedBuf::default(), AlignedBuf::default()],
        })
    }

    /// Turns the lane path on (the default) or off, for comparisons; results agree within
    /// float rounding either way.
    pub fn set_lanes(&mut self, on: bool) {
        self.lanes_on = on;
    }

    /// Whether `batch` images run the leading steps on lane tensors: there is a lane prefix,
    /// and at most a quarter of the lanes of the last slot would be idle.
    pub fn uses_lanes(&self, batch: usize) -> bool {
        self.lanes_on && self.lane_end > 0 && crate::support::lanes_pay(batch)
    }

    /// A model with PyTorch's default initialisation from `seed`.
    pub fn with_init(plan: Plan, seed: u64, threads: usize) -> Result<Self, ExecError> {
        let w = init_weights(&plan, seed)?;
        Self::new(plan, w, threads)
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The executor's thread pool. `forward` moves its work into this pool; calling it from
    /// inside (`exec.pool().install(|| … exec.forward(…) …)`) runs it inline and saves the
    /// hand-over between threads, which matters for batch-1 latency.
    pub fn pool(&self) -> std::sync::Arc<rayon::ThreadPool> {
        std::sync::Arc::clone(&self.pool)
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Sizes buffers for `batch` images (done automatically by `forward`; call it up front to
    /// keep the first `forward` free of allocation too). A batch too large for memory is an
    /// error, not an abort.
    pub fn reserve(&mut self, batch: usize) -> Result<(), ExecError> {
        if batch <= self.capacity {
            return Ok(());
        }
        let n = InferNeeds::of(&self.plan, self.lane_end, batch, self.threads());
        self.bufs[0].try_grow(n.buf)?;
        self.bufs[1].try_grow(n.buf)?;
        self.lane_bufs[0].try_grow(n.lane_buf)?;
        self.lane_bufs[1].try_grow(n.lane_buf)?;
        self.scratch.try_grow(n.scratch)?;
        self.capacity = batch;
        Ok(())
    }

    /// Heap bytes an executor of `plan` holds once it has run `batch` images with `threads`
    /// workers (0 = one per core): weights, packed convolution weights, buffers and scratch —
    /// what [`Executor::reserve`] allocates, computed without allocating. For memory checks
    /// before building one.
    pub fn estimate_bytes(plan: &Plan, batch: usize, threads: usize) -> u128 {
        let threads = resolve_threads(threads);
        let weights: u128 = plan.tensors.iter().map(|t| t.numel() as u128).sum();
        let packed: u128 = plan
            .steps
            .iter()
            .map(|s| match &s.op {
                Op::Conv2d { geom, .. } => PackedConv::len_for(geom) as u128,
                _ => 0,
            })
            .sum();
        let n = InferNeeds::of(plan, lane_prefix(plan), batch, threads);
        4 * (weights + packed + 2 * n.buf as u128 + 2 * n.lane_buf as u128 + n.scratch as u128)
            + Self::gemm_bytes(plan, batch, threads)
    }

    /// The part of [`Executor::estimate_bytes`] for `gemm`'s own buffers (wide linear layers):
    /// an upper bound, since `gemm` decides by its size heuristics whether to allocate them.
    pub fn gemm_bytes(plan: &Plan, batch: usize, threads: usize) -> u128 {
        let threads = resolve_threads(threads);
        plan.steps
            .iter()
            .map(|s| match &s.op {
                Op::Linear { geom, .. } => kernels::linear_gemm_bytes(geom, batch, threads),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// Runs `batch` images (`input` is `[batch, …input_shape]`, flat) and returns the outputs,
    /// `[batch, …output_shape]`, flat. Only the input length is checked.
    pub fn forward(&mut self, input: &[f32], batch: usize) -> Result<&[f32], ExecError> {
        let expected = self.plan.input_len() * batch;
        if input.len() != expected {
            return Err(ExecError::InputLength {
                found: input.len(),
                expected,
                batch,
                shape: self.plan.input_shape.clone(),
            });
        }
        self.reserve(batch)?;
        let start = if self.uses_lanes(batch) {
            self.lane_end
        } else {
            0
        };
        let Executor {
            plan,
            weights,
            kernels,
            bufs,
            scratch,
            pool,
            lane_bufs,
            ..
        } = self;
        pool.install(|| {
            if start > 0 {
                let mut lr = LaneRun::new(plan, batch, input, lane_bufs);
                for step in &plan.steps[..start] {
                    lr.step(plan, weights, step, scratch);
                }
                lr.finish(plan, start, bufs);
            }
            for (step, kernel) in plan.steps.iter().zip(kernels.iter()).skip(start) {
                run_step(plan, weights, step, kernel, batch, input, bufs, scratch);
            }
        });
        let n = plan.output_len() * batch;
        Ok(match plan.output {
            // A model with no kernel calls (only flatten/dropout): the output is the input.
            Loc::Input => {
                self.bufs[0][..n].copy_from_slice(&input[..n]);
                &self.bufs[0][..n]
            }
            Loc::Buf(i) => &self.bufs[i as usize][..n],
        })
    }

    /// Runs the batch once, timing each step: `(path, seconds)` per kernel call, for per-layer
    /// GFLOP/s reports.
    pub fn profile(
        &mut self,
        input: &[f32],
        batch: usize,
    ) -> Result<Vec<(String, f64)>, ExecError> {
        self.forward(input, batch)?;
        let start = if self.uses_lanes(batch) {
            self.lane_end
        } else {
            0
        };
        let Executor {
            plan,
            weights,
            kernels,
            bufs,
            scratch,
            pool,
            lane_bufs,
            ..
        } = self;
        let mut times = Vec::with_capacity(plan.steps.len());
        pool.install(|| {
            if start > 0 {
                // The conversions to and from lanes are timed with the first and last step.
                let t = std::time::Instant::now();
                let mut lr = LaneRun::new(plan, batch, input, lane_bufs);
                for (k, step) in plan.steps[..start].iter().enumerate() {
                    let t0 = if k == 0 { t } else { std::time::Instant::now() };
                    lr.step(plan, weights, step, scratch);
                    if k + 1 == start {
                        lr.finish(plan, start, bufs);
                    }
                    let path = format!("{} (lanes)", step.path);
                    times.push((path, t0.elapsed().as_secs_f64()));
                }
            }
            for (step, kernel) in plan.steps.iter().zip(kernels.iter()).skip(start) {
                let t = std::time::Instant::now();
                run_step(plan, weights, step, kernel, batch, input, bufs, scratch);
                times.push((step.path.clone(), t.elapsed().as_secs_f64()));
            }
        });
        Ok(times)
    }

    /// Runs an ndarray batch `[N, …input_shape]`, checking its trailing dimensions once.
    pub fn forward_array(&mut self, input: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>, ExecError> {
        let shape = input.shape().to_vec();
        if shape.len() != self.plan.input_shape.len() + 1 || shape[1..] != self.plan.input_shape[..]
        {
            return Err(ExecError::InputShape {
                found: shape,
                expected: self.plan.input_shape.clone(),
            });
        }
        let batch = shape[0];
        let data: std::borrow::Cow<'_, [f32]> = match input.as_slice() {
            Some(s) => s.into(),
            None => input.iter().copied().collect::<Vec<_>>().into(),
        };
        let mut out_shape = vec![batch];
        out_shape.extend(&self.plan.output_shape);
        let out = self.forward(&data, batch)?.to_vec();
        ArrayD::from_shape_vec(IxDyn(&out_shape), out).map_err(|e| ExecError::InputShape {
            found: vec![e.to_string().len()],
            expected: vec![],
        })
    }
}

/// What [`Executor::reserve`] allocates for `batch` images, in floats.
struct InferNeeds {
    /// Each ping-pong buffer.
    buf: usize,
    /// Each lane buffer (0 without the lane path).
    lane_buf: usize,
    /// The shared scratch.
    scratch: usize,
}

impl InferNeeds {
    fn of(plan: &Plan, lane_end: usize, batch: usize, threads: usize) -> InferNeeds {
        let buf = plan.buffer_len.max(plan.output_len()).saturating_mul(batch);
        let mut scratch = plan
            .steps
            .iter()
            .map(|s| match &s.op {
                Op::Conv2d { geom, .. } => PackedConv::scratch_len_for(geom, batch, threads),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let mut lane_buf = 0;
        if lane_end > 0 && batch >= LANES {
            let lb = lanes::lane_slots(batch) * LANES;
            let steps = &plan.steps[..lane_end];
            let most = steps
                .iter()
                .map(|s| s.out_len)
                .chain([plan.input_len()])
                .max()
                .unwrap_or(0);
            lane_buf = most.saturating_mul(lb);
            for s in steps {
                if let Op::Conv2d { geom, .. } = &s.op {
                    scratch = scratch.max(lanes::conv2d_lanes_scratch_len(geom));
                }
            }
        }
        InferNeeds {
            buf,
            lane_buf,
            scratch,
        }
    }
}

/// `threads`, with 0 meaning one per core (as rayon counts them).
pub(crate) fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// The plan's lane prefix ([`Plan::lane_prefix`]), if every convolution in it has a geometry
/// the lane kernels take.
fn lane_prefix(plan: &Plan) -> usize {
    let end = plan.lane_prefix();
    let usable = plan.steps[..end].iter().all(|s| step::runs_on_lanes(&s.op));
    if usable { end } else { 0 }
}

/// The state of one batch going through the lane prefix: which lane buffer holds the current
/// activation, and its per-image length.
struct LaneRun<'a> {
    batch: usize,
    slots: usize,
    bufs: &'a mut [AlignedBuf; 2],
    cur: usize,
    len: usize,
}

impl<'a> LaneRun<'a> {
    /// Converts the network input into lane buffer 0.
    fn new(plan: &Plan, batch: usize, input: &[f32], bufs: &'a mut [AlignedBuf; 2]) -> Self {
        let slots = lanes::lane_slots(batch);
        let len = plan.input_len();
        lanes::to_lanes(batch, len, input, &mut bufs[0][..slots * len * LANES]);
        LaneRun {
            batch,
            slots,
            bufs,
            cur: 0,
            len,
        }
    }

    /// Runs one step of the lane prefix: in place where the plan says so, else into the other
    /// lane buffer.
    fn step(&mut self, plan: &Plan, weights: &Weights, step: &Step, scratch: &mut [f32]) {
        let layout = Layout::Lanes(self.slots);
        let p = params(plan, weights, step, None);
        let [b0, b1] = &mut *self.bufs;
        let (cur, other) = if self.cur == 0 { (b0, b1) } else { (b1, b0) };
        if step.src == step.dst {
            step::forward(step, layout, None, cur, &p, None, scratch);
        } else {
            step::forward(step, layout, Some(cur), other, &p, None, scratch);
            self.cur ^= 1;
        }
        self.len = step.out_len;
    }

    /// Converts the lane prefix's result into the plan buffer step `end − 1` writes, where the
    /// rest of the plan expects it.
    fn finish(&mut self, plan: &Plan, end: usize, bufs: &mut [AlignedBuf; 2]) {
        let Loc::Buf(i) = plan.steps[end - 1].dst else {
            unreachable!("lane_prefix ends at a step writing a buffer")
        };
        let n = self.slots * self.len * LANES;
        lanes::from_lanes(
            self.batch,
            self.len,
            &self.bufs[self.cur][..n],
            &mut bufs[i as usize][..self.len * self.batch],
        );
    }
}

fn tensor<'w>(weights: &'w Weights, plan: &Plan, i: usize) -> &'w [f32] {
    // Presence and lengths were checked in Executor::new.
    weights.get(&plan.tensors[i].name).unwrap_or(&[])
}

/// The parameters of `step`, with its packed convolution when the executor has one.
fn params<'a>(
    plan: &Plan,
    weights: &'a Weights,
    step: &Step,
    kernel: Option<&'a Kernel>,
) -> Params<'a> {
    let mut p = Params::of(step, |i| tensor(weights, plan, i));
    if let Some(Kernel::Conv(c)) = kernel {
        p.packed = Some(c);
    }
    p
}

#[expect(
    clippy::too_many_arguments,
    reason = "the executor's parts, split for the borrow checker"
)]
fn run_step(
    plan: &Plan,
    weights: &Weights,
    step: &Step,
    kernel: &Kernel,
    batch: usize,
    input: &[f32],
    bufs: &mut [AlignedBuf; 2],
    scratch: &mut [f32],
) {
    let [b0, b1] = bufs;
    // (source, destination); in-place steps get the destination only.
    let (src, dst): (Option<&[f32]>, &mut [f32]) = match (step.src, step.dst) {
        (Loc::Input, Loc::Buf(0)) => (Some(input), b0),
        (Loc::Input, _) => (Some(input), b1),
        (Loc::Buf(0), Loc::Buf(1)) => (Some(&b0[..]), b1),
        (Loc::Buf(1), Loc::Buf(0)) => (Some(&b1[..]), b0),
        (Loc::Buf(0), _) => (None, b0),
        (_, _) => (None, b1),
    };
    let p = params(plan, weights, step, Some(kernel));
    step::forward(step, Layout::Images(batch), src, dst, &p, None, scratch);
}
