//! The typed model: layer kinds with PyTorch's attributes and defaults, blocks flattened into
//! `state_dict`-style paths. Built by `cnn_dsl::lower`; shapes are computed by `cnn_dsl::check`.

use crate::span::{Span, Syntax};

/// An attribute value with the span it was written at (`None` when it took its default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attr<T> {
    /// The value.
    pub value: T,
    /// Where it was written, if it was.
    pub span: Option<Span>,
}

impl<T> Attr<T> {
    /// A defaulted attribute.
    pub fn default_value(value: T) -> Self {
        Attr { value, span: None }
    }
}

/// A per-sample shape: `[C, H, W]` or `[F]` (the batch dimension is implicit).
pub type Dims = Vec<u64>;

/// `padding` of a conv2d.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Explicit `[h, w]` on each side.
    Explicit([u64; 2]),
    /// `"same"`: output size equals input size (stride must be 1); PyTorch pads the extra
    /// element of an even kernel at the bottom/right.
    Same,
    /// `"valid"`: no padding.
    Valid,
}

/// nn.Conv2d.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// Checked when given, inferred otherwise.
    pub in_channels: Option<Attr<u64>>,
    /// Output channels.
    pub out_channels: Attr<u64>,
    /// `[kh, kw]`.
    pub kernel_size: Attr<[u64; 2]>,
    /// `[sh, sw]`, default 1.
    pub stride: Attr<[u64; 2]>,
    /// Default 0.
    pub padding: Attr<Padding>,
    /// Default 1.
    pub dilation: Attr<[u64; 2]>,
    /// Default 1.
    pub groups: Attr<u64>,
    /// Default true.
    pub bias: bool,
}

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// nn.MaxPool2d.
    Max,
    /// nn.AvgPool2d.
    Avg,
}

/// nn.MaxPool2d / nn.AvgPool2d.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// Window.
    pub kernel_size: Attr<[u64; 2]>,
    /// Default: `kernel_size`.
    pub stride: Attr<[u64; 2]>,
    /// Default 0; at most half the kernel.
    pub padding: Attr<[u64; 2]>,
    /// Default 1 (max pooling only).
    pub dilation: Attr<[u64; 2]>,
    /// Default false.
    pub ceil_mode: bool,
    /// Default true (average pooling only).
    pub count_include_pad: bool,
}

/// nn.BatchNorm2d.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm2d {
    /// Checked when given, inferred otherwise.
    pub num_features: Option<Attr<u64>>,
    /// Default 1e-5.
    pub eps: f64,
    /// Default 0.1.
    pub momentum: f64,
}

/// nn.Linear.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// Checked when given, inferred otherwise (like nn.LazyLinear).
    pub in_features: Option<Attr<u64>>,
    /// The literal factors of `in_features` when written as a product (`32*7*7`), for messages.
    pub in_features_factors: Option<Vec<String>>,
    /// Output features.
    pub out_features: Attr<u64>,
    /// Default true.
    pub bias: bool,
}

/// Every layer kind.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    /// Convolution.
    Conv2d(Conv2d),
    /// Max/average pooling.
    Pool2d(Pool2d),
    /// nn.AdaptiveAvgPool2d(output_size).
    AdaptiveAvgPool2d {
        /// `[h, w]`.
        output_size: Attr<[u64; 2]>,
    },
    /// Batch normalisation over channels.
    BatchNorm2d(BatchNorm2d),
    /// ReLU.
    Relu,
    /// LeakyReLU.
    LeakyRelu {
        /// Default 0.01.
        negative_slope: f64,
    },
    /// Sigmoid.
    Sigmoid,
    /// Tanh.
    Tanh,
    /// GELU (exact, erf form).
    Gelu,
    /// Dropout (identity at inference).
    Dropout {
        /// Default 0.5.
        p: f64,
    },
    /// nn.Flatten() (start_dim 1).
    Flatten,
    /// Fully connected.
    Linear(Linear),
    /// Softmax over `dim`.
    Softmax {
        /// Dimension, counting the batch as 0 (PyTorch); negative counts from the end.
        dim: Attr<i64>,
    },
    /// LogSoftmax over `dim`.
    LogSoftmax {
        /// As for softmax.
        dim: Attr<i64>,
    },
}

impl LayerKind {
    /// The spec name of the kind (`conv2d`).
    pub fn name(&self) -> &'static str {
        match self {
            LayerKind::Conv2d(_) => "conv2d",
            LayerKind::Pool2d(p) if p.kind == PoolKind::Max => "maxpool2d",
            LayerKind::Pool2d(_) => "avgpool2d",
            LayerKind::AdaptiveAvgPool2d { .. } => "adaptive_avgpool2d",
            LayerKind::BatchNorm2d(_) => "batchnorm2d",
            LayerKind::Relu => "relu",
            LayerKind::LeakyRelu { .. } => "leaky_relu",
            LayerKind::Sigmoid => "sigmoid",
            LayerKind::Tanh => "tanh",
            LayerKind::Gelu => "gelu",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Flatten => "flatten",
            LayerKind::Linear(_) => "linear",
            LayerKind::Softmax { .. } => "softmax",
            LayerKind::LogSoftmax { .. } => "log_softmax",
        }
    }

    /// The PyTorch module name (`Conv2d`), as torchinfo prints it.
    pub fn torch_name(&self) -> &'static str {
        match self {
            LayerKind::Conv2d(_) => "Conv2d",
            LayerKind::Pool2d(p) if p.kind == PoolKind::Max => "MaxPool2d",
            LayerKind::Pool2d(_) => "AvgPool2d",
            LayerKind::AdaptiveAvgPool2d { .. } => "AdaptiveAvgPool2d",
            LayerKind::BatchNorm2d(_) => "BatchNorm2d",
            LayerKind::Relu => "ReLU",
            LayerKind::LeakyRelu { .. } => "LeakyReLU",
            LayerKind::Sigmoid => "Sigmoid",
            LayerKind::Tanh => "Tanh",
            LayerKind::Gelu => "GELU",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::Flatten => "Flatten",
            LayerKind::Linear(_) => "Linear",
            LayerKind::Softmax { .. } => "Softmax",
            LayerKind::LogSoftmax { .. } => "LogSoftmax",
        }
    }
}

/// One layer with its `state_dict` path.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// `conv1.0`, `out`, `3`.
    pub path: String,
    /// The top-level item the layer belongs to (`conv1` for `conv1.0`), for messages.
    pub top: String,
    /// What it does.
    pub kind: LayerKind,
    /// The layer kind token.
    pub span: Span,
}

/// A lowered (not yet shape-checked) model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Model (and generated struct) name.
    pub name: String,
    /// Where the name was written.
    pub name_span: Span,
    /// Per-sample input shape.
    pub input: Attr<Dims>,
    /// Declared output shape, if any.
    pub output: Option<Attr<Dims>>,
    /// Layers in execution order.
    pub layers: Vec<Layer>,
    /// Which syntax the model was written in (for spelling fixes).
    pub syntax: Syntax,
}
