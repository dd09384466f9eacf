//! Backward of `nn.BatchNorm2d` in training mode (the forward with batch statistics is
//! [`crate::kernels::batch_norm2d_train_forward`]).

use rayon::prelude::*;

use crate::geom::BatchNormGeom;
use crate::kernels::channel_sum;
use crate::util::check_len;

/// Backward of [`crate::kernels::batch_norm2d_train_forward`] (PyTorch `native_batch_norm_backward`, training).
///
/// With `x̂ = (x − mean)·inv_std` and `M = batch·spatial` per channel, **overwrites**
/// `d_beta = Σ d_out`, `d_gamma = Σ d_out·x̂` and, unless `None`,
/// `d_input = gamma·inv_std·(d_out − d_beta/M − x̂·d_gamma/M)`. Sums in `f64`; parallel over
/// channels, then over planes; deterministic.
///
/// # Panics
/// If a slice length disagrees with `g` and `batch`.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the operands of the PyTorch op"
)]
pub fn batch_norm2d_backward(
    g: &BatchNormGeom,
    batch: usize,
    input: &[f32],
    gamma: &[f32],
    save_mean: &[f32],
    save_inv_std: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
) {
    let (c_n, s) = (g.channels, g.spatial);
    let len = batch * c_n * s;
    check_len("batch_norm2d_backward input", input.len(), len);
    check_len("batch_norm2d_backward d_out", d_out.len(), len);
    for (name, v) in [
        ("gamma", gamma.len()),
        ("save_mean", save_mean.len()),
        ("save_inv_std", save_inv_std.len()),
        ("d_gamma", d_gamma.len()),
        ("d_beta", d_beta.len()),
    ] {
        check_len(&format!("batch_norm2d_backward {name}"), v, c_n);
    }
    d_gamma
        .par_iter_mut()
        .zip(d_beta.par_iter_mut())
        .enumerate()
        .for_each(|(c, (dg, db))| {
            let (mean, inv) = (f64::from(save_mean[c]), f64::from(save_inv_std[c]));
            *db = channel_sum(d_out, g, c, |_, v| f64::from(v)) as f32;
            *dg = channel_sum(d_out, g, c, |i, v| {
                f64::from(v) * (f64::from(input[i]) - mean) * inv
            }) as f32;
        });
    let Some(d_input) = d_input else { return };
    check_len("batch_norm2d_backward d_input", d_input.len(), len);
    if s == 0 {
        return;
    }
    let inv_m = 1.0 / (batch * s) as f32;
    let (d_gamma, d_beta) = (&*d_gamma, &*d_beta);
    d_input
        .par_chunks_mut(s)
        .zip(input.par_chunks(s).zip(d_out.par_chunks(s)))
        .enumerate()
        .for_each(|(i, (dx, (x, dy)))| {
            let c = i % c_n;
            let (mean, inv) = (save_mean[c], save_inv_std[c]);
            let k = gamma[c] * inv;
            let mb = d_beta[c] * inv_m;
            let mg = d_gamma[c] * inv_m;
            for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                let xhat = (x - mean) * inv;
                *d = k * (g - mb - xhat * mg);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::testutil::{Rng, assert_close, dot, fd_grad, to_f64};
    use crate::kernels::batch_norm2d_train_forward;

    fn forward(
        g: &BatchNormGeom,
        batch: usize,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
    ) -> Vec<f64> {
        let (c_n, s) = (g.channels, g.spatial);
        let m = (batch * s) as f64;
        let idx = |n: usize, c: usize, i: usize| (n * c_n + c) * s + i;
        let mut y = vec![0.0; x.len()];
        for c in 0..c_n {
            let vals = || (0..batch).flat_map(move |n| (0..s).map(move |i| idx(n, c, i)));
            let mean = vals().map(|j| x[j]).sum::<f64>() / m;
            let var = vals().map(|j| (x[j] - mean).powi(2)).sum::<f64>() / m;
            for j in vals() {
                y[j] = (x[j] - mean) / (var + 1e-5).sqrt() * gamma[c] + beta[c];
            }
        }
        y
    }

    fn check(g: &BatchNormGeom, batch: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let len = batch * g.channels * g.spatial;
        let x = rng.vec(len, -2.0, 3.0);
        let gamma = rng.vec(g.channels, 0.5, 1.5);
        let beta = rng.vec(g.channels, -1.0, 1.0);
        let r = rng.vec(len, -1.0, 1.0);
        let (mut rm, mut rv) = (vec![0.0; g.channels], vec![1.0; g.channels]);
        let (mut y, mut sm, mut si) =
            (vec![0.0; len], vec![0.0; g.channels], vec![0.0; g.channels]);
        batch_norm2d_train_forward(
            g, batch, &x, &gamma, &beta, 1e-5, 0.1, &mut rm, &mut rv, &mut y, &mut sm, &mut si,
        );
        let (x64, g64, b64) = (to_f64(&x), to_f64(&gamma), to_f64(&beta));
        assert_close(
            "output",
            &y,
            &forward(g, batch, &x64, &g64, &b64),
            1e-5,
            1e-5,
        );
        let mut dx = vec![f32::NAN; len];
        let (mut dg, mut db) = (vec![f32::NAN; g.channels], vec![f32::NAN; g.channels]);
        batch_norm2d_backward(
            g,
            batch,
            &x,
            &gamma,
            &sm,
            &si,
            &r,
            Some(&mut dx),
            &mut dg,
            &mut db,
        );
        let h = 1e-4;
        let want = fd_grad(&x64, h, |x| dot(&r, &forward(g, batch, x, &g64, &b64)));
        assert_close("d_input", &dx, &want, 1e-4, 1e-4);
        let want = fd_grad(&g64, h, |gm| dot(&r, &forward(g, batch, &x64, gm, &b64)));
        assert_close("d_gamma", &dg, &want, 1e-4, 1e-4);
        let want = fd_grad(&b64, h, |b| dot(&r, &forward(g, batch, &x64, &g64, b)));
        assert_close("d_beta", &db, &want, 1e-4, 1e-4);
    }

    #[test]
    fn matches_finite_differences() {
        check(
            &BatchNormGeom {
                channels: 3,
                spatial: 12,
            },
            2,
            1,
        );
        check(
            &BatchNormGeom {
                channels: 4,
                spatial: 1,
            },
            5,
            2,
        );
        check(
            &BatchNormGeom {
                channels: 1,
                spatial: 2,
            },
            1,
            3,
        );
    }

    #[test]
    fn running_statistics_follow_pytorch() {
        // One channel, values 1, 2, 3, 6: mean 3, biased var 3.5, unbiased var 14/3.
        let g = BatchNormGeom {
            channels: 1,
            spatial: 2,
        };
        let x = [1.0, 2.0, 3.0, 6.0];
        let (mut rm, mut rv) = ([1.0f32], [2.0f32]);
        let (mut y, mut sm, mut si) = ([0.0; 4], [0.0], [0.0]);
        batch_norm2d_train_forward(
            &g,
            2,
            &x,
            &[1.0],
            &[0.0],
            0.0,
            0.25,
            &mut rm,
            &mut rv,
            &mut y,
            &mut sm,
            &mut si,
        );
        assert_eq!(sm[0], 3.0);
        assert!((si[0] - 1.0 / 3.5f32.sqrt()).abs() < 1e-7);
        assert_eq!(rm[0], 0.75 * 1.0 + 0.25 * 3.0);
        assert!((rv[0] - (0.75 * 2.0 + 0.25 * 14.0 / 3.0)).abs() < 1e-6);
        assert!((y[3] - 3.0 / 3.5f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    #[should_panic(expected = "more than 1 value per channel")]
    fn single_value_per_channel_panics() {
        let g = BatchNormGeom {
            channels: 1,
            spatial: 1,
        };
        let (mut a, mut b, mut c, mut d, mut e) = ([0.0], [1.0], [0.0], [0.0], [0.0]);
        batch_norm2d_train_forward(
            &g,
            1,
            &[1.0],
            &[1.0],
            &[0.0],
            1e-5,
            0.1,
            &mut a,
            &mut b,
            &mut c,
            &mut d,
            &mut e,
        );
    }
}
