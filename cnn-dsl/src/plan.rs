//! Lowering a checked model to an inference plan: the list of kernel calls with every size
//! resolved, and a buffer plan.
//!
//! Buffer plan: activations live in two ping-pong buffers, each sized for the largest layer
//! output. A layer reads the current buffer (or the caller's input) and writes the other one;
//! element-wise layers (activations, batch norm at inference) run in place; `flatten` and
//! `dropout` (identity at inference) cost nothing; a ReLU/LeakyReLU right after a conv2d is fused
//! into the convolution's epilogue. The interpreter in `cnn-runtime` and the generated code both
//! follow this plan, so they allocate nothing per call once sized for a batch.

use crate::check::{Activation, CheckedModel, Op, ParamTensor};
use crate::ir::PoolKind;

/// Where a step reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// The caller's input slice (read-only).
    Input,
    /// Ping-pong buffer 0 or 1.
    Buf(u8),
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
    /// running mean, running var (batchnorm).
    pub params: Vec<usize>,
    /// Multiply-adds per image.
    pub macs: u64,
    /// Elements per image written.
    pub out_len: usize,
}

/// An inference plan for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Model name.
    pub name: String,
    /// Per-image input shape.
    pub input_shape: Vec<usize>,
    /// Per-image output shape.
    pub output_shape: Vec<usize>,
    /// The `state_dict` in order.
    pub tensors: Vec<ParamTensor>,
    /// Kernel calls in order.
    pub steps: Vec<Step>,
    /// Per-image length of each ping-pong buffer.
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
    /// Activation memory of the plan for `batch` images, in floats (two buffers).
    pub fn activation_floats(&self, batch: usize) -> usize {
        2 * self.buffer_len * batch
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

fn other(l: Loc) -> Loc {
    match l {
        Loc::Buf(0) => Loc::Buf(1),
        _ => Loc::Buf(0),
    }
}

/// Builds the inference plan of a checked model.
pub fn plan(model: &CheckedModel) -> Plan {
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
        let out_len: usize = l.output.iter().product::<u64>() as usize;
        let params: Vec<usize> = l.tensors.iter().filter_map(|t| index_of(&t.name)).collect();
        let mut path = l.layer.path.clone();
        match &l.op {
            Op::Flatten { .. } | Op::Dropout { .. } => {
                i += 1;
                continue;
            }
            Op::Activation { .. } | Op::BatchNorm2d { .. } => {
                // In place, unless the data is still the caller's input.
                let dst = if cur == Loc::Input { Loc::Buf(0) } else { cur };
                buffer_len = buffer_len.max(out_len);
                steps.push(Step {
                    path,
                    op: l.op.clone(),
                    fused: None,
                    src: cur,
                    dst,
                    params,
                    macs: l.macs,
                    out_len,
                });
                cur = dst;
            }
            op => {
                let mut fused = None;
                if let (Op::Conv2d { .. }, Some(next)) = (op, layers.get(i + 1))
                    && let Op::Activation {
                        act: act @ (Activation::Relu | Activation::LeakyRelu(_)),
                        ..
                    } = next.op
                {
                    fused = Some(act);
                    path = format!("{path}+{}", next.layer.path);
                    i += 1;
                }
                let dst = other(cur);
                buffer_len = buffer_len.max(out_len);
                steps.push(Step {
                    path,
                    op: op.clone(),
                    fused,
                    src: cur,
                    dst,
                    params,
                    macs: l.macs,
                    out_len,
                });
                cur = dst;
            }
        }
        i += 1;
    }
    Plan {
        name: model.name().to_string(),
        input_shape: us(model.input_shape()),
        output_shape: us(model.output_shape()),
        tensors,
        steps,
        buffer_len,
        output: cur,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SourceMap, compile_source};

    #[test]
    fn seed_plan_fuses_relu_and_ping_pongs() {
        let text = include_str!("../../examples/models/seed.cnn");
        let m = compile_source(&mut SourceMap::new(), "seed.cnn", text).unwrap();
        let p = plan(&m);
        let paths: Vec<_> = p.steps.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "conv1.0+conv1.1",
                "conv1.2",
                "conv2.0+conv2.1",
                "conv2.2+conv2.3",
                "conv2.4",
                "conv3.0+conv3.1",
                "out"
            ]
        );
        assert_eq!(p.steps[0].src, Loc::Input);
        for w in p.steps.windows(2) {
            assert_eq!(w[0].dst, w[1].src);
            assert_ne!(w[1].src, w[1].dst);
        }
        assert_eq!(p.buffer_len, 16 * 28 * 28);
        assert_eq!(p.steps[6].params, [8, 9]);
        assert_eq!(p.output_len(), 10);
    }
}
