//! Optimizers (SGD, Adam, AdamW) and learning-rate schedules, following `torch.optim` exactly.
//!
//! An optimizer updates a list of parameter slices from a matching list of gradient slices; the
//! order and lengths of the lists must stay the same from step to step (per-parameter state is
//! allocated on the first step). Hyperparameters are `f64` like PyTorch's Python floats; the
//! element-wise arithmetic is `f32`, in the order of PyTorch's single-tensor (`foreach=False`)
//! implementation, with each scalar rounded to `f32` where PyTorch would.
//!
//! Schedules are stepped per epoch: before epoch `e` (from 0), set the optimizer's learning
//! rate to [`LrSchedule::lr_at`]`(base_lr, e)`.
//!
//! ```
//! use cnn_runtime::optim::{LrSchedule, Optimizer, Sgd};
//!
//! let mut w = vec![1.0f32, 2.0];
//! let mut b = vec![0.5f32];
//! let mut opt = Sgd::new(0.1).momentum(0.9);
//! let schedule = LrSchedule::Step { step_size: 10, gamma: 0.1 };
//! for epoch in 0..2 {
//!     opt.set_lr(schedule.lr_at(0.1, epoch));
//!     let (gw, gb) = (vec![0.5f32, -0.5], vec![1.0f32]);
//!     opt.step(&mut [&mut w, &mut b], &[&gw, &gb]);
//! }
//! assert!(w[0] < 1.0 && w[1] > 2.0);
//! ```

use thiserror::Error;

/// Why [`Optimizer::load_state`] rejected a saved state.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptimStateError {
    /// A tensor name the optimizer does not use, or a malformed parameter index.
    #[error("unknown optimizer state tensor `{name}`")]
    UnknownTensor {
        /// The offending name.
        name: String,
    },
    /// A parameter has only some of its state tensors.
    #[error("optimizer state for parameter {index} lacks `{missing}`")]
    Incomplete {
        /// Parameter index.
        index: usize,
        /// The missing buffer name.
        missing: String,
    },
    /// Two buffers of one parameter have different lengths.
    #[error(
        "optimizer state for parameter {index}: `{name}` has {found} elements, expected {expected}"
    )]
    Length {
        /// Parameter index.
        index: usize,
        /// Buffer name.
        name: String,
        /// Expected length (from the parameter's other buffers).
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// Parameter indices are not `0..n` without gaps.
    #[error("optimizer state has no tensors for parameter {index}")]
    Gap {
        /// The first index missing.
        index: usize,
    },
}

/// Common interface of the optimizers, so a training loop can hold a `Box<dyn Optimizer>`.
pub trait Optimizer {
    /// One update of every parameter from its gradient (`params[i]` with `grads[i]`).
    ///
    /// # Panics
    /// If the lists differ in length, `params[i]` and `grads[i]` differ in length, or the list
    /// does not match the one of the first step (or of a loaded state).
    fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]);
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (what a scheduler does each epoch).
    fn set_lr(&mut self, lr: f64);
    /// Steps taken so far (saved in checkpoints with the state tensors).
    fn step_count(&self) -> u64;
    /// The state buffers, named `"{param_index}.{buffer}"` (e.g. `"3.exp_avg"`), in parameter
    /// order; empty before the first step or when the optimizer keeps no state.
    fn state_tensors(&self) -> Vec<(String, &[f32])>;
    /// Restores a state saved with [`Optimizer::step_count`] and
    /// [`Optimizer::state_tensors`], so training resumes exactly.
    ///
    /// # Errors
    /// If a name is unknown, a parameter lacks one of its buffers or indices have gaps; the
    /// optimizer is unchanged then.
    fn load_state(
        &mut self,
        step_count: u64,
        tensors: &[(&str, &[f32])],
    ) -> Result<(), OptimStateError>;
}

fn check_lists(
    what: &str,
    params: &[&mut [f32]],
    grads: &[&[f32]],
    state_lens: Option<(usize, impl Iterator<Item = usize>)>,
) {
    assert!(
        params.len() == grads.len(),
        "{what}: {} parameters but {} gradients",
        params.len(),
        grads.len()
    );
    for (i, (p, g)) in params.iter().zip(grads).enumerate() {
        assert!(
            p.len() == g.len(),
            "{what}: parameter {i} has {} elements, its gradient {}",
            p.len(),
            g.len()
        );
    }
    if let Some((count, lens)) = state_lens {
        assert!(
            count == params.len(),
            "{what}: state is for {count} parameters, got {}",
            params.len()
        );
        for (i, (p, s)) in params.iter().zip(lens).enumerate() {
            assert!(
                p.len() == s,
                "{what}: parameter {i} has {} elements, its state {s}",
                p.len()
            );
        }
    }
}

/// Groups `"{index}.{name}"` tensors per parameter, checking that each parameter has exactly
/// the buffers `names` with one common length and that indices run `0..n`.
fn parse_state(
    tensors: &[(&str, &[f32])],
    names: &[&str],
) -> Result<Vec<Vec<Vec<f32>>>, OptimStateError> {
    let mut per: Vec<Vec<Option<Vec<f32>>>> = Vec::new();
    for (full, data) in tensors {
        let unknown = || OptimStateError::UnknownTensor {
            name: (*full).to_owned(),
        };
        let (idx, name) = full.split_once('.').ok_or_else(unknown)?;
        let idx: usize = idx.parse().map_err(|_| unknown())?;
        let slot = names.iter().position(|n| *n == name).ok_or_else(unknown)?;
        if per.len() <= idx {
            per.resize_with(idx + 1, || vec![None; names.len()]);
        }
        per[idx][slot] = Some(data.to_vec());
    }
    per.into_iter()
        .enumerate()
        .map(|(index, bufs)| {
            if bufs.iter().all(Option::is_none) {
                return Err(OptimStateError::Gap { index });
            }
            let mut out = Vec::with_capacity(bufs.len());
            let mut expected = None;
            for (name, b) in names.iter().zip(bufs) {
                let b = b.ok_or_else(|| OptimStateError::Incomplete {
                    index,
                    missing: (*name).to_owned(),
                })?;
                let e = *expected.get_or_insert(b.len());
                if b.len() != e {
                    return Err(OptimStateError::Length {
                        index,
                        name: (*name).to_owned(),
                        expected: e,
                        found: b.len(),
                    });
                }
                out.push(b);
            }
            Ok(out)
        })
        .collect()
}

/// `torch.optim.SGD`: with `g = grad + weight_decay·θ`, and momentum `μ > 0`,
/// `buf = g` on the first step, else `buf = μ·buf + (1 − dampening)·g`; then `g = g + μ·buf`
/// (Nesterov) or `g = buf`; finally `θ = θ − lr·g`.
///
/// State: one `momentum_buffer` per parameter when `momentum > 0`.
#[derive(Debug, Clone)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    steps: u64,
    bufs: Vec<Vec<f32>>,
}

impl Sgd {
    /// Plain SGD with learning rate `lr` (momentum, dampening, weight decay 0; no Nesterov).
    pub const fn new(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            steps: 0,
            bufs: Vec::new(),
        }
    }
    /// Sets the momentum factor `μ`.
    #[must_use]
    pub const fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Sets the dampening (ignored on the first step, as in PyTorch).
    #[must_use]
    pub const fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }
    /// Sets the L2 weight decay added to the gradient.
    #[must_use]
    pub const fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Enables Nesterov momentum.
    ///
    /// # Panics
    /// On the first step, if momentum is 0 or dampening is not 0 (PyTorch's rule).
    #[must_use]
    pub const fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        assert!(
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            "Sgd: Nesterov momentum requires a momentum and zero dampening"
        );
        let use_buf = self.momentum != 0.0;
        let first = use_buf && self.bufs.is_empty();
        if first {
            check_lists(
                "Sgd::step",
                params,
                grads,
                None::<(usize, std::iter::Empty<usize>)>,
            );
            self.bufs = params.iter().map(|p| vec![0.0; p.len()]).collect();
        } else {
            let lens = use_buf.then(|| (self.bufs.len(), self.bufs.iter().map(Vec::len)));
            check_lists("Sgd::step", params, grads, lens);
        }
        let (lr, wd, mu) = (
            self.lr as f32,
            self.weight_decay as f32,
            self.momentum as f32,
        );
        let damp = (1.0 - self.dampening) as f32;
        let nesterov = self.nesterov;
        let isa = crate::kernels::Isa::detect();
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let mut buf = self.bufs.get_mut(i).filter(|_| use_buf);
            // Compiled for the kernels' ISA (auto-vectorised at its width).
            crate::simd::vectorized(isa, || {
                for (j, (t, &g0)) in p.iter_mut().zip(g.iter()).enumerate() {
                    let mut d = if wd != 0.0 { g0 + wd * *t } else { g0 };
                    if let Some(buf) = buf.as_deref_mut() {
                        let b = &mut buf[j];
                        *b = if first { d } else { *b * mu + damp * d };
                        d = if nesterov { d + mu * *b } else { *b };
                    }
                    *t += -lr * d;
                }
            });
        }
        self.steps += 1;
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn step_count(&self) -> u64 {
        self.steps
    }
    fn state_tensors(&self) -> Vec<(String, &[f32])> {
        self.bufs
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("{i}.momentum_buffer"), &b[..]))
            .collect()
    }
    fn load_state(
        &mut self,
        step_count: u64,
        tensors: &[(&str, &[f32])],
    ) -> Result<(), OptimStateError> {
        let per = parse_state(tensors, &["momentum_buffer"])?;
        self.bufs = per.into_iter().map(|mut b| b.remove(0)).collect();
        self.steps = step_count;
        Ok(())
    }
}

/// `torch.optim.Adam` and `torch.optim.AdamW`.
///
/// Per step `t` (from 1), with `g = grad`:
/// - Adam: `g = g + weight_decay·θ`; AdamW: `θ = θ·(1 − lr·weight_decay)` first;
/// - `m = lerp(m, g, 1 − β₁)`, `v = β₂·v + (1 − β₂)·g²`;
/// - `v̂ = max(v̂, v)` with `amsgrad` (and `v̂` replaces `v` below);
/// - `θ = θ − (lr/(1 − β₁ᵗ))·m / (√v/√(1 − β₂ᵗ) + eps)`.
///
/// State per parameter: `exp_avg`, `exp_avg_sq` and, with amsgrad, `max_exp_avg_sq`.
#[derive(Debug, Clone)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    amsgrad: bool,
    steps: u64,
    /// `[exp_avg, exp_avg_sq, (max_exp_avg_sq)]` per parameter.
    state: Vec<Vec<Vec<f32>>>,
}

impl Adam {
    /// `torch.optim.Adam` defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.
    pub const fn new() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            amsgrad: false,
            steps: 0,
            state: Vec::new(),
        }
    }
    /// `torch.optim.AdamW` defaults: as [`Adam::new`] with decoupled weight decay 1e-2.
    pub const fn adamw() -> Self {
        let mut a = Self::new();
        a.decoupled = true;
        a.weight_decay = 1e-2;
        a
    }
    /// Sets the learning rate.
    #[must_use]
    pub const fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    /// Sets `(β₁, β₂)`.
    #[must_use]
    pub const fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }
    /// Sets `eps`.
    #[must_use]
    pub const fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the weight decay (L2 for Adam, decoupled for AdamW).
    #[must_use]
    pub const fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Enables the AMSGrad variant.
    #[must_use]
    pub const fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }
    const fn names(&self) -> &'static [&'static str] {
        if self.amsgrad {
            &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            &["exp_avg", "exp_avg_sq"]
        }
    }
}

impl Default for Adam {
    /// [`Adam::new`]: PyTorch's `Adam` defaults.
    fn default() -> Self {
        Self::new()
    }
}

/// Weight decay of one Adam step: none, L2 (added to the gradient) or decoupled (AdamW, a
/// factor on the parameter before the update).
#[derive(Clone, Copy)]
enum WeightDecay {
    None,
    L2(f32),
    Decoupled(f32),
}

/// The per-step constants of an Adam update.
struct AdamConsts {
    w1: f32,
    b2f: f32,
    w2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
    wd: WeightDecay,
}

/// The Adam update of one parameter tensor as a [`crate::simd::Kernel`], so that its loops are
/// compiled inside each ISA's trampoline and vectorised at its width. (Through
/// [`crate::simd::vectorized`] the closure was too large for LLVM to inline: it stayed an SSE
/// function.)
struct AdamParam<'a> {
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    vmax: Option<&'a mut [f32]>,
    k: &'a AdamConsts,
}

impl crate::simd::Kernel for AdamParam<'_> {
    type Out = ();

    #[inline(always)]
    fn run<S: crate::simd::Simd>(self, _: S) {
        let Self {
            p,
            g,
            m,
            v,
            vmax,
            k,
        } = self;
        // One loop per case, no branches inside: the compiler vectorises each (the per-element
        // arithmetic, and so the result, is the same in every case).
        match (k.wd, vmax) {
            (WeightDecay::None, None) => adam_loop(p, g, m, v, k, |_, g| g, None),
            (WeightDecay::L2(wd), None) => adam_loop(p, g, m, v, k, |t, g| g + wd * t, None),
            (WeightDecay::Decoupled(d), None) => {
                for t in p.iter_mut() {
                    *t *= d;
                }
                adam_loop(p, g, m, v, k, |_, g| g, None)
            }
            (WeightDecay::L2(wd), Some(mx)) => {
                adam_loop(p, g, m, v, k, |t, g| g + wd * t, Some(mx))
            }
            (wdk, Some(mx)) => {
                if let WeightDecay::Decoupled(d) = wdk {
                    for t in p.iter_mut() {
                        *t *= d;
                    }
                }
                adam_loop(p, g, m, v, k, |_, g| g, Some(mx))
            }
        }
    }
}

/// `torch.optim.Adam`'s element-wise update of one parameter tensor (`grad` maps the
/// parameter and its gradient to the gradient used, for L2 weight decay); with `vmax`, AMSGrad.
#[inline(always)]
fn adam_loop(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &AdamConsts,
    grad: impl Fn(f32, f32) -> f32,
    vmax: Option<&mut [f32]>,
) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let upd = |t: &mut f32, g0: f32, m: &mut f32, v: &mut f32, mx: Option<&mut f32>| {
        let g = grad(*t, g0);
        // torch.lerp: weight < 0.5 → start + w·(end − start), else end − (end − start)·(1 − w)
        *m = if k.w1 < 0.5 {
            *m + k.w1 * (g - *m)
        } else {
            g - (g - *m) * (1.0 - k.w1)
        };
        *v = *v * k.b2f + k.w2 * g * g;
        let vv = match mx {
            Some(mx) => {
                *mx = mx.max(*v);
                *mx
            }
            None => *v,
        };
        let denom = vv.sqrt() / k.bc2_sqrt + k.eps;
        *t += -k.step_size * (*m / denom);
    };
    match vmax {
        None => {
            for (((t, &g0), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                upd(t, g0, m, v, None);
            }
        }
        Some(vmax) => {
            let vmax = &mut vmax[..n];
            for ((((t, &g0), m), v), mx) in p
                .iter_mut()
                .zip(g)
                .zip(m.iter_mut())
                .zip(v.iter_mut())
                .zip(vmax.iter_mut())
            {
                upd(t, g0, m, v, Some(mx));
            }
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        let nbuf = self.names().len();
        if self.state.is_empty() {
            check_lists(
                "Adam::step",
                params,
                grads,
                None::<(usize, std::iter::Empty<usize>)>,
            );
            self.state = params
                .iter()
                .map(|p| vec![vec![0.0; p.len()]; nbuf])
                .collect();
        } else {
            let lens = self.state.iter().map(|s| s[0].len());
            check_lists("Adam::step", params, grads, Some((self.state.len(), lens)));
        }
        self.steps += 1;
        let t = self.steps as f64;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powf(t);
        let bc2 = 1.0 - b2.powf(t);
        let step_size = (self.lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let eps = self.eps as f32;
        let w1 = (1.0 - b1) as f32;
        let (b2f, w2) = (b2 as f32, (1.0 - b2) as f32);
        let wd = self.weight_decay as f32;
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let k = AdamConsts {
            w1,
            b2f,
            w2,
            step_size,
            bc2_sqrt,
            eps,
            wd: if self.weight_decay == 0.0 {
                WeightDecay::None
            } else if self.decoupled {
                WeightDecay::Decoupled(decay)
            } else {
                WeightDecay::L2(wd)
            },
        };
        let isa = crate::kernels::Isa::detect();
        for ((p, g), st) in params.iter_mut().zip(grads).zip(&mut self.state) {
            let (m, rest) = st.split_at_mut(1);
            let (v, vmax) = rest.split_at_mut(1);
            let vmax = vmax.first_mut().map(|x| &mut x[..]);
            let step = AdamParam {
                p,
                g,
                m: &mut m[0],
                v: &mut v[0],
                vmax,
                k: &k,
            };
            crate::simd::dispatch(isa, step);
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn step_count(&self) -> u64 {
        self.steps
    }
    fn state_tensors(&self) -> Vec<(String, &[f32])> {
        let names = self.names();
        self.state
            .iter()
            .enumerate()
            .flat_map(|(i, bufs)| {
                names
                    .iter()
                    .zip(bufs)
                    .map(move |(n, b)| (format!("{i}.{n}"), &b[..]))
            })
            .collect()
    }
    fn load_state(
        &mut self,
        step_count: u64,
        tensors: &[(&str, &[f32])],
    ) -> Result<(), OptimStateError> {
        self.state = parse_state(tensors, self.names())?;
        self.steps = step_count;
        Ok(())
    }
}

/// A learning-rate schedule stepped once per epoch, as `torch.optim.lr_scheduler` does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The base learning rate throughout.
    Constant,
    /// `StepLR`: `base_lr · gamma^⌊epoch/step_size⌋`.
    Step {
        /// Epochs between decays (≥ 1).
        step_size: usize,
        /// Multiplicative factor per decay.
        gamma: f64,
    },
    /// `CosineAnnealingLR`: `eta_min + (base_lr − eta_min)·(1 + cos(π·epoch/t_max))/2`.
    Cosine {
        /// Half-period in epochs (≥ 1).
        t_max: usize,
        /// Minimum learning rate.
        eta_min: f64,
    },
}

impl LrSchedule {
    /// The learning rate for epoch `epoch` (counted from 0), from PyTorch's closed forms
    /// (`_get_closed_form_lr`). PyTorch's recursive `step()` gives the same values up to
    /// rounding; past `t_max` the cosine continues periodically, as PyTorch's does.
    ///
    /// # Panics
    /// If `step_size` or `t_max` is 0.
    pub fn lr_at(&self, base_lr: f64, epoch: usize) -> f64 {
        match *self {
            Self::Constant => base_lr,
            Self::Step { step_size, gamma } => {
                assert!(step_size > 0, "StepLR: step_size must be positive");
                let k = i32::try_from(epoch / step_size).unwrap_or(i32::MAX);
                base_lr * gamma.powi(k)
            }
            Self::Cosine { t_max, eta_min } => {
                assert!(t_max > 0, "CosineAnnealingLR: t_max must be positive");
                let phase = std::f64::consts::PI * epoch as f64 / t_max as f64;
                eta_min + (base_lr - eta_min) * (1.0 + phase.cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opt: &mut dyn Optimizer, theta: &mut [f32], grads: &[f32]) -> Vec<f32> {
        grads
            .iter()
            .map(|&g| {
                opt.step(&mut [&mut *theta], &[&[g]]);
                theta[0]
            })
            .collect()
    }

    #[track_caller]
    fn close(got: &[f32], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn sgd_plain_and_weight_decay() {
        // θ = 1, lr 0.1, g = 0.5: θ = 1 − 0.05 = 0.95.
        close(&run(&mut Sgd::new(0.1), &mut [1.0], &[0.5]), &[0.95]);
        // wd 0.1: g = 0.5 + 0.1·1 = 0.6 → θ = 0.94; then g = 0.5 + 0.094 = 0.594 → θ = 0.8806.
        close(
            &run(
                &mut Sgd::new(0.1).weight_decay(0.1),
                &mut [1.0],
                &[0.5, 0.5],
            ),
            &[0.94, 0.8806],
        );
    }

    #[test]
    fn sgd_momentum_dampening_nesterov() {
        // μ 0.9, dampening 0.5, lr 0.1, θ 1, grads 0.5, 0.25:
        // step 1: buf = 0.5 (no dampening on the first step), θ = 1 − 0.05 = 0.95
        // step 2: buf = 0.9·0.5 + 0.5·0.25 = 0.575, θ = 0.95 − 0.0575 = 0.8925
        let mut o = Sgd::new(0.1).momentum(0.9).dampening(0.5);
        close(&run(&mut o, &mut [1.0], &[0.5, 0.25]), &[0.95, 0.8925]);
        assert_eq!(o.state_tensors()[0].0, "0.momentum_buffer");
        assert_eq!(o.state_tensors()[0].1, &[0.575]);
        // Nesterov, μ 0.9, lr 0.1: step 1: buf = 0.5, g = 0.5 + 0.45 = 0.95, θ = 0.905
        // step 2: buf = 0.45 + 0.25 = 0.7, g = 0.25 + 0.63 = 0.88, θ = 0.905 − 0.088 = 0.817
        let mut o = Sgd::new(0.1).momentum(0.9).nesterov(true);
        close(&run(&mut o, &mut [1.0], &[0.5, 0.25]), &[0.905, 0.817]);
    }

    #[test]
    #[should_panic(expected = "Nesterov momentum requires")]
    fn sgd_nesterov_without_momentum_panics() {
        run(&mut Sgd::new(0.1).nesterov(true), &mut [1.0], &[0.5]);
    }

    /// The update written element by element with its branches inside the loop (the form
    /// before the per-case loops): every variant must give bit-identical parameters and state.
    #[test]
    fn vectorised_loops_match_the_scalar_update() {
        fn reference(o: &Adam, t_step: u64, p: &mut [f32], g: &[f32], st: &mut [Vec<f32>]) {
            let t = t_step as f64;
            let (b1, b2) = o.betas;
            let step_size = (o.lr / (1.0 - b1.powf(t))) as f32;
            let bc2_sqrt = (1.0 - b2.powf(t)).sqrt() as f32;
            let (eps, w1, b2f, w2) = (
                o.eps as f32,
                (1.0 - b1) as f32,
                b2 as f32,
                (1.0 - b2) as f32,
            );
            let (wd, decay) = (o.weight_decay as f32, (1.0 - o.lr * o.weight_decay) as f32);
            for j in 0..p.len() {
                let mut g = g[j];
                if o.weight_decay != 0.0 {
                    if o.decoupled {
                        p[j] *= decay;
                    } else {
                        g += wd * p[j];
                    }
                }
                let m = st[0][j];
                st[0][j] = if w1 < 0.5 {
                    m + w1 * (g - m)
                } else {
                    g - (g - m) * (1.0 - w1)
                };
                st[1][j] = st[1][j] * b2f + w2 * g * g;
                let vv = if o.amsgrad {
                    st[2][j] = st[2][j].max(st[1][j]);
                    st[2][j]
                } else {
                    st[1][j]
                };
                p[j] += -step_size * (st[0][j] / (vv.sqrt() / bc2_sqrt + eps));
            }
        }
        let data = |seed: u32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (((i as u32).wrapping_mul(2_654_435_761) ^ seed).wrapping_mul(40_503) >> 8)
                        as f32
                        / 1e7
                        - 0.8
                })
                .collect()
        };
        for (wd, decoupled) in [(0.0, false), (0.3, false), (0.3, true)] {
            for amsgrad in [false, true] {
                let mut o = Adam::new().with_lr(0.05).weight_decay(wd).amsgrad(amsgrad);
                o.decoupled = decoupled;
                let reference_opt = o.clone();
                let mut p = data(1, 37);
                let mut q = p.clone();
                let mut st = vec![vec![0.0f32; 37]; 3];
                for step in 1..=4u64 {
                    let g = data(step as u32 + 7, 37);
                    o.step(&mut [&mut p[..]], &[&g[..]]);
                    reference(&reference_opt, step, &mut q, &g, &mut st);
                    let what =
                        format!("wd {wd} decoupled {decoupled} amsgrad {amsgrad} step {step}");
                    assert_eq!(
                        p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        q.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "{what}"
                    );
                    assert_eq!(o.state[0][0], st[0], "{what}: exp_avg");
                    assert_eq!(o.state[0][1], st[1], "{what}: exp_avg_sq");
                }
            }
        }
    }

    #[test]
    fn adam_first_steps_by_hand() {
        // lr 0.1, β (0.9, 0.999), eps 1e-8, θ 1, grads 0.5 then −0.25.
        // t=1: m = 0.05, v = 0.00025; m̂ = 0.5, √v̂ = 0.5 → θ = 1 − 0.1·0.5/(0.5+1e-8)
        let t1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8);
        // t=2: m = 0.045 − 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225
        let (m2, v2) = (0.02f64, 0.000_312_25f64);
        let t2 = t1 - (0.1 / (1.0 - 0.81)) * m2 / (v2.sqrt() / (1.0 - 0.998_001f64).sqrt() + 1e-8);
        close(
            &run(&mut Adam::new().with_lr(0.1), &mut [1.0], &[0.5, -0.25]),
            &[t1, t2],
        );
    }

    #[test]
    fn adam_l2_versus_adamw_decoupled() {
        // Adam, wd 0.5: g = 0.5 + 0.5·1 = 1.0; first step moves θ by lr·sign = 0.1 → 0.9.
        let got = run(
            &mut Adam::new().with_lr(0.1).weight_decay(0.5),
            &mut [1.0],
            &[0.5],
        );
        close(&got, &[1.0 - 0.1 * 1.0 / (1.0 + 1e-8)]);
        // AdamW, wd 0.5: θ = 1·(1 − 0.05) = 0.95, then the Adam step on g = 0.5: −0.1·0.5/(0.5+1e-8).
        let got = run(
            &mut Adam::adamw().with_lr(0.1).weight_decay(0.5),
            &mut [1.0],
            &[0.5],
        );
        close(&got, &[0.95 - 0.1 * 0.5 / (0.5 + 1e-8)]);
        assert_eq!(Adam::adamw().weight_decay, 1e-2);
    }

    #[test]
    fn amsgrad_uses_the_running_maximum() {
        // β (0.5, 0.5), lr 1, eps 0, grads 2 then 0:
        // t=1: m = 1, v = 2, vmax = 2; θ = 1 − (1/0.5)·1/(√2/√0.5) = 1 − 2/2 = 0
        // t=2: m = 0.5, v = 1, vmax = 2; θ = 0 − (1/0.75)·0.5/(√2/√0.75)
        let t2 = -(1.0 / 0.75) * 0.5 / (2f64.sqrt() / 0.75f64.sqrt());
        let mut o = Adam::new()
            .with_lr(1.0)
            .betas(0.5, 0.5)
            .eps(0.0)
            .amsgrad(true);
        close(&run(&mut o, &mut [1.0], &[2.0, 0.0]), &[0.0, t2]);
        let names: Vec<_> = o.state_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["0.exp_avg", "0.exp_avg_sq", "0.max_exp_avg_sq"]);
        // Without amsgrad, v = 1 at t=2: θ = 0 − (1/0.75)·0.5/(1/√0.75).
        let mut o = Adam::new().with_lr(1.0).betas(0.5, 0.5).eps(0.0);
        let t2 = -(1.0 / 0.75) * 0.5 / (1.0 / 0.75f64.sqrt());
        close(&run(&mut o, &mut [1.0], &[2.0, 0.0]), &[0.0, t2]);
    }

    #[test]
    fn checkpoint_resume_is_exact() {
        let grads: Vec<[f32; 3]> = (0..6)
            .map(|i| [i as f32 * 0.1, -0.3, 0.7 - i as f32 * 0.2])
            .collect();
        let make: [fn() -> Box<dyn Optimizer>; 3] = [
            || Box::new(Sgd::new(0.05).momentum(0.9).weight_decay(1e-3)),
            || Box::new(Adam::new().with_lr(0.01).amsgrad(true)),
            || Box::new(Adam::adamw()),
        ];
        for make in make {
            let (mut a, mut b) = (vec![1.0f32, 2.0], vec![-1.0f32]);
            let mut full = make();
            for g in &grads {
                full.step(&mut [&mut a, &mut b], &[&g[..2], &g[2..]]);
            }
            let (mut a2, mut b2) = (vec![1.0f32, 2.0], vec![-1.0f32]);
            let mut first = make();
            for g in &grads[..3] {
                first.step(&mut [&mut a2, &mut b2], &[&g[..2], &g[2..]]);
            }
            let saved: Vec<(String, Vec<f32>)> = first
                .state_tensors()
                .into_iter()
                .map(|(n, t)| (n, t.to_vec()))
                .collect();
            let view: Vec<(&str, &[f32])> =
                saved.iter().map(|(n, t)| (n.as_str(), &t[..])).collect();
            let mut resumed = make();
            resumed.load_state(first.step_count(), &view).unwrap();
            for g in &grads[3..] {
                resumed.step(&mut [&mut a2, &mut b2], &[&g[..2], &g[2..]]);
            }
            assert_eq!((a, b), (a2, b2));
            assert_eq!(resumed.step_count(), 6);
        }
    }

    #[test]
    fn load_state_rejects_bad_input() {
        let mut o = Adam::new();
        let e = o.load_state(1, &[("0.exp_avg", &[1.0])]).unwrap_err();
        assert_eq!(
            e,
            OptimStateError::Incomplete {
                index: 0,
                missing: "exp_avg_sq".into()
            }
        );
        let e = o
            .load_state(1, &[("0.momentum_buffer", &[1.0])])
            .unwrap_err();
        assert!(matches!(e, OptimStateError::UnknownTensor { .. }));
        let e = o
            .load_state(1, &[("1.exp_avg", &[1.0]), ("1.exp_avg_sq", &[1.0])])
            .unwrap_err();
        assert_eq!(e, OptimStateError::Gap { index: 0 });
        let e = o
            .load_state(1, &[("0.exp_avg", &[1.0]), ("0.exp_avg_sq", &[1.0, 2.0])])
            .unwrap_err();
        assert!(matches!(
            e,
            OptimStateError::Length {
                expected: 1,
                found: 2,
                ..
            }
        ));
        assert_eq!(o.step_count(), 0);
        assert!(o.state_tensors().is_empty());
    }

    #[test]
    #[should_panic(expected = "parameter 0 has 2 elements, its gradient 1")]
    fn mismatched_gradient_panics() {
        Sgd::new(0.1).step(&mut [&mut [1.0, 2.0]], &[&[1.0]]);
    }

    #[test]
    fn schedules() {
        let s = LrSchedule::Step {
            step_size: 3,
            gamma: 0.1,
        };
        let lrs: Vec<f64> = (0..7).map(|e| s.lr_at(1.0, e)).collect();
        let want = [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01];
        for (g, w) in lrs.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{lrs:?}");
        }
        let c = LrSchedule::Cosine {
            t_max: 4,
            eta_min: 0.1,
        };
        // cos(π·e/4) for e = 0..4: 1, √½, 0, −√½, −1.
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let want = [
            1.0,
            0.1 + 0.9 * (1.0 + h) / 2.0,
            0.55,
            0.1 + 0.9 * (1.0 - h) / 2.0,
            0.1,
        ];
        for (e, w) in want.iter().enumerate() {
            assert!((c.lr_at(1.0, e) - w).abs() < 1e-12, "epoch {e}");
        }
        assert_eq!(LrSchedule::Constant.lr_at(0.3, 99), 0.3);
    }
}
