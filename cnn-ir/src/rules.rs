//! PyTorch's shape formulas, one function per layer kind. This is the only place in the project
//! where an output size is computed; kernels, codegen and summaries read the checked model.

use crate::ir::{Padding, PoolKind};

/// Why a layer cannot accept its input. Turned into a diagnostic by the checker (`cnn_dsl::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// A spatial layer got a flat vector.
    NeedsImage,
    /// Declared input channels differ from the real ones.
    ChannelMismatch {
        /// Declared.
        declared: u64,
        /// Real.
        actual: u64,
    },
    /// `groups` does not divide a channel count.
    Groups {
        /// Groups.
        groups: u64,
        /// The channel count it must divide.
        channels: u64,
        /// `"input"` or `"output"`.
        which: &'static str,
    },
    /// The effective window exceeds the padded input along one axis.
    KernelTooLarge {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// Input size along the axis.
        input: u64,
        /// Total padding along the axis.
        padding: u64,
        /// Dilated kernel extent.
        window: u64,
    },
    /// Pool padding larger than half the window.
    PoolPadding {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// Padding.
        padding: u64,
        /// Window (dilated for max pooling).
        window: u64,
    },
    /// `padding = same` with a stride other than 1.
    SameWithStride,
    /// A dimension or count overflows.
    Overflow,
    /// Linear on a `[C, H, W]` input.
    NeedsFlat,
    /// Declared `in_features` differ from the real ones.
    Features {
        /// Declared.
        declared: u64,
        /// Real.
        actual: u64,
    },
    /// `dim` out of range.
    BadDim {
        /// As written.
        dim: i64,
        /// Rank including the batch.
        rank: u64,
    },
}

/// Output size of a convolution along one axis (PyTorch `conv_output_size`):
/// `floor((in + pad_total − dilation·(k−1) − 1) / stride) + 1`.
pub fn conv_out(
    input: u64,
    pad_total: u64,
    k: u64,
    stride: u64,
    dilation: u64,
    axis: &'static str,
) -> Result<u64, RuleError> {
    let window = dilation
        .checked_mul(k - 1)
        .and_then(|x| x.checked_add(1))
        .ok_or(RuleError::Overflow)?;
    let padded = input.checked_add(pad_total).ok_or(RuleError::Overflow)?;
    if padded < window {
        return Err(RuleError::KernelTooLarge {
            axis,
            input,
            padding: pad_total,
            window,
        });
    }
    Ok((padded - window) / stride + 1)
}

/// Resolved padding of a conv2d: `(top, left, total_h, total_w)`.
pub fn conv_padding(
    p: Padding,
    k: [u64; 2],
    dilation: [u64; 2],
    stride: [u64; 2],
) -> Result<[u64; 4], RuleError> {
    match p {
        Padding::Explicit([h, w]) => Ok([
            h,
            w,
            h.checked_mul(2).ok_or(RuleError::Overflow)?,
            w.checked_mul(2).ok_or(RuleError::Overflow)?,
        ]),
        Padding::Valid => Ok([0, 0, 0, 0]),
        Padding::Same => {
            if stride != [1, 1] {
                return Err(RuleError::SameWithStride);
            }
            // PyTorch: total = dilation·(k−1); left = total / 2, the extra one goes right/bottom.
            let th = dilation[0]
                .checked_mul(k[0] - 1)
                .ok_or(RuleError::Overflow)?;
            let tw = dilation[1]
                .checked_mul(k[1] - 1)
                .ok_or(RuleError::Overflow)?;
            Ok([th / 2, tw / 2, th, tw])
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the scalar operands of PyTorch's pooling_output_shape, one axis at a time"
)]
/// Output size of pooling along one axis (PyTorch `pooling_output_shape`), including
/// `ceil_mode`'s rule that the last window must start inside the input or left padding.
pub fn pool_out(
    input: u64,
    pad: u64,
    k: u64,
    stride: u64,
    dilation: u64,
    ceil: bool,
    kind: PoolKind,
    axis: &'static str,
) -> Result<u64, RuleError> {
    let window = dilation
        .checked_mul(k - 1)
        .and_then(|x| x.checked_add(1))
        .ok_or(RuleError::Overflow)?;
    // PyTorch: max pool requires pad <= effective_kernel/2; avg pool requires pad <= kernel/2.
    let limit = match kind {
        PoolKind::Max => window / 2,
        PoolKind::Avg => k / 2,
    };
    if pad > limit {
        return Err(RuleError::PoolPadding {
            axis,
            padding: pad,
            window: if kind == PoolKind::Max { window } else { k },
        });
    }
    let padded = input
        .checked_add(pad.checked_mul(2).ok_or(RuleError::Overflow)?)
        .ok_or(RuleError::Overflow)?;
    if padded < window {
        return Err(RuleError::KernelTooLarge {
            axis,
            input,
            padding: 2 * pad,
            window,
        });
    }
    let span = padded - window;
    let mut out = if ceil {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    if ceil && (out - 1) * stride >= input + pad {
        out -= 1;
    }
    Ok(out)
}

/// Product of dimensions with overflow check.
pub fn numel(dims: &[u64]) -> Result<u64, RuleError> {
    dims.iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(*d))
        .ok_or(RuleError::Overflow)
}

/// Multiply-adds of a conv2d (counting padded taps, as torchinfo does):
/// `C_out·H_out·W_out · (C_in/groups)·kh·kw`.
pub fn conv_macs(out: &[u64], in_per_group: u64, k: [u64; 2]) -> Result<u64, RuleError> {
    numel(&[numel(out)?, in_per_group, k[0], k[1]])
}

/// Brute-force count of window positions (for tests of the formulas).
#[cfg(test)]
fn brute_count(
    input: u64,
    pad_lo: u64,
    pad_hi: u64,
    k: u64,
    stride: u64,
    dilation: u64,
    ceil: bool,
) -> u64 {
    let padded = (input + pad_lo + pad_hi) as i64;
    let window = (dilation * (k - 1) + 1) as i64;
    let mut n = 0;
    let mut start = 0i64;
    loop {
        let fits = start + window <= padded;
        // ceil_mode: one more, partial window is allowed when the floor count left a remainder
        // (start within one stride of the last full window), and it starts inside the input or
        // the left padding.
        let partial_ok =
            ceil && start < padded - window + stride as i64 && start < (input + pad_lo) as i64;
        if !(fits || partial_ok) {
            break;
        }
        n += 1;
        start += stride as i64;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_model_sizes() {
        assert_eq!(conv_out(28, 4, 5, 1, 1, "height"), Ok(28));
        assert_eq!(
            pool_out(28, 0, 2, 2, 1, false, PoolKind::Max, "height"),
            Ok(14)
        );
        assert_eq!(
            pool_out(7, 0, 2, 2, 1, false, PoolKind::Max, "height"),
            Ok(3)
        );
        assert_eq!(
            pool_out(7, 0, 2, 2, 1, true, PoolKind::Max, "height"),
            Ok(4)
        );
        assert_eq!(
            pool_out(5, 1, 3, 2, 1, true, PoolKind::Avg, "height"),
            Ok(3)
        );
        assert!(matches!(
            conv_out(4, 0, 5, 1, 1, "height"),
            Err(RuleError::KernelTooLarge { .. })
        ));
        assert!(matches!(
            pool_out(8, 2, 3, 1, 1, false, PoolKind::Max, "width"),
            Err(RuleError::PoolPadding { .. })
        ));
        assert_eq!(
            conv_padding(Padding::Same, [4, 3], [1, 2], [1, 1]),
            Ok([1, 2, 3, 4])
        );
        assert_eq!(
            conv_padding(Padding::Same, [3, 3], [1, 1], [2, 2]),
            Err(RuleError::SameWithStride)
        );
        assert_eq!(numel(&[u64::MAX, 2]), Err(RuleError::Overflow));
    }

    proptest! {
        #[test]
        fn conv_formula_matches_sliding_window(input in 1u64..40, pad in 0u64..5, k in 1u64..8, stride in 1u64..5, dilation in 1u64..4) {
            let got = conv_out(input, 2 * pad, k, stride, dilation, "height");
            let window = dilation * (k - 1) + 1;
            if input + 2 * pad < window {
                prop_assert!(got.is_err());
            } else {
                prop_assert_eq!(got, Ok(brute_count(input, pad, pad, k, stride, dilation, false)));
            }
        }

        #[test]
        fn pool_formula_matches_sliding_window(input in 1u64..40, pad in 0u64..4, k in 1u64..8, stride in 1u64..5, dilation in 1u64..3, ceil in any::<bool>()) {
            let got = pool_out(input, pad, k, stride, dilation, ceil, PoolKind::Max, "height");
            let window = dilation * (k - 1) + 1;
            if pad > window / 2 || input + 2 * pad < window {
                prop_assert!(got.is_err());
            } else {
                prop_assert_eq!(got, Ok(brute_count(input, pad, pad, k, stride, dilation, ceil)));
            }
        }
    }
}
