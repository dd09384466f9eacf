//! Tensors and images from files: `.npy` arrays (feature `npy`), PNG/JPEG model inputs (feature
//! `image`), and the atomic writes every output goes through.
//!
//! [`read_npy`] and [`write_npy`] move `f32` arrays to and from NumPy (golden values, exported
//! activations). [`read_image`] turns a PNG or JPEG into a `[C, H, W]` `f32` tensor the way
//! torchvision's `ToTensor` does — values in `[0, 1]`, channels first — converted to the model's
//! channel count and optionally normalised per channel:
//!
//! - Colour to grey uses ITU-R 601 luma, `L = 0.299 R + 0.587 G + 0.114 B`, computed for 8-bit
//!   images with PIL's integer formula (`(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`) so the
//!   result equals `ToTensor()(img.convert("L"))`.
//! - Grey to colour replicates the grey channel, like `convert("RGB")`.
//! - Alpha is dropped (not composited), like PIL's `convert("L")` and `convert("RGB")`.
//! - PNG palettes and 1/2/4-bit images are expanded; 16-bit PNGs keep their precision
//!   (`value / 65535`).
//! - Images are never resized: a size other than the model's is an error naming both.
//! - EXIF orientation, gamma and ICC profiles are ignored, as by PIL's `Image.open` + `ToTensor`.
//!
//! JPEGs are decoded by `zune-jpeg`; its IDCT and chroma upsampling can differ from libjpeg's
//! (used by PIL) by ±1 level on some pixels, so compare JPEG inputs with a tolerance.
//!
//! ```no_run
//! use cnn_runtime::io::{read_image, ChannelNorm};
//! let mnist = ChannelNorm::new(&[0.1307], &[0.3081])?;
//! let x = read_image("digit.png".as_ref(), [1, 28, 28], Some(&mnist))?;
//! assert_eq!(x.shape(), [1, 28, 28]);
//! # Ok::<(), cnn_runtime::io::IoError>(())
//! ```

use std::path::{Path, PathBuf};

#[cfg(feature = "image")]
mod image;
#[cfg(feature = "npy")]
mod npy;
#[cfg(all(test, feature = "npy", feature = "image"))]
mod tests;

#[cfg(feature = "image")]
pub use image::{ChannelNorm, decode_image, read_image};
#[cfg(feature = "npy")]
pub use npy::{npy_from_bytes, read_npy, write_npy};

/// Everything that can go wrong reading or writing arrays and images.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The `.npy` file holds another element type than little-endian `float32`.
    #[error(
        "`{}` holds {found} values, expected float32 ('<f4'): save it with `np.save(path, arr.astype('<f4'))`",
        path.display()
    )]
    NpyDtype {
        /// The file.
        path: PathBuf,
        /// The type descriptor found, e.g. `'<f8'`.
        found: String,
    },
    /// The `.npy` file is shorter than its header says.
    #[error(
        "`{}` is truncated: its header needs {missing} more bytes of data; write it again",
        path.display()
    )]
    NpyTruncated {
        /// The file.
        path: PathBuf,
        /// Bytes missing.
        missing: usize,
    },
    /// The `.npy` file is otherwise malformed.
    #[error("`{}` is not a valid .npy file: {reason}", path.display())]
    NpyInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The array could not be encoded.
    #[error("cannot write `{}` as .npy: {reason}", path.display())]
    NpyWrite {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The bytes are neither PNG nor JPEG.
    #[error(
        "`{}` is not a PNG or JPEG image (it starts with {start:02x?}); convert it to PNG",
        path.display()
    )]
    UnknownImageFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes.
        start: Vec<u8>,
    },
    /// The image decoder failed (corrupt or truncated file, unsupported variant).
    #[error("cannot decode {format} image `{}`: {reason}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// "PNG" or "JPEG".
        format: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The image's size differs from the model's input size.
    #[error(
        "`{}` is {width}×{height} pixels but the model takes {expected_width}×{expected_height}; resize it first (images are never resized implicitly)",
        path.display()
    )]
    ImageSize {
        /// The file.
        path: PathBuf,
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
        /// Model input width.
        expected_width: usize,
        /// Model input height.
        expected_height: usize,
    },
    /// The model's channel count is not 1 (grey) or 3 (RGB).
    #[error("images can be converted to 1 (grey) or 3 (RGB) channels, not {0}")]
    Channels(usize),
    /// Mean/std lists that do not fit the channel count, or a std that is not positive.
    #[error("invalid normalisation: {0}")]
    Normalization(String),
}

/// Shorthand for results in this module.
pub type Result<T, E = IoError> = std::result::Result<T, E>;

#[cfg_attr(not(any(feature = "npy", feature = "image")), allow(dead_code))]
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| IoError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder (named by
/// [`temp_path`]) is written and flushed to disk, then renamed over `path`, and the folder is
/// synced. A crash or a kill leaves the old file or the new one, never a part of either; on
/// failure the temporary file is removed. Every file `cnn` writes goes through here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temp_path(path)?;
    let dir = folder_of(path);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable. Directories cannot be opened for syncing everywhere
        // (e.g. Windows); that only weakens durability, not atomicity.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The folder `path` is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A fresh temporary name beside `path`: `.NAME.tmpPID-N`, unique per process and call, so
/// concurrent writers never share one, and hidden, so listings stay clean.
pub fn temp_path(path: &Path) -> std::io::Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(file_name);
    name.push(format!(".tmp{}-{n}", std::process::id()));
    Ok(folder_of(path).join(name))
}

/// The process id in a name made by [`temp_path`], or `None` for any other name.
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n))
        .then(|| pid.parse().ok())
        .flatten()
}

/// Removes the temporary files [`write_atomic`] left in `dir` when a process was killed
/// mid-write (only names made by [`temp_path`]; not those of a process that is still running,
/// where that can be told). Returns the paths removed.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(temp_owner) else {
            continue;
        };
        let proc_dir = Path::new("/proc");
        let alive = pid == std::process::id()
            || (proc_dir.is_dir() && proc_dir.join(pid.to_string()).exists());
        if !alive && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}
