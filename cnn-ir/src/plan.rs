//! Lowering a checked model to a plan: the list of kernel calls with every size resolved, which
//! activation is fused into which convolution, and where each step reads and writes. One planner
//! ([`plan`]) serves inference and training ([`Mode`]); the interpreter, the trainer and the
//! generated code all follow its output, and generated code embeds it as Rust data.
//!
//! **Inference** ([`Mode::Infer`]): activations live in two ping-pong buffers, each sized for the
//! largest layer output. A layer reads the current buffer (or the caller's input) and writes the
//! other one; element-wise layers (activations, batch norm at inference) run in place; `flatten`
//! and `dropout` (identity at inference) cost nothing.
//!
//! **Training** ([`Mode::Train`]): every step writes its own buffer, alive until the backward
//! pass has used it; `dropout` is a step; a `flatten` is a step that writes nothing (its `dst` is
//! its `src`) unless it is the last one.
//!
//! **Fusion** ([`fuses`]): an activation right after a conv2d runs in the convolution's epilogue.
//! The interpreter, the trainer and the code generator allocate nothing per call once sized for
//! a batch.

use crate::checked::{Activation, CheckedModel, Op, ParamTensor};
use crate::ir::PoolKind;

/// What a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Forward only: two ping-pong buffers, batch norm with running statistics, no dropout.
    Infer,
    /// Forward and backward: every step's output kept for the backward pass.
    Train,
}

/// Where a step reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// The caller's input slice (read-only).
    Input,
    /// Buffer `k`: one of the two ping-pong buffers (0 or 1) in an inference plan; the buffer of
    /// step `k` in a training plan.
    Buf(u32),
}

/// One kernel call.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The layer path(s), e.g. `conv1.0+conv1.1` for a fused conv+ReLU.
    pub path: String,
    /// The resolved operation.
    pub op: Op,
    /// An activation fused into the step's epilogue (conv2d only).
    pub fused: Option<Activation>,
    /// Source.
    pub src: Loc,
    /// Destination; equal to `src` for an in-place step.
    pub dst: Loc,
    /// Indices into [`Plan::tensors`]: weight, then bias (conv/linear); weight, bias,
    /// running mean, running var, num_batches_tracked (batchnorm).
    pub params: Vec<usize>,
    /// Multiply-adds per image.
    pub macs: u64,
    /// Elements per image read.
    pub in_len: usize,
    /// Elements per image written.
    pub out_len: usize,
}

/// A plan for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Model name.
    pub name: String,
    /// What the plan is for.
    pub mode: Mode,
    /// Per-image input shape.
    pub input_shape: Vec<usize>,
    /// Per-image output shape.
    pub output_shape: Vec<usize>,
    /// The `state_dict` in order.
    pub tensors: Vec<ParamTensor>,
    /// Kernel calls in order.
    pub steps: Vec<Step>,
    /// Per-image length of each ping-pong buffer (inference); of the largest step output
    /// (training).
    pub buffer_len: usize,
    /// Where the output ends up (`Input` only for a model with no steps).
    pub output: Loc,
}

impl Plan {
    /// Elements of one input image.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
    /// Elements of one output image.
    pub fn output_len(&self) -> usize {
        self.output_shape.iter().product()
    }
    /// Activation memory of the plan for `batch` images, in floats: two buffers for inference,
    /// every step's own buffer for training (saturating).
    pub fn activation_floats(&self, batch: usize) -> usize {
        match self.mode {
            Mode::Infer => self.buffer_len.saturating_mul(2).saturating_mul(batch),
            Mode::Train => self
                .steps
                .iter()
                .filter(|s| s.src != s.dst)
                .fold(0usize, |a, s| a.saturating_add(s.out_len))
                .saturating_mul(batch),
        }
    }

    /// How many leading steps can run on lane tensors (slots of 16 images, see the runtime's
    /// `lanes` module) for batches that fill their slots: convolutions (fused activations
    /// included), max pools and element-wise activations, ending at a step that writes a
    /// buffer, with at least one convolution among them (otherwise the conversions would
    /// cost more than they save). 0 when no prefix qualifies. The interpreter and the
    /// generated code both follow it.
    pub fn lane_prefix(&self) -> usize {
        let mut end = 0;
        let mut convs = 0;
        for (k, step) in self.steps.iter().enumerate() {
            let ok = matches!(
                step.op,
                Op::Conv2d { .. }
                    | Op::Pool2d {
                        kind: PoolKind::Max,
                        ..
                    }
                    | Op::Activation { .. }
            );
            if !ok || !matches!(step.dst, Loc::Buf(_)) {
                break;
            }
            convs += usize::from(matches!(step.op, Op::Conv2d { .. }));
            end = k + 1;
        }
        if convs == 0 { 0 } else { end }
    }

    /// Per-image length of the lane buffers of [`Plan::lane_prefix`]: the largest of the
    /// input and the prefix's outputs.
    pub fn lane_len(&self) -> usize {
        self.steps[..self.lane_prefix()]
            .iter()
            .map(|s| s.out_len)
            .chain([self.input_len()])
            .max()
            .unwrap_or(0)
    }
}

/// The fusion rule: whether `act`, right after a conv2d, runs in the convolution's epilogue.
/// ReLU and LeakyReLU fuse. For training the backward pass must recover the activation's
/// derivative from the fused output alone, which holds when the output has the sign of the input:
/// ReLU, and LeakyReLU with a positive slope (a negative slope flips it).
pub fn fuses(act: Activation, mode: Mode) -> bool {
    match act {
        Activation::Relu => true,
        Activation::LeakyRelu(slope) => mode == Mode::Infer || slope > 0.0,
        Activation::Sigmoid | Activation::Tanh | Activation::Gelu => false,
    }
}

fn other(l: Loc) -> Loc {
    match l {
        Loc::Buf(0) => Loc::Buf(1),
        _ => Loc::Buf(0),
    }
}

/// Builds the plan of a checked model for `mode`.
pub fn plan(model: &CheckedModel, mode: Mode) -> Plan {
    let us = |d: &[u64]| d.iter().map(|x| *x as usize).collect::<Vec<_>>();
    let tensors: Vec<ParamTensor> = model.tensors().cloned().collect();
    let index_of = |name: &str| tensors.iter().position(|t| t.name == name);
    let mut steps: Vec<Step> = Vec::new();
    let mut cur = Loc::Input;
    let mut buffer_len = 0usize;
    let layers = model.layers();
    let mut i = 0;
    while i < layers.len() {
        let l = &layers[i];
        let in_len: usize = l.input.iter().product::<u64>() as usize;
        let out_len: usize = l.output.iter().product::<u64>() as usize;
        let params: Vec<usize> = l.tensors.iter().filter_map(|t| index_of(&t.name)).collect();
        let mut path = l.layer.path.clone();
        let mut fused = None;
        if let (Op::Conv2d { .. }, Some(next)) = (&l.op, layers.get(i + 1))
            && let Op::Activation { act, .. } = next.op
            && fuses(act, mode)
        {
            fused = Some(act);
            path = format!("{path}+{}", next.layer.path);
            i += 1;
        }
        let dst =
            match (mode, &l.op) {
                (Mode::Infer, Op::Flatten { .. } | Op::Dropout { .. }) => {
                    i += 1;
                    continue;
                }
                // In place, unless the data is still the caller's input.
                (Mode::Infer, Op::Activation { .. } | Op::BatchNorm2d { .. }) => {
                    if cur == Loc::Input { Loc::Buf(0) } else { cur }
                }
                (Mode::Infer, _) => other(cur),
                // Flattening contiguous NCHW data is the identity: the step reuses its source,
                // except as the last step, whose buffer is the model's output.
                (Mode::Train, Op::Flatten { .. }) if i + 1 < layers.len() => cur,
                (Mode::Train, _) => Loc::Buf(u32::try_from(steps.len()).unwrap_or(u32::MAX)),
            };
        buffer_len = buffer_len.max(out_len);
        steps.push(Step {
            path,
            op: l.op.clone(),
            fused,
            src: cur,
            dst,
            params,
            macs: l.macs,
            in_len,
            out_len,
        });
        cur = dst;
        i += 1;
    }
    Plan {
        name: model.name().to_string(),
        mode,
        input_shape: us(model.input_shape()),
        output_shape: us(model.output_shape()),
        tensors,
        steps,
        buffer_len,
        output: cur,
    }
}
