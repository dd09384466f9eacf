//! Backward of the element-wise activations.
//!
//! Each comes in two forms: `*_backward(saved, d_out, d_input)` **overwrites** `d_input`, and
//! `*_backward_inplace(saved, grad)` turns the output gradient `grad` into the input gradient
//! in place. `saved` is the forward's input or output, as each function says (the one PyTorch
//! saves). All slices have the same length; a mismatch panics. Parallel over fixed-size chunks.

use rayon::prelude::*;

use super::ELEMWISE_CHUNK;
use crate::util::check_len;

fn map2(name: &str, s: &[f32], dy: &[f32], dx: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    check_len(name, dy.len(), s.len());
    check_len(name, dx.len(), s.len());
    dx.par_chunks_mut(ELEMWISE_CHUNK)
        .zip(s.par_chunks(ELEMWISE_CHUNK))
        .zip(dy.par_chunks(ELEMWISE_CHUNK))
        .for_each(|((dx, s), dy)| {
            for ((d, &s), &g) in dx.iter_mut().zip(s).zip(dy) {
                *d = f(s, g);
            }
        });
}

fn map2_inplace(name: &str, s: &[f32], g: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    check_len(name, g.len(), s.len());
    g.par_chunks_mut(ELEMWISE_CHUNK)
        .zip(s.par_chunks(ELEMWISE_CHUNK))
        .for_each(|(g, s)| {
            for (d, &s) in g.iter_mut().zip(s) {
                *d = f(s, *d);
            }
        });
}

macro_rules! activation_backward {
    ($(#[$doc:meta])* $name:ident, $inplace:ident, |$s:ident, $g:ident $(, $p:ident: $pt:ty)?| $body:expr) => {
        $(#[$doc])*
        pub fn $name(saved: &[f32], $($p: $pt,)? d_out: &[f32], d_input: &mut [f32]) {
            map2(stringify!($name), saved, d_out, d_input, |$s, $g| $body);
        }
        #[doc = concat!("In-place form of [`", stringify!($name), "`]: `grad` holds `d_out` on entry and `d_input` on exit.")]
        pub fn $inplace(saved: &[f32], $($p: $pt,)? grad: &mut [f32]) {
            map2_inplace(stringify!($inplace), saved, grad, |$s, $g| $body);
        }
    };
}

activation_backward!(
    /// Backward of ReLU from the forward's **input** (or output: the sign test is the same):
    /// `d_input = d_out` where `x > 0`, else 0 (PyTorch `threshold_backward`).
    relu_backward, relu_backward_inplace, |x, g| if x > 0.0 { g } else { 0.0 }
);

activation_backward!(
    /// Backward of LeakyReLU from the forward's **input**: `d_out` where `x > 0`, else
    /// `d_out · negative_slope` (PyTorch `leaky_relu_backward`). The output works too when
    /// `negative_slope > 0` (it has the input's sign).
    leaky_relu_backward, leaky_relu_backward_inplace,
    |x, g, negative_slope: f32| if x > 0.0 { g } else { g * negative_slope }
);

activation_backward!(
    /// Backward of sigmoid from the forward's **output** `y`: `d_out · (1 − y) · y`.
    sigmoid_backward, sigmoid_backward_inplace, |y, g| g * (1.0 - y) * y
);

activation_backward!(
    /// Backward of tanh from the forward's **output** `y`: `d_out · (1 − y²)`.
    tanh_backward, tanh_backward_inplace, |y, g| g * (1.0 - y * y)
);

activation_backward!(
    /// Backward of exact (erf) GELU from the forward's **input**:
    /// `d_out · (Φ(x) + x·φ(x))`, with Φ the standard normal CDF and φ its density
    /// (PyTorch `gelu_backward`, `approximate="none"`).
    gelu_backward, gelu_backward_inplace, |x, g| g * gelu_derivative(x)
);

/// `Φ(x) + x·φ(x)`, computed in `f64`.
fn gelu_derivative(x: f32) -> f32 {
    let x = f64::from(x);
    let cdf = 0.5 * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp()
        * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    (cdf + x * pdf) as f32
}

/// The error function, Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, which is
/// below the resolution of an `f32` gradient near 1.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x.is_nan() { x } else { y.copysign(x) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::testutil::{Rng, assert_close, fd_grad, to_f64};

    /// erf by its everywhere-convergent positive series (accurate to ~1e-15 for |x| < 6).
    fn erf_exact(x: f64) -> f64 {
        if x.abs() >= 6.0 {
            return x.signum();
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= 2.0 * x * x / (2.0 * n + 1.0);
            sum += term;
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp()
    }

    /// Checks `backward` against the derivative of `f` by central differences at `xs`,
    /// where the backward is fed `saved(x)`.
    fn check(
        xs: &[f32],
        f: impl Fn(f64) -> f64,
        saved: impl Fn(f32) -> f32,
        backward: impl Fn(&[f32], &[f32], &mut [f32]),
        inplace: impl Fn(&[f32], &mut [f32]),
        tol: f64,
    ) {
        let mut rng = Rng::new(xs.len() as u64);
        let dy = rng.vec(xs.len(), -2.0, 2.0);
        let s: Vec<f32> = xs.iter().map(|&x| saved(x)).collect();
        let mut dx = vec![f32::NAN; xs.len()];
        backward(&s, &dy, &mut dx);
        let want: Vec<f64> = to_f64(xs)
            .iter()
            .zip(&dy)
            .map(|(&x, &g)| f64::from(g) * fd_grad(&[x], 1e-5, |v| f(v[0]))[0])
            .collect();
        assert_close("d_input", &dx, &want, tol, tol);
        let mut g = dy.clone();
        inplace(&s, &mut g);
        assert_eq!(g, dx, "in-place form differs");
    }

    /// Points avoiding the kinks at 0 by more than the finite-difference step.
    fn points() -> Vec<f32> {
        let mut rng = Rng::new(3);
        let mut xs = rng.vec(40_000, -6.0, 6.0);
        xs.retain(|x| x.abs() > 1e-3);
        xs.extend([-3.0, -1.0, -0.5, 0.5, 1.0, 3.0, 8.0, -8.0]);
        xs
    }

    #[test]
    fn relu() {
        check(
            &points(),
            |x| x.max(0.0),
            |x| x,
            relu_backward,
            relu_backward_inplace,
            1e-6,
        );
        let mut dx = [9.0; 3];
        relu_backward(&[0.0, f32::NAN, -0.0], &[1.0; 3], &mut dx);
        assert_eq!(dx, [0.0; 3], "PyTorch passes no gradient at 0 or NaN");
    }

    #[test]
    fn leaky_relu() {
        check(
            &points(),
            |x| if x > 0.0 { x } else { 0.01 * x },
            |x| x,
            |s, dy, dx| leaky_relu_backward(s, 0.01, dy, dx),
            |s, g| leaky_relu_backward_inplace(s, 0.01, g),
            1e-6,
        );
    }

    #[test]
    fn sigmoid() {
        check(
            &points(),
            |x| 1.0 / (1.0 + (-x).exp()),
            |x| 1.0 / (1.0 + (-x).exp()),
            sigmoid_backward,
            sigmoid_backward_inplace,
            1e-6,
        );
    }

    #[test]
    fn tanh() {
        check(
            &points(),
            f64::tanh,
            f32::tanh,
            tanh_backward,
            tanh_backward_inplace,
            2e-6,
        );
    }

    #[test]
    fn gelu() {
        check(
            &points(),
            |x| 0.5 * x * (1.0 + erf_exact(x / std::f64::consts::SQRT_2)),
            |x| x,
            gelu_backward,
            gelu_backward_inplace,
            1e-6,
        );
    }

    #[test]
    fn erf_approximation_error_is_below_2e_7() {
        for i in -700..=700 {
            let x = f64::from(i) / 100.0;
            assert!((erf(x) - erf_exact(x)).abs() < 2e-7, "erf({x})");
        }
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    #[should_panic(expected = "relu_backward")]
    fn wrong_length_panics() {
        relu_backward(&[1.0; 3], &[1.0; 3], &mut [0.0; 2]);
    }
}
