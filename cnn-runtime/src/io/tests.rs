//! Tests of the readers and writers (run with the `npy` and `image` features, the default).

use super::image::*;
use super::npy::*;
use super::*;
use ndarray::{Array3, ArrayD, IxDyn, array};

fn png_bytes(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<(&[u8], &[u8])>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(depth);
        if let Some((plte, trns)) = palette {
            e.set_palette(plte.to_vec());
            if !trns.is_empty() {
                e.set_trns(trns.to_vec());
            }
        }
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }
    out
}

fn decode(bytes: &[u8], shape: [usize; 3]) -> Result<Array3<f32>> {
    decode_image(bytes, Path::new("img.png"), shape, None)
}

use png::BitDepth::{Eight, Four, Sixteen};
use png::ColorType::{Grayscale, GrayscaleAlpha, Indexed, Rgb, Rgba};

#[test]
fn a_header_longer_than_the_file_is_named() {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend(60_000u16.to_le_bytes());
    b.extend(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }");
    let e = npy_from_bytes(&b, Path::new("x.npy"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`x.npy`") && e.contains("claims 60000 bytes") && e.contains("only 57 follow"),
        "{e}"
    );
    // Version 2 has a 4-byte length field.
    let mut b = b"\x93NUMPY\x02\x00".to_vec();
    b.extend(1_000_000u32.to_le_bytes());
    let e = npy_from_bytes(&b, Path::new("y.npy"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("claims 1000000 bytes"), "{e}");
    // A preamble cut short is not an overrun but still an error.
    assert!(npy_from_bytes(b"\x93NUMPY\x01", Path::new("z.npy")).is_err());
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cnn-io-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn write_atomic_replaces_and_leaves_no_temporary_file() {
    let d = scratch("atomic");
    let p = d.join("out.csv");
    write_atomic(&p, b"one").unwrap();
    write_atomic(&p, b"two").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["out.csv"]);
    // A folder that does not exist: an error, and nothing left behind.
    let e = write_atomic(&d.join("missing/out.csv"), b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn stale_temporaries_of_dead_processes_are_removed() {
    let d = scratch("stale");
    let keep = [
        "weights.safetensors",
        ".hidden",
        "a.tmp1-2",
        ".x.tmpA-1",
        ".x.tmp1-",
    ];
    for n in keep {
        std::fs::write(d.join(n), b"").unwrap();
    }
    // A pid no process can have on Linux (above pid_max), and the old checkpoint naming.
    let dead = ".checkpoint.safetensors.tmp4999999-0";
    std::fs::write(d.join(dead), b"partial").unwrap();
    std::fs::write(d.join(".curves.png.tmp4999999-12"), b"").unwrap();
    let mine = temp_path(&d.join("metrics.csv")).unwrap();
    std::fs::write(&mine, b"").unwrap();
    let mut removed = remove_stale_temps(&d).unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            d.join(".checkpoint.safetensors.tmp4999999-0"),
            d.join(".curves.png.tmp4999999-12")
        ]
    );
    assert!(mine.exists(), "a running process's temporary file is kept");
    for n in keep {
        assert!(d.join(n).exists(), "{n}");
    }
    assert_eq!(temp_owner(dead), Some(4_999_999));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn grey_8bit_is_to_tensor() {
    let px = [0u8, 51, 255, 102, 204, 153];
    let b = png_bytes(3, 2, Grayscale, Eight, None, &px);
    let x = decode(&b, [1, 2, 3]).unwrap();
    assert_eq!(x, array![[[0.0, 0.2, 1.0], [0.4, 0.8, 0.6]]]);
    // Grey → RGB replicates.
    let x3 = decode(&b, [3, 2, 3]).unwrap();
    for c in 0..3 {
        assert_eq!(
            x3.index_axis(ndarray::Axis(0), c),
            x.index_axis(ndarray::Axis(0), 0)
        );
    }
}

#[test]
fn rgb_rgba_and_grey_alpha() {
    // Two pixels: pure red, and (10, 200, 30).
    let rgb = [255u8, 0, 0, 10, 200, 30];
    let b = png_bytes(2, 1, Rgb, Eight, None, &rgb);
    let x = decode(&b, [3, 1, 2]).unwrap();
    assert_eq!(
        x,
        array![
            [[1.0, 10.0 / 255.0]],
            [[0.0, 200.0 / 255.0]],
            [[0.0, 30.0 / 255.0]]
        ]
    );
    let grey = decode(&b, [1, 1, 2]).unwrap();
    // PIL: convert("L") of red is 76; of (10, 200, 30) is 124.
    assert_eq!(grey, array![[[76.0 / 255.0, 124.0 / 255.0]]]);
    let rgba = [255u8, 0, 0, 7, 10, 200, 30, 0];
    let b = png_bytes(2, 1, Rgba, Eight, None, &rgba);
    assert_eq!(decode(&b, [1, 1, 2]).unwrap(), grey, "alpha is dropped");
    let la = [9u8, 0, 90, 255];
    let b = png_bytes(2, 1, GrayscaleAlpha, Eight, None, &la);
    assert_eq!(
        decode(&b, [1, 1, 2]).unwrap(),
        array![[[9.0 / 255.0, 90.0 / 255.0]]]
    );
}

#[test]
fn sixteen_bit_keeps_precision() {
    let v: [u16; 2] = [0x0101, 0xffff];
    let data: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
    let b = png_bytes(2, 1, Grayscale, Sixteen, None, &data);
    let x = decode(&b, [1, 1, 2]).unwrap();
    assert_eq!(x, array![[[257.0 / 65535.0, 1.0]]]);
    let rgb: Vec<u8> = [65535u16, 0, 0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let b = png_bytes(1, 1, Rgb, Sixteen, None, &rgb);
    let g = decode(&b, [1, 1, 1]).unwrap();
    assert!((g[[0, 0, 0]] - 0.299).abs() < 1e-6);
}

#[test]
fn palette_and_low_bit_depth_expand() {
    let plte = [0u8, 0, 0, 255, 255, 255, 0, 0, 255];
    // 4-bit indices 2, 1 packed in one byte: 0x21.
    let b = png_bytes(2, 1, Indexed, Four, Some((&plte, &[])), &[0x21]);
    let x = decode(&b, [3, 1, 2]).unwrap();
    assert_eq!(x, array![[[0.0, 1.0]], [[0.0, 1.0]], [[1.0, 1.0]]]);
    // With transparency the palette expands to RGBA; alpha is still dropped.
    let b = png_bytes(2, 1, Indexed, Four, Some((&plte, &[0, 0, 0])), &[0x21]);
    assert_eq!(decode(&b, [3, 1, 2]).unwrap(), x);
    // 4-bit grey: 0xF → 1.0, 0x0 → 0.0.
    let b = png_bytes(2, 1, Grayscale, Four, None, &[0xf0]);
    assert_eq!(decode(&b, [1, 1, 2]).unwrap(), array![[[1.0, 0.0]]]);
}

#[test]
fn size_mismatch_names_both_sizes() {
    let b = png_bytes(3, 2, Grayscale, Eight, None, &[0; 6]);
    let e = decode(&b, [1, 28, 28]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`img.png` is 3×2 pixels but the model takes 28×28; resize it first (images are never resized implicitly)"
    );
    assert!(matches!(decode(&b, [2, 2, 3]), Err(IoError::Channels(2))));
}

#[test]
fn normalisation_per_channel_and_broadcast() {
    let b = png_bytes(1, 1, Rgb, Eight, None, &[255, 0, 51]);
    let n = ChannelNorm::new(&[0.5, 0.0, 0.2], &[0.5, 1.0, 0.1]).unwrap();
    let x = decode_image(&b, Path::new("a"), [3, 1, 1], Some(&n)).unwrap();
    assert_eq!(x.iter().copied().collect::<Vec<_>>(), [1.0, 0.0, 0.0]);
    let one = ChannelNorm::new(&[0.1307], &[0.3081]).unwrap();
    let b = png_bytes(1, 1, Grayscale, Eight, None, &[0]);
    let x = decode_image(&b, Path::new("a"), [1, 1, 1], Some(&one)).unwrap();
    assert!((x[[0, 0, 0]] + 0.1307 / 0.3081).abs() < 1e-6);
    assert!(ChannelNorm::new(&[0.1], &[0.0]).is_err());
    assert!(ChannelNorm::new(&[0.1, 0.2], &[1.0]).is_err());
    let mut grey = Array3::<f32>::zeros((1, 1, 1));
    assert!(matches!(
        ChannelNorm::imagenet().apply(&mut grey),
        Err(IoError::Normalization(_))
    ));
}

#[test]
fn corrupt_and_unknown_images() {
    let b = png_bytes(4, 4, Grayscale, Eight, None, &[7; 16]);
    let e = decode(&b[..b.len() - 20], [1, 4, 4]).unwrap_err();
    assert!(matches!(e, IoError::Decode { format: "PNG", .. }), "{e:?}");
    let e = decode(b"GIF89a......", [1, 4, 4]).unwrap_err();
    assert!(e.to_string().contains("not a PNG or JPEG"), "{e}");
    let e = decode(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], [1, 4, 4]).unwrap_err();
    assert!(matches!(e, IoError::Decode { format: "JPEG", .. }), "{e:?}");
}

#[test]
fn reads_png_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.png");
    std::fs::write(
        &p,
        png_bytes(2, 2, Grayscale, Eight, None, &[0, 255, 255, 0]),
    )
    .unwrap();
    let x = read_image(&p, [1, 2, 2], None).unwrap();
    assert_eq!(x, array![[[0.0, 1.0], [1.0, 0.0]]]);
    let e = read_image(&dir.path().join("none.png"), [1, 2, 2], None).unwrap_err();
    assert!(e.to_string().starts_with("cannot read"), "{e}");
}

/// JPEGs written by PIL (`tests/data/make_images.py`): an 8×8 grey one with a vertical
/// step 0 | 255 (quality 100) and a 16×8 RGB one, left half (200, 30, 30) and right half
/// (30, 30, 200).
#[test]
fn decodes_jpeg_written_by_pil() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let grey = read_image(&dir.join("step_grey.jpg"), [1, 8, 8], None).unwrap();
    for y in 0..8 {
        assert!(grey[[0, y, 0]] < 0.05 && grey[[0, y, 7]] > 0.95, "{grey:?}");
    }
    let rgb = read_image(&dir.join("halves_rgb.jpg"), [3, 8, 16], None).unwrap();
    let near = |a: f32, b: u8| (a - f32::from(b) / 255.0).abs() < 12.0 / 255.0;
    assert!(near(rgb[[0, 4, 2]], 200) && near(rgb[[1, 4, 2]], 30) && near(rgb[[2, 4, 2]], 30));
    assert!(near(rgb[[0, 4, 13]], 30) && near(rgb[[2, 4, 13]], 200));
    // As grey: PIL's luma of (200, 30, 30) is 81.
    let g = read_image(&dir.join("halves_rgb.jpg"), [1, 8, 16], None).unwrap();
    assert!(near(g[[0, 4, 2]], 81), "{}", g[[0, 4, 2]] * 255.0);
    assert!(matches!(
        read_image(&dir.join("halves_rgb.jpg"), [3, 16, 8], None),
        Err(IoError::ImageSize {
            width: 16,
            height: 8,
            ..
        })
    ));
}

#[test]
fn npy_round_trip_and_fortran_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let a = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4]), |d| (d[0] * 12 + d[1] * 4 + d[2]) as f32);
    write_npy(&p, &a).unwrap();
    assert_eq!(read_npy(&p).unwrap(), a);
    // A transposed (Fortran-order) array is written as C order and reads back equal.
    let t = a.t().to_owned();
    let f = a.view().reversed_axes();
    write_npy(&p, &f).unwrap();
    assert_eq!(read_npy(&p).unwrap(), t);
}

/// `.npy` files written by NumPy (`tests/data/make_npy.py`).
#[test]
fn npy_from_numpy_and_its_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let want = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |d| (d[0] * 3 + d[1]) as f32 * 0.5);
    assert_eq!(read_npy(&dir.join("c_f32.npy")).unwrap(), want);
    assert_eq!(read_npy(&dir.join("fortran_f32.npy")).unwrap(), want);
    let e = read_npy(&dir.join("f64.npy")).unwrap_err();
    assert!(
        matches!(&e, IoError::NpyDtype { found, .. } if found.contains("<f8")),
        "{e:?}"
    );
    assert!(e.to_string().contains("astype('<f4')"), "{e}");
    let bytes = std::fs::read(dir.join("c_f32.npy")).unwrap();
    let e = npy_from_bytes(&bytes[..bytes.len() - 4], Path::new("cut.npy")).unwrap_err();
    assert!(
        matches!(e, IoError::NpyTruncated { missing: 4, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("cut.npy"), "{e}");
    let e = npy_from_bytes(b"not numpy at all", Path::new("x.npy")).unwrap_err();
    assert!(matches!(e, IoError::NpyInvalid { .. }), "{e:?}");
    // A header claiming a huge shape fails on length, without allocating it.
    // The replacement eats padding spaces so the header length stays valid.
    let header = std::str::from_utf8(&bytes[10..128]).unwrap();
    let claim = "(200000000, 300000000), }";
    let padded =
        header
            .replacen("(2, 3), }", claim, 1)
            .replacen(&" ".repeat(claim.len() - 9), "", 1);
    assert_eq!(padded.len(), 118);
    let mut huge = bytes[..10].to_vec();
    huge.extend_from_slice(padded.as_bytes());
    huge.extend_from_slice(&bytes[128..]);
    let e = npy_from_bytes(&huge, Path::new("huge.npy")).unwrap_err();
    assert!(matches!(e, IoError::NpyTruncated { .. }), "{e:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(256))]

    /// Damaged PNG, JPEG and .npy files give an error, never a panic.
    #[test]
    fn damaged_inputs_never_panic(
        which in 0usize..4,
        cut in 0usize..1000,
        flips in proptest::collection::vec((0usize..1000, 1u8..=255), 0..4),
    ) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut bytes = match which {
            0 => png_bytes(4, 3, Rgb, Eight, None, &[9; 36]),
            1 => std::fs::read(dir.join("halves_rgb.jpg")).unwrap(),
            2 => std::fs::read(dir.join("step_grey.jpg")).unwrap(),
            _ => std::fs::read(dir.join("c_f32.npy")).unwrap(),
        };
        for (at, x) in flips {
            let n = bytes.len();
            // Keep the signature so the decoder, not the format sniffing, sees the damage.
            let at = 4 + at % (n - 4);
            bytes[at] ^= x;
        }
        bytes.truncate(cut.max(4).min(bytes.len()));
        if which == 3 {
            let _ = npy_from_bytes(&bytes, Path::new("x.npy"));
        } else {
            let shape = if which == 0 { [3, 3, 4] } else { [3, 8, 16] };
            let _ = decode_image(&bytes, Path::new("x"), shape, None);
            let _ = decode_image(&bytes, Path::new("x"), [1, 8, 8], None);
        }
    }
}
