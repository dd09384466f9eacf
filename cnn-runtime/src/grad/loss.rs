//! Classification losses and the backward of the softmax family.
//!
//! Logits and probabilities are `[batch, classes]`, row-major; `batch` is `labels.len()` for the
//! losses. Losses use PyTorch's default `reduction="mean"` (an empty batch gives NaN, as in
//! PyTorch); row sums are accumulated in `f64`.

use crate::util::check_len;

fn label_index<L: Copy + Into<usize>>(what: &str, l: L, classes: usize) -> usize {
    let y = l.into();
    assert!(
        y < classes,
        "{what}: label {y} out of range for {classes} classes"
    );
    y
}

/// Fused `log_softmax` + `nll_loss` (PyTorch `nn.functional.cross_entropy`, mean reduction).
///
/// Returns the mean over the batch of `logsumexp(z) − z[label]`, computed stably (row maximum
/// subtracted, sums in `f64`), and **overwrites** `d_logits` with `(softmax(z) − onehot)/batch`.
/// `labels` may be `u8` (MNIST files) or `usize`.
///
/// # Panics
/// If `logits` or `d_logits` is not `labels.len() × classes` long, or a label is `>= classes`.
pub fn softmax_cross_entropy<L: Copy + Into<usize>>(
    logits: &[f32],
    labels: &[L],
    classes: usize,
    d_logits: &mut [f32],
) -> f32 {
    let n = labels.len();
    check_len("softmax_cross_entropy logits", logits.len(), n * classes);
    check_len(
        "softmax_cross_entropy d_logits",
        d_logits.len(),
        n * classes,
    );
    let inv_n = 1.0 / n as f64;
    let mut total = 0.0f64;
    for ((z, d), &l) in logits
        .chunks_exact(classes.max(1))
        .zip(d_logits.chunks_exact_mut(classes.max(1)))
        .zip(labels)
    {
        let y = label_index("softmax_cross_entropy", l, classes);
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let m = f64::from(m);
        let s: f64 = z.iter().map(|&v| (f64::from(v) - m).exp()).sum();
        total += m + s.ln() - f64::from(z[y]);
        for (j, (d, &v)) in d.iter_mut().zip(z).enumerate() {
            let p = (f64::from(v) - m).exp() / s;
            let t = if j == y { 1.0 } else { 0.0 };
            *d = ((p - t) * inv_n) as f32;
        }
    }
    (total * inv_n) as f32
}

/// `nn.NLLLoss` (mean reduction) on log-probabilities, e.g. the output of a final
/// `log_softmax` (PyTorch's usual MNIST recipe).
///
/// Returns `−mean(log_probs[n, label_n])` and **overwrites** `d_log_probs` with `−1/batch` at
/// each label and 0 elsewhere.
///
/// # Panics
/// If `log_probs` or `d_log_probs` is not `labels.len() × classes` long, or a label is
/// `>= classes`.
pub fn nll_loss<L: Copy + Into<usize>>(
    log_probs: &[f32],
    labels: &[L],
    classes: usize,
    d_log_probs: &mut [f32],
) -> f32 {
    let n = labels.len();
    check_len("nll_loss log_probs", log_probs.len(), n * classes);
    check_len("nll_loss d_log_probs", d_log_probs.len(), n * classes);
    d_log_probs.fill(0.0);
    let inv_n = 1.0 / n as f64;
    let mut total = 0.0f64;
    for (i, &l) in labels.iter().enumerate() {
        let y = label_index("nll_loss", l, classes);
        total -= f64::from(log_probs[i * classes + y]);
        d_log_probs[i * classes + y] = -inv_n as f32;
    }
    (total * inv_n) as f32
}

/// Backward of `log_softmax` over the last axis from its **output** `y`:
/// `d_input = d_out − exp(y)·Σ_row d_out` (PyTorch `_log_softmax_backward_data`).
/// **Overwrites** `d_input`; all three slices are `rows × classes`.
///
/// # Panics
/// If the lengths differ or are not a multiple of `classes`.
pub fn log_softmax_backward(output: &[f32], d_out: &[f32], classes: usize, d_input: &mut [f32]) {
    rows_check("log_softmax_backward", output, d_out, classes, d_input);
    for ((y, dy), dx) in output
        .chunks_exact(classes.max(1))
        .zip(d_out.chunks_exact(classes.max(1)))
        .zip(d_input.chunks_exact_mut(classes.max(1)))
    {
        let s: f64 = dy.iter().map(|&v| f64::from(v)).sum();
        for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
            *d = (f64::from(g) - f64::from(y).exp() * s) as f32;
        }
    }
}

/// Backward of `softmax` over the last axis from its **output** `y`:
/// `d_input = y·(d_out − Σ_row d_out·y)` (PyTorch `_softmax_backward_data`).
/// **Overwrites** `d_input`; all three slices are `rows × classes`.
///
/// # Panics
/// If the lengths differ or are not a multiple of `classes`.
pub fn softmax_backward(output: &[f32], d_out: &[f32], classes: usize, d_input: &mut [f32]) {
    rows_check("softmax_backward", output, d_out, classes, d_input);
    for ((y, dy), dx) in output
        .chunks_exact(classes.max(1))
        .zip(d_out.chunks_exact(classes.max(1)))
        .zip(d_input.chunks_exact_mut(classes.max(1)))
    {
        let s: f64 = dy
            .iter()
            .zip(y)
            .map(|(&g, &y)| f64::from(g) * f64::from(y))
            .sum();
        for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
            *d = (f64::from(y) * (f64::from(g) - s)) as f32;
        }
    }
}

fn rows_check(name: &str, y: &[f32], dy: &[f32], classes: usize, dx: &[f32]) {
    assert!(
        classes > 0 && y.len().is_multiple_of(classes),
        "{name}: output has {} elements, not a multiple of {classes} classes",
        y.len()
    );
    check_len(name, dy.len(), y.len());
    check_len(name, dx.len(), y.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::testutil::{Rng, assert_close, dot, fd_grad, to_f64};

    fn log_softmax(z: &[f64], c: usize) -> Vec<f64> {
        z.chunks(c)
            .flat_map(|row| {
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                row.iter().map(move |v| v - lse)
            })
            .collect()
    }

    fn ce(z: &[f64], labels: &[u8], c: usize) -> f64 {
        let lp = log_softmax(z, c);
        -labels
            .iter()
            .enumerate()
            .map(|(i, &l)| lp[i * c + l as usize])
            .sum::<f64>()
            / labels.len() as f64
    }

    #[test]
    fn cross_entropy_matches_finite_differences() {
        let mut rng = Rng::new(1);
        let (n, c) = (5, 7);
        let z = rng.vec(n * c, -3.0, 3.0);
        let labels: Vec<u8> = (0..n).map(|_| rng.below(c) as u8).collect();
        let mut d = vec![f32::NAN; n * c];
        let loss = softmax_cross_entropy(&z, &labels, c, &mut d);
        let z64 = to_f64(&z);
        assert!((f64::from(loss) - ce(&z64, &labels, c)).abs() < 1e-6);
        let want = fd_grad(&z64, 1e-4, |z| ce(z, &labels, c));
        assert_close("d_logits", &d, &want, 1e-7, 1e-5);
        // usize labels give the same result.
        let labels_us: Vec<usize> = labels.iter().map(|&l| l.into()).collect();
        let mut d2 = vec![0.0; n * c];
        assert_eq!(softmax_cross_entropy(&z, &labels_us, c, &mut d2), loss);
        assert_eq!(d, d2);
    }

    #[test]
    fn cross_entropy_is_stable_for_huge_logits() {
        // Uniform logits of 1e30: loss ln(3) whatever the offset; naive exp would overflow.
        let z = [1e30f32, 1e30, 1e30, -1e30, 0.0, 1e30];
        let mut d = [0.0; 6];
        let loss = softmax_cross_entropy(&z, &[0u8, 1], 3, &mut d);
        // Row 0: ln 3. Row 1: softmax is one-hot on class 2, label 1: loss 1e30 (finite).
        assert!((f64::from(loss) - (3f64.ln() + 1e30) / 2.0).abs() < 1e24);
        assert!(d.iter().all(|v| v.is_finite()));
        assert_eq!(&d[3..], &[0.0, -0.5, 0.5]);
        let third = (1.0f64 / 3.0 - 1.0) / 2.0;
        assert!((f64::from(d[0]) - third).abs() < 1e-7);
    }

    #[test]
    fn known_value() {
        // Two classes, logits (0, 0): loss ln 2, gradient ±1/4 for a batch of 2.
        let mut d = [0.0; 4];
        let loss = softmax_cross_entropy(&[0.0, 0.0, 0.0, 0.0], &[0u8, 1], 2, &mut d);
        assert!((loss - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(d, [-0.25, 0.25, 0.25, -0.25]);
    }

    #[test]
    fn nll_loss_matches_cross_entropy_after_log_softmax() {
        let mut rng = Rng::new(2);
        let (n, c) = (4, 10);
        let z = rng.vec(n * c, -2.0, 2.0);
        let labels: Vec<usize> = (0..n).map(|_| rng.below(c)).collect();
        let lp: Vec<f32> = log_softmax(&to_f64(&z), c)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let mut d_lp = vec![f32::NAN; n * c];
        let loss = nll_loss(&lp, &labels, c, &mut d_lp);
        let mut d_z = vec![f32::NAN; n * c];
        log_softmax_backward(&lp, &d_lp, c, &mut d_z);
        let mut d_fused = vec![0.0; n * c];
        let fused = softmax_cross_entropy(&z, &labels, c, &mut d_fused);
        assert!((loss - fused).abs() < 1e-6);
        assert_close("d_logits", &d_z, &to_f64(&d_fused), 1e-7, 1e-5);
        for (i, &l) in labels.iter().enumerate() {
            assert_eq!(d_lp[i * c + l], -0.25);
        }
    }

    #[test]
    fn log_softmax_backward_matches_finite_differences() {
        let mut rng = Rng::new(3);
        let (n, c) = (3, 6);
        let z = rng.vec(n * c, -2.0, 2.0);
        let r = rng.vec(n * c, -1.0, 1.0);
        let z64 = to_f64(&z);
        let y: Vec<f32> = log_softmax(&z64, c).iter().map(|&v| v as f32).collect();
        let mut dx = vec![f32::NAN; n * c];
        log_softmax_backward(&y, &r, c, &mut dx);
        let want = fd_grad(&z64, 1e-4, |z| dot(&r, &log_softmax(z, c)));
        assert_close("d_input", &dx, &want, 1e-6, 1e-5);
    }

    #[test]
    fn softmax_backward_matches_finite_differences() {
        let mut rng = Rng::new(4);
        let (n, c) = (3, 6);
        let z = rng.vec(n * c, -2.0, 2.0);
        let r = rng.vec(n * c, -1.0, 1.0);
        let z64 = to_f64(&z);
        let softmax =
            |z: &[f64]| -> Vec<f64> { log_softmax(z, c).iter().map(|v| v.exp()).collect() };
        let y: Vec<f32> = softmax(&z64).iter().map(|&v| v as f32).collect();
        let mut dx = vec![f32::NAN; n * c];
        softmax_backward(&y, &r, c, &mut dx);
        let want = fd_grad(&z64, 1e-4, |z| dot(&r, &softmax(z)));
        assert_close("d_input", &dx, &want, 1e-6, 1e-5);
    }

    #[test]
    #[should_panic(expected = "label 10 out of range for 10 classes")]
    fn bad_label_panics() {
        softmax_cross_entropy(&[0.0; 10], &[10u8], 10, &mut [0.0; 10]);
    }
}
