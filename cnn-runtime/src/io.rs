//! Tensors and images from files: `.npy` arrays and PNG/JPEG model inputs.
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

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayD, ArrayViewD};
use ndarray_npy::{ViewNpyError, ViewNpyExt, WriteNpyExt};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

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

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| IoError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Reads a `.npy` file of little-endian `float32` (C or Fortran order, any number of
/// dimensions) into a C-order array.
///
/// The header's shape is checked against the file's length before any allocation.
pub fn read_npy(path: &Path) -> Result<ArrayD<f32>> {
    npy_from_bytes(&read_file(path)?, path)
}

/// Parses `.npy` bytes; `path` names them in errors.
pub fn npy_from_bytes(bytes: &[u8], path: &Path) -> Result<ArrayD<f32>> {
    // `view_npy` needs the data 4-byte aligned; copy into a buffer whose start we choose.
    let mut buf = vec![0u8; bytes.len() + 3];
    let offset = buf.as_ptr().align_offset(4).min(3);
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
    let aligned = &buf[offset..offset + bytes.len()];
    let invalid = |reason: String| IoError::NpyInvalid {
        path: path.to_owned(),
        reason,
    };
    if let Some(reason) = header_overrun(bytes) {
        return Err(invalid(reason));
    }
    match ArrayViewD::<f32>::view_npy(aligned) {
        Ok(view) => Ok(view.as_standard_layout().into_owned()),
        Err(ViewNpyError::WrongDescriptor(d)) => Err(IoError::NpyDtype {
            path: path.to_owned(),
            found: d.to_string(),
        }),
        Err(ViewNpyError::NonNativeEndian) => Err(IoError::NpyDtype {
            path: path.to_owned(),
            found: "big-endian float32 ('>f4')".into(),
        }),
        Err(ViewNpyError::MissingBytes(missing)) => Err(IoError::NpyTruncated {
            path: path.to_owned(),
            missing,
        }),
        Err(ViewNpyError::ExtraBytes(n)) => Err(invalid(format!(
            "{n} bytes follow the data its header describes"
        ))),
        Err(ViewNpyError::ParseHeader(e)) => Err(invalid(format!(
            "bad header ({e}); is it a .npy file (not .npz or pickle)?"
        ))),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// Why a `.npy` file's header cannot fit in it (its length field points past the end), or
/// `None` when it fits or the file is not `.npy` at all (the parser then says what is wrong).
fn header_overrun(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 8 {
        return None;
    }
    let start = match bytes[6] {
        1 => 10,
        2 | 3 => 12,
        _ => return None,
    };
    let field = bytes.get(8..start)?;
    let claimed = field
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let after = bytes.len() - start;
    (claimed > after).then(|| {
        format!(
            "its header claims {claimed} bytes, but only {after} follow the {start}-byte preamble: the file is truncated or was not written by NumPy"
        )
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

/// Writes `array` as a little-endian `float32` `.npy` file in C order, atomically
/// ([`write_atomic`]).
pub fn write_npy<D: ndarray::Dimension>(
    path: &Path,
    array: &ndarray::ArrayRef<f32, D>,
) -> Result<()> {
    let mut bytes = Vec::new();
    array
        .as_standard_layout()
        .write_npy(&mut bytes)
        .map_err(|e| IoError::NpyWrite {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &bytes).map_err(|source| IoError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Per-channel normalisation `(x − mean[c]) / std[c]`, as torchvision's `Normalize`, applied
/// after scaling to `[0, 1]`. One value applies to every channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelNorm {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl ChannelNorm {
    /// Checked: equal, non-empty lengths, every std positive and finite, every mean finite.
    pub fn new(mean: &[f32], std: &[f32]) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(IoError::Normalization(format!(
                "{} means but {} stds; give one of each per channel",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(IoError::Normalization(format!(
                "std {s} is not positive and finite"
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(IoError::Normalization(format!("mean {m} is not finite")));
        }
        Ok(Self {
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }

    /// The ImageNet statistics used by torchvision's pretrained models.
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Normalises a `[C, H, W]` tensor in place.
    pub fn apply(&self, x: &mut Array3<f32>) -> Result<()> {
        let c = x.shape()[0];
        if self.mean.len() != 1 && self.mean.len() != c {
            return Err(IoError::Normalization(format!(
                "{} means and stds for an image with {c} channels",
                self.mean.len()
            )));
        }
        for (k, mut plane) in x.outer_iter_mut().enumerate() {
            let i = if self.mean.len() == 1 { 0 } else { k };
            let (m, s) = (self.mean[i], self.std[i]);
            plane.mapv_inplace(|v| (v - m) / s);
        }
        Ok(())
    }
}

/// Decoded pixels before channel conversion: interleaved, values scaled to `[0, 1]`.
struct Decoded {
    width: usize,
    height: usize,
    /// Interleaved samples per pixel: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
    samples: usize,
    /// 8-bit samples (kept as bytes so grey conversion can use PIL's integer formula).
    bytes: Option<Vec<u8>>,
    /// 16-bit samples scaled to `[0, 1]`.
    wide: Option<Vec<f32>>,
}

/// Reads a PNG or JPEG (recognised by content) as a `[C, H, W]` tensor in `[0, 1]`, converted to
/// `shape[0]` channels (1 or 3), then normalised with `norm` if given.
pub fn read_image(
    path: &Path,
    shape: [usize; 3],
    norm: Option<&ChannelNorm>,
) -> Result<Array3<f32>> {
    decode_image(&read_file(path)?, path, shape, norm)
}

/// [`read_image`] from bytes in memory; `path` names them in errors.
pub fn decode_image(
    bytes: &[u8],
    path: &Path,
    [channels, height, width]: [usize; 3],
    norm: Option<&ChannelNorm>,
) -> Result<Array3<f32>> {
    if channels != 1 && channels != 3 {
        return Err(IoError::Channels(channels));
    }
    let decoded = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, path, height, width)?
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes, path, channels, height, width)?
    } else {
        return Err(IoError::UnknownImageFormat {
            path: path.to_owned(),
            start: bytes.iter().take(8).copied().collect(),
        });
    };
    let mut x = to_chw(&decoded, channels);
    if let Some(n) = norm {
        n.apply(&mut x)?;
    }
    Ok(x)
}

fn check_size(path: &Path, (w, h): (usize, usize), height: usize, width: usize) -> Result<()> {
    if (w, h) == (width, height) {
        Ok(())
    } else {
        Err(IoError::ImageSize {
            path: path.to_owned(),
            width: w,
            height: h,
            expected_width: width,
            expected_height: height,
        })
    }
}

fn decode_png(bytes: &[u8], path: &Path, height: usize, width: usize) -> Result<Decoded> {
    let err = |e: png::DecodingError| IoError::Decode {
        path: path.to_owned(),
        format: "PNG",
        reason: e.to_string(),
    };
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    // Palette → RGB(A), tRNS → alpha, 1/2/4-bit → 8-bit; 16-bit stays 16-bit.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(err)?;
    let (w, h) = reader.info().size();
    // Check the size before allocating the output buffer.
    check_size(path, (w as usize, h as usize), height, width)?;
    let (color, depth) = reader.output_color_type();
    let size = reader.output_buffer_size().ok_or_else(|| IoError::Decode {
        path: path.to_owned(),
        format: "PNG",
        reason: "image too large".into(),
    })?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(err)?;
    let samples = match color {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(IoError::Decode {
                path: path.to_owned(),
                format: "PNG",
                reason: "palette was not expanded".into(),
            });
        }
    };
    let row_bytes = width
        * samples
        * if depth == png::BitDepth::Sixteen {
            2
        } else {
            1
        };
    let rows = buf
        .chunks(info.line_size.max(1))
        .take(height)
        .flat_map(|r| &r[..row_bytes.min(r.len())]);
    let (bytes, wide) = if depth == png::BitDepth::Sixteen {
        let raw: Vec<u8> = rows.copied().collect();
        let wide = raw
            .chunks_exact(2)
            .map(|b| f32::from(u16::from_be_bytes([b[0], b[1]])) / 65535.0)
            .collect();
        (None, Some(wide))
    } else {
        (Some(rows.copied().collect()), None)
    };
    Ok(Decoded {
        width,
        height,
        samples,
        bytes,
        wide,
    })
}

fn decode_jpeg(
    bytes: &[u8],
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Decoded> {
    let err = |reason: String| IoError::Decode {
        path: path.to_owned(),
        format: "JPEG",
        reason,
    };
    let mut probe = JpegDecoder::new(ZCursor::new(bytes));
    probe.decode_headers().map_err(|e| err(e.to_string()))?;
    let info = probe.info().ok_or_else(|| err("no frame header".into()))?;
    check_size(
        path,
        (usize::from(info.width), usize::from(info.height)),
        height,
        width,
    )?;
    // A grey JPEG decodes to grey; a colour one to RGB, reduced to grey with PIL's formula if
    // the model wants one channel (as PIL decodes to RGB and then converts).
    let grey_source = probe.input_colorspace() == Some(ColorSpace::Luma);
    let out = if grey_source && channels == 1 {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    let options = DecoderOptions::default().jpeg_set_out_colorspace(out);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().map_err(|e| err(e.to_string()))?;
    let samples = if out == ColorSpace::Luma { 1 } else { 3 };
    if pixels.len() != width * height * samples {
        return Err(err(format!(
            "decoder returned {} bytes for {width}×{height}×{samples}",
            pixels.len()
        )));
    }
    Ok(Decoded {
        width,
        height,
        samples,
        bytes: Some(pixels),
        wide: None,
    })
}

/// PIL's `convert("L")` for 8-bit RGB: ITU-R 601 luma in 16-bit fixed point, rounded.
fn luma8(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

fn to_chw(d: &Decoded, channels: usize) -> Array3<f32> {
    let (h, w, s) = (d.height, d.width, d.samples);
    let colour = s >= 3;
    Array3::from_shape_fn((channels, h, w), |(c, y, x)| {
        let p = (y * w + x) * s;
        match (&d.bytes, &d.wide) {
            (Some(b), _) => {
                let v = if !colour {
                    b[p]
                } else if channels == 1 {
                    luma8(b[p], b[p + 1], b[p + 2])
                } else {
                    b[p + c]
                };
                f32::from(v) / 255.0
            }
            (None, Some(f)) => {
                if !colour {
                    f[p]
                } else if channels == 1 {
                    0.299 * f[p] + 0.587 * f[p + 1] + 0.114 * f[p + 2]
                } else {
                    f[p + c]
                }
            }
            (None, None) => 0.0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, array};

    fn png_bytes(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        palette: Option<(&[u8], &[u8])>,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e = png::Encoder::new(&mut out, w, h);
            e.set_color(color);
            e.set_depth(depth);
            if let Some((plte, trns)) = palette {
                e.set_palette(plte.to_vec());
                if !trns.is_empty() {
                    e.set_trns(trns.to_vec());
                }
            }
            let mut wr = e.write_header().unwrap();
            wr.write_image_data(data).unwrap();
        }
        out
    }

    fn decode(bytes: &[u8], shape: [usize; 3]) -> Result<Array3<f32>> {
        decode_image(bytes, Path::new("img.png"), shape, None)
    }

    use png::BitDepth::{Eight, Four, Sixteen};
    use png::ColorType::{Grayscale, GrayscaleAlpha, Indexed, Rgb, Rgba};

    #[test]
    fn a_header_longer_than_the_file_is_named() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend(60_000u16.to_le_bytes());
        b.extend(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }");
        let e = npy_from_bytes(&b, Path::new("x.npy"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`x.npy`")
                && e.contains("claims 60000 bytes")
                && e.contains("only 57 follow"),
            "{e}"
        );
        // Version 2 has a 4-byte length field.
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend(1_000_000u32.to_le_bytes());
        let e = npy_from_bytes(&b, Path::new("y.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("claims 1000000 bytes"), "{e}");
        // A preamble cut short is not an overrun but still an error.
        assert!(npy_from_bytes(b"\x93NUMPY\x01", Path::new("z.npy")).is_err());
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cnn-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() {
        let d = scratch("atomic");
        let p = d.join("out.csv");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.csv"]);
        // A folder that does not exist: an error, and nothing left behind.
        let e = write_atomic(&d.join("missing/out.csv"), b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let d = scratch("stale");
        let keep = [
            "weights.safetensors",
            ".hidden",
            "a.tmp1-2",
            ".x.tmpA-1",
            ".x.tmp1-",
        ];
        for n in keep {
            std::fs::write(d.join(n), b"").unwrap();
        }
        // A pid no process can have on Linux (above pid_max), and the old checkpoint naming.
        let dead = ".checkpoint.safetensors.tmp4999999-0";
        std::fs::write(d.join(dead), b"partial").unwrap();
        std::fs::write(d.join(".curves.png.tmp4999999-12"), b"").unwrap();
        let mine = temp_path(&d.join("metrics.csv")).unwrap();
        std::fs::write(&mine, b"").unwrap();
        let mut removed = remove_stale_temps(&d).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [
                d.join(".checkpoint.safetensors.tmp4999999-0"),
                d.join(".curves.png.tmp4999999-12")
            ]
        );
        assert!(mine.exists(), "a running process's temporary file is kept");
        for n in keep {
            assert!(d.join(n).exists(), "{n}");
        }
        assert_eq!(temp_owner(dead), Some(4_999_999));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn grey_8bit_is_to_tensor() {
        let px = [0u8, 51, 255, 102, 204, 153];
        let b = png_bytes(3, 2, Grayscale, Eight, None, &px);
        let x = decode(&b, [1, 2, 3]).unwrap();
        assert_eq!(x, array![[[0.0, 0.2, 1.0], [0.4, 0.8, 0.6]]]);
        // Grey → RGB replicates.
        let x3 = decode(&b, [3, 2, 3]).unwrap();
        for c in 0..3 {
            assert_eq!(
                x3.index_axis(ndarray::Axis(0), c),
                x.index_axis(ndarray::Axis(0), 0)
            );
        }
    }

    #[test]
    fn rgb_rgba_and_grey_alpha() {
        // Two pixels: pure red, and (10, 200, 30).
        let rgb = [255u8, 0, 0, 10, 200, 30];
        let b = png_bytes(2, 1, Rgb, Eight, None, &rgb);
        let x = decode(&b, [3, 1, 2]).unwrap();
        assert_eq!(
            x,
            array![
                [[1.0, 10.0 / 255.0]],
                [[0.0, 200.0 / 255.0]],
                [[0.0, 30.0 / 255.0]]
            ]
        );
        let grey = decode(&b, [1, 1, 2]).unwrap();
        // PIL: convert("L") of red is 76; of (10, 200, 30) is 124.
        assert_eq!(grey, array![[[76.0 / 255.0, 124.0 / 255.0]]]);
        let rgba = [255u8, 0, 0, 7, 10, 200, 30, 0];
        let b = png_bytes(2, 1, Rgba, Eight, None, &rgba);
        assert_eq!(decode(&b, [1, 1, 2]).unwrap(), grey, "alpha is dropped");
        let la = [9u8, 0, 90, 255];
        let b = png_bytes(2, 1, GrayscaleAlpha, Eight, None, &la);
        assert_eq!(
            decode(&b, [1, 1, 2]).unwrap(),
            array![[[9.0 / 255.0, 90.0 / 255.0]]]
        );
    }

    #[test]
    fn sixteen_bit_keeps_precision() {
        let v: [u16; 2] = [0x0101, 0xffff];
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        let b = png_bytes(2, 1, Grayscale, Sixteen, None, &data);
        let x = decode(&b, [1, 1, 2]).unwrap();
        assert_eq!(x, array![[[257.0 / 65535.0, 1.0]]]);
        let rgb: Vec<u8> = [65535u16, 0, 0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let b = png_bytes(1, 1, Rgb, Sixteen, None, &rgb);
        let g = decode(&b, [1, 1, 1]).unwrap();
        assert!((g[[0, 0, 0]] - 0.299).abs() < 1e-6);
    }

    #[test]
    fn palette_and_low_bit_depth_expand() {
        let plte = [0u8, 0, 0, 255, 255, 255, 0, 0, 255];
        // 4-bit indices 2, 1 packed in one byte: 0x21.
        let b = png_bytes(2, 1, Indexed, Four, Some((&plte, &[])), &[0x21]);
        let x = decode(&b, [3, 1, 2]).unwrap();
        assert_eq!(x, array![[[0.0, 1.0]], [[0.0, 1.0]], [[1.0, 1.0]]]);
        // With transparency the palette expands to RGBA; alpha is still dropped.
        let b = png_bytes(2, 1, Indexed, Four, Some((&plte, &[0, 0, 0])), &[0x21]);
        assert_eq!(decode(&b, [3, 1, 2]).unwrap(), x);
        // 4-bit grey: 0xF → 1.0, 0x0 → 0.0.
        let b = png_bytes(2, 1, Grayscale, Four, None, &[0xf0]);
        assert_eq!(decode(&b, [1, 1, 2]).unwrap(), array![[[1.0, 0.0]]]);
    }

    #[test]
    fn size_mismatch_names_both_sizes() {
        let b = png_bytes(3, 2, Grayscale, Eight, None, &[0; 6]);
        let e = decode(&b, [1, 28, 28]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`img.png` is 3×2 pixels but the model takes 28×28; resize it first (images are never resized implicitly)"
        );
        assert!(matches!(decode(&b, [2, 2, 3]), Err(IoError::Channels(2))));
    }

    #[test]
    fn normalisation_per_channel_and_broadcast() {
        let b = png_bytes(1, 1, Rgb, Eight, None, &[255, 0, 51]);
        let n = ChannelNorm::new(&[0.5, 0.0, 0.2], &[0.5, 1.0, 0.1]).unwrap();
        let x = decode_image(&b, Path::new("a"), [3, 1, 1], Some(&n)).unwrap();
        assert_eq!(x.iter().copied().collect::<Vec<_>>(), [1.0, 0.0, 0.0]);
        let one = ChannelNorm::new(&[0.1307], &[0.3081]).unwrap();
        let b = png_bytes(1, 1, Grayscale, Eight, None, &[0]);
        let x = decode_image(&b, Path::new("a"), [1, 1, 1], Some(&one)).unwrap();
        assert!((x[[0, 0, 0]] + 0.1307 / 0.3081).abs() < 1e-6);
        assert!(ChannelNorm::new(&[0.1], &[0.0]).is_err());
        assert!(ChannelNorm::new(&[0.1, 0.2], &[1.0]).is_err());
        let mut grey = Array3::<f32>::zeros((1, 1, 1));
        assert!(matches!(
            ChannelNorm::imagenet().apply(&mut grey),
            Err(IoError::Normalization(_))
        ));
    }

    #[test]
    fn corrupt_and_unknown_images() {
        let b = png_bytes(4, 4, Grayscale, Eight, None, &[7; 16]);
        let e = decode(&b[..b.len() - 20], [1, 4, 4]).unwrap_err();
        assert!(matches!(e, IoError::Decode { format: "PNG", .. }), "{e:?}");
        let e = decode(b"GIF89a......", [1, 4, 4]).unwrap_err();
        assert!(e.to_string().contains("not a PNG or JPEG"), "{e}");
        let e = decode(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], [1, 4, 4]).unwrap_err();
        assert!(matches!(e, IoError::Decode { format: "JPEG", .. }), "{e:?}");
    }

    #[test]
    fn reads_png_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.png");
        std::fs::write(
            &p,
            png_bytes(2, 2, Grayscale, Eight, None, &[0, 255, 255, 0]),
        )
        .unwrap();
        let x = read_image(&p, [1, 2, 2], None).unwrap();
        assert_eq!(x, array![[[0.0, 1.0], [1.0, 0.0]]]);
        let e = read_image(&dir.path().join("none.png"), [1, 2, 2], None).unwrap_err();
        assert!(e.to_string().starts_with("cannot read"), "{e}");
    }

    /// JPEGs written by PIL (`tests/data/make_images.py`): an 8×8 grey one with a vertical
    /// step 0 | 255 (quality 100) and a 16×8 RGB one, left half (200, 30, 30) and right half
    /// (30, 30, 200).
    #[test]
    fn decodes_jpeg_written_by_pil() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let grey = read_image(&dir.join("step_grey.jpg"), [1, 8, 8], None).unwrap();
        for y in 0..8 {
            assert!(grey[[0, y, 0]] < 0.05 && grey[[0, y, 7]] > 0.95, "{grey:?}");
        }
        let rgb = read_image(&dir.join("halves_rgb.jpg"), [3, 8, 16], None).unwrap();
        let near = |a: f32, b: u8| (a - f32::from(b) / 255.0).abs() < 12.0 / 255.0;
        assert!(near(rgb[[0, 4, 2]], 200) && near(rgb[[1, 4, 2]], 30) && near(rgb[[2, 4, 2]], 30));
        assert!(near(rgb[[0, 4, 13]], 30) && near(rgb[[2, 4, 13]], 200));
        // As grey: PIL's luma of (200, 30, 30) is 81.
        let g = read_image(&dir.join("halves_rgb.jpg"), [1, 8, 16], None).unwrap();
        assert!(near(g[[0, 4, 2]], 81), "{}", g[[0, 4, 2]] * 255.0);
        assert!(matches!(
            read_image(&dir.join("halves_rgb.jpg"), [3, 16, 8], None),
            Err(IoError::ImageSize {
                width: 16,
                height: 8,
                ..
            })
        ));
    }

    #[test]
    fn npy_round_trip_and_fortran_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let a = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |d| (d[0] * 12 + d[1] * 4 + d[2]) as f32);
        write_npy(&p, &a).unwrap();
        assert_eq!(read_npy(&p).unwrap(), a);
        // A transposed (Fortran-order) array is written as C order and reads back equal.
        let t = a.t().to_owned();
        let f = a.view().reversed_axes();
        write_npy(&p, &f).unwrap();
        assert_eq!(read_npy(&p).unwrap(), t);
    }

    /// `.npy` files written by NumPy (`tests/data/make_npy.py`).
    #[test]
    fn npy_from_numpy_and_its_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let want = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |d| (d[0] * 3 + d[1]) as f32 * 0.5);
        assert_eq!(read_npy(&dir.join("c_f32.npy")).unwrap(), want);
        assert_eq!(read_npy(&dir.join("fortran_f32.npy")).unwrap(), want);
        let e = read_npy(&dir.join("f64.npy")).unwrap_err();
        assert!(
            matches!(&e, IoError::NpyDtype { found, .. } if found.contains("<f8")),
            "{e:?}"
        );
        assert!(e.to_string().contains("astype('<f4')"), "{e}");
        let bytes = std::fs::read(dir.join("c_f32.npy")).unwrap();
        let e = npy_from_bytes(&bytes[..bytes.len() - 4], Path::new("cut.npy")).unwrap_err();
        assert!(
            matches!(e, IoError::NpyTruncated { missing: 4, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("cut.npy"), "{e}");
        let e = npy_from_bytes(b"not numpy at all", Path::new("x.npy")).unwrap_err();
        assert!(matches!(e, IoError::NpyInvalid { .. }), "{e:?}");
        // A header claiming a huge shape fails on length, without allocating it.
        // The replacement eats padding spaces so the header length stays valid.
        let header = std::str::from_utf8(&bytes[10..128]).unwrap();
        let claim = "(200000000, 300000000), }";
        let padded =
            header
                .replacen("(2, 3), }", claim, 1)
                .replacen(&" ".repeat(claim.len() - 9), "", 1);
        assert_eq!(padded.len(), 118);
        let mut huge = bytes[..10].to_vec();
        huge.extend_from_slice(padded.as_bytes());
        huge.extend_from_slice(&bytes[128..]);
        let e = npy_from_bytes(&huge, Path::new("huge.npy")).unwrap_err();
        assert!(matches!(e, IoError::NpyTruncated { .. }), "{e:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Damaged PNG, JPEG and .npy files give an error, never a panic.
        #[test]
        fn damaged_inputs_never_panic(
            which in 0usize..4,
            cut in 0usize..1000,
            flips in proptest::collection::vec((0usize..1000, 1u8..=255), 0..4),
        ) {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
            let mut bytes = match which {
                0 => png_bytes(4, 3, Rgb, Eight, None, &[9; 36]),
                1 => std::fs::read(dir.join("halves_rgb.jpg")).unwrap(),
                2 => std::fs::read(dir.join("step_grey.jpg")).unwrap(),
                _ => std::fs::read(dir.join("c_f32.npy")).unwrap(),
            };
            for (at, x) in flips {
                let n = bytes.len();
                // Keep the signature so the decoder, not the format sniffing, sees the damage.
                let at = 4 + at % (n - 4);
                bytes[at] ^= x;
            }
            bytes.truncate(cut.max(4).min(bytes.len()));
            if which == 3 {
                let _ = npy_from_bytes(&bytes, Path::new("x.npy"));
            } else {
                let shape = if which == 0 { [3, 3, 4] } else { [3, 8, 16] };
                let _ = decode_image(&bytes, Path::new("x"), shape, None);
                let _ = decode_image(&bytes, Path::new("x"), [1, 8, 8], None);
            }
        }
    }
}
