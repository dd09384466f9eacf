//! MNIST-style datasets: IDX files, splits, normalisation and (prefetched) batches.
//!
//! The IDX format (LeCun et al.) is a big-endian header — magic `0x0000_08_DD` (`08` = unsigned
//! bytes, `DD` = number of dimensions), then one `u32` per dimension — followed by the data.
//! Images are `0x00000803, N, H, W` + `N·H·W` bytes; labels `0x00000801, N` + `N` bytes.
//! Files may be gzip-compressed or raw: compression is recognised from the content (gzip's magic
//! bytes), not from the name. [`load_folder`] accepts both spellings of the standard names,
//! `train-images-idx3-ubyte` and `train-images.idx3-ubyte`, each with or without `.gz`.
//!
//! Every size in a header is checked against the file before anything is allocated: a header
//! claiming 2³² images fails as a truncated file instead of reserving terabytes.
//!
//! ```no_run
//! use cnn_runtime::data::{load_folder, BatchConfig, Normalize};
//! let mnist = load_folder("data/mnist".as_ref())?;
//! let (train, val) = mnist.train.split(5_000, 42)?;
//! let config = BatchConfig::new(64).seed(1).normalize(Normalize::MNIST);
//! for batch in train.batches(&config, 0)? {
//!     assert_eq!(batch.images.len(), batch.len() * 28 * 28);
//! }
//! # Ok::<(), cnn_runtime::data::DataError>(())
//! ```

use std::path::PathBuf;

mod batch;
mod dataset;
mod idx;
#[cfg(test)]
mod tests;

pub use batch::{Batch, BatchConfig, Batches, Normalize, Prefetch};
pub use dataset::{Dataset, Holdout};
pub use idx::{
    IdxImages, TrainTest, idx_images_from_bytes, idx_labels_from_bytes, load_folder,
    load_folder_with_classes, read_idx_images, read_idx_labels,
};

/// Everything that can go wrong reading or batching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// None of the accepted names for a dataset file exists in the folder.
    #[error(
        "no {what} file in `{}`: looked for {}; download the dataset or pass the folder that holds it",
        dir.display(),
        tried.join(", ")
    )]
    NotFound {
        /// The folder searched.
        dir: PathBuf,
        /// Which file was wanted, e.g. "training images".
        what: &'static str,
        /// The file names tried, in order.
        tried: Vec<String>,
    },
    /// The file does not start with the expected IDX magic number.
    #[error(
        "`{}` is not an IDX {what} file: magic number is 0x{found:08x}, expected 0x{expected:08x}{hint}",
        path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// "images" or "labels".
        what: &'static str,
        /// The magic number required.
        expected: u32,
        /// The magic number read.
        found: u32,
        /// A hint about what the file probably is (starts with "; ").
        hint: String,
    },
    /// A header dimension that must be positive is zero.
    #[error("`{}` has a zero {dimension} in its header; the file is corrupt", path.display())]
    ZeroDimension {
        /// The file.
        path: PathBuf,
        /// "height" or "width".
        dimension: &'static str,
    },
    /// The header's sizes multiply past `u64`.
    #[error(
        "`{}` claims {count} samples of {sample_bytes} bytes, which overflows; the header is corrupt",
        path.display()
    )]
    SizeOverflow {
        /// The file.
        path: PathBuf,
        /// The sample count from the header.
        count: u64,
        /// Bytes per sample from the header.
        sample_bytes: u64,
    },
    /// The file (after decompression, if gzip) is shorter than its header says.
    #[error(
        "`{}` is truncated: its header needs {expected} bytes{decompressed}, found {actual}; the file is incomplete, download it again",
        path.display(),
        decompressed = if *gzip { " after decompression" } else { "" }
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes required by the header (header included).
        expected: u64,
        /// Bytes present (header included).
        actual: u64,
        /// Whether the sizes are of the decompressed stream.
        gzip: bool,
    },
    /// The file has bytes after the data its header describes.
    #[error(
        "`{}` has {} bytes after the {expected} its header describes{decompressed}; the header or the file is wrong",
        path.display(),
        actual.saturating_sub(*expected),
        decompressed = if *gzip { " (after decompression)" } else { "" }
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes required by the header.
        expected: u64,
        /// Bytes present (at least `expected + 1`; for gzip only one extra byte is read).
        actual: u64,
        /// Whether the sizes are of the decompressed stream.
        gzip: bool,
    },
    /// The gzip stream is corrupt.
    #[error("`{}` is not a valid gzip stream: {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// Image and label files disagree on the number of samples.
    #[error(
        "{images} images in `{}` but {labels} labels in `{}`: pass the images and labels of the same split",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// Its sample count.
        images: usize,
        /// The labels file.
        labels_path: PathBuf,
        /// Its sample count.
        labels: usize,
    },
    /// A label is not below the class count.
    #[error(
        "label {label} of sample {index} in `{}` is out of range for {classes} classes (0..={max}); the file belongs to another dataset or is corrupt",
        path.display(),
        max = classes.saturating_sub(1)
    )]
    LabelOutOfRange {
        /// The labels file (empty for in-memory data).
        path: PathBuf,
        /// The sample index.
        index: usize,
        /// The label found.
        label: u8,
        /// The number of classes.
        classes: usize,
    },
    /// In-memory buffers do not agree with the stated shape.
    #[error("dataset buffers disagree: {0}")]
    Inconsistent(String),
    /// A validation split larger than the dataset or a fraction outside [0, 1].
    #[error("cannot hold out {requested} of {len} samples for validation: {reason}")]
    BadSplit {
        /// The request, as written.
        requested: String,
        /// The dataset size.
        len: usize,
        /// Why it is invalid and what to do.
        reason: &'static str,
    },
    /// Batch size zero.
    #[error("batch size is 0: use a batch size of at least 1")]
    ZeroBatchSize,
    /// A normalisation with a non-positive or non-finite std or a non-finite mean.
    #[error("invalid normalisation mean {mean}, std {std}: std must be positive and both finite")]
    BadNormalize {
        /// The mean given.
        mean: f32,
        /// The std given.
        std: f32,
    },
}

/// Shorthand for results in this module.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
