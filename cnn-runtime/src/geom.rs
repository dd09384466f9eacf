//! Resolved layer geometries, defined in [`cnn_ir::geom`] next to the checker that computes
//! them and re-exported here for kernel callers, and the index helpers every kernel family
//! (plain, lane, gradient) uses to walk them.

pub use cnn_ir::geom::{AdaptivePoolGeom, BatchNormGeom, Conv2dGeom, LinearGeom, Pool2dGeom};

/// Output positions `o < out` whose source coordinate `o·stride + off − pad` lies in `0..len`,
/// as a half-open range (empty ranges come back as `(hi, hi)`).
pub(crate) fn valid_range(
    out: usize,
    stride: usize,
    off: usize,
    pad: isize,
    len: usize,
) -> (usize, usize) {
    // Need o·stride ≥ a and o·stride < len + a, with a = pad − off.
    let a = pad - off as isize;
    if stride == 1 {
        // No divisions: the lane convolution calls this per kernel column for every tile, and
        // with one input channel two integer divisions cost as much as the tile's FMAs.
        let hi = (len as isize + a).clamp(0, out as isize) as usize;
        return ((a.max(0) as usize).min(hi), hi);
    }
    let s = stride as isize;
    let lo = if a <= 0 { 0 } else { (a + s - 1) / s };
    let b = len as isize + a;
    let hi = if b <= 0 { 0 } else { (b + s - 1) / s };
    let hi = (hi as usize).min(out);
    ((lo as usize).min(hi), hi)
}

/// `MaxPool2d(2)` without padding: every window is the full 2 × 2 block at `(2·oh, 2·ow)`.
pub(crate) fn is_plain_2x2(g: &Pool2dGeom) -> bool {
    (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w) == (2, 2, 2, 2)
        && (g.pad_h, g.pad_w, g.dilation_h, g.dilation_w) == (0, 0, 1, 1)
        && 2 * g.out_h <= g.in_h
        && 2 * g.out_w <= g.in_w
}

/// First and one-past-last input coordinate of output `o`'s window along one axis, clipped to
/// the input and aligned to the dilation grid (`first ≡ o·s − pad (mod d)`).
pub(crate) fn window(
    o: usize,
    s: usize,
    pad: usize,
    d: usize,
    k: usize,
    len: usize,
) -> (usize, usize) {
    let start = (o * s) as isize - pad as isize;
    let end = (start + ((k - 1) * d + 1) as isize).min(len as isize);
    let mut first = start;
    while first < 0 {
        first += d as isize;
    }
    if first >= end {
        (0, 0)
    } else {
        (first as usize, end as usize)
    }
}
