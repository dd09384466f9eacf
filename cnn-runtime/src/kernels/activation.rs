//! Element-wise activations and softmax.
//!
//! Each activation comes in two forms: `name(input, output)` and `name_inplace(x)`. Large
//! tensors are split over the current rayon pool.

use rayon::prelude::*;

use crate::util::check_len;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// `y = f(x)` per element, each chunk's loop compiled for the kernels' ISA
/// ([`crate::simd::vectorized`]).
fn map(input: &[f32], output: &mut [f32], what: &str, f: impl Fn(f32) -> f32 + Sync) {
    check_len(what, output.len(), input.len());
    let isa = super::Isa::detect();
    let run = |y: &mut [f32], x: &[f32]| {
        crate::simd::vectorized(isa, || {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = f(x);
            }
        })
    };
    if input.len() <= CHUNK {
        run(output, input);
        return;
    }
    output
        .par_chunks_mut(CHUNK)
        .zip(input.par_chunks(CHUNK))
        .for_each(|(y, x)| run(y, x));
}

/// `x = f(x)` per element, as [`map`].
fn map_inplace(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    let isa = super::Isa::detect();
    let run =
        |c: &mut [f32]| crate::simd::vectorized(isa, || c.iter_mut().for_each(|v| *v = f(*v)));
    if x.len() <= CHUNK {
        run(x);
        return;
    }
    x.par_chunks_mut(CHUNK).for_each(run);
}

#[inline(always)]
fn relu1(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

#[inline(always)]
fn sigmoid1(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline(always)]
fn gelu1(x: f32) -> f32 {
    // x·Φ(x) = x/2 · erfc(−x/√2); erfc keeps accuracy where 1 + erf(x/√2) would cancel.
    0.5 * x * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// `nn.ReLU`: `max(x, 0)`, NaN stays NaN.
///
/// # Panics
/// If `output` and `input` differ in length.
pub fn relu(input: &[f32], output: &mut [f32]) {
    map(input, output, "relu output", relu1);
}

/// [`relu`] in place.
pub fn relu_inplace(x: &mut [f32]) {
    map_inplace(x, relu1);
}

/// `nn.LeakyReLU(slope)`: `x` if `x >= 0`, else `slope·x`.
///
/// # Panics
/// If `output` and `input` differ in length.
pub fn leaky_relu(slope: f32, input: &[f32], output: &mut [f32]) {
    map(input, output, "leaky_relu output", |x| {
        if x < 0.0 { x * slope } else { x }
    });
}

/// [`leaky_relu`] in place.
pub fn leaky_relu_inplace(slope: f32, x: &mut [f32]) {
    map_inplace(x, |x| if x < 0.0 { x * slope } else { x });
}

/// `nn.Sigmoid`: `1 / (1 + e^−x)`.
///
/// # Panics
/// If `output` and `input` differ in length.
pub fn sigmoid(input: &[f32], output: &mut [f32]) {
    map(input, output, "sigmoid output", sigmoid1);
}

/// [`sigmoid`] in place.
pub fn sigmoid_inplace(x: &mut [f32]) {
    map_inplace(x, sigmoid1);
}

/// `nn.Tanh`.
///
/// # Panics
/// If `output` and `input` differ in length.
pub fn tanh(input: &[f32], output: &mut [f32]) {
    map(input, output, "tanh output", f32::tanh);
}

/// [`tanh`] in place.
pub fn tanh_inplace(x: &mut [f32]) {
    map_inplace(x, f32::tanh);
}

/// `nn.GELU()` with PyTorch's default `approximate='none'`: `x·Φ(x)` with the exact `erf`.
///
/// # Panics
/// If `output` and `input` differ in length.
pub fn gelu(input: &[f32], output: &mut [f32]) {
    map(input, output, "gelu output", gelu1);
}

/// [`gelu`] in place.
pub fn gelu_inplace(x: &mut [f32]) {
    map_inplace(x, gelu1);
}

/// Softmax (or log-softmax) of one contiguous row, subtracting the row maximum first.
fn softmax_row(x: &[f32], y: &mut [f32], log: bool) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (y, &x) in y.iter_mut().zip(x) {
        let e = (x - m).exp();
        *y = e;
        sum += e;
    }
    if log {
        // (x − m) first: m + ln(sum) would round at the scale of m.
        let l = sum.ln();
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x - m) - l;
        }
    } else {
        let inv = 1.0 / sum;
        y.iter_mut().for_each(|y| *y *= inv);
    }
}

fn softmax_rows(
    rows: usize,
    features: usize,
    input: &[f32],
    output: &mut [f32],
    log: bool,
    what: &str,
) {
    check_len(what, input.len(), rows * features);
    check_len(what, output.len(), rows * features);
    if features == 0 {
        return;
    }
    output
        .par_chunks_mut(features)
        .zip(input.par_chunks(features))
        .with_min_len(CHUNK / features + 1)
        .for_each(|(y, x)| softmax_row(x, y, log));
}

/// `softmax(x, dim=1)` of a `[rows, features]` tensor (each row sums to 1).
///
/// # Panics
/// If a slice length is not `rows · features`.
pub fn softmax(rows: usize, features: usize, input: &[f32], output: &mut [f32]) {
    softmax_rows(rows, features, input, output, false, "softmax");
}

/// `log_softmax(x, dim=1)` of a `[rows, features]` tensor: `x − max − ln Σ e^(x − max)`.
///
/// # Panics
/// If a slice length is not `rows · features`.
pub fn log_softmax(rows: usize, features: usize, input: &[f32], output: &mut [f32]) {
    softmax_rows(rows, features, input, output, true, "log_softmax");
}

/// `softmax(x, dim=1)` of an NCHW tensor `[batch, channels, spatial]`: over channels, for
/// each image and pixel.
///
/// # Panics
/// If a slice length is not `batch · channels · spatial`.
pub fn softmax_channels(
    batch: usize,
    channels: usize,
    spatial: usize,
    input: &[f32],
    output: &mut [f32],
) {
    let len = batch * channels * spatial;
    check_len("softmax_channels input", input.len(), len);
    check_len("softmax_channels output", output.len(), len);
    if len == 0 {
        return;
    }
    const W: usize = 64; // pixels per block: running max and sum stay on the stack
    let img = channels * spatial;
    output
        .par_chunks_mut(img)
        .zip(input.par_chunks(img))
        .for_each(|(y, x)| {
            for s0 in (0..spatial).step_by(W) {
                let w = W.min(spatial - s0);
                let mut m = [f32::NEG_INFINITY; W];
                let mut sum = [0.0f32; W];
                for c in 0..channels {
                    let xs = &x[c * spatial + s0..][..w];
                    for (m, &x) in m.iter_mut().zip(xs) {
                        *m = m.max(x);
                    }
                }
                for c in 0..channels {
                    let xs = &x[c * spatial + s0..][..w];
                    let ys = &mut y[c * spatial + s0..][..w];
                    for i in 0..w {
                        let e = (xs[i] - m[i]).exp();
                        ys[i] = e;
                        sum[i] += e;
                    }
                }
                for c in 0..channels {
                    let ys = &mut y[c * spatial + s0..][..w];
                    for i in 0..w {
                        ys[i] /= sum[i];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::reference;
    use crate::kernels::testutil::{assert_close, data};

    type Pair = (
        fn(&[f32], &mut [f32]),
        fn(&[f32], &mut [f32]),
        fn(&mut [f32]),
    );

    fn pairs() -> Vec<(&'static str, Pair)> {
        vec![
            ("relu", (relu, reference::relu, relu_inplace)),
            ("sigmoid", (sigmoid, reference::sigmoid, sigmoid_inplace)),
            ("tanh", (tanh, reference::tanh, tanh_inplace)),
            ("gelu", (gelu, reference::gelu, gelu_inplace)),
            (
                "leaky_relu",
                (
                    |x, y| leaky_relu(0.01, x, y),
                    |x, y| reference::leaky_relu(0.01, x, y),
                    |x| leaky_relu_inplace(0.01, x),
                ),
            ),
        ]
    }

    fn check_elementwise(x: &[f32]) {
        for (name, (fast, slow, inplace)) in pairs() {
            let mut want = vec![0.0; x.len()];
            slow(x, &mut want);
            let mut got = vec![0.0; x.len()];
            fast(x, &mut got);
            assert_close(&got, &want, 1, name);
            let mut y = x.to_vec();
            inplace(&mut y);
            assert_close(&y, &want, 1, name);
        }
    }

    #[test]
    fn elementwise_edge_values() {
        let mut x: Vec<f32> = (-200..=200).map(|i| i as f32 * 0.07).collect();
        x.extend([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 1e4, -1e4, f32::NAN]);
        x.extend([f32::INFINITY, f32::NEG_INFINITY]);
        check_elementwise(&x);
        check_elementwise(&data(40_000, 16)); // parallel path
    }

    #[test]
    fn gelu_known_values() {
        // x·Φ(x) with Φ(−3) = 0.0013498980, Φ(−1) = 0.15865525, Φ(0.5) = 0.69146246,
        // Φ(2) = 0.97724987 (standard normal CDF tables).
        let x = [-3.0, -1.0, 0.5, 2.0];
        let want = [-0.004_049_694, -0.158_655_25, 0.345_731_23, 1.954_499_7];
        let mut y = [0.0; 4];
        gelu(&x, &mut y);
        assert_close(&y, &want, 1, "gelu");
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let x = [1000.0, 1001.0, 1002.0, -1e30];
        let mut y = [0.0; 4];
        softmax(1, 4, &x, &mut y);
        let mut want = [0.0; 4];
        reference::softmax(1, 4, &x, &mut want);
        assert_close(&y, &want, 1, "softmax");
        assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        log_softmax(1, 4, &x, &mut y);
        reference::log_softmax(1, 4, &x, &mut want);
        assert_close(&y, &want, 4, "log_softmax");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn softmaxes_match_reference(
            n in 1usize..5, c in 1usize..20, s in 1usize..150, scale in 0.1f32..50.0,
        ) {
            let x: Vec<f32> = data(n * c * s, 17).iter().map(|v| v * scale).collect();
            let mut want = vec![0.0; x.len()];
            let mut got = vec![0.0; x.len()];
            reference::softmax(n * s, c, &x, &mut want);
            softmax(n * s, c, &x, &mut got);
            assert_close(&got, &want, c, "softmax");
            reference::log_softmax(n * s, c, &x, &mut want);
            log_softmax(n * s, c, &x, &mut got);
            assert_close(&got, &want, c, "log_softmax");
            reference::softmax_channels(n, c, s, &x, &mut want);
            softmax_channels(n, c, s, &x, &mut got);
            assert_close(&got, &want, c, "softmax_channels");
        }
    }
}
