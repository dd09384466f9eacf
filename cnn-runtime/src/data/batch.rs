//! Normalisation, shuffled batches, and batches prepared ahead on a background thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use super::*;

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

    pub(super) fn validate(&self) -> Result<()> {
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

    pub(super) fn validate(&self) -> Result<()> {
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
    pub(super) dataset: &'a Dataset,
    pub(super) order: Vec<usize>,
    pub(super) position: usize,
    pub(super) batch_size: usize,
    pub(super) drop_last: bool,
    pub(super) table: [f32; 256],
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
