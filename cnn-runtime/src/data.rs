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

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use crate::init::Rng;

/// Everything that can go wrong reading or batching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
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
        source: io::Error,
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

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

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

/// How much of a dataset [`Dataset::split`] holds out for validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holdout {
    /// Exactly this many samples.
    Count(usize),
    /// This fraction of the samples, rounded to the nearest count; must be in `[0, 1]`.
    Fraction(f64),
}

impl From<usize> for Holdout {
    fn from(n: usize) -> Self {
        Holdout::Count(n)
    }
}

impl From<f64> for Holdout {
    fn from(f: f64) -> Self {
        Holdout::Fraction(f)
    }
}

/// Labelled images in memory: `len` samples of `channels × height × width` bytes (NCHW).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    channels: usize,
    height: usize,
    width: usize,
    classes: usize,
}

impl Dataset {
    /// A dataset from raw buffers, checking that they agree with the shape and that every label
    /// is below `classes`.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u8>,
        [channels, height, width]: [usize; 3],
        classes: usize,
    ) -> Result<Self> {
        let sample = channels
            .checked_mul(height)
            .and_then(|x| x.checked_mul(width))
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                DataError::Inconsistent(format!(
                    "sample shape [{channels}, {height}, {width}] is empty or overflows"
                ))
            })?;
        if labels.len().checked_mul(sample) != Some(images.len()) {
            return Err(DataError::Inconsistent(format!(
                "{} labels need {} × {sample} image bytes, found {}",
                labels.len(),
                labels.len(),
                images.len()
            )));
        }
        check_labels(&labels, classes, Path::new(""))?;
        Ok(Self {
            images,
            labels,
            channels,
            height,
            width,
            classes,
        })
    }

    /// Reads an IDX images file and its labels file (each gzip or raw) as one dataset.
    pub fn from_idx(images: &Path, labels: &Path, classes: usize) -> Result<Self> {
        let img = read_idx_images(images)?;
        let lab = read_idx_labels(labels)?;
        if img.count != lab.len() {
            return Err(DataError::CountMismatch {
                images_path: images.to_owned(),
                images: img.count,
                labels_path: labels.to_owned(),
                labels: lab.len(),
            });
        }
        check_labels(&lab, classes, labels)?;
        Ok(Self {
            images: img.pixels,
            labels: lab,
            channels: 1,
            height: img.height,
            width: img.width,
            classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Channels per image (1 for MNIST).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Rows per image.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Columns per image.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of classes; every label is below it.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `[channels, height, width]` of one sample.
    pub fn sample_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Bytes (= elements) per sample.
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// All pixels, `len · channels · height · width` bytes in NCHW order, 0..=255.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels, one per sample.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Sample `index`: its pixels and label, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<(&[u8], u8)> {
        let n = self.sample_len();
        let label = *self.labels.get(index)?;
        Some((self.images.get(index * n..(index + 1) * n)?, label))
    }

    /// The samples at `indices`, in that order (indices may repeat). Panics on an index out of
    /// range, like slice indexing.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(&self.images[i * n..(i + 1) * n]);
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
        }
    }

    /// Splits into `(train, validation)`: a seeded random choice of samples is held out, and
    /// both parts keep the original order. The same seed always picks the same samples.
    ///
    /// `holdout` is a count (`5_000`) or a fraction (`0.1`).
    pub fn split(&self, holdout: impl Into<Holdout>, seed: u64) -> Result<(Dataset, Dataset)> {
        let len = self.len();
        let k = match holdout.into() {
            Holdout::Count(k) if k <= len => k,
            Holdout::Count(k) => {
                return Err(DataError::BadSplit {
                    requested: k.to_string(),
                    len,
                    reason: "hold out at most the whole dataset",
                });
            }
            Holdout::Fraction(f) if (0.0..=1.0).contains(&f) => {
                ((len as f64 * f).round() as usize).min(len)
            }
            Holdout::Fraction(f) => {
                return Err(DataError::BadSplit {
                    requested: f.to_string(),
                    len,
                    reason: "a fraction must be between 0 and 1",
                });
            }
        };
        let mut order = Rng::seed_from_u64(seed).permutation(len);
        let (val, train) = order.split_at_mut(k);
        val.sort_unstable();
        train.sort_unstable();
        Ok((self.subset(train), self.subset(val)))
    }

    /// Mean and standard deviation of all pixels on the 0..1 scale (population std), for
    /// datasets without published values.
    pub fn pixel_stats(&self) -> Normalize {
        let mut hist = [0u64; 256];
        for &p in &self.images {
            hist[p as usize] += 1;
        }
        let n = self.images.len().max(1) as f64;
        let mean = hist
            .iter()
            .enumerate()
            .map(|(v, &c)| v as f64 / 255.0 * c as f64)
            .sum::<f64>()
            / n;
        let var = hist
            .iter()
            .enumerate()
            .map(|(v, &c)| (v as f64 / 255.0 - mean).powi(2) * c as f64)
            .sum::<f64>()
            / n;
        Normalize {
            mean: mean as f32,
            std: var.sqrt() as f32,
        }
    }

    /// The whole dataset as normalised `f32`, NCHW.
    pub fn images_f32(&self, normalize: Normalize) -> Vec<f32> {
        let table = normalize.table();
        self.images.iter().map(|&p| table[p as usize]).collect()
    }

    /// Iterates over one epoch in batches. With `config.shuffle`, the order is a permutation
    /// seeded by `(config.seed, epoch)`: each epoch differs, and re-running an epoch repeats it.
    pub fn batches(&self, config: &BatchConfig, epoch: u64) -> Result<Batches<'_>> {
        config.validate()?;
        let order = if config.shuffle {
            Rng::derive(config.seed, epoch).permutation(self.len())
        } else {
            (0..self.len()).collect()
        };
        Ok(Batches {
            dataset: self,
            order,
            position: 0,
            batch_size: config.batch_size,
            drop_last: config.drop_last,
            table: config.normalize.table(),
        })
    }
}

fn check_labels(labels: &[u8], classes: usize, path: &Path) -> Result<()> {
    match labels.iter().position(|&l| usize::from(l) >= classes) {
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_owned(),
            index,
            label: labels[index],
            classes,
        }),
        None => Ok(()),
    }
}

/// Pixel normalisation `(x / 255 − mean) / std`, as torchvision's `ToTensor` + `Normalize`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Mean on the 0..1 scale.
    pub mean: f32,
    /// Standard deviation on the 0..1 scale.
    pub std: f32,
}

impl Normalize {
    /// MNIST training-set statistics used by PyTorch's examples: mean 0.1307, std 0.3081.
    pub const MNIST: Normalize = Normalize {
        mean: 0.1307,
        std: 0.3081,
    };
    /// Fashion-MNIST training-set statistics: mean 0.2860, std 0.3530.
    pub const FASHION_MNIST: Normalize = Normalize {
        mean: 0.2860,
        std: 0.3530,
    };
    /// No centring: `x / 255`, in `[0, 1]`.
    pub const UNIT: Normalize = Normalize {
        mean: 0.0,
        std: 1.0,
    };

    /// A checked normalisation: `std` must be positive and both values finite.
    pub fn new(mean: f32, std: f32) -> Result<Self> {
        let n = Normalize { mean, std };
        n.validate()?;
        Ok(n)
    }

    fn validate(&self) -> Result<()> {
        if self.mean.is_finite() && self.std.is_finite() && self.std > 0.0 {
            Ok(())
        } else {
            Err(DataError::BadNormalize {
                mean: self.mean,
                std: self.std,
            })
        }
    }

    /// The normalised value of one pixel.
    pub fn apply(&self, pixel: u8) -> f32 {
        (f32::from(pixel) / 255.0 - self.mean) / self.std
    }

    /// The normalised value of every possible pixel, for table look-up.
    pub fn table(&self) -> [f32; 256] {
        std::array::from_fn(|p| self.apply(p as u8))
    }
}

impl Default for Normalize {
    /// [`Normalize::MNIST`].
    fn default() -> Self {
        Normalize::MNIST
    }
}

/// How [`Dataset::batches`] and [`Prefetch`] cut an epoch into batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    /// Samples per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Visit samples in a seeded random order (default) or in file order.
    pub shuffle: bool,
    /// Seed of the shuffle; combined with the epoch number.
    pub seed: u64,
    /// Skip a final batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Pixel normalisation.
    pub normalize: Normalize,
}

impl BatchConfig {
    /// Shuffled batches of `batch_size`, seed 0, last partial batch kept, MNIST normalisation.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: true,
            seed: 0,
            drop_last: false,
            normalize: Normalize::MNIST,
        }
    }

    /// Sets the shuffle seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Turns shuffling on or off.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Drops (true) or keeps (false) a final partial batch.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the normalisation.
    pub fn normalize(mut self, normalize: Normalize) -> Self {
        self.normalize = normalize;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(DataError::ZeroBatchSize);
        }
        self.normalize.validate()
    }

    /// Number of batches in an epoch of `len` samples.
    pub fn batch_count(&self, len: usize) -> usize {
        let b = self.batch_size.max(1);
        if self.drop_last {
            len / b
        } else {
            len.div_ceil(b)
        }
    }
}

/// One batch: normalised images `[B, C, H, W]` flattened, and their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `B · C · H · W` values in NCHW order.
    pub images: Vec<f32>,
    /// `B` class indices.
    pub labels: Vec<usize>,
    /// `[B, C, H, W]`.
    pub shape: [usize; 4],
}

impl Batch {
    /// Number of samples `B`.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One epoch of batches over a borrowed [`Dataset`]; made by [`Dataset::batches`].
///
/// Use it as an iterator of owned [`Batch`]es, or call [`Batches::next_into`] with one reused
/// [`Batch`] to avoid allocating per batch.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    order: Vec<usize>,
    position: usize,
    batch_size: usize,
    drop_last: bool,
    table: [f32; 256],
}

impl Batches<'_> {
    /// Fills `batch` (reusing its buffers) with the next batch; returns false at the end of the
    /// epoch, leaving `batch` unchanged.
    pub fn next_into(&mut self, batch: &mut Batch) -> bool {
        let remaining = self.order.len() - self.position;
        let b = remaining.min(self.batch_size);
        if b == 0 || (self.drop_last && b < self.batch_size) {
            return false;
        }
        let ds = self.dataset;
        let n = ds.sample_len();
        batch.images.clear();
        batch.labels.clear();
        batch.images.reserve(b * n);
        for &i in &self.order[self.position..self.position + b] {
            let pixels = &ds.images[i * n..(i + 1) * n];
            batch
                .images
                .extend(pixels.iter().map(|&p| self.table[p as usize]));
            batch.labels.push(usize::from(ds.labels[i]));
        }
        batch.shape = [b, ds.channels, ds.height, ds.width];
        self.position += b;
        true
    }

    fn remaining_batches(&self) -> usize {
        let remaining = self.order.len() - self.position;
        if self.drop_last {
            remaining / self.batch_size
        } else {
            remaining.div_ceil(self.batch_size)
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let mut batch = Batch::default();
        self.next_into(&mut batch).then_some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining_batches();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// Batches prepared on a background thread, `depth` ahead, so batching overlaps compute.
///
/// Iterating yields the same batches, in the same order, as [`Dataset::batches`] with the same
/// config and epoch. Hand finished batches back with [`Prefetch::recycle`] to reuse their
/// buffers. Dropping it early stops and joins the thread.
#[derive(Debug)]
pub struct Prefetch {
    rx: Option<Receiver<Batch>>,
    recycle: Sender<Batch>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Prefetch {
    /// Starts the background thread for one epoch; at most `depth` (at least 1) batches wait
    /// ready at a time.
    pub fn new(
        dataset: Arc<Dataset>,
        config: BatchConfig,
        epoch: u64,
        depth: usize,
    ) -> Result<Self> {
        config.validate()?;
        let remaining = config.batch_count(dataset.len());
        let (tx, rx) = mpsc::sync_channel::<Batch>(depth.max(1));
        let (recycle, spare) = mpsc::channel::<Batch>();
        let worker = std::thread::Builder::new()
            .name("cnn-prefetch".into())
            .spawn(move || produce(&dataset, &config, epoch, &tx, &spare))
            .map_err(|source| DataError::Io {
                path: PathBuf::from("<prefetch thread>"),
                source,
            })?;
        Ok(Self {
            rx: Some(rx),
            recycle,
            worker: Some(worker),
            remaining,
        })
    }

    /// Gives a used batch's buffers back to the background thread.
    pub fn recycle(&self, batch: Batch) {
        // The worker may have finished the epoch; then the buffers are simply dropped.
        let _ = self.recycle.send(batch);
    }
}

fn produce(
    dataset: &Dataset,
    config: &BatchConfig,
    epoch: u64,
    tx: &SyncSender<Batch>,
    spare: &Receiver<Batch>,
) {
    let Ok(mut batches) = dataset.batches(config, epoch) else {
        return;
    };
    loop {
        let mut batch = spare.try_recv().unwrap_or_default();
        if !batches.next_into(&mut batch) || tx.send(batch).is_err() {
            return;
        }
    }
}

impl Iterator for Prefetch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match self.rx.as_ref()?.recv() {
            Ok(batch) => {
                self.remaining = self.remaining.saturating_sub(1);
                Some(batch)
            }
            Err(_) => {
                self.rx = None;
                if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Prefetch {}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the receiver makes a blocked `send` fail, so the worker returns.
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_images(count: u32, h: u32, w: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, count, h, w] {
            v.extend(x.to_be_bytes());
        }
        v.extend(pixels);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [LABELS_MAGIC, labels.len() as u32] {
            v.extend(x.to_be_bytes());
        }
        v.extend(labels);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `n` 2×3 images; image i has every pixel equal to 10·i; label i % 3.
    fn sample(n: u8) -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..n).flat_map(|i| [10 * i; 6]).collect();
        let labels: Vec<u8> = (0..n).map(|i| i % 3).collect();
        (idx_images(n.into(), 2, 3, &pixels), idx_labels(&labels))
    }

    fn small_folder(gzip: bool, dotted: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (imgs, labs) = sample(7);
        let (timgs, tlabs) = sample(4);
        for (stem, kind, bytes) in [
            ("train-images", "idx3-ubyte", &imgs),
            ("train-labels", "idx1-ubyte", &labs),
            ("t10k-images", "idx3-ubyte", &timgs),
            ("t10k-labels", "idx1-ubyte", &tlabs),
        ] {
            let sep = if dotted { '.' } else { '-' };
            let (name, bytes) = if gzip {
                (format!("{stem}{sep}{kind}.gz"), gz(bytes))
            } else {
                (format!("{stem}{sep}{kind}"), bytes.clone())
            };
            write(dir.path(), &name, &bytes);
        }
        dir
    }

    #[test]
    fn loads_raw_and_gzip_under_both_names() {
        for gzip in [false, true] {
            for dotted in [false, true] {
                let dir = small_folder(gzip, dotted);
                let tt = load_folder(dir.path()).unwrap();
                assert_eq!((tt.train.len(), tt.test.len()), (7, 4));
                assert_eq!(tt.train.sample_shape(), [1, 2, 3]);
                assert_eq!(tt.train.get(2), Some((&[20u8; 6][..], 2)));
                assert_eq!(tt.train.get(7), None);
                assert_eq!(tt.test.labels(), [0, 1, 2, 0]);
            }
        }
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let (imgs, _) = sample(3);
        let p = write(dir.path(), "images", &gz(&imgs));
        assert_eq!(read_idx_images(&p).unwrap().count, 3);
    }

    #[test]
    fn missing_file_lists_names_tried() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_folder(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(
            err,
            DataError::NotFound {
                what: "training images",
                ..
            }
        ));
        assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
        assert!(msg.contains("train-images.idx3-ubyte"), "{msg}");
    }

    #[test]
    fn truncated_raw_and_gzip_name_file_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (imgs, _) = sample(5);
        let cut = &imgs[..imgs.len() - 4];
        for (name, bytes, gzip) in [("raw", cut.to_vec(), false), ("gz", gz(cut), true)] {
            let p = write(dir.path(), name, &bytes);
            match read_idx_images(&p).unwrap_err() {
                DataError::Truncated {
                    path,
                    expected,
                    actual,
                    gzip: g,
                } => {
                    assert_eq!((path, expected, actual, g), (p.clone(), 46, 42, gzip));
                }
                other => panic!("{other}"),
            }
            let msg = read_idx_images(&p).unwrap_err().to_string();
            assert!(
                msg.contains(name) && msg.contains("46") && msg.contains("42"),
                "{msg}"
            );
        }
        // A header cut short, and a gzip stream cut short.
        let p = write(dir.path(), "short", &imgs[..10]);
        assert!(matches!(
            read_idx_images(&p),
            Err(DataError::Truncated {
                expected: 16,
                actual: 10,
                ..
            })
        ));
        let z = gz(&imgs);
        let p = write(dir.path(), "cutgz", &z[..z.len() / 2]);
        assert!(matches!(
            read_idx_images(&p),
            Err(DataError::Truncated { gzip: true, .. })
        ));
    }

    #[test]
    fn huge_header_claim_fails_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_images(u32::MAX, 28, 28, &[0; 100]);
        let raw = write(dir.path(), "raw", &bytes);
        let zipped = write(dir.path(), "gz", &gz(&bytes));
        for p in [raw, zipped] {
            match read_idx_images(&p) {
                Err(DataError::Truncated {
                    expected, actual, ..
                }) => {
                    assert_eq!(expected, 16 + u64::from(u32::MAX) * 784);
                    assert_eq!(actual, 116);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn corrupt_gzip_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let (imgs, _) = sample(25);
        let mut z = gz(&imgs);
        // Damage the deflate data after the 10-byte gzip header.
        for b in &mut z[12..20] {
            *b ^= 0xa5;
        }
        let p = write(dir.path(), "bad.gz", &z);
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
        assert!(e.to_string().contains("bad.gz"), "{e}");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut labs = idx_labels(&[1, 2]);
        labs.push(9);
        let p = write(dir.path(), "raw", &labs);
        assert!(matches!(
            read_idx_labels(&p),
            Err(DataError::TrailingBytes {
                expected: 10,
                actual: 11,
                gzip: false,
                ..
            })
        ));
        let p = write(dir.path(), "gz", &gz(&labs));
        assert!(matches!(
            read_idx_labels(&p),
            Err(DataError::TrailingBytes { gzip: true, .. })
        ));
    }

    #[test]
    fn bad_magic_explains_what_the_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let (imgs, labs) = sample(2);
        let p = write(dir.path(), "labels-as-images", &labs);
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(
            msg.contains("0x00000801") && msg.contains("this is a labels file"),
            "{msg}"
        );
        let p = write(dir.path(), "images-as-labels", &imgs);
        let msg = read_idx_labels(&p).unwrap_err().to_string();
        assert!(msg.contains("this is an images file"), "{msg}");
        let mut le = imgs.clone();
        le[..4].copy_from_slice(&IMAGES_MAGIC.to_le_bytes());
        let p = write(dir.path(), "le", &le);
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("little-endian"), "{msg}");
        let p = write(dir.path(), "png", b"\x89PNG\r\n\x1a\n and more bytes");
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("not an IDX file"), "{msg}");
        let p = write(dir.path(), "zero", &idx_images(1, 0, 3, &[]));
        assert!(matches!(
            read_idx_images(&p),
            Err(DataError::ZeroDimension {
                dimension: "height",
                ..
            })
        ));
    }

    #[test]
    fn count_mismatch_and_label_range() {
        let dir = tempfile::tempdir().unwrap();
        let (imgs, _) = sample(3);
        let i = write(dir.path(), "i", &imgs);
        let l = write(dir.path(), "l", &idx_labels(&[0, 1]));
        let msg = Dataset::from_idx(&i, &l, 10).unwrap_err().to_string();
        assert!(
            msg.contains("3 images") && msg.contains("2 labels"),
            "{msg}"
        );
        let l = write(dir.path(), "l", &idx_labels(&[0, 1, 10]));
        match Dataset::from_idx(&i, &l, 10).unwrap_err() {
            DataError::LabelOutOfRange {
                index,
                label,
                classes,
                ..
            } => {
                assert_eq!((index, label, classes), (2, 10, 10));
            }
            other => panic!("{other}"),
        }
        assert!(Dataset::from_idx(&i, &l, 11).is_ok());
    }

    #[test]
    fn new_checks_buffers() {
        assert!(Dataset::new(vec![0; 8], vec![0, 1], [1, 2, 2], 2).is_ok());
        assert!(matches!(
            Dataset::new(vec![0; 7], vec![0, 1], [1, 2, 2], 2),
            Err(DataError::Inconsistent(_))
        ));
        assert!(matches!(
            Dataset::new(vec![0; 8], vec![0, 2], [1, 2, 2], 2),
            Err(DataError::LabelOutOfRange { label: 2, .. })
        ));
    }

    fn numbered(n: usize) -> Dataset {
        let images = (0..n).flat_map(|i| [i as u8; 4]).collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        Dataset::new(images, labels, [1, 2, 2], 10).unwrap()
    }

    #[test]
    fn split_is_seeded_disjoint_and_ordered() {
        let ds = numbered(100);
        let (train, val) = ds.split(Holdout::Count(20), 9).unwrap();
        assert_eq!((train.len(), val.len()), (80, 20));
        let ids = |d: &Dataset| {
            (0..d.len())
                .map(|i| d.get(i).unwrap().0[0])
                .collect::<Vec<_>>()
        };
        let (t, v) = (ids(&train), ids(&val));
        assert!(t.is_sorted() && v.is_sorted());
        let mut all: Vec<u8> = t.iter().chain(&v).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<u8>>());
        // The validation part is not simply the tail.
        assert_ne!(v, (80..100).collect::<Vec<u8>>());
        assert_eq!(
            ds.split(Holdout::Count(20), 9).unwrap(),
            (train.clone(), val.clone())
        );
        assert_ne!(ds.split(Holdout::Count(20), 10).unwrap().1, val);
        assert_eq!(ds.split(0.25, 1).unwrap().1.len(), 25);
        assert_eq!(ds.split(0.0, 1).unwrap().0, ds);
        assert!(matches!(ds.split(101, 1), Err(DataError::BadSplit { .. })));
        assert!(matches!(ds.split(1.5, 1), Err(DataError::BadSplit { .. })));
        assert!(matches!(
            ds.split(f64::NAN, 1),
            Err(DataError::BadSplit { .. })
        ));
    }

    #[test]
    fn normalisation_matches_formula() {
        let n = Normalize::MNIST;
        assert!((n.apply(0) - (-0.1307 / 0.3081)).abs() < 1e-6);
        assert!((n.apply(255) - (1.0 - 0.1307) / 0.3081).abs() < 1e-5);
        assert_eq!(Normalize::UNIT.apply(51), 0.2);
        assert!(Normalize::new(0.0, 0.0).is_err());
        assert!(Normalize::new(f32::NAN, 1.0).is_err());
        let ds = Dataset::new(vec![0, 255, 0, 255], vec![0], [1, 2, 2], 1).unwrap();
        let s = ds.pixel_stats();
        assert!(
            (s.mean - 0.5).abs() < 1e-6 && (s.std - 0.5).abs() < 1e-6,
            "{s:?}"
        );
        let f = ds.images_f32(s);
        assert_eq!(f, [-1.0, 1.0, -1.0, 1.0]);
    }

    #[test]
    fn batches_cover_epoch_and_are_seeded() {
        let ds = numbered(10);
        let config = BatchConfig::new(4).seed(3).normalize(Normalize::UNIT);
        let epoch0: Vec<Batch> = ds.batches(&config, 0).unwrap().collect();
        assert_eq!(epoch0.iter().map(Batch::len).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(epoch0[0].shape, [4, 1, 2, 2]);
        assert_eq!(epoch0[2].shape, [2, 1, 2, 2]);
        // Each sample exactly once, labels consistent with the pixels.
        let mut seen = Vec::new();
        for b in &epoch0 {
            for (k, &label) in b.labels.iter().enumerate() {
                let id = (b.images[k * 4] * 255.0).round() as usize;
                assert_eq!(label, id % 10);
                assert!(
                    b.images[k * 4..k * 4 + 4]
                        .iter()
                        .all(|&x| x == b.images[k * 4])
                );
                seen.push(id);
            }
        }
        assert_ne!(seen, (0..10).collect::<Vec<_>>(), "shuffled");
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(ds.batches(&config, 0).unwrap().collect::<Vec<_>>(), epoch0);
        assert_ne!(ds.batches(&config, 1).unwrap().collect::<Vec<_>>(), epoch0);
        let ordered = config.shuffle(false).drop_last(true);
        let b: Vec<Batch> = ds.batches(&ordered, 0).unwrap().collect();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].labels, [4, 5, 6, 7]);
        assert_eq!(ordered.batch_count(10), 2);
        assert_eq!(config.batch_count(10), 3);
        assert!(matches!(
            ds.batches(&BatchConfig::new(0), 0),
            Err(DataError::ZeroBatchSize)
        ));
    }

    #[test]
    fn next_into_reuses_buffers() {
        let ds = numbered(6);
        let mut it = ds.batches(&BatchConfig::new(3), 0).unwrap();
        assert_eq!(it.len(), 2);
        let mut batch = Batch::default();
        assert!(it.next_into(&mut batch));
        let ptr = batch.images.as_ptr();
        assert!(it.next_into(&mut batch));
        assert_eq!(batch.images.as_ptr(), ptr);
        assert!(!it.next_into(&mut batch));
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn prefetch_yields_the_same_batches() {
        let ds = Arc::new(numbered(50));
        let config = BatchConfig::new(8).seed(5);
        let want: Vec<Batch> = ds.batches(&config, 2).unwrap().collect();
        let mut pf = Prefetch::new(ds.clone(), config, 2, 2).unwrap();
        assert_eq!(pf.len(), 7);
        let mut got = Vec::new();
        while let Some(b) = pf.next() {
            got.push(b.clone());
            pf.recycle(b);
        }
        assert_eq!(got, want);
        assert_eq!(pf.next(), None);
        // Dropping mid-epoch stops the thread instead of hanging.
        let mut pf = Prefetch::new(ds, config, 0, 1).unwrap();
        assert!(pf.next().is_some());
        drop(pf);
    }

    /// `<workspace>/data/<name>`, else `<workspace>/../shared/data/<name>`.
    fn real_dataset(name: &str) -> Option<PathBuf> {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        [
            ws.join("data").join(name),
            ws.join("../shared/data").join(name),
        ]
        .into_iter()
        .find(|p| p.is_dir())
    }

    #[test]
    fn loads_real_mnist() {
        let Some(dir) = real_dataset("mnist") else {
            eprintln!("note: MNIST not found under data/mnist or ../shared/data/mnist; skipped");
            return;
        };
        let tt = load_folder(&dir).unwrap();
        assert_eq!((tt.train.len(), tt.test.len()), (60_000, 10_000));
        assert_eq!(tt.train.sample_shape(), [1, 28, 28]);
        assert_eq!(tt.train.labels()[0], 5);
        assert_eq!(tt.test.labels()[0], 7);
        let zeros = tt.train.labels().iter().filter(|&&l| l == 0).count();
        assert_eq!(zeros, 5923);
        let s = tt.train.pixel_stats();
        assert!(
            (s.mean - 0.1307).abs() < 1e-4 && (s.std - 0.3081).abs() < 1e-4,
            "{s:?}"
        );
    }

    #[test]
    fn loads_real_fashion_mnist() {
        let Some(dir) = real_dataset("fashion-mnist") else {
            eprintln!("note: Fashion-MNIST not found under data/ or ../shared/data/; skipped");
            return;
        };
        let tt = load_folder(&dir).unwrap();
        assert_eq!((tt.train.len(), tt.test.len()), (60_000, 10_000));
        let mut counts = [0usize; 10];
        for &l in tt.train.labels() {
            counts[usize::from(l)] += 1;
        }
        assert_eq!(counts, [6_000; 10]);
        let s = tt.train.pixel_stats();
        let f = Normalize::FASHION_MNIST;
        assert!(
            (s.mean - f.mean).abs() < 1e-3 && (s.std - f.std).abs() < 1e-3,
            "{s:?}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]

        /// Whatever the bytes, reading returns Ok or Err and never panics or over-allocates.
        #[test]
        fn idx_reading_never_panics(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            keep_magic in proptest::prelude::any::<bool>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            gzip in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = header;
            if keep_magic && bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&IMAGES_MAGIC.to_be_bytes());
            }
            bytes.extend(body);
            let bytes = if gzip { gz(&bytes) } else { bytes };
            let dir = tempfile::tempdir().unwrap();
            let p = write(dir.path(), "f", &bytes);
            let _ = read_idx_images(&p);
            let _ = read_idx_labels(&p);
        }
    }
}
