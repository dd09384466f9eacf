//! `.npy` arrays of little-endian `float32`, through `ndarray-npy`.

use std::path::Path;

use ndarray::{ArrayD, ArrayViewD};
use ndarray_npy::{ViewNpyError, ViewNpyExt, WriteNpyExt};

use super::{IoError, Result, read_file, write_atomic};

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
