//! Reading IDX files (gzip or raw) and the standard MNIST-style folder layout.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::*;

pub(super) const IMAGES_MAGIC: u32 = 0x0000_0803;
pub(super) const LABELS_MAGIC: u32 = 0x0000_0801;

/// The images of one IDX file: `count` images of `height × width` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// `count · height · width` pixels, 0 = background.
    pub pixels: Vec<u8>,
}

/// An opened IDX file: a reader positioned at the start, and what is known about its size.
struct IdxSource<'a> {
    reader: Box<dyn BufRead + 'a>,
    path: PathBuf,
    gzip: bool,
    /// On-disk length for raw files (gzip's decompressed size is only known by reading).
    raw_len: Option<u64>,
}

impl<'a> IdxSource<'a> {
    fn open(path: &Path) -> Result<Self> {
        let io_err = |source| DataError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        Self::new(BufReader::new(file), len, path)
    }

    /// A source over `reader`, whose raw (possibly compressed) length is `len`.
    fn new(mut reader: impl BufRead + 'a, len: u64, path: &Path) -> Result<Self> {
        let gzip = reader
            .fill_buf()
            .map_err(|source| DataError::Io {
                path: path.to_owned(),
                source,
            })?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead + 'a> = if gzip {
            Box::new(BufReader::new(flate2::bufread::GzDecoder::new(reader)))
        } else {
            Box::new(reader)
        };
        Ok(Self {
            reader,
            path: path.to_owned(),
            gzip,
            raw_len: (!gzip).then_some(len),
        })
    }

    fn read_err(&self, source: io::Error, expected: u64, done: u64) -> DataError {
        match source.kind() {
            io::ErrorKind::UnexpectedEof => DataError::Truncated {
                path: self.path.clone(),
                expected,
                actual: done,
                gzip: self.gzip,
            },
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData if self.gzip => {
                DataError::Gzip {
                    path: self.path.clone(),
                    source,
                }
            }
            _ => DataError::Io {
                path: self.path.clone(),
                source,
            },
        }
    }

    /// Reads the `4 · (1 + dims)`-byte header, checks the magic, returns the dimensions.
    fn header(&mut self, magic: u32, what: &'static str, dims: usize) -> Result<Vec<u32>> {
        let header_len = 4 * (1 + dims);
        let mut buf = vec![0u8; header_len];
        let mut got = 0;
        while got < header_len {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_err(e, header_len as u64, got as u64)),
            }
        }
        let words: Vec<u32> = buf[..got]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if got >= 4 && words[0] != magic {
            return Err(DataError::BadMagic {
                path: self.path.clone(),
                what,
                expected: magic,
                found: words[0],
                hint: magic_hint(words[0], magic),
            });
        }
        if got < header_len {
            return Err(DataError::Truncated {
                path: self.path.clone(),
                expected: header_len as u64,
                actual: got as u64,
                gzip: self.gzip,
            });
        }
        Ok(words[1..].to_vec())
    }

    /// Reads exactly `body` bytes after a header of `header_len` bytes, and checks nothing follows.
    fn body(mut self, header_len: u64, body: u64) -> Result<Vec<u8>> {
        let expected = header_len
            .checked_add(body)
            .ok_or(DataError::SizeOverflow {
                path: self.path.clone(),
                count: body,
                sample_bytes: 1,
            })?;
        if let Some(len) = self.raw_len {
            // Raw file: the length is known, so check before allocating.
            if len < expected {
                return Err(DataError::Truncated {
                    path: self.path,
                    expected,
                    actual: len,
                    gzip: false,
                });
            }
            if len > expected {
                return Err(DataError::TrailingBytes {
                    path: self.path,
                    expected,
                    actual: len,
                    gzip: false,
                });
            }
        }
        // For gzip the decompressed size is unknown until read: grow the buffer as data actually
        // arrives (at most `body` bytes), so a lying header costs no more than the real data.
        let mut data = Vec::with_capacity(usize::try_from(body.min(1 << 26)).unwrap_or(0));
        let limited = (&mut self.reader).take(body).read_to_end(&mut data);
        if let Err(e) = limited {
            return Err(self.read_err(e, expected, header_len + data.len() as u64));
        }
        if (data.len() as u64) < body {
            return Err(DataError::Truncated {
                path: self.path,
                expected,
                actual: header_len + data.len() as u64,
                gzip: self.gzip,
            });
        }
        let mut one = [0u8; 1];
        match self.reader.read(&mut one) {
            Ok(0) => Ok(data),
            Ok(_) => Err(DataError::TrailingBytes {
                path: self.path,
                expected,
                actual: expected + 1,
                gzip: self.gzip,
            }),
            Err(e) => Err(self.read_err(e, expected, expected)),
        }
    }
}

fn magic_hint(found: u32, expected: u32) -> String {
    if found == IMAGES_MAGIC {
        "; this is an images file, pass the labels file".into()
    } else if found == LABELS_MAGIC {
        "; this is a labels file, pass the images file".into()
    } else if found.swap_bytes() == expected {
        "; the header is little-endian, IDX is big-endian".into()
    } else if found >> 16 != 0 {
        "; not an IDX file (IDX starts with two zero bytes)".into()
    } else if (found >> 8) & 0xff != 0x08 {
        format!(
            "; element type 0x{:02x} is not unsigned bytes (0x08)",
            (found >> 8) & 0xff
        )
    } else {
        format!(
            "; it has {} dimensions, expected {}",
            found & 0xff,
            expected & 0xff
        )
    }
}

/// Reads an IDX3 images file (gzip or raw).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    idx_images_from(IdxSource::open(path)?, path)
}

/// Parses the bytes of an IDX3 images file (gzip or raw), as [`read_idx_images`] does a file;
/// `path` names them in errors.
pub fn idx_images_from_bytes(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    idx_images_from(IdxSource::new(bytes, bytes.len() as u64, path)?, path)
}

fn idx_images_from(mut src: IdxSource<'_>, path: &Path) -> Result<IdxImages> {
    let dims = src.header(IMAGES_MAGIC, "images", 3)?;
    let (count, height, width) = (dims[0], dims[1], dims[2]);
    for (value, dimension) in [(height, "height"), (width, "width")] {
        if value == 0 {
            return Err(DataError::ZeroDimension {
                path: path.to_owned(),
                dimension,
            });
        }
    }
    let sample_bytes = u64::from(height) * u64::from(width);
    let body = u64::from(count)
        .checked_mul(sample_bytes)
        .filter(|&b| usize::try_from(b).is_ok())
        .ok_or(DataError::SizeOverflow {
            path: path.to_owned(),
            count: count.into(),
            sample_bytes,
        })?;
    let pixels = src.body(16, body)?;
    Ok(IdxImages {
        count: count as usize,
        height: height as usize,
        width: width as usize,
        pixels,
    })
}

/// Reads an IDX1 labels file (gzip or raw).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    idx_labels_from(IdxSource::open(path)?)
}

/// Parses the bytes of an IDX1 labels file (gzip or raw), as [`read_idx_labels`] does a file;
/// `path` names them in errors.
pub fn idx_labels_from_bytes(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    idx_labels_from(IdxSource::new(bytes, bytes.len() as u64, path)?)
}

fn idx_labels_from(mut src: IdxSource<'_>) -> Result<Vec<u8>> {
    let dims = src.header(LABELS_MAGIC, "labels", 1)?;
    src.body(8, dims[0].into())
}

/// The name stems of the four standard files, e.g. `train-images` + `idx3-ubyte`.
const FILES: [(&str, &str, &str); 4] = [
    ("train-images", "idx3-ubyte", "training images"),
    ("train-labels", "idx1-ubyte", "training labels"),
    ("t10k-images", "idx3-ubyte", "test images"),
    ("t10k-labels", "idx1-ubyte", "test labels"),
];

/// Finds `<stem>-<kind>` or `<stem>.<kind>`, raw or `.gz`, in `dir` (raw first: it loads faster).
fn find_file(dir: &Path, stem: &str, kind: &str, what: &'static str) -> Result<PathBuf> {
    let tried: Vec<String> = [
        format!("{stem}-{kind}"),
        format!("{stem}.{kind}"),
        format!("{stem}-{kind}.gz"),
        format!("{stem}.{kind}.gz"),
    ]
    .into();
    tried
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::NotFound {
            dir: dir.to_owned(),
            what,
            tried,
        })
}

/// The training and test sets of an MNIST-style folder.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTest {
    /// `train-*` files (60,000 samples for MNIST).
    pub train: Dataset,
    /// `t10k-*` files (10,000 samples for MNIST).
    pub test: Dataset,
}

/// Loads the four standard IDX files of MNIST or Fashion-MNIST (10 classes) from `dir`.
pub fn load_folder(dir: &Path) -> Result<TrainTest> {
    load_folder_with_classes(dir, 10)
}

/// Loads the four standard IDX files from `dir`, checking labels are below `classes`.
pub fn load_folder_with_classes(dir: &Path, classes: usize) -> Result<TrainTest> {
    let [ti, tl, ei, el] = FILES.map(|(stem, kind, what)| find_file(dir, stem, kind, what));
    Ok(TrainTest {
        train: Dataset::from_idx(&ti?, &tl?, classes)?,
        test: Dataset::from_idx(&ei?, &el?, classes)?,
    })
}
