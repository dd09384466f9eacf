//! Resolved layer geometries: every size a kernel needs, already computed by the checker.
//!
//! Kernels never derive an output size themselves: the shape checker owns the formulas, and
//! the plan hands each kernel one of these structs (`cnn-runtime` re-exports them as
//! `cnn_runtime::geom`). The checked ops (`crate::checked::Op`) hold them directly, for the
//! interpreter, the trainer and the code generator alike. All tensors are `f32`, NCHW
//! (PyTorch's layout) at the kernel boundary, batch-major and contiguous.

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
