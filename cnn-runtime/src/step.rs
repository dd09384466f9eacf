//! The op dispatcher: the forward and the backward of one plan step, for both activation
//! layouts (image-major and lane tensors) and both modes (inference and training).
//!
//! This is the one place that matches an [`Op`] to its kernels at run time. The executor
//! ([`crate::exec`]) and the trainer ([`crate::train`]) are loops over a plan: they route
//! buffers (which slice a step reads and writes, where the lane region begins and ends) and
//! hand each step here. Adding a layer kind adds one arm to [`forward`] and one to `backward`,
//! next to its kernels.
//!
//! Slices may be longer than the step needs: each function takes the first
//! `in_len`/`out_len × images` values, images being the batch, or the slots' 16 lanes each
//! for the lane layout.

use cnn_ir::checked::{Activation, Op};
use cnn_ir::ir::PoolKind;
use cnn_ir::plan::Step;

use crate::kernels::{self, Activation as KAct, BatchNormParams, DropoutRng, PackedConv};
use crate::lanes::{self, LANES};

/// How a step's activations are laid out in its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Image-major `[batch][…]` (NCHW), this many images.
    Images(usize),
    /// Lane tensors ([`crate::lanes`]): this many slots of [`LANES`] images.
    Lanes(usize),
}

impl Layout {
    /// Images the buffers hold (a lane layout counts every lane of its slots).
    pub(crate) fn images(self) -> usize {
        match self {
            Layout::Images(b) => b,
            Layout::Lanes(s) => s * LANES,
        }
    }
}

/// Whether the lane layout has kernels for `op` (with the geometry it has).
pub(crate) fn runs_on_lanes(op: &Op) -> bool {
    match op {
        Op::Conv2d { geom, .. } => lanes::conv2d_lanes_usable(geom),
        Op::Pool2d {
            kind: PoolKind::Max,
            ..
        }
        | Op::Activation { .. } => true,
        _ => false,
    }
}

/// Whether `op` may run in place (its plan step reads and writes the same buffer).
pub(crate) fn runs_in_place(op: &Op) -> bool {
    matches!(
        op,
        Op::Activation { .. } | Op::BatchNorm2d { .. } | Op::Dropout { .. } | Op::Flatten { .. }
    )
}

/// The parameter tensors of a step, in the order of [`Step::params`] (weight, bias; batch norm:
/// weight, bias, running mean, running var). Absent ones are empty.
pub(crate) struct Params<'a> {
    /// The tensors.
    pub tensors: [&'a [f32]; 4],
    /// The step's convolution packed ahead with its bias and fused activation (the executor);
    /// `None` packs per call (the trainer, whose weights change every step).
    pub packed: Option<&'a PackedConv>,
}

impl<'a> Params<'a> {
    /// The tensors `step` names, looked up by `get` (an index into the plan's tensors).
    pub(crate) fn of(step: &Step, get: impl Fn(usize) -> &'a [f32]) -> Self {
        let mut tensors: [&[f32]; 4] = [&[]; 4];
        for (t, &i) in tensors.iter_mut().zip(&step.params) {
            *t = get(i);
        }
        Params {
            tensors,
            packed: None,
        }
    }
}

/// What a training-mode forward saves for the backward (each empty where the op saves nothing).
pub(crate) struct Saved<'a> {
    /// Max pool: the argmax of each output.
    pub pool_idx: &'a mut [u32],
    /// Batch norm: the batch mean of each channel.
    pub bn_mean: &'a mut [f32],
    /// Batch norm: the inverse standard deviation of each channel.
    pub bn_inv_std: &'a mut [f32],
    /// Dropout: the mask.
    pub mask: &'a mut [u8],
}

/// A batch norm's running mean and variance, updated by its training-mode forward.
pub(crate) type Running<'a> = (&'a mut [f32], &'a mut [f32]);

/// A training-mode forward: what it saves and the state it advances.
pub(crate) struct Train<'a> {
    /// Values for the backward.
    pub saved: Saved<'a>,
    /// Batch norm: the running mean and variance, updated in place.
    pub running: Option<Running<'a>>,
    /// Dropout masks' generator.
    pub rng: &'a mut DropoutRng,
}

/// The kernel epilogue for an activation fused into a convolution.
pub(crate) fn kernel_act(fused: Option<Activation>) -> KAct {
    match fused {
        Some(Activation::Relu) => KAct::Relu,
        Some(Activation::LeakyRelu(s)) => KAct::LeakyRelu(s),
        _ => KAct::Identity,
    }
}

/// Runs the forward of `step` from `src` into `dst` (`src = None`: in place on `dst`, for the
/// ops of [`runs_in_place`]), in inference mode or, with `train`, in training mode (batch
/// statistics, dropout, saved argmax).
///
/// # Panics
/// If the layout or the in-place routing is one the op has no kernel for, or a slice is too
/// short: a plan the caller validated never does that.
pub(crate) fn forward(
    step: &Step,
    layout: Layout,
    src: Option<&[f32]>,
    dst: &mut [f32],
    p: &Params<'_>,
    train: Option<&mut Train<'_>>,
    scratch: &mut [f32],
) {
    let n = layout.images();
    let dst = &mut dst[..step.out_len * n];
    let src = src.map(|s| &s[..step.in_len * n]);
    assert!(
        matches!(layout, Layout::Images(_)) || runs_on_lanes(&step.op),
        "step `{}` has no lane kernel",
        step.path
    );
    // Ops that cannot run in place read `input()`.
    let input = || match src {
        Some(s) => s,
        None => panic!("step `{}` cannot run in place", step.path),
    };
    let [t0, t1, t2, t3] = p.tensors;
    match &step.op {
        &Op::Conv2d { ref geom, bias } => {
            let (b, act) = (bias.then_some(t1), kernel_act(step.fused));
            match (layout, p.packed) {
                (Layout::Lanes(slots), _) => {
                    lanes::conv2d_lanes(geom, slots, input(), t0, b, act, dst, scratch);
                }
                (Layout::Images(batch), Some(c)) => c.run(batch, input(), dst, scratch),
                (Layout::Images(batch), None) => {
                    kernels::conv2d_act(geom, batch, input(), t0, b, act, dst, scratch);
                }
            }
        }
        Op::Pool2d { kind, geom: g } => {
            // Argmax indices: saved (and allocated) for max pools only.
            let idx = train
                .filter(|_| *kind == PoolKind::Max)
                .map(|t| &mut t.saved.pool_idx[..step.out_len * n]);
            match (kind, layout, idx) {
                (PoolKind::Max, Layout::Lanes(s), Some(i)) => {
                    lanes::max_pool2d_lanes_forward(g, s, input(), dst, i);
                }
                (PoolKind::Max, Layout::Lanes(s), None) => {
                    lanes::max_pool2d_lanes(g, s, input(), dst);
                }
                (PoolKind::Max, Layout::Images(b), Some(i)) => {
                    kernels::max_pool2d_train_forward(g, b, input(), dst, i);
                }
                (PoolKind::Max, Layout::Images(b), None) => {
                    kernels::max_pool2d(g, b, input(), dst);
                }
                (PoolKind::Avg, _, _) => kernels::avg_pool2d(g, n, input(), dst),
            }
        }
        Op::AdaptiveAvgPool2d(g) => kernels::adaptive_avg_pool2d(g, n, input(), dst),
        &Op::BatchNorm2d {
            eps,
            momentum,
            geom,
        } => match train {
            Some(t) => {
                let Some((mean, var)) = t.running.as_mut() else {
                    panic!(
                        "step `{}`: batch norm trains with its running statistics",
                        step.path
                    )
                };
                let s = &mut t.saved;
                kernels::batch_norm2d_train_forward(
                    &geom,
                    n,
                    input(),
                    t0,
                    t1,
                    eps,
                    momentum,
                    mean,
                    var,
                    dst,
                    s.bn_mean,
                    s.bn_inv_std,
                );
            }
            None => {
                if let Some(s) = src {
                    dst.copy_from_slice(s);
                }
                let params = BatchNormParams {
                    gamma: Some(t0),
                    beta: Some(t1),
                    mean: t2,
                    var: t3,
                    eps,
                };
                kernels::batch_norm2d_inplace(&geom, n, dst, &params);
            }
        },
        Op::Activation { act, .. } => match src {
            Some(s) => activation(*act, s, dst),
            None => activation_inplace(*act, dst),
        },
        &Op::Dropout { p: rate, .. } => match train {
            Some(t) => {
                let rng = &mut *t.rng;
                let mask = &mut t.saved.mask[..step.out_len * n];
                kernels::dropout_train_forward(rate, input(), &mut || rng.next_u32(), mask, dst);
            }
            None => {
                if let Some(s) = src {
                    dst.copy_from_slice(s);
                }
            }
        },
        Op::Flatten { .. } => {
            if let Some(s) = src {
                dst.copy_from_slice(s);
            }
        }
        &Op::Linear { geom, bias } => {
            kernels::linear(&geom, n, input(), t0, bias.then_some(t1), dst);
        }
        &Op::Softmax {
            log,
            outer,
            axis,
            inner,
        } => {
            if inner == 1 {
                if log {
                    kernels::log_softmax(n * outer, axis, input(), dst);
                } else {
                    kernels::softmax(n * outer, axis, input(), dst);
                }
            } else {
                kernels::softmax_channels(n * outer, axis, inner, input(), dst);
                if log {
                    dst.iter_mut().for_each(|v| *v = v.ln());
                }
            }
        }
    }
}

/// An element-wise activation, out of place (any layout).
fn activation(act: Activation, src: &[f32], dst: &mut [f32]) {
    match act {
        Activation::Relu => kernels::relu(src, dst),
        Activation::LeakyRelu(s) => kernels::leaky_relu(s, src, dst),
        Activation::Sigmoid => kernels::sigmoid(src, dst),
        Activation::Tanh => kernels::tanh(src, dst),
        Activation::Gelu => kernels::gelu(src, dst),
    }
}

/// An element-wise activation, in place (any layout).
fn activation_inplace(act: Activation, x: &mut [f32]) {
    match act {
        Activation::Relu => kernels::relu_inplace(x),
        Activation::LeakyRelu(a) => kernels::leaky_relu_inplace(a, x),
        Activation::Sigmoid => kernels::sigmoid_inplace(x),
        Activation::Tanh => kernels::tanh_inplace(x),
        Activation::Gelu => kernels::gelu_inplace(x),
    }
}

#[cfg(feature = "train")]
pub(crate) use backward::{Grads, backward};

#[cfg(feature = "train")]
mod backward {
    use super::{Layout, Params, Saved};
    use crate::grad;
    use crate::lanes;
    use cnn_ir::checked::{Activation, Op};
    use cnn_ir::ir::PoolKind;
    use cnn_ir::plan::Step;

    /// The slices one step's backward reads and writes.
    pub(crate) struct Grads<'a> {
        /// The step's input, as the forward read it.
        pub src: &'a [f32],
        /// The step's output, as the forward wrote it.
        pub out: &'a [f32],
        /// The gradient of the loss w.r.t. the output; the backward of a fused activation is
        /// applied to it in place.
        pub d_out: &'a mut [f32],
        /// The gradient w.r.t. the input, overwritten; `None` when nothing needs it (the first
        /// step).
        pub d_in: Option<&'a mut [f32]>,
        /// The gradient of the weight (batch norm: of gamma), overwritten.
        pub d_weight: Option<&'a mut [f32]>,
        /// The gradient of the bias (batch norm: of beta), overwritten.
        pub d_bias: Option<&'a mut [f32]>,
    }

    /// Runs the backward of `step` after its training-mode forward (whose saved values are in
    /// `saved`). `relu_before` says whether the step before it ends in a fused ReLU, which a max
    /// pool's backward then applies in the same pass; `relu_applied` carries that fact to the
    /// step before (set here, consumed when that step's fused activation is differentiated).
    ///
    /// # Panics
    /// If the layout is one the op has no kernel for, or a slice is too short or a tensor or
    /// gradient the op needs is missing: a plan the caller validated never does that.
    #[expect(
        clippy::too_many_arguments,
        reason = "one step's operands, split for the borrow checker"
    )]
    pub(crate) fn backward(
        step: &Step,
        layout: Layout,
        g: Grads<'_>,
        p: &Params<'_>,
        saved: &Saved<'_>,
        relu_before: bool,
        relu_applied: &mut bool,
        scratch: &mut [f32],
    ) {
        let n = layout.images();
        let src = &g.src[..step.in_len * n];
        let out = &g.out[..step.out_len * n];
        let d_out = &mut g.d_out[..step.out_len * n];
        fused_backward(step.fused, relu_applied, out, d_out);
        let d_out: &[f32] = d_out;
        let d_in = g.d_in.map(|d| &mut d[..step.in_len * n]);
        let w = p.tensors[0];
        let batch = match layout {
            Layout::Images(b) => b,
            Layout::Lanes(_) => 0,
        };
        match (&step.op, layout) {
            (Op::Conv2d { geom, .. }, Layout::Lanes(slots)) => {
                let (dw, db) = (need(g.d_weight, step), g.d_bias);
                grad::conv2d_backward_lanes(geom, slots, src, w, d_out, d_in, dw, db, scratch);
            }
            (Op::Conv2d { geom, .. }, Layout::Images(b)) => {
                let (dw, db) = (need(g.d_weight, step), g.d_bias);
                grad::conv2d_backward(geom, b, src, w, d_out, d_in, dw, db, scratch);
            }
            (Op::Pool2d { kind, geom }, _) => {
                let Some(d_in) = d_in else { return };
                // Argmax indices: saved for max pools only.
                let idx = || &saved.pool_idx[..step.out_len * n];
                match (kind, layout) {
                    (PoolKind::Max, Layout::Lanes(slots)) => {
                        // ReLU (fused into the step before) then max pool: one pass; the
                        // pooled maxima carry the ReLU's sign.
                        let relu = relu_before.then_some(out);
                        lanes::max_pool2d_lanes_backward(geom, slots, idx(), relu, d_out, d_in);
                        *relu_applied = relu_before;
                    }
                    (PoolKind::Max, _) if relu_before => {
                        grad::max_pool2d_relu_backward(geom, batch, idx(), src, d_out, d_in);
                        *relu_applied = true;
                    }
                    (PoolKind::Max, _) => {
                        grad::max_pool2d_backward(geom, batch, idx(), d_out, d_in);
                    }
                    (PoolKind::Avg, _) => grad::avg_pool2d_backward(geom, batch, d_out, d_in),
                }
            }
            (Op::AdaptiveAvgPool2d(geom), _) => {
                if let Some(d_in) = d_in {
                    grad::adaptive_avg_pool2d_backward(geom, batch, d_out, d_in);
                }
            }
            (Op::BatchNorm2d { geom, .. }, _) => {
                let (dw, db) = (need(g.d_weight, step), need(g.d_bias, step));
                let (mean, inv_std) = (&*saved.bn_mean, &*saved.bn_inv_std);
                grad::batch_norm2d_backward(
                    geom, batch, src, w, mean, inv_std, d_out, d_in, dw, db,
                );
            }
            (Op::Activation { act, .. }, _) => {
                if let Some(d_in) = d_in {
                    activation_backward(*act, src, out, d_out, d_in);
                }
            }
            (&Op::Dropout { p: rate, .. }, _) => {
                if let Some(d_in) = d_in {
                    let mask = &saved.mask[..step.out_len * n];
                    grad::dropout_backward(rate, mask, d_out, d_in);
                }
            }
            (Op::Flatten { .. }, _) => {
                if let Some(d_in) = d_in {
                    d_in.copy_from_slice(d_out);
                }
            }
            (Op::Linear { geom, .. }, _) => {
                let (dw, db) = (need(g.d_weight, step), g.d_bias);
                grad::linear_backward(geom, batch, src, w, d_out, d_in, dw, db);
            }
            (&Op::Softmax { log, axis, .. }, _) => {
                if let Some(d_in) = d_in {
                    if log {
                        grad::log_softmax_backward(out, d_out, axis, d_in);
                    } else {
                        grad::softmax_backward(out, d_out, axis, d_in);
                    }
                }
            }
        }
    }

    /// A gradient the op writes, which the caller must have given.
    fn need<'a>(d: Option<&'a mut [f32]>, step: &Step) -> &'a mut [f32] {
        match d {
            Some(d) => d,
            None => panic!("step `{}` trains without a parameter gradient", step.path),
        }
    }

    /// An element-wise activation's backward (any layout), from its input `src` or output `out`.
    fn activation_backward(
        act: Activation,
        src: &[f32],
        out: &[f32],
        d_out: &[f32],
        d_in: &mut [f32],
    ) {
        match act {
            Activation::Relu => grad::relu_backward(src, d_out, d_in),
            Activation::LeakyRelu(s) => grad::leaky_relu_backward(src, s, d_out, d_in),
            Activation::Sigmoid => grad::sigmoid_backward(out, d_out, d_in),
            Activation::Tanh => grad::tanh_backward(out, d_out, d_in),
            Activation::Gelu => grad::gelu_backward(src, d_out, d_in),
        }
    }

    /// The backward of an activation fused into a convolution, in place on `d_out`, from the
    /// step's output; skipped (and the flag cleared) when a max pool after it already applied it.
    fn fused_backward(
        fused: Option<Activation>,
        relu_applied: &mut bool,
        out: &[f32],
        d_out: &mut [f32],
    ) {
        match fused {
            Some(Activation::Relu) if std::mem::take(relu_applied) => {}
            Some(Activation::Relu) => grad::relu_backward_inplace(out, d_out),
            Some(Activation::LeakyRelu(s)) => grad::leaky_relu_backward_inplace(out, s, d_out),
            _ => {}
        }
    }
}
