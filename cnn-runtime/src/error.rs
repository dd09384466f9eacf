//! The runtime's umbrella error (re-exported as `cnn::Error`).

use crate::{exec::ExecError, init::InitError, io::IoError, weights::WeightsError};

/// Anything the runtime can report: weights that do not fit, bad data or inputs, I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading, checking or saving weights.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Initialising weights.
    #[error(transparent)]
    Init(#[from] InitError),
    /// Reading `.npy` or image inputs.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Reading a dataset.
    #[cfg(feature = "data")]
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Training.
    #[cfg(feature = "train")]
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// Building or running the plan interpreter.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// An ndarray batch whose trailing dimensions differ from the model's input.
    #[error("input has shape {found:?}, but the model takes [N, {}]", expected.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))]
    InputShape {
        /// Shape given.
        found: Vec<usize>,
        /// Per-image input shape.
        expected: Vec<usize>,
    },
}
