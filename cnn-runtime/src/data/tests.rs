//! Tests of the IDX reader, datasets and batching.

use super::idx::{IMAGES_MAGIC, LABELS_MAGIC};
use super::*;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

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
