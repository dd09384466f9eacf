//! Resolved layer geometries: every size a kernel needs, already computed by the checker.
//!
//! Kernels never derive an output size themselves: the shape checker owns the formulas, and
//! the plan hands each kernel one of these structs (`cnn-runtime` re-exports them as
//! `cnn_runtime::geom`). Each struct's `from_op` (e.g. [`Conv2dGeom::from_op`]) is the one
//! place a checked [`Op`] becomes a geometry, for the interpreter, the trainer and the code
//! generator alike. All tensors are `f32`, NCHW (PyTorch's layout) at the kernel boundary,
//! batch-major and contiguous.

use crate::checked::Op;

/// Geometry of a 2-D convolution (`nn.Conv2d`) for one image; the batch size is passed separately.
///
/// Padding is given as the top/left amount only: output positions whose window reaches past the
/// bottom/right edge read zeros, so asymmetric padding (`padding="same"` with an even kernel)
/// is expressed by `out_h`/`out_w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeom {
    /// Input channels (`C_in`).
    pub in_channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output channels (`C_out`).
    pub out_channels: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero padding above the input.
    pub pad_top: usize,
    /// Zero padding left of the input.
    pub pad_left: usize,
    /// Vertical dilation.
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// Channel groups; `in_channels` and `out_channels` are multiples of it.
    pub groups: usize,
}

impl Conv2dGeom {
    /// The geometry of a checked `Op::Conv2d`; `None` for any other op.
    pub fn from_op(op: &Op) -> Option<Conv2dGeom> {
        match *op {
            Op::Conv2d {
                in_channels,
                in_h,
                in_w,
                out_channels,
                out_h,
                out_w,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => Some(Conv2dGeom {
                in_channels,
                in_h,
                in_w,
                out_channels,
                out_h,
                out_w,
                kernel_h: kernel[0],
                kernel_w: kernel[1],
                stride_h: stride[0],
                stride_w: stride[1],
                pad_top: padding[0],
                pad_left: padding[1],
                dilation_h: dilation[0],
                dilation_w: dilation[1],
                groups,
            }),
            _ => None,
        }
    }

    /// Elements of one input image (`C_in·H·W`).
    pub const fn in_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }
    /// Elements of one output image (`C_out·H_out·W_out`).
    pub const fn out_len(&self) -> usize {
        self.out_channels * self.out_h * self.out_w
    }
    /// Elements of the weight tensor `[C_out, C_in/groups, kH, kW]` (PyTorch layout).
    pub const fn weight_len(&self) -> usize {
        self.out_channels * (self.in_channels / self.groups) * self.kernel_h * self.kernel_w
    }
}

/// Geometry of a 2-D pooling window (`nn.MaxPool2d`, `nn.AvgPool2d`) for one image.
///
/// `out_h`/`out_w` already include the effect of `ceil_mode`. Padding is top/left as for
/// [`Conv2dGeom`]; PyTorch pads symmetrically, and `pad_h`/`pad_w` are that amount on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dGeom {
    /// Channels (unchanged by pooling).
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Window height.
    pub kernel_h: usize,
    /// Window width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Padding on each side, vertically.
    pub pad_h: usize,
    /// Padding on each side, horizontally.
    pub pad_w: usize,
    /// Vertical dilation (max pooling only; 1 for average pooling).
    pub dilation_h: usize,
    /// Horizontal dilation (max pooling only; 1 for average pooling).
    pub dilation_w: usize,
    /// Average pooling: count padded positions in the divisor (PyTorch `count_include_pad`).
    pub count_include_pad: bool,
}

impl Pool2dGeom {
    /// The geometry of a checked `Op::Pool2d` (max or average); `None` for any other op.
    pub fn from_op(op: &Op) -> Option<Pool2dGeom> {
        match *op {
            Op::Pool2d {
                channels,
                in_h,
                in_w,
                out_h,
                out_w,
                kernel,
                stride,
                padding,
                dilation,
                count_include_pad,
                ..
            } => Some(Pool2dGeom {
                channels,
                in_h,
                in_w,
                out_h,
                out_w,
                kernel_h: kernel[0],
                kernel_w: kernel[1],
                stride_h: stride[0],
                stride_w: stride[1],
                pad_h: padding[0],
                pad_w: padding[1],
                dilation_h: dilation[0],
                dilation_w: dilation[1],
                count_include_pad,
            }),
            _ => None,
        }
    }

    /// Elements of one input image.
    pub const fn in_len(&self) -> usize {
        self.channels * self.in_h * self.in_w
    }
    /// Elements of one output image.
    pub const fn out_len(&self) -> usize {
        self.channels * self.out_h * self.out_w
    }
}

/// Geometry of `nn.AdaptiveAvgPool2d` for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdaptivePoolGeom {
    /// Channels.
    pub channels: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

/// Geometry of `nn.Linear`: `y = x·Wᵀ + b`, `W` is `[out_features, in_features]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearGeom {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
}

/// Geometry of `nn.BatchNorm2d` (also used for 1-D features with `spatial = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchNormGeom {
    /// Channels (`num_features`).
    pub channels: usize,
    /// `H·W` per channel (1 for a feature vector).
    pub spatial: usize,
}

impl AdaptivePoolGeom {
    /// The geometry of a checked `Op::AdaptiveAvgPool2d`; `None` for any other op.
    pub fn from_op(op: &Op) -> Option<AdaptivePoolGeom> {
        match *op {
            Op::AdaptiveAvgPool2d {
                channels,
                in_h,
                in_w,
                out_h,
                out_w,
            } => Some(AdaptivePoolGeom {
                channels,
                in_h,
                in_w,
                out_h,
                out_w,
            }),
            _ => None,
        }
    }
}

impl LinearGeom {
    /// The geometry of a checked `Op::Linear`; `None` for any other op.
    pub fn from_op(op: &Op) -> Option<LinearGeom> {
        match *op {
            Op::Linear {
                in_features,
                out_features,
                ..
            } => Some(LinearGeom {
                in_features,
                out_features,
            }),
            _ => None,
        }
    }
}

impl BatchNormGeom {
    /// The geometry of a checked `Op::BatchNorm2d`; `None` for any other op.
    pub fn from_op(op: &Op) -> Option<BatchNormGeom> {
        match *op {
            Op::BatchNorm2d {
                channels, spatial, ..
            } => Some(BatchNormGeom { channels, spatial }),
            _ => None,
        }
    }
}
