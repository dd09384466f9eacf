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

    /// Bytes allocated (for memory reports).
    pub fn allocated_bytes(&self) -> usize {
        self.data.capacity() * size_of::<f32>()
    }
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
}
