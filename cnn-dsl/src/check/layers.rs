//! The shape rule of each layer kind, as the checker applies it: the formulas are in
//! `cnn_ir::rules`; here they meet the spec's attributes, the diagnostics' spans and the
//! `summary --explain` origins. One method per kind; [`Checker::layer`] wraps them.

use super::*;
use crate::ir::{BatchNorm2d, Conv2d, Linear, Pool2d};

/// What a layer kind's rule yields: output dims, the op, parameters, multiply-adds and the
/// origin of each output dimension.
pub(super) type Arm = (Dims, Op, u64, u64, Vec<String>);
/// A rule that failed, with the attribute span to point at (reported by [`Checker::layer`]).
pub(super) type Fail = (RuleError, Option<Span>);

/// The layer being checked, and what its rule adds besides the [`Arm`].
pub(super) struct LayerCx<'a> {
    pub(super) layer: &'a Layer,
    pub(super) input: &'a [u64],
    pub(super) origins: &'a [String],
    pub(super) prev: Option<&'a Layer>,
    /// `state_dict` entries of the layer.
    pub(super) tensors: Vec<ParamTensor>,
    /// A mismatch was reported but the layer could still be checked (the declared value was
    /// wrong, the inferred one is used).
    pub(super) recovered_error: bool,
}

/// Ends the rule with `$e`, pointing at `$span`.
macro_rules! fail {
    ($e:expr, $span:expr) => {
        return Err(($e, $span))
    };
}

/// The value of a rule's result, or [`fail!`] with its error.
macro_rules! tri {
    ($r:expr, $span:expr) => {
        match $r {
            Ok(v) => v,
            Err(e) => fail!(e, $span),
        }
    };
}

/// `[C, H, W]`, or the error of a spatial layer given a flat vector.
fn image(input: &[u64]) -> Result<[u64; 3], RuleError> {
    match input {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(RuleError::NeedsImage),
    }
}

impl Checker<'_> {
    /// The shape rule of `cx.layer`'s kind: its output, op, parameters, cost and where each
    /// output dimension comes from; tensors and recovered errors go into `cx`.
    pub(super) fn arm(&mut self, cx: &mut LayerCx<'_>) -> Result<Arm, Fail> {
        let (layer, input, origins) = (cx.layer, cx.input, cx.origins);
        let path = &layer.path;
        Ok(match &layer.kind {
            LayerKind::Conv2d(c) => return self.conv2d(cx, c),
            LayerKind::Pool2d(p) => return self.pool2d(cx, p),
            LayerKind::AdaptiveAvgPool2d { output_size } => {
                return self.adaptive_avg_pool2d(cx, output_size);
            }
            LayerKind::BatchNorm2d(b) => return self.batch_norm2d(cx, b),
            LayerKind::Linear(l) => return self.linear(cx, l),
            LayerKind::Softmax { dim } | LayerKind::LogSoftmax { dim } => {
                return self.softmax(cx, dim);
            }
            LayerKind::Relu
            | LayerKind::LeakyRelu { .. }
            | LayerKind::Sigmoid
            | LayerKind::Tanh
            | LayerKind::Gelu => {
                let act = match &layer.kind {
                    LayerKind::Relu => Activation::Relu,
                    LayerKind::LeakyRelu { negative_slope } => {
                        Activation::LeakyRelu(*negative_slope as f32)
                    }
                    LayerKind::Sigmoid => Activation::Sigmoid,
                    LayerKind::Tanh => Activation::Tanh,
                    _ => Activation::Gelu,
                };
                let len = us(tri!(rules::numel(input), None));
                (
                    input.to_vec(),
                    Op::Activation { act, len },
                    0,
                    0,
                    origins.to_vec(),
                )
            }
            LayerKind::Dropout { p } => {
                let len = us(tri!(rules::numel(input), None));
                (
                    input.to_vec(),
                    Op::Dropout { p: *p as f32, len },
                    0,
                    0,
                    origins.to_vec(),
                )
            }
            LayerKind::Flatten => {
                let n = tri!(rules::numel(input), None);
                let o = if input.len() == 1 {
                    origins.to_vec()
                } else {
                    vec![format!(
                        "{n} features: `{path}` flattens {} (channels × height × width above)",
                        fmt_times(input)
                    )]
                };
                (vec![n], Op::Flatten { len: us(n) }, 0, 0, o)
            }
        })
    }

    /// Reports a declared channel count (`attr`) that differs from the input's `actual` one; the
    /// layer is still checked with `actual`.
    fn declared_channels(
        &mut self,
        cx: &mut LayerCx<'_>,
        decl: Option<Attr<u64>>,
        actual: u64,
        attr: &str,
    ) {
        if let Some(decl) = decl
            && decl.value != actual
        {
            self.channel_mismatch(cx.layer, decl, actual, attr);
            cx.recovered_error = true;
        }
    }

    /// nn.Conv2d: groups, padding, output size, parameters and cost.
    pub(super) fn conv2d(&mut self, cx: &mut LayerCx<'_>, c: &Conv2d) -> Result<Arm, Fail> {
        let input = cx.input;
        let origins = cx.origins;
        let path = &cx.layer.path;
        let [cin, h, w] = tri!(image(input), None);
        self.declared_channels(cx, c.in_channels, cin, "in_channels");
        let g = c.groups.value;
        if cin % g != 0 {
            fail!(
                RuleError::Groups {
                    groups: g,
                    channels: cin,
                    which: "input"
                },
                c.groups.span
            );
        }
        if !c.out_channels.value.is_multiple_of(g) {
            fail!(
                RuleError::Groups {
                    groups: g,
                    channels: c.out_channels.value,
                    which: "output"
                },
                c.groups.span
            );
        }
        let [kh, kw] = c.kernel_size.value;
        let pads = tri!(
            rules::conv_padding(
                c.padding.value,
                c.kernel_size.value,
                c.dilation.value,
                c.stride.value
            ),
            c.padding.span
        );
        let ksp = c.kernel_size.span;
        let oh = tri!(
            rules::conv_out(
                h,
                pads[2],
                kh,
                c.stride.value[0],
                c.dilation.value[0],
                "height"
            ),
            ksp
        );
        let ow = tri!(
            rules::conv_out(
                w,
                pads[3],
                kw,
                c.stride.value[1],
                c.dilation.value[1],
                "width"
            ),
            ksp
        );
        let cout = c.out_channels.value;
        let out = vec![cout, oh, ow];
        let cpg = cin / g;
        let wnum = tri!(rules::numel(&[cout, cpg, kh, kw]), None);
        let params = wnum + if c.bias { cout } else { 0 };
        let macs = tri!(rules::conv_macs(&out, cpg, c.kernel_size.value), None);
        tri!(rules::numel(&out), None);
        let fan_in = us(cpg * kh * kw);
        cx.tensors.push(ParamTensor {
            name: format!("{path}.weight"),
            shape: vec![us(cout), us(cpg), us(kh), us(kw)],
            role: TensorRole::Weight,
            fan_in,
        });
        if c.bias {
            cx.tensors.push(ParamTensor {
                name: format!("{path}.bias"),
                shape: vec![us(cout)],
                role: TensorRole::Bias,
                fan_in,
            });
        }
        let desc = format!(
            "{path} (conv k{} s{} p{} d{})",
            pair(c.kernel_size.value),
            pair(c.stride.value),
            pad_desc(pads),
            pair(c.dilation.value)
        );
        let o = vec![
            format!("{cout} channels: out_channels of {path}"),
            step(&origins[1], &desc, oh),
            step(&origins[2], &desc, ow),
        ];
        self.channel_origin = format!(
            "{} sets {cout} channels (out_channels = {cout})",
            display_path(path)
        );
        let [stride_h, stride_w] = c.stride.value.map(us);
        let [dilation_h, dilation_w] = c.dilation.value.map(us);
        let op = Op::Conv2d {
            geom: Conv2dGeom {
                in_channels: us(cin),
                in_h: us(h),
                in_w: us(w),
                out_channels: us(cout),
                out_h: us(oh),
                out_w: us(ow),
                kernel_h: us(kh),
                kernel_w: us(kw),
                stride_h,
                stride_w,
                pad_top: us(pads[0]),
                pad_left: us(pads[1]),
                dilation_h,
                dilation_w,
                groups: us(g),
            },
            bias: c.bias,
        };
        Ok((out, op, params, macs, o))
    }

    /// nn.MaxPool2d / nn.AvgPool2d: window, padding and output size.
    pub(super) fn pool2d(&mut self, cx: &mut LayerCx<'_>, p: &Pool2d) -> Result<Arm, Fail> {
        let input = cx.input;
        let origins = cx.origins;
        let path = &cx.layer.path;
        let [c, h, w] = tri!(image(input), None);
        if p.kind == PoolKind::Avg && p.dilation.value != [1, 1] {
            // AvgPool2d has no dilation in PyTorch; lowering accepts the name for
            // max pooling only, so reaching here means it was given.
            fail!(
                RuleError::PoolPadding {
                    axis: "height",
                    padding: 0,
                    window: 0
                },
                p.dilation.span
            );
        }
        let [kh, kw] = p.kernel_size.value;
        let [sh, sw] = p.stride.value;
        let [ph, pw] = p.padding.value;
        let [dh, dw] = p.dilation.value;
        let span = p.padding.span.or(p.kernel_size.span);
        let oh = tri!(
            rules::pool_out(h, ph, kh, sh, dh, p.ceil_mode, p.kind, "height"),
            span
        );
        let ow = tri!(
            rules::pool_out(w, pw, kw, sw, dw, p.ceil_mode, p.kind, "width"),
            span
        );
        let kind = if p.kind == PoolKind::Max {
            "maxpool"
        } else {
            "avgpool"
        };
        let desc = format!(
            "{path} ({kind} k{} s{}{}{})",
            pair(p.kernel_size.value),
            pair(p.stride.value),
            if p.padding.value != [0, 0] {
                format!(" p{}", pair(p.padding.value))
            } else {
                String::new()
            },
            if p.ceil_mode { " ceil" } else { "" }
        );
        let o = vec![
            origins[0].clone(),
            step(&origins[1], &desc, oh),
            step(&origins[2], &desc, ow),
        ];
        let op = Op::Pool2d {
            kind: p.kind,
            geom: Pool2dGeom {
                channels: us(c),
                in_h: us(h),
                in_w: us(w),
                out_h: us(oh),
                out_w: us(ow),
                kernel_h: us(kh),
                kernel_w: us(kw),
                stride_h: us(sh),
                stride_w: us(sw),
                pad_h: us(ph),
                pad_w: us(pw),
                dilation_h: us(dh),
                dilation_w: us(dw),
                count_include_pad: p.count_include_pad,
            },
        };
        Ok((vec![c, oh, ow], op, 0, 0, o))
    }

    /// nn.AdaptiveAvgPool2d: the output size PyTorch picks the bins for.
    pub(super) fn adaptive_avg_pool2d(
        &mut self,
        cx: &mut LayerCx<'_>,
        output_size: &Attr<[u64; 2]>,
    ) -> Result<Arm, Fail> {
        let input = cx.input;
        let origins = cx.origins;
        let path = &cx.layer.path;
        let [c, h, w] = tri!(image(input), None);
        let [oh, ow] = output_size.value;
        let desc = format!("{path} (adaptive avgpool)");
        let o = vec![
            origins[0].clone(),
            format!("height {oh}: output_size of {desc}"),
            format!("width {ow}: output_size of {desc}"),
        ];
        let op = Op::AdaptiveAvgPool2d(AdaptivePoolGeom {
            channels: us(c),
            in_h: us(h),
            in_w: us(w),
            out_h: us(oh),
            out_w: us(ow),
        });
        Ok((vec![c, oh, ow], op, 0, 0, o))
    }

    /// nn.BatchNorm2d: channel count and its tensors.
    pub(super) fn batch_norm2d(
        &mut self,
        cx: &mut LayerCx<'_>,
        b: &BatchNorm2d,
    ) -> Result<Arm, Fail> {
        let input = cx.input;
        let origins = cx.origins;
        let path = &cx.layer.path;
        let [c, h, w] = tri!(image(input), None);
        self.declared_channels(cx, b.num_features, c, "num_features");
        let cu = us(c);
        for (suffix, role) in [
            ("weight", TensorRole::Weight),
            ("bias", TensorRole::Bias),
            ("running_mean", TensorRole::RunningMean),
            ("running_var", TensorRole::RunningVar),
        ] {
            cx.tensors.push(ParamTensor {
                name: format!("{path}.{suffix}"),
                shape: vec![cu],
                role,
                fan_in: 0,
            });
        }
        cx.tensors.push(ParamTensor {
            name: format!("{path}.num_batches_tracked"),
            shape: vec![],
            role: TensorRole::NumBatchesTracked,
            fan_in: 0,
        });
        let spatial = tri!(rules::numel(&[h, w]), None);
        let op = Op::BatchNorm2d {
            geom: BatchNormGeom {
                channels: cu,
                spatial: us(spatial),
            },
            eps: b.eps as f32,
            momentum: b.momentum as f32,
        };
        Ok((input.to_vec(), op, 2 * c, 0, origins.to_vec()))
    }

    /// nn.Linear: in_features against the flattened input, parameters and cost.
    pub(super) fn linear(&mut self, cx: &mut LayerCx<'_>, l: &Linear) -> Result<Arm, Fail> {
        let layer = cx.layer;
        let input = cx.input;
        let prev = cx.prev;
        let path = &cx.layer.path;
        let actual = match input {
            [f] => *f,
            _ => fail!(RuleError::NeedsFlat, None),
        };
        if let Some(decl) = l.in_features
            && decl.value != actual
        {
            self.features_mismatch(layer, decl, l.in_features_factors.as_deref(), actual, prev);
            cx.recovered_error = true;
        }
        let out = l.out_features.value;
        let wnum = tri!(rules::numel(&[out, actual]), None);
        let params = wnum + if l.bias { out } else { 0 };
        let fan_in = us(actual);
        cx.tensors.push(ParamTensor {
            name: format!("{path}.weight"),
            shape: vec![us(out), us(actual)],
            role: TensorRole::Weight,
            fan_in,
        });
        if l.bias {
            cx.tensors.push(ParamTensor {
                name: format!("{path}.bias"),
                shape: vec![us(out)],
                role: TensorRole::Bias,
                fan_in,
            });
        }
        self.channel_origin = format!(
            "{} sets {out} features (out_features = {out})",
            display_path(path)
        );
        let op = Op::Linear {
            geom: LinearGeom {
                in_features: us(actual),
                out_features: us(out),
            },
            bias: l.bias,
        };
        Ok((
            vec![out],
            op,
            params,
            wnum,
            vec![format!("{out} features: out_features of {path}")],
        ))
    }

    /// Softmax / LogSoftmax over `dim` (batch counted as 0).
    pub(super) fn softmax(&mut self, cx: &mut LayerCx<'_>, dim: &Attr<i64>) -> Result<Arm, Fail> {
        let layer = cx.layer;
        let input = cx.input;
        let origins = cx.origins;
        let log = matches!(layer.kind, LayerKind::LogSoftmax { .. });
        let rank = input.len() as u64 + 1;
        let d = if dim.value < 0 {
            dim.value + rank as i64
        } else {
            dim.value
        };
        if d < 1 || d >= rank as i64 {
            fail!(
                RuleError::BadDim {
                    dim: dim.value,
                    rank
                },
                dim.span
            );
        }
        let axis = (d - 1) as usize;
        let outer = tri!(rules::numel(&input[..axis]), None);
        let inner = tri!(rules::numel(&input[axis + 1..]), None);
        let op = Op::Softmax {
            log,
            outer: us(outer),
            axis: us(input[axis]),
            inner: us(inner),
        };
        Ok((input.to_vec(), op, 0, 0, origins.to_vec()))
    }
}
