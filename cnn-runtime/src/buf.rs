//! [`AlignedBuf`]: working memory whose first element starts a cache line.

use std::ops::{Deref, DerefMut};

/// Floats per 64-byte cache line.
const LINE: usize = 16;

/// A zero-initialised `f32` buffer whose first element sits on a 64-byte boundary.
///
/// The kernels load and store whole 16-float vectors at offsets that are multiples of 16 from
/// the start of an activation or scratch buffer; when the buffer itself starts mid-line (a
/// plain `Vec<f32>` is only 16-byte aligned by the allocator), every one of those accesses
/// straddles two cache lines. Activations, scratch and training buffers use this type.
#[derive(Debug, Clone, Default)]
pub struct AlignedBuf {
    data: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zeros.
    pub fn zeros(len: usize) -> AlignedBuf {
        let data = vec![0.0f32; len + LINE - 1];
        // `align_offset` counts elements; for an `f32` pointer it is at most 15.
        let off = data.as_ptr().align_offset(LINE * 4).min(LINE - 1);
        AlignedBuf { data, off, len }
    }

    /// Makes the buffer at least `len` long. Growing reallocates and zeroes the whole buffer
    /// (the contents are working memory, not kept); it never shrinks.
    pub fn grow(&mut self, len: usize) {
        if len > self.len {
            *self = AlignedBuf::zeros(len);
        }
    }

    /// [`AlignedBuf::zeros`] that reports a failed allocation (or a length whose bytes
    /// overflow) as an error instead of aborting the process.
    pub fn try_zeros(len: usize) -> Result<AlignedBuf, OutOfMemory> {
        let total = len
            .checked_add(LINE - 1)
            .ok_or(OutOfMemory { floats: len })?;
        let mut data = Vec::new();
        data.try_reserve_exact(total)
            .map_err(|_| OutOfMemory { floats: len })?;
        data.resize(total, 0.0f32);
        let off = data.as_ptr().align_offset(LINE * 4).min(LINE - 1);
        Ok(AlignedBuf { data, off, len })
    }

    /// [`AlignedBuf::grow`] that reports a failed allocation instead of aborting; on failure
    /// the buffer is unchanged.
    pub fn try_grow(&mut self, len: usize) -> Result<(), OutOfMemory> {
        if len > self.len {
            *self = AlignedBuf::try_zeros(len)?;
        }
        Ok(())
    }

    /// Bytes allocated (for memory reports).
    pub fn allocated_bytes(&self) -> usize {
        self.data.capacity() * size_of::<f32>()
    }
}

/// A buffer of this many floats could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate a buffer of {floats} floats ({} bytes): the batch or the model is too large for this machine's memory", floats.saturating_mul(4))]
pub struct OutOfMemory {
    /// Floats asked for.
    pub floats: usize,
}

impl Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data[self.off..self.off + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_a_cache_line_and_has_the_asked_length() {
        for len in [0, 1, 15, 16, 17, 1000, 100_000] {
            let mut b = AlignedBuf::zeros(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % 64, 0, "len {len}");
            assert!(b.iter().all(|&v| v == 0.0));
            b.grow(len + 40);
            assert_eq!(b.len(), len + 40);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            b.grow(1);
            assert_eq!(b.len(), len + 40, "never shrinks");
        }
    }

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        assert_eq!(
            AlignedBuf::try_zeros(usize::MAX).unwrap_err(),
            OutOfMemory { floats: usize::MAX }
        );
        // More than any address space holds: refused by the allocator's size check.
        let mut b = AlignedBuf::try_zeros(100).unwrap();
        assert!(b.try_grow(usize::MAX / 2).is_err());
        assert_eq!(b.len(), 100, "unchanged after a failed grow");
        assert_eq!(b.as_ptr() as usize % 64, 0);
        b.try_grow(1000).unwrap();
        assert_eq!(b.len(), 1000);
    }
}
