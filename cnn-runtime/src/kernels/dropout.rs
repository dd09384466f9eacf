//! `nn.Dropout` in training mode: a seeded generator and the masked, scaled forward. (In
//! evaluation mode dropout is the identity; its backward is in `grad`.)

use crate::util::check_len;

/// A small seeded generator (SplitMix64) for dropout masks.
///
/// Any `FnMut() -> u32` works with [`dropout_train_forward`]; this one is here so training is
/// reproducible without another dependency: `let mut rng = DropoutRng::new(seed);` then pass
/// `&mut || rng.next_u32()`. Its state is one `u64` ([`DropoutRng::state`]) so a checkpoint
/// can resume the exact mask sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropoutRng {
    state: u64,
}

impl DropoutRng {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next 32 random bits (the high half of [`DropoutRng::next_u64`]).
    pub const fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// The internal state, to save in a checkpoint.
    pub const fn state(&self) -> u64 {
        self.state
    }

    /// A generator resumed from a [`DropoutRng::state`].
    pub const fn from_state(state: u64) -> Self {
        Self { state }
    }
}

/// Training forward of `nn.Dropout(p)`.
///
/// Draws one `u32` per element from `rng`, in element order, and keeps the element when
/// `u ≥ p·2³²` (so each is dropped with probability `p`, to 2⁻³²). **Overwrites** `mask` (1 =
/// kept, 0 = dropped) and `output = input·mask/(1 − p)`. `p = 0` keeps everything (and still
/// draws, so the sequence does not depend on `p`); `p = 1` gives all zeros, as in PyTorch.
/// Sequential, so the mask depends only on the generator's state.
///
/// # Panics
/// If `p` is outside `[0, 1]` or the slice lengths differ.
pub fn dropout_train_forward(
    p: f32,
    input: &[f32],
    rng: &mut impl FnMut() -> u32,
    mask: &mut [u8],
    output: &mut [f32],
) {
    assert!(
        (0.0..=1.0).contains(&p),
        "dropout probability {p} not in [0, 1]"
    );
    check_len("dropout_train_forward mask", mask.len(), input.len());
    check_len("dropout_train_forward output", output.len(), input.len());
    let threshold = f64::from(p) * 4_294_967_296.0;
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    for ((m, y), &x) in mask.iter_mut().zip(output.iter_mut()).zip(input) {
        let keep = f64::from(rng()) >= threshold;
        *m = u8::from(keep);
        *y = if keep { x * scale } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mask_and_rate_close_to_p() {
        let x = vec![1.0f32; 100_000];
        let run = |seed| {
            let mut rng = DropoutRng::new(seed);
            let (mut mask, mut y) = (vec![0u8; x.len()], vec![0.0; x.len()]);
            dropout_train_forward(0.3, &x, &mut || rng.next_u32(), &mut mask, &mut y);
            (mask, y, rng)
        };
        let (m1, y1, r1) = run(7);
        let (m2, y2, _) = run(7);
        assert_eq!((&m1, &y1), (&m2, &y2));
        assert_ne!(m1, run(8).0);
        let dropped = m1.iter().filter(|&&m| m == 0).count() as f64 / x.len() as f64;
        assert!((dropped - 0.3).abs() < 0.01, "dropped fraction {dropped}");
        for (&m, &y) in m1.iter().zip(&y1) {
            assert_eq!(y, if m == 1 { 1.0 / 0.7 } else { 0.0 });
        }
        // Resuming from a saved state continues the sequence.
        let mut a = r1.clone();
        let mut b = DropoutRng::from_state(r1.state());
        assert_eq!(a.next_u64(), b.next_u64());
    }
}
