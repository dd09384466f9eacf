//! The checked model: every layer with its shapes, resolved operation ([`Op`]), parameters and
//! cost. The shape checker (`cnn_dsl::check`) is what makes a [`CheckedModel`]; codegen,
//! summaries, the planner and the runtime take one, so "forgot to check" does not compile.

use crate::geom::{AdaptivePoolGeom, BatchNormGeom, Conv2dGeom, LinearGeom, Pool2dGeom};
use crate::ir::{Dims, Layer, Model, PoolKind};

/// What a parameter tensor is, for initialisation and training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorRole {
    /// A conv/linear weight (kaiming-uniform init) or a batchnorm scale (init 1).
    Weight,
    /// A bias (uniform ±1/√fan_in init, or 0 for batchnorm).
    Bias,
    /// Batchnorm running mean (buffer).
    RunningMean,
    /// Batchnorm running variance (buffer).
    RunningVar,
    /// Batchnorm `num_batches_tracked` (i64 scalar buffer in PyTorch).
    NumBatchesTracked,
}

impl TensorRole {
    /// Whether an optimizer updates it.
    pub fn trainable(self) -> bool {
        matches!(self, TensorRole::Weight | TensorRole::Bias)
    }
}

/// One entry of the model's `state_dict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamTensor {
    /// `conv1.0.weight`.
    pub name: String,
    /// PyTorch layout, e.g. `[out, in/groups, kh, kw]`; `[]` for a scalar.
    pub shape: Vec<usize>,
    /// What it is.
    pub role: TensorRole,
    /// `fan_in` for PyTorch's default initialisation (0 where unused).
    pub fan_in: usize,
}

impl ParamTensor {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Element-wise activation functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// max(x, 0)
    Relu,
    /// x if x > 0 else slope·x
    LeakyRelu(f32),
    /// 1/(1+e^−x)
    Sigmoid,
    /// tanh
    Tanh,
    /// x·Φ(x), exact
    Gelu,
}

/// A layer with every size resolved: what a kernel call needs. All sizes are per image; the
/// layers that call a kernel with a geometry hold it directly (see [`crate::geom`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Convolution; padding is top/left, bottom/right implied by the output size.
    Conv2d {
        /// Every size of the kernel call.
        geom: Conv2dGeom,
        /// Has a bias tensor.
        bias: bool,
    },
    /// Max or average pooling.
    Pool2d {
        /// Max or average.
        kind: PoolKind,
        /// Every size of the kernel call (padding symmetric).
        geom: Pool2dGeom,
    },
    /// Adaptive average pooling.
    AdaptiveAvgPool2d(AdaptivePoolGeom),
    /// Batch normalisation.
    BatchNorm2d {
        /// Channels and H·W.
        geom: BatchNormGeom,
        /// eps
        eps: f32,
        /// momentum (training)
        momentum: f32,
    },
    /// Element-wise activation over `len` elements.
    Activation {
        /// Which function.
        act: Activation,
        /// Elements per image.
        len: usize,
    },
    /// Dropout (identity at inference).
    Dropout {
        /// Drop probability.
        p: f32,
        /// Elements per image.
        len: usize,
    },
    /// Flatten: no data movement in NCHW.
    Flatten {
        /// Elements per image.
        len: usize,
    },
    /// Fully connected.
    Linear {
        /// In and out features.
        geom: LinearGeom,
        /// Has a bias tensor.
        bias: bool,
    },
    /// Softmax or log-softmax over one axis: the per-image tensor is viewed as
    /// `[outer, axis, inner]`.
    Softmax {
        /// log-softmax instead of softmax.
        log: bool,
        /// product of dims before the axis (per image)
        outer: usize,
        /// the axis length
        axis: usize,
        /// product of dims after the axis
        inner: usize,
    },
}

/// A checked layer: its input and output shapes, parameters and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedLayer {
    /// The layer as lowered.
    pub layer: Layer,
    /// Per-image input shape.
    pub input: Dims,
    /// Per-image output shape.
    pub output: Dims,
    /// Every size resolved.
    pub op: Op,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-adds per image.
    pub macs: u64,
    /// `state_dict` entries (parameters and buffers).
    pub tensors: Vec<ParamTensor>,
    /// Where each output dimension comes from, in words (for `summary --explain`).
    pub origins: Vec<String>,
}

/// A model whose shapes all fit. Only [`check`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedModel {
    model: Model,
    layers: Vec<CheckedLayer>,
    input_origins: Vec<String>,
}

impl CheckedModel {
    /// Assembles what the shape checker (`cnn_dsl::check`) computed for `model`. The checker is
    /// the only caller: the layers must chain (each input is the previous output, the first is
    /// the model's input), which is what every consumer of a `CheckedModel` relies on.
    #[doc(hidden)]
    pub fn from_checker(
        model: Model,
        layers: Vec<CheckedLayer>,
        input_origins: Vec<String>,
    ) -> Self {
        debug_assert!(
            layers
                .iter()
                .scan(&model.input.value, |prev, l| {
                    let ok = &l.input == *prev;
                    *prev = &l.output;
                    Some(ok)
                })
                .all(|ok| ok),
            "checked layers must chain"
        );
        CheckedModel {
            model,
            layers,
            input_origins,
        }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.model.name
    }
    /// The lowered model.
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// Checked layers in order.
    pub fn layers(&self) -> &[CheckedLayer] {
        &self.layers
    }
    /// Per-image input shape.
    pub fn input_shape(&self) -> &[u64] {
        &self.model.input.value
    }
    /// Per-image output shape.
    pub fn output_shape(&self) -> &[u64] {
        self.layers
            .last()
            .map_or(&self.model.input.value, |l| &l.output)
    }
    /// Every `state_dict` entry in order.
    pub fn tensors(&self) -> impl Iterator<Item = &ParamTensor> {
        self.layers.iter().flat_map(|l| l.tensors.iter())
    }
    /// Trainable parameter count.
    pub fn param_count(&self) -> u64 {
        self.layers.iter().map(|l| l.params).sum()
    }
    /// Multiply-adds per image.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
    /// Where each input dimension comes from.
    pub fn input_origins(&self) -> &[String] {
        &self.input_origins
    }
}
