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
