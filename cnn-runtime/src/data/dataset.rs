//! A labelled image set in memory: checks, splits, statistics.

use std::path::Path;

use super::*;
use crate::init::Rng;

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
    pub(super) images: Vec<u8>,
    pub(super) labels: Vec<u8>,
    pub(super) channels: usize,
    pub(super) height: usize,
    pub(super) width: usize,
    pub(super) classes: usize,
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
