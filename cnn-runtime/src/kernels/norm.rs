//! Batch normalisation in inference mode (`nn.BatchNorm2d` / `nn.BatchNorm1d` in `eval()`).

use rayon::prelude::*;

use crate::geom::BatchNormGeom;
use crate::util::check_len;

/// Running statistics and affine parameters of a batch-norm layer, each `[channels]`.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormParams<'a> {
    /// Running mean.
    pub mean: &'a [f32],
    /// Running (biased) variance.
    pub var: &'a [f32],
    /// Scale (`weight`); `None` when `affine=False` (scale 1).
    pub gamma: Option<&'a [f32]>,
    /// Shift (`bias`); `None` when `affine=False` (shift 0).
    pub beta: Option<&'a [f32]>,
    /// Added to the variance (PyTorch default `1e-5`).
    pub eps: f32,
}

impl BatchNormParams<'_> {
    fn check(&self, channels: usize) {
        check_len("batch_norm2d mean", self.mean.len(), channels);
        check_len("batch_norm2d var", self.var.len(), channels);
        if let Some(v) = self.gamma {
            check_len("batch_norm2d gamma", v.len(), channels);
        }
        if let Some(v) = self.beta {
            check_len("batch_norm2d beta", v.len(), channels);
        }
    }

    /// `(mean, scale, shift)` of channel `c`: `y = (x − mean) · scale + shift`.
    fn coeffs(&self, c: usize) -> (f32, f32, f32) {
        let scale = self.gamma.map_or(1.0, |g| g[c]) / (self.var[c] + self.eps).sqrt();
        (self.mean[c], scale, self.beta.map_or(0.0, |b| b[c]))
    }
}

/// Planes per rayon task: at least this many elements each, so small tensors stay serial.
fn min_planes(spatial: usize) -> usize {
    (1 << 14) / spatial.max(1) + 1
}

/// `nn.BatchNorm2d` in eval mode: `output = (input − mean) / sqrt(var + eps) · gamma + beta`,
/// per channel, for `[batch, channels, spatial]` tensors.
///
/// # Panics
/// If a slice length does not match `g` and `batch`.
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
    p.check(g.channels);
    if input.is_empty() {
        return;
    }
    output
        .par_chunks_mut(g.spatial)
        .zip(input.par_chunks(g.spatial))
        .enumerate()
        .with_min_len(min_planes(g.spatial))
        .for_each(|(i, (y, x))| {
            let (m, s, b) = p.coeffs(i % g.channels);
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x - m) * s + b;
            }
        });
}

/// [`batch_norm2d`] in place.
///
/// # Panics
/// If a slice length does not match `g` and `batch`.
pub fn batch_norm2d_inplace(g: &BatchNormGeom, batch: usize, x: &mut [f32], p: &BatchNormParams) {
    check_len(
        "batch_norm2d input",
        x.len(),
        batch * g.channels * g.spatial,
    );
    p.check(g.channels);
    if x.is_empty() {
        return;
    }
    x.par_chunks_mut(g.spatial)
        .enumerate()
        .with_min_len(min_planes(g.spatial))
        .for_each(|(i, x)| {
            let (m, s, b) = p.coeffs(i % g.channels);
            for x in x {
                *x = (*x - m) * s + b;
            }
        });
}

/// Sum over the batch of `f(x)` for channel `c`, in `f64`.
pub(crate) fn channel_sum(
    x: &[f32],
    g: &BatchNormGeom,
    c: usize,
    mut f: impl FnMut(usize, f32) -> f64,
) -> f64 {
    let s = g.spatial;
    let mut acc = 0.0;
    for (n, img) in x.chunks_exact(g.channels * s).enumerate() {
        for (i, &v) in img[c * s..(c + 1) * s].iter().enumerate() {
            acc += f(n * g.channels * s + c * s + i, v);
        }
    }
    acc
}

/// Training forward of `nn.BatchNorm2d` (also `BatchNorm1d` with `spatial = 1`).
///
/// For each channel, over the `batch × spatial` values: `mean` and the **biased** variance
/// normalise `output = (x − mean)/√(var + eps)·gamma + beta`; `running_mean` and `running_var`
/// are updated in place as PyTorch does, `running = (1 − momentum)·running + momentum·stat`,
/// with the **unbiased** variance (`var·M/(M−1)`). `save_mean` and `save_inv_std`
/// (`1/√(var + eps)`) are **overwritten** for [`crate::grad::batch_norm2d_backward`] (feature `train`). Statistics are
/// accumulated in `f64` (two passes). `momentum=None` (cumulative average) is not supported;
/// affine parameters are required (pass ones and zeros for `affine=False`).
///
/// # Panics
/// If a slice length disagrees with `g` and `batch` (`[batch, C, spatial]` tensors, `[C]`
/// vectors), or a channel has a single value (`batch·spatial == 1`), which PyTorch rejects too.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the operands of the PyTorch op"
)]
pub fn batch_norm2d_train_forward(
    g: &BatchNormGeom,
    batch: usize,
    input: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    momentum: f32,
    running_mean: &mut [f32],
    running_var: &mut [f32],
    output: &mut [f32],
    save_mean: &mut [f32],
    save_inv_std: &mut [f32],
) {
    let (c_n, s) = (g.channels, g.spatial);
    let len = batch * c_n * s;
    check_len("batch_norm2d_train_forward input", input.len(), len);
    check_len("batch_norm2d_train_forward output", output.len(), len);
    for (name, v) in [
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("running_mean", running_mean.len()),
        ("running_var", running_var.len()),
        ("save_mean", save_mean.len()),
        ("save_inv_std", save_inv_std.len()),
    ] {
        check_len(&format!("batch_norm2d_train_forward {name}"), v, c_n);
    }
    let m = batch * s;
    assert!(
        m > 1,
        "batch_norm2d_train_forward: expected more than 1 value per channel when training"
    );
    let mf = m as f64;
    save_mean
        .par_iter_mut()
        .zip(save_inv_std.par_iter_mut())
        .zip(running_mean.par_iter_mut().zip(running_var.par_iter_mut()))
        .enumerate()
        .for_each(|(c, ((sm, si), (rm, rv)))| {
            let mean = channel_sum(input, g, c, |_, v| f64::from(v)) / mf;
            let var = channel_sum(input, g, c, |_, v| (f64::from(v) - mean).powi(2)) / mf;
            *sm = mean as f32;
            *si = (1.0 / (var + f64::from(eps)).sqrt()) as f32;
            let mom = f64::from(momentum);
            *rm = ((1.0 - mom) * f64::from(*rm) + mom * mean) as f32;
            *rv = ((1.0 - mom) * f64::from(*rv) + mom * var * mf / (mf - 1.0)) as f32;
        });
    if s == 0 {
        return;
    }
    let (save_mean, save_inv_std) = (&*save_mean, &*save_inv_std);
    output
        .par_chunks_mut(s)
        .zip(input.par_chunks(s))
        .enumerate()
        .for_each(|(i, (y, x))| {
            let c = i % c_n;
            let a = save_inv_std[c] * gamma[c];
            let b = beta[c] - save_mean[c] * a;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * a + b;
            }
        });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::reference;
    use crate::kernels::testutil::{assert_close, data};

    fn check(channels: usize, spatial: usize, batch: usize, affine: bool) {
        let g = BatchNormGeom { channels, spatial };
        let x = data(batch * channels * spatial, 7);
        let mean = data(channels, 8);
        let var: Vec<f32> = data(channels, 9).iter().map(|v| v.abs() + 0.1).collect();
        let gamma = data(channels, 10);
        let beta = data(channels, 11);
        let p = BatchNormParams {
            mean: &mean,
            var: &var,
            gamma: affine.then_some(&gamma[..]),
            beta: affine.then_some(&beta[..]),
            eps: 1e-5,
        };
        let mut want = vec![0.0; x.len()];
        reference::batch_norm2d(&g, batch, &x, &p, &mut want);
        let mut got = vec![f32::NAN; x.len()];
        batch_norm2d(&g, batch, &x, &p, &mut got);
        assert_close(&got, &want, 4, "batch_norm2d");
        let mut inplace = x.clone();
        batch_norm2d_inplace(&g, batch, &mut inplace, &p);
        assert_eq!(inplace, got);
    }

    #[test]
    fn conv_and_feature_shapes() {
        check(32, 196, 64, true);
        check(10, 1, 3, false);
    }

    #[test]
    #[should_panic(expected = "batch_norm2d var")]
    fn wrong_var_length_panics() {
        let g = BatchNormGeom {
            channels: 2,
            spatial: 1,
        };
        let p = BatchNormParams {
            mean: &[0.0; 2],
            var: &[1.0; 1],
            gamma: None,
            beta: None,
            eps: 1e-5,
        };
        batch_norm2d(&g, 1, &[0.0; 2], &p, &mut [0.0; 2]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_reference(c in 1usize..9, s in 1usize..50, n in 1usize..4, a in any::<bool>()) {
            check(c, s, n, a);
        }
    }
}
