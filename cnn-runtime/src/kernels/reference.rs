//! Naive reference kernels: loops straight from the PyTorch definitions, accumulating in `f64`.
//!
//! They are slow and meant for tests and benchmarks only: every fast kernel in
//! [`crate::kernels`] is checked against the function of the same name here. Signatures mirror
//! the fast kernels, minus scratch; lengths are asserted the same way.

use super::BatchNormParams;
use crate::geom::{AdaptivePoolGeom, BatchNormGeom, Conv2dGeom, LinearGeom, Pool2dGeom};
use crate::util::check_len;

/// `nn.Conv2d`: `out[n,co,oh,ow] = bias[co] + Σ w[co,ci,kh,kw] · x[n, g·Cin_g+ci, ih, iw]`
/// with `ih = oh·sh + kh·dh − pad_top` (zero outside the input).
pub fn conv2d(
    g: &Conv2dGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    check_len("conv2d input", input.len(), batch * g.in_len());
    check_len("conv2d weight", weight.len(), g.weight_len());
    check_len("conv2d output", output.len(), batch * g.out_len());
    let cin_g = g.in_channels / g.groups;
    let cout_g = g.out_channels / g.groups;
    for n in 0..batch {
        for co in 0..g.out_channels {
            let grp = co / cout_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let mut s = bias.map_or(0.0, |b| f64::from(b[co]));
                    for ci in 0..cin_g {
                        let c = grp * cin_g + ci;
                        for kh in 0..g.kernel_h {
                            for kw in 0..g.kernel_w {
                                let ih = (oh * g.stride_h + kh * g.dilation_h) as isize
                                    - g.pad_top as isize;
                                let iw = (ow * g.stride_w + kw * g.dilation_w) as isize
                                    - g.pad_left as isize;
                                if ih < 0
                                    || iw < 0
                                    || ih >= g.in_h as isize
                                    || iw >= g.in_w as isize
                                {
                                    continue;
                                }
                                let x = input[((n * g.in_channels + c) * g.in_h + ih as usize)
                                    * g.in_w
                                    + iw as usize];
                                let w =
                                    weight[((co * cin_g + ci) * g.kernel_h + kh) * g.kernel_w + kw];
                                s += f64::from(x) * f64::from(w);
                            }
                        }
                    }
                    output[((n * g.out_channels + co) * g.out_h + oh) * g.out_w + ow] = s as f32;
                }
            }
        }
    }
}

/// `nn.Linear`: `y[n,o] = bias[o] + Σ_i x[n,i] · w[o,i]`.
pub fn linear(
    g: &LinearGeom,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    check_len("linear x", x.len(), batch * g.in_features);
    check_len("linear w", w.len(), g.out_features * g.in_features);
    check_len("linear y", y.len(), batch * g.out_features);
    for n in 0..batch {
        for o in 0..g.out_features {
            let mut s = bias.map_or(0.0, |b| f64::from(b[o]));
            for i in 0..g.in_features {
                s += f64::from(x[n * g.in_features + i]) * f64::from(w[o * g.in_features + i]);
            }
            y[n * g.out_features + o] = s as f32;
        }
    }
}

/// Input rows/columns of pooling window `o` along one side: `start..start + k·d` step `d`,
/// as signed positions (may fall on padding).
fn window(o: usize, stride: usize, pad: usize, k: usize, d: usize) -> impl Iterator<Item = isize> {
    (0..k).map(move |i| (o * stride + i * d) as isize - pad as isize)
}

/// `nn.MaxPool2d`: maximum over the window; padding is −∞; any NaN in the window gives NaN.
pub fn max_pool2d(g: &Pool2dGeom, batch: usize, input: &[f32], output: &mut [f32]) {
    check_len("max_pool2d input", input.len(), batch * g.in_len());
    check_len("max_pool2d output", output.len(), batch * g.out_len());
    for nc in 0..batch * g.channels {
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                let mut m = f32::NEG_INFINITY;
                for ih in window(oh, g.stride_h, g.pad_h, g.kernel_h, g.dilation_h) {
                    for iw in window(ow, g.stride_w, g.pad_w, g.kernel_w, g.dilation_w) {
                        if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                            continue;
                        }
                        let v = input[(nc * g.in_h + ih as usize) * g.in_w + iw as usize];
                        if v.is_nan() || v > m {
                            m = v;
                        }
                        if m.is_nan() {
                            break;
                        }
                    }
                }
                output[(nc * g.out_h + oh) * g.out_w + ow] = m;
            }
        }
    }
}

/// `nn.AvgPool2d`, with PyTorch's divisor: the window clipped to the padded input
/// (`count_include_pad`) or to the input itself.
pub fn avg_pool2d(g: &Pool2dGeom, batch: usize, input: &[f32], output: &mut [f32]) {
    check_len("avg_pool2d input", input.len(), batch * g.in_len());
    check_len("avg_pool2d output", output.len(), batch * g.out_len());
    let range = |o: usize, s: usize, p: usize, k: usize, n: usize| {
        let start = (o * s) as isize - p as isize;
        let end = (start + k as isize).min((n + p) as isize);
        let pool = end - start;
        (start.max(0), end.min(n as isize), pool)
    };
    for nc in 0..batch * g.channels {
        for oh in 0..g.out_h {
            let (h0, h1, ph) = range(oh, g.stride_h, g.pad_h, g.kernel_h, g.in_h);
            for ow in 0..g.out_w {
                let (w0, w1, pw) = range(ow, g.stride_w, g.pad_w, g.kernel_w, g.in_w);
                let mut s = 0.0f64;
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        s += f64::from(input[(nc * g.in_h + ih as usize) * g.in_w + iw as usize]);
                    }
                }
                let div = if g.count_include_pad {
                    ph * pw
                } else {
                    (h1 - h0) * (w1 - w0)
                };
                output[(nc * g.out_h + oh) * g.out_w + ow] = (s / div as f64) as f32;
            }
        }
    }
}

/// `nn.AdaptiveAvgPool2d`: output cell `i` averages input `floor(i·in/out)..ceil((i+1)·in/out)`.
pub fn adaptive_avg_pool2d(g: &AdaptivePoolGeom, batch: usize, input: &[f32], output: &mut [f32]) {
    let in_len = g.channels * g.in_h * g.in_w;
    let out_len = g.channels * g.out_h * g.out_w;
    check_len("adaptive_avg_pool2d input", input.len(), batch * in_len);
    check_len("adaptive_avg_pool2d output", output.len(), batch * out_len);
    for nc in 0..batch * g.channels {
        for oh in 0..g.out_h {
            let h0 = oh * g.in_h / g.out_h;
            let h1 = ((oh + 1) * g.in_h).div_ceil(g.out_h);
            for ow in 0..g.out_w {
                let w0 = ow * g.in_w / g.out_w;
                let w1 = ((ow + 1) * g.in_w).div_ceil(g.out_w);
                let mut s = 0.0f64;
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        s += f64::from(input[(nc * g.in_h + ih) * g.in_w + iw]);
                    }
                }
                output[(nc * g.out_h + oh) * g.out_w + ow] =
                    (s / ((h1 - h0) * (w1 - w0)) as f64) as f32;
            }
        }
    }
}

/// `nn.BatchNorm2d` in eval mode: `(x − mean) / sqrt(var + eps) · gamma + beta`.
pub fn batch_norm2d(
    g: &BatchNormGeom,
    batch: usize,
    input: &[f32],
    p: &BatchNormParams,
    output: &mut [f32],
) {
    check_len(
        "batch_norm2d input",
        input.len(),
        batch * g.channels * g.spatial,
    );
    check_len("batch_norm2d output", output.len(), input.len());
    for n in 0..batch {
        for c in 0..g.channels {
            let inv = 1.0 / (f64::from(p.var[c]) + f64::from(p.eps)).sqrt();
            let gamma = p.gamma.map_or(1.0, |v| f64::from(v[c]));
            let beta = p.beta.map_or(0.0, |v| f64::from(v[c]));
            for s in 0..g.spatial {
                let i = (n * g.channels + c) * g.spatial + s;
                let x = f64::from(input[i]);
                output[i] = ((x - f64::from(p.mean[c])) * inv * gamma + beta) as f32;
            }
        }
    }
}

/// Applies `f` (computed in `f64`) element-wise.
fn map(input: &[f32], output: &mut [f32], f: impl Fn(f64) -> f64) {
    check_len("activation output", output.len(), input.len());
    for (o, &x) in output.iter_mut().zip(input) {
        *o = f(f64::from(x)) as f32;
    }
}

/// `nn.ReLU`.
pub fn relu(input: &[f32], output: &mut [f32]) {
    map(input, output, |x| if x < 0.0 { 0.0 } else { x });
}

/// `nn.LeakyReLU(slope)`.
pub fn leaky_relu(slope: f32, input: &[f32], output: &mut [f32]) {
    map(input, output, |x| {
        if x < 0.0 { x * f64::from(slope) } else { x }
    });
}

/// `nn.Sigmoid`: `1 / (1 + e^−x)`.
pub fn sigmoid(input: &[f32], output: &mut [f32]) {
    map(input, output, |x| 1.0 / (1.0 + (-x).exp()));
}

/// `nn.Tanh`.
pub fn tanh(input: &[f32], output: &mut [f32]) {
    map(input, output, f64::tanh);
}

/// `nn.GELU()` (exact form): `x/2 · (1 + erf(x/√2))`.
pub fn gelu(input: &[f32], output: &mut [f32]) {
    map(input, output, |x| {
        0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
    });
}

/// `softmax(dim=-1)` (or log-softmax) over each contiguous row of `features` values, with
/// rows `stride` apart... in the plain `[N, F]` case `step = 1`.
fn softmax_strided(
    input: &[f32],
    output: &mut [f32],
    offset: usize,
    len: usize,
    step: usize,
    log: bool,
) {
    let at = |i: usize| offset + i * step;
    let m = (0..len)
        .map(|i| f64::from(input[at(i)]))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = (0..len).map(|i| (f64::from(input[at(i)]) - m).exp()).sum();
    for i in 0..len {
        let x = f64::from(input[at(i)]) - m;
        output[at(i)] = if log { x - sum.ln() } else { x.exp() / sum } as f32;
    }
}

/// `softmax(x, dim=1)` of `[rows, features]`.
pub fn softmax(rows: usize, features: usize, input: &[f32], output: &mut [f32]) {
    check_len("softmax input", input.len(), rows * features);
    check_len("softmax output", output.len(), rows * features);
    for r in 0..rows {
        softmax_strided(input, output, r * features, features, 1, false);
    }
}

/// `log_softmax(x, dim=1)` of `[rows, features]`.
pub fn log_softmax(rows: usize, features: usize, input: &[f32], output: &mut [f32]) {
    check_len("log_softmax input", input.len(), rows * features);
    check_len("log_softmax output", output.len(), rows * features);
    for r in 0..rows {
        softmax_strided(input, output, r * features, features, 1, true);
    }
}

/// `softmax(x, dim=1)` of NCHW `[batch, channels, spatial]`.
pub fn softmax_channels(
    batch: usize,
    channels: usize,
    spatial: usize,
    input: &[f32],
    output: &mut [f32],
) {
    check_len(
        "softmax_channels input",
        input.len(),
        batch * channels * spatial,
    );
    check_len("softmax_channels output", output.len(), input.len());
    for n in 0..batch {
        for s in 0..spatial {
            softmax_strided(
                input,
                output,
                n * channels * spatial + s,
                channels,
                spatial,
                false,
            );
        }
    }
}
