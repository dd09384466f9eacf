//! PNG and JPEG model inputs as `[C, H, W]` tensors, the way torchvision's `ToTensor` reads them
//! (see the module above for the rules).

use std::io::Cursor;
use std::path::Path;

use ndarray::Array3;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::{IoError, Result, read_file};

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
