//! Backward of `nn.Linear`.

use super::{Mat, gemm_f32};
use crate::geom::LinearGeom;
use crate::util::check_len;

/// Backward of `nn.Linear` (`y = x·Wᵀ + b`) for a batch.
///
/// `input` is `[batch, in]`, `weight` `[out, in]`, `d_out` `[batch, out]`. **Overwrites**
/// `d_input = d_out·W` (`[batch, in]`; `None` when not needed), `d_weight = d_outᵀ·x`
/// (`[out, in]`) and `d_bias = Σ_batch d_out` (`[out]`; `None` without a bias).
/// Single-threaded GEMMs (the seed model's linear layer is small); deterministic.
///
/// # Panics
/// If a slice length disagrees with `g` and `batch`.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the operands of the PyTorch op"
)]
pub fn linear_backward(
    g: &LinearGeom,
    batch: usize,
    input: &[f32],
    weight: &[f32],
    d_out: &[f32],
    d_input: Option<&mut [f32]>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
) {
    let (fi, fo) = (g.in_features, g.out_features);
    check_len("linear_backward input", input.len(), batch * fi);
    check_len("linear_backward weight", weight.len(), fo * fi);
    check_len("linear_backward d_out", d_out.len(), batch * fo);
    check_len("linear_backward d_weight", d_weight.len(), fo * fi);
    if let Some(dx) = d_input {
        check_len("linear_backward d_input", dx.len(), batch * fi);
        gemm_f32(
            dx,
            Mat::row_major(batch, fi),
            false,
            d_out,
            Mat::row_major(batch, fo),
            weight,
            Mat::row_major(fo, fi),
        );
    }
    gemm_f32(
        d_weight,
        Mat::row_major(fo, fi),
        false,
        d_out,
        Mat::transposed(fo, batch),
        input,
        Mat::row_major(batch, fi),
    );
    if let Some(db) = d_bias {
        check_len("linear_backward d_bias", db.len(), fo);
        db.fill(0.0);
        for row in d_out.chunks_exact(fo.max(1)) {
            for (d, v) in db.iter_mut().zip(row) {
                *d += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::testutil::{Rng, assert_close, dot, fd_grad, to_f64};

    fn forward(g: &LinearGeom, batch: usize, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; batch * g.out_features];
        for n in 0..batch {
            for o in 0..g.out_features {
                y[n * g.out_features + o] = b[o]
                    + (0..g.in_features)
                        .map(|i| x[n * g.in_features + i] * w[o * g.in_features + i])
                        .sum::<f64>();
            }
        }
        y
    }

    #[test]
    fn matches_finite_differences() {
        for (batch, fi, fo, seed) in [(1, 1, 1, 1), (3, 7, 5, 2), (8, 33, 10, 3), (2, 64, 1, 4)] {
            let g = LinearGeom {
                in_features: fi,
                out_features: fo,
            };
            let mut rng = Rng::new(seed);
            let x = rng.vec(batch * fi, -1.0, 1.0);
            let w = rng.vec(fo * fi, -1.0, 1.0);
            let b = rng.vec(fo, -1.0, 1.0);
            let r = rng.vec(batch * fo, -1.0, 1.0);
            let (mut dx, mut dw, mut db) = (
                vec![f32::NAN; x.len()],
                vec![f32::NAN; w.len()],
                vec![f32::NAN; fo],
            );
            linear_backward(&g, batch, &x, &w, &r, Some(&mut dx), &mut dw, Some(&mut db));
            let (x64, w64, b64) = (to_f64(&x), to_f64(&w), to_f64(&b));
            let h = 1e-3;
            let want = fd_grad(&x64, h, |x| dot(&r, &forward(&g, batch, x, &w64, &b64)));
            assert_close("d_input", &dx, &want, 1e-4, 1e-4);
            let want = fd_grad(&w64, h, |w| dot(&r, &forward(&g, batch, &x64, w, &b64)));
            assert_close("d_weight", &dw, &want, 1e-4, 1e-4);
            let want = fd_grad(&b64, h, |b| dot(&r, &forward(&g, batch, &x64, &w64, b)));
            assert_close("d_bias", &db, &want, 1e-4, 1e-4);
        }
    }

    #[test]
    fn seed_head_shape_without_input_gradient() {
        let g = LinearGeom {
            in_features: 3136,
            out_features: 10,
        };
        let batch = 4;
        let mut rng = Rng::new(9);
        let x = rng.vec(batch * 3136, -1.0, 1.0);
        let w = rng.vec(10 * 3136, -0.1, 0.1);
        let r = rng.vec(batch * 10, -1.0, 1.0);
        let mut dw = vec![f32::NAN; w.len()];
        linear_backward(&g, batch, &x, &w, &r, None, &mut dw, None);
        for (o, row) in dw.chunks(3136).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                let want: f64 = (0..batch)
                    .map(|n| f64::from(r[n * 10 + o]) * f64::from(x[n * 3136 + i]))
                    .sum();
                assert!((f64::from(v) - want).abs() < 1e-5, "dW[{o},{i}]");
            }
        }
    }

    #[test]
    #[should_panic(expected = "linear_backward d_out")]
    fn wrong_length_panics() {
        let g = LinearGeom {
            in_features: 2,
            out_features: 2,
        };
        linear_backward(
            &g,
            1,
            &[0.0; 2],
            &[0.0; 4],
            &[0.0; 3],
            None,
            &mut [0.0; 4],
            None,
        );
    }
}
