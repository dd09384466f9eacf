//! im2col / col2im for the GEMM paths of the convolution backward.

use super::*;

/// One im2col problem: channel planes of `src_h × src_w`, a `kh × kw` window with stride,
/// dilation and top/left padding (possibly negative), over an `out_h × out_w` grid. Row
/// `(c·kh + i)·kw + j`, column `oh·out_w + ow` holds
/// `src[c, oh·sh + i·dh − pad_h, ow·sw + j·dw − pad_w]`, or 0 outside the plane.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unfold {
    pub(super) src_h: usize,
    pub(super) src_w: usize,
    pub(super) out_h: usize,
    pub(super) out_w: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) sh: usize,
    pub(super) sw: usize,
    pub(super) dh: usize,
    pub(super) dw: usize,
    pub(super) pad_h: isize,
    pub(super) pad_w: isize,
}

impl Unfold {
    /// The convolution's own im2col over its input.
    pub(super) const fn forward(g: &Conv2dGeom) -> Self {
        Self {
            src_h: g.in_h,
            src_w: g.in_w,
            out_h: g.out_h,
            out_w: g.out_w,
            kh: g.kernel_h,
            kw: g.kernel_w,
            sh: g.stride_h,
            sw: g.stride_w,
            dh: g.dilation_h,
            dw: g.dilation_w,
            pad_h: g.pad_top as isize,
            pad_w: g.pad_left as isize,
        }
    }

    /// For stride 1: im2col over `d_out` producing the input grid, with the kernel flipped, so
    /// that `d_input = flipped Wᵀ · unfold(d_out)`. Input row `ih` receives output row
    /// `ih + pad_top − i·dh` for tap `i`, i.e. flipped tap `kH−1−i` at offset
    /// `(kH−1)·dh − pad_top`.
    pub(super) const fn transposed(g: &Conv2dGeom) -> Self {
        Self {
            src_h: g.out_h,
            src_w: g.out_w,
            out_h: g.in_h,
            out_w: g.in_w,
            kh: g.kernel_h,
            kw: g.kernel_w,
            sh: 1,
            sw: 1,
            dh: g.dilation_h,
            dw: g.dilation_w,
            pad_h: (g.kernel_h.saturating_sub(1) * g.dilation_h) as isize - g.pad_top as isize,
            pad_w: (g.kernel_w.saturating_sub(1) * g.dilation_w) as isize - g.pad_left as isize,
        }
    }

    /// Rows and columns of the zero-padded copy of a plane that [`Unfold::im2col`] reads: the
    /// span of source coordinates any window touches, starting at `−pad`.
    pub(super) const fn padded_dims(&self) -> (usize, usize) {
        (
            (self.out_h - 1) * self.sh + (self.kh - 1) * self.dh + 1,
            (self.out_w - 1) * self.sw + (self.kw - 1) * self.dw + 1,
        )
    }

    /// Scratch elements [`Unfold::im2col`] needs for `channels` planes.
    pub(super) const fn pad_len(&self, channels: usize) -> usize {
        if self.out_h == 0 || self.out_w == 0 || self.kh == 0 || self.kw == 0 {
            return 0;
        }
        let (hp, wp) = self.padded_dims();
        channels * hp * wp
    }

    /// Writes the rows of `channels` planes (`planes` holds exactly those) into `col`, row
    /// stride `ld`, starting at column `off`. Copies the planes, zero-padded, into `xp` first
    /// so every window row is one branch-free copy.
    pub(super) fn im2col(
        &self,
        planes: &[f32],
        channels: usize,
        xp: &mut [f32],
        col: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        if self.pad_len(1) == 0 {
            return;
        }
        let (hw, ow_n) = (self.src_h * self.src_w, self.out_w);
        let (hp, wp) = self.padded_dims();
        let xp = &mut xp[..channels * hp * wp];
        // Source columns present in the padded row: [c_lo, c_hi) at padded offset c_lo + pad_w.
        let c_lo = (self.pad_w.max(0) as usize).min(wp); // first padded column holding source column 0
        let first_src_col = (-self.pad_w).max(0) as usize;
        let n_cols = (self.src_w.saturating_sub(first_src_col)).min(wp.saturating_sub(c_lo));
        for c in 0..channels {
            let plane = &planes[c * hw..(c + 1) * hw];
            for (r, row) in xp[c * hp * wp..(c + 1) * hp * wp]
                .chunks_exact_mut(wp)
                .enumerate()
            {
                let sr = r as isize - self.pad_h;
                if sr < 0 || sr >= self.src_h as isize {
                    row.fill(0.0);
                    continue;
                }
                let src = &plane[sr as usize * self.src_w + first_src_col..][..n_cols];
                row[..c_lo].fill(0.0);
                copy_row(&mut row[c_lo..c_lo + n_cols], src);
                row[c_lo + n_cols..].fill(0.0);
            }
        }
        let xp = &*xp;
        let p = self.out_h * ow_n;
        for c in 0..channels {
            let pl = &xp[c * hp * wp..(c + 1) * hp * wp];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = (c * self.kh + i) * self.kw + j;
                    let dst = &mut col[row * ld + off..row * ld + off + p];
                    for (oh, d) in dst.chunks_exact_mut(ow_n).enumerate() {
                        let start = (oh * self.sh + i * self.dh) * wp + j * self.dw;
                        if self.sw == 1 {
                            copy_row(d, &pl[start..start + ow_n]);
                        } else {
                            for (k, v) in d.iter_mut().enumerate() {
                                *v = pl[start + k * self.sw];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Unfold::im2col`]: adds each column entry back where it came from.
    pub(super) fn col2im(
        &self,
        planes: &mut [f32],
        channels: usize,
        col: &[f32],
        ld: usize,
        off: usize,
    ) {
        let (hw, ow_n) = (self.src_h * self.src_w, self.out_w);
        let p = self.out_h * ow_n;
        for c in 0..channels {
            let plane = &mut planes[c * hw..(c + 1) * hw];
            for i in 0..self.kh {
                let (h_lo, h_hi) =
                    valid_range(self.out_h, self.sh, i * self.dh, self.pad_h, self.src_h);
                for j in 0..self.kw {
                    let (w_lo, w_hi) =
                        valid_range(ow_n, self.sw, j * self.dw, self.pad_w, self.src_w);
                    if w_lo == w_hi {
                        continue;
                    }
                    let row = (c * self.kh + i) * self.kw + j;
                    let srcrow = &col[row * ld + off..row * ld + off + p];
                    for oh in h_lo..h_hi {
                        let ih = ((oh * self.sh + i * self.dh) as isize - self.pad_h) as usize;
                        let s = &srcrow[oh * ow_n + w_lo..oh * ow_n + w_hi];
                        let dst = &mut plane[ih * self.src_w..(ih + 1) * self.src_w];
                        let iw0 = ((w_lo * self.sw + j * self.dw) as isize - self.pad_w) as usize;
                        if self.sw == 1 {
                            add_row(&mut dst[iw0..iw0 + s.len()], s);
                        } else {
                            for (k, v) in s.iter().enumerate() {
                                dst[iw0 + k * self.sw] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `d.copy_from_slice(s)` for short rows, inline (a `memcpy` call per 14-float row costs more
/// than the copy).
#[inline(always)]
pub(super) fn copy_row(d: &mut [f32], s: &[f32]) {
    assert_eq!(d.len(), s.len());
    let mut dc = d.chunks_exact_mut(8);
    let mut sc = s.chunks_exact(8);
    for (a, b) in (&mut dc).zip(&mut sc) {
        let a: &mut [f32; 8] = a.try_into().expect("chunk of 8");
        let b: &[f32; 8] = b.try_into().expect("chunk of 8");
        *a = *b;
    }
    let (d, s) = (dc.into_remainder(), sc.remainder());
    let mut k = 0;
    if d.len() - k >= 4 {
        let a: &mut [f32; 4] = (&mut d[k..k + 4]).try_into().expect("4");
        *a = s[k..k + 4].try_into().expect("4");
        k += 4;
    }
    if d.len() - k >= 2 {
        let a: &mut [f32; 2] = (&mut d[k..k + 2]).try_into().expect("2");
        *a = s[k..k + 2].try_into().expect("2");
        k += 2;
    }
    if d.len() > k {
        d[k] = s[k];
    }
}

/// Sum of a row in eight interleaved lanes (vectorisable; the order is fixed, so the result is
/// deterministic).
pub(super) fn sum_row(s: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut it = s.chunks_exact(8);
    for c in &mut it {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let tail: f32 = it.remainder().iter().sum();
    lanes.iter().sum::<f32>() + tail
}

/// `d += s` element-wise for short rows, in fixed-size pieces the compiler keeps in registers.
#[inline(always)]
pub(super) fn add_row(d: &mut [f32], s: &[f32]) {
    assert_eq!(d.len(), s.len());
    let mut dc = d.chunks_exact_mut(8);
    let mut sc = s.chunks_exact(8);
    for (a, b) in (&mut dc).zip(&mut sc) {
        let a: &mut [f32; 8] = a.try_into().expect("chunk of 8");
        let b: &[f32; 8] = b.try_into().expect("chunk of 8");
        for k in 0..8 {
            a[k] += b[k];
        }
    }
    let (d, s) = (dc.into_remainder(), sc.remainder());
    let mut k = 0;
    if d.len() - k >= 4 {
        for t in k..k + 4 {
            d[t] += s[t];
        }
        k += 4;
    }
    while k < d.len() {
        d[k] += s[k];
        k += 1;
    }
}
