//! Backward of `nn.Dropout` in training mode (the forward is [`crate::kernels::dropout_train_forward`]).

use crate::util::check_len;

/// Backward of [`crate::kernels::dropout_train_forward`]: **overwrites** `d_input = d_out·mask/(1 − p)`.
///
/// # Panics
/// If `p` is outside `[0, 1]` or the slice lengths differ.
pub fn dropout_backward(p: f32, mask: &[u8], d_out: &[f32], d_input: &mut [f32]) {
    assert!(
        (0.0..=1.0).contains(&p),
        "dropout probability {p} not in [0, 1]"
    );
    check_len("dropout_backward mask", mask.len(), d_out.len());
    check_len("dropout_backward d_input", d_input.len(), d_out.len());
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    for ((d, &m), &g) in d_input.iter_mut().zip(mask).zip(d_out) {
        *d = if m != 0 { g * scale } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::testutil::{Rng, assert_close, fd_grad, to_f64};
    use crate::kernels::{DropoutRng, dropout_train_forward};

    #[test]
    fn backward_matches_finite_differences_for_a_fixed_mask() {
        let mut rng = Rng::new(1);
        let x = rng.vec(50, -1.0, 1.0);
        let r = rng.vec(50, -1.0, 1.0);
        let mut drng = DropoutRng::new(3);
        let (mut mask, mut y) = (vec![0; 50], vec![0.0; 50]);
        dropout_train_forward(0.5, &x, &mut || drng.next_u32(), &mut mask, &mut y);
        let mut dx = vec![f32::NAN; 50];
        dropout_backward(0.5, &mask, &r, &mut dx);
        let f = |x: &[f64]| -> f64 {
            x.iter()
                .zip(&mask)
                .zip(&r)
                .map(|((&x, &m), &r)| f64::from(m) * x * 2.0 * f64::from(r))
                .sum()
        };
        assert_close("d_input", &dx, &fd_grad(&to_f64(&x), 1e-3, f), 1e-6, 1e-6);
    }

    #[test]
    fn extreme_probabilities() {
        let x = [1.0f32, -2.0, 3.0];
        let (mut mask, mut y) = ([9u8; 3], [9.0f32; 3]);
        let mut rng = DropoutRng::new(1);
        dropout_train_forward(1.0, &x, &mut || rng.next_u32(), &mut mask, &mut y);
        assert_eq!((mask, y), ([0; 3], [0.0; 3]));
        dropout_train_forward(0.0, &x, &mut || rng.next_u32(), &mut mask, &mut y);
        assert_eq!((mask, y), ([1; 3], x));
        let mut dx = [9.0; 3];
        dropout_backward(1.0, &[0; 3], &[1.0; 3], &mut dx);
        assert_eq!(dx, [0.0; 3]);
        // Even u32::MAX is dropped at p = 1, and 0 is kept at p = 0.
        dropout_train_forward(1.0, &x, &mut || u32::MAX, &mut mask, &mut y);
        assert_eq!(mask, [0; 3]);
        dropout_train_forward(0.0, &x, &mut || 0, &mut mask, &mut y);
        assert_eq!(mask, [1; 3]);
    }
}
