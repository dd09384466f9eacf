//! Seeded random numbers and PyTorch's default parameter initialisation.
//!
//! [`Rng`] is xoshiro256++ (Blackman and Vigna, 2019) seeded through SplitMix64, written out here
//! rather than taken from a crate: its output for a given seed is fixed by this file alone, so a
//! seed recorded in a training log reproduces the same weights, shuffles and splits after any
//! dependency update (rand's `StdRng` explicitly does not promise value stability across
//! versions). It is fast (a few ns per draw), passes BigCrush, and is not cryptographic.
//!
//! The initialisers follow `torch.nn` defaults (`reset_parameters` in PyTorch 2.x):
//!
//! | parameter | PyTorch | here |
//! | --- | --- | --- |
//! | `Conv2d.weight`, `Linear.weight` | `kaiming_uniform_(a=√5)` | U(−1/√fan_in, 1/√fan_in) |
//! | `Conv2d.bias`, `Linear.bias` | `uniform_(−1/√fan_in, 1/√fan_in)` | the same |
//! | `BatchNorm2d.weight` / `.bias` | ones / zeros | [`batchnorm_weight`] / [`batchnorm_bias`] |
//! | `running_mean` / `running_var` | zeros / ones | [`running_mean`] / [`running_var`] |
//!
//! `kaiming_uniform_(a=√5)` has gain √(2/(1+a²)) = √(1/3) and bound gain·√(3/fan_in), which is
//! exactly 1/√fan_in. `fan_in` is `(in_channels / groups) · kH · kW` for a convolution and
//! `in_features` for a linear layer ([`conv2d_fan_in`], [`linear_fan_in`]). [`default_weights`]
//! applies all of this to a whole `state_dict` parameter list at once. The values match
//! PyTorch's distribution, not its bit stream: the same seed gives different numbers than
//! `torch.manual_seed`.
//!
//! ```
//! use cnn_runtime::init::{conv2d_fan_in, kaiming_uniform, Rng};
//! let mut rng = Rng::seed_from_u64(42);
//! let fan_in = conv2d_fan_in(1, 1, 5, 5).unwrap();
//! let w = kaiming_uniform(&mut rng, 6 * 25, fan_in).unwrap();
//! assert!(w.iter().all(|x| x.abs() <= 0.2));
//! ```

/// Errors from the initialisers: only impossible layer geometry.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InitError {
    /// `fan_in` was zero, so the bound 1/√fan_in is infinite.
    #[error(
        "fan_in is zero: a layer needs at least one input channel/feature and a non-empty kernel"
    )]
    ZeroFanIn,
    /// `in_channels` is not divisible by `groups` (or `groups` is zero).
    #[error(
        "in_channels ({in_channels}) is not a positive multiple of groups ({groups}): choose groups that divides in_channels"
    )]
    BadGroups {
        /// Input channels of the convolution.
        in_channels: usize,
        /// Requested group count.
        groups: usize,
    },
    /// The memory for a tensor could not be allocated.
    #[error(transparent)]
    OutOfMemory(#[from] crate::buf::OutOfMemory),
    /// `(in_channels / groups) · kH · kW` does not fit in `usize`.
    #[error("fan_in overflows: (in_channels / groups) * kernel_h * kernel_w is too large")]
    Overflow,
    /// A parameter list cannot be initialised (see [`default_weights`]).
    #[error("cannot initialise `{name}`: {reason}")]
    Param {
        /// The parameter.
        name: String,
        /// Why, and what to change.
        reason: String,
    },
}

/// A small, fast, seeded generator: xoshiro256++ with its state filled by SplitMix64.
///
/// Same seed, same sequence, on every platform and every version of this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

/// One SplitMix64 step (Steele, Lea and Flood 2014; Vigna's reference `splitmix64.c`).
///
/// Advances `state` and returns the next output; used to expand a 64-bit seed into
/// xoshiro's 256-bit state and to derive independent seeds ([`Rng::derive`]).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // SplitMix64 never yields four zeros in a row, so the state is valid for every seed.
        Self { s }
    }

    /// A generator for sub-stream `stream` of `seed` (e.g. one per epoch), independent of the
    /// generator for `seed` itself and of other streams.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut sm = seed ^ 0xD1B5_4A32_D192_ED03;
        let a = splitmix64(&mut sm);
        let mut sm2 = stream.wrapping_add(a);
        Self::seed_from_u64(splitmix64(&mut sm2) ^ a.rotate_left(17))
    }

    /// The next 64 random bits (xoshiro256++).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform `f32` in `[0, 1)` with 24 random bits (every representable step of 2⁻²⁴).
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform `f32` in `[low, high)`.
    pub fn uniform_range(&mut self, low: f32, high: f32) -> f32 {
        let x = low + (high - low) * self.uniform_f32();
        // Rounding can land exactly on `high`; keep the interval half-open.
        if x < high { x } else { low }
    }

    /// A standard normal `f32` (mean 0, standard deviation 1) by the Box–Muller transform,
    /// computed in `f64`. Each call draws two uniforms and uses one of the pair.
    pub fn normal_f32(&mut self) -> f32 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform_f64();
        let u2 = self.uniform_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A normal `f32` with the given mean and standard deviation.
    pub fn normal(&mut self, mean: f32, std: f32) -> f32 {
        mean + std * self.normal_f32()
    }

    /// A uniform integer in `0..bound` without modulo bias (Lemire's multiply-and-reject).
    /// Returns 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(bound);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates); every permutation is equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// The permutation `0..n` in random order.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// Fills `out` with U(`low`, `high`).
    pub fn fill_uniform(&mut self, out: &mut [f32], low: f32, high: f32) {
        for x in out {
            *x = self.uniform_range(low, high);
        }
    }

    /// Fills `out` with N(`mean`, `std`²).
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        for x in out {
            *x = self.normal(mean, std);
        }
    }
}

/// `fan_in` of a `Conv2d` weight `[out, in/groups, kH, kW]`: `(in_channels / groups) · kH · kW`.
pub fn conv2d_fan_in(
    in_channels: usize,
    groups: usize,
    kernel_h: usize,
    kernel_w: usize,
) -> Result<usize, InitError> {
    if groups == 0 || !in_channels.is_multiple_of(groups) {
        return Err(InitError::BadGroups {
            in_channels,
            groups,
        });
    }
    let fan_in = (in_channels / groups)
        .checked_mul(kernel_h)
        .and_then(|x| x.checked_mul(kernel_w))
        .ok_or(InitError::Overflow)?;
    if fan_in == 0 {
        return Err(InitError::ZeroFanIn);
    }
    Ok(fan_in)
}

/// `fan_in` of a `Linear` weight `[out_features, in_features]`: `in_features`.
pub fn linear_fan_in(in_features: usize) -> Result<usize, InitError> {
    if in_features == 0 {
        return Err(InitError::ZeroFanIn);
    }
    Ok(in_features)
}

/// The bound `1/√fan_in` shared by PyTorch's default weight and bias initialisation.
pub fn default_bound(fan_in: usize) -> Result<f32, InitError> {
    if fan_in == 0 {
        return Err(InitError::ZeroFanIn);
    }
    Ok((1.0 / (fan_in as f64).sqrt()) as f32)
}

/// `len` values of PyTorch's default `Conv2d`/`Linear` weight, `kaiming_uniform_(a=√5)`:
/// U(−1/√fan_in, 1/√fan_in).
pub fn kaiming_uniform(rng: &mut Rng, len: usize, fan_in: usize) -> Result<Vec<f32>, InitError> {
    let bound = default_bound(fan_in)?;
    let mut w = filled(len, 0.0)?;
    rng.fill_uniform(&mut w, -bound, bound);
    Ok(w)
}

/// `len` values of PyTorch's default `Conv2d`/`Linear` bias: U(−1/√fan_in, 1/√fan_in), with the
/// weight's `fan_in`.
pub fn default_bias(rng: &mut Rng, len: usize, fan_in: usize) -> Result<Vec<f32>, InitError> {
    kaiming_uniform(rng, len, fan_in)
}

/// `len` copies of `value`, or an error instead of an allocation abort.
fn filled(len: usize, value: f32) -> Result<Vec<f32>, InitError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| crate::buf::OutOfMemory { floats: len })?;
    v.resize(len, value);
    Ok(v)
}

/// `BatchNorm` weight (γ): ones.
pub fn batchnorm_weight(channels: usize) -> Vec<f32> {
    vec![1.0; channels]
}

/// `BatchNorm` bias (β): zeros.
pub fn batchnorm_bias(channels: usize) -> Vec<f32> {
    vec![0.0; channels]
}

/// `BatchNorm` running mean: zeros.
pub fn running_mean(channels: usize) -> Vec<f32> {
    vec![0.0; channels]
}

/// `BatchNorm` running variance: ones.
pub fn running_var(channels: usize) -> Vec<f32> {
    vec![1.0; channels]
}

/// PyTorch's default initial values for a whole `state_dict`, drawn from `rng` in spec order.
///
/// Kinds and shapes decide, as `torch.nn` does:
/// - a weight with 2 or more dimensions (`Conv*d`, `Linear`) gets U(−1/√fan_in, 1/√fan_in) with
///   fan_in = the product of all dimensions after the first (`_calculate_fan_in_and_fan_out`);
/// - a 1-d weight is a batch-norm γ: ones;
/// - a bias takes the fan_in of the weight of the same module (`x.bias` ↔ `x.weight`): uniform if
///   that weight is a conv/linear one, zeros (batch-norm β) if it is 1-d;
/// - running mean zeros, running variance ones, `num_batches_tracked` 0.
pub fn default_weights(
    specs: &[crate::weights::ParamSpec],
    rng: &mut Rng,
) -> Result<crate::weights::Weights, InitError> {
    use crate::weights::{ParamKind, Weights};
    let err = |name: &str, reason: String| InitError::Param {
        name: name.to_owned(),
        reason,
    };
    let fan_in_of = |name: &str, shape: &[usize]| -> Result<Option<usize>, InitError> {
        match shape {
            [] => Err(err(name, "a weight needs at least one dimension".into())),
            [_] => Ok(None),
            [_, rest @ ..] => {
                let fan_in = rest
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or(InitError::Overflow)?;
                if fan_in == 0 {
                    return Err(InitError::ZeroFanIn);
                }
                Ok(Some(fan_in))
            }
        }
    };
    let mut values = Vec::with_capacity(specs.len());
    for spec in specs {
        let len = spec
            .numel()
            .ok_or_else(|| err(&spec.name, "its shape overflows".into()))?;
        let v = match spec.kind {
            ParamKind::Weight => match fan_in_of(&spec.name, &spec.shape)? {
                Some(fan_in) => kaiming_uniform(rng, len, fan_in)?,
                None => filled(len, 1.0)?,
            },
            ParamKind::Bias => {
                let module = spec.name.strip_suffix("bias").unwrap_or(&spec.name);
                let weight_name = format!("{module}weight");
                let weight = specs
                    .iter()
                    .find(|s| s.name == weight_name)
                    .ok_or_else(|| {
                        err(
                            &spec.name,
                            format!("no `{weight_name}` to take fan_in from; add it to the list"),
                        )
                    })?;
                match fan_in_of(&weight.name, &weight.shape)? {
                    Some(fan_in) => default_bias(rng, len, fan_in)?,
                    None => filled(len, 0.0)?,
                }
            }
            ParamKind::RunningMean | ParamKind::NumBatchesTracked => filled(len, 0.0)?,
            ParamKind::RunningVar => filled(len, 1.0)?,
        };
        values.push(v);
    }
    Weights::new(specs, values).map_err(|e| InitError::Param {
        name: String::new(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_tensor_is_an_error_not_an_abort() {
        let e = kaiming_uniform(&mut Rng::seed_from_u64(1), usize::MAX / 2, 25).unwrap_err();
        assert!(matches!(e, InitError::OutOfMemory(_)), "{e}");
        assert!(e.to_string().contains("cannot allocate"), "{e}");
    }

    #[test]
    fn splitmix64_matches_reference_vector() {
        // Published outputs of Vigna's splitmix64.c for seed 1234567.
        let mut s = 1_234_567u64;
        let got: Vec<u64> = (0..5).map(|_| splitmix64(&mut s)).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        let a = kaiming_uniform(&mut Rng::seed_from_u64(7), 1000, 25).unwrap();
        let b = kaiming_uniform(&mut Rng::seed_from_u64(7), 1000, 25).unwrap();
        let c = kaiming_uniform(&mut Rng::seed_from_u64(8), 1000, 25).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r1 = Rng::seed_from_u64(3);
        let mut r2 = Rng::seed_from_u64(3);
        assert_eq!(r1.permutation(100), r2.permutation(100));
        assert_ne!(Rng::derive(3, 0), Rng::derive(3, 1));
        assert_eq!(Rng::derive(3, 1), Rng::derive(3, 1));
    }

    #[test]
    fn kaiming_uniform_bounds_and_moments() {
        // Conv2d(6, 16, 5): fan_in 150, bound 1/sqrt(150) ~ 0.0816.
        let fan_in = conv2d_fan_in(6, 1, 5, 5).unwrap();
        assert_eq!(fan_in, 150);
        let bound = default_bound(fan_in).unwrap();
        assert!((bound - 0.081_649_66).abs() < 1e-6);
        let n = 200_000;
        let w = kaiming_uniform(&mut Rng::seed_from_u64(1), n, fan_in).unwrap();
        assert!(w.iter().all(|&x| (-bound..bound).contains(&x)));
        let mean = w.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        let var = w
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        // U(-b, b): mean 0, variance b^2/3. Standard error of the mean is b/sqrt(3n) ~ 1e-4.
        assert!(mean.abs() < 6e-4, "mean {mean}");
        let want = f64::from(bound).powi(2) / 3.0;
        assert!((var / want - 1.0).abs() < 0.02, "var {var} want {want}");
        // The extremes are actually reached (not a narrower distribution).
        let max = w.iter().cloned().fold(f32::MIN, f32::max);
        assert!(max > bound * 0.999);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = Rng::seed_from_u64(5);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| f64::from(rng.normal_f32())).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        let within1 = xs.iter().filter(|x| x.abs() < 1.0).count() as f64 / n as f64;
        assert!((within1 - 0.6827).abs() < 0.01, "P(|x|<1) = {within1}");
    }

    #[test]
    fn shuffle_is_a_permutation_and_unbiased() {
        let mut rng = Rng::seed_from_u64(11);
        let mut p = rng.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
        // Each of 3 items lands first about a third of the time.
        let mut first = [0usize; 3];
        for _ in 0..30_000 {
            let mut v = [0, 1, 2];
            rng.shuffle(&mut v);
            first[v[0]] += 1;
        }
        assert!(
            first.iter().all(|&c| (9_400..10_600).contains(&c)),
            "{first:?}"
        );
    }

    #[test]
    fn fan_in_rules_and_errors() {
        assert_eq!(conv2d_fan_in(32, 4, 3, 3), Ok(72));
        assert_eq!(linear_fan_in(120), Ok(120));
        assert_eq!(
            conv2d_fan_in(6, 4, 3, 3),
            Err(InitError::BadGroups {
                in_channels: 6,
                groups: 4
            })
        );
        assert!(
            conv2d_fan_in(6, 0, 3, 3)
                .unwrap_err()
                .to_string()
                .contains("groups (0)")
        );
        assert_eq!(conv2d_fan_in(1, 1, 0, 3), Err(InitError::ZeroFanIn));
        assert_eq!(conv2d_fan_in(usize::MAX, 1, 2, 1), Err(InitError::Overflow));
        assert_eq!(linear_fan_in(0), Err(InitError::ZeroFanIn));
        assert_eq!(batchnorm_weight(3), [1.0; 3]);
        assert_eq!(batchnorm_bias(2), [0.0; 2]);
        assert_eq!(running_mean(2), [0.0; 2]);
        assert_eq!(running_var(2), [1.0; 2]);
    }

    #[test]
    fn uniform_range_is_half_open_and_below_is_in_range() {
        let mut rng = Rng::seed_from_u64(0);
        for _ in 0..10_000 {
            let x = rng.uniform_range(-1.0, 1.0);
            assert!((-1.0..1.0).contains(&x));
            assert!(rng.below(7) < 7);
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn default_weights_follow_torch_nn() {
        use crate::weights::{ParamKind::*, ParamSpec};
        let specs = [
            ParamSpec::new("conv.weight", [4, 2, 3, 3], Weight),
            ParamSpec::new("conv.bias", [4], Bias),
            ParamSpec::new("bn.weight", [4], Weight),
            ParamSpec::new("bn.bias", [4], Bias),
            ParamSpec::new("bn.running_mean", [4], RunningMean),
            ParamSpec::new("bn.running_var", [4], RunningVar),
            ParamSpec::new("bn.num_batches_tracked", [], NumBatchesTracked),
            ParamSpec::new("fc.weight", [10, 400], Weight),
            ParamSpec::new("fc.bias", [10], Bias),
        ];
        let w = default_weights(&specs, &mut Rng::seed_from_u64(1)).unwrap();
        let within = |name: &str, bound: f32| {
            let v = w.get(name).unwrap();
            v.iter().all(|x| x.abs() < bound) && v.iter().any(|x| x.abs() > bound * 0.5)
        };
        // Conv fan_in 2*3*3 = 18; linear fan_in 400.
        assert!(within("conv.weight", 1.0 / 18f32.sqrt()));
        assert!(within("conv.bias", 1.0 / 18f32.sqrt()));
        assert!(within("fc.weight", 0.05) && within("fc.bias", 0.05));
        assert!(!within("fc.weight", 0.025));
        assert_eq!(w.get("bn.weight"), Some(&[1.0; 4][..]));
        assert_eq!(w.get("bn.bias"), Some(&[0.0; 4][..]));
        assert_eq!(w.get("bn.running_mean"), Some(&[0.0; 4][..]));
        assert_eq!(w.get("bn.running_var"), Some(&[1.0; 4][..]));
        assert_eq!(w.get("bn.num_batches_tracked"), Some(&[0.0][..]));
        let again = default_weights(&specs, &mut Rng::seed_from_u64(1)).unwrap();
        assert_eq!(w, again);
        let orphan = [ParamSpec::new("head.bias", [3], Bias)];
        let e = default_weights(&orphan, &mut Rng::seed_from_u64(1)).unwrap_err();
        assert!(e.to_string().contains("no `head.weight`"), "{e}");
    }
}
