//! Helpers the generated code calls (through `cnn::__private`); not a stable API.

pub use crate::buf::AlignedBuf;
use crate::error::Error;
use crate::weights::{ParamSpec, Weights};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::borrow::Cow;
use std::path::Path;

/// Checks that `weights` hold the tensors of `specs` with the right sizes
/// ([`crate::exec::check_weights_fit`]).
pub fn check_weights(weights: &Weights, specs: &[ParamSpec]) -> Result<(), Error> {
    Ok(crate::exec::check_weights_fit(weights, specs)?)
}

/// Loads a safetensors file against `specs`.
pub fn load_weights(path: &Path, specs: &[ParamSpec]) -> Result<Weights, Error> {
    Ok(crate::weights::load(path, specs)?)
}

/// PyTorch's default initialisation from `seed`.
pub fn default_weights(specs: &[ParamSpec], seed: u64) -> Result<Weights, Error> {
    let mut rng = crate::init::Rng::seed_from_u64(seed);
    Ok(crate::init::default_weights(specs, &mut rng)?)
}

/// Weights from values in spec order.
pub fn make_weights(specs: &[ParamSpec], values: Vec<Vec<f32>>) -> Result<Weights, Error> {
    Ok(Weights::new(specs, values)?)
}

/// The calling rayon pool's thread count.
pub fn current_num_threads() -> usize {
    rayon::current_num_threads()
}

/// Checks `[N, …expected]` and returns N.
pub fn check_batch_shape(shape: &[usize], expected: &[usize]) -> Result<usize, Error> {
    if shape.len() == expected.len() + 1 && shape[1..] == *expected {
        Ok(shape[0])
    } else {
        Err(Error::InputShape {
            found: shape.to_vec(),
            expected: expected.to_vec(),
        })
    }
}

/// The array's data in standard (C) order, borrowed when already contiguous.
pub fn contiguous<'a>(a: &'a ArrayViewD<'_, f32>) -> Cow<'a, [f32]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// An array from a shape and matching data.
pub fn array_from(shape: Vec<usize>, data: Vec<f32>) -> Result<ArrayD<f32>, Error> {
    let found = vec![data.len()];
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|_| Error::InputShape {
        found,
        expected: shape,
    })
}

#[cfg(feature = "train")]
/// A trainer for a generated model: follows its embedded training plan and starts from
/// `weights`.
pub fn trainer_for(
    plan: cnn_ir::Plan,
    weights: &Weights,
    optimizer: Box<dyn crate::optim::Optimizer + Send>,
    seed: u64,
    threads: usize,
) -> Result<crate::train::Trainer, Error> {
    Ok(crate::train::Trainer::from_plan(
        plan, weights, optimizer, seed, threads,
    )?)
}

/// Whether a batch of `batch` images runs the plan's lane prefix on lane tensors: it fills at
/// least one slot of 16 and leaves at most a quarter of the last slot's lanes idle. Shared by
/// the interpreter and the generated code.
pub fn lanes_pay(batch: usize) -> bool {
    use crate::lanes::{LANES, lane_slots};
    let idle = lane_slots(batch) * LANES - batch;
    batch >= LANES && 4 * idle <= batch
}
