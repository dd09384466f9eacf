//! The calls the `readers` fuzz target makes on each input, shared with the stable replay test
//! `tests/fuzz_corpus.rs` so that both exercise exactly the same code.

use std::path::Path;

use cnn_runtime::io::ChannelNorm;
use cnn_runtime::weights::{ParamKind, ParamSpec};
use cnn_runtime::{data, io, weights};

/// The parameters of a small model (a convolution, a batch norm, a linear layer), against which
/// fuzzed safetensors files are matched.
pub fn specs() -> Vec<ParamSpec> {
    use ParamKind::*;
    vec![
        ParamSpec::new("conv1.weight", [2, 1, 3, 3], Weight),
        ParamSpec::new("conv1.bias", [2], Bias),
        ParamSpec::new("bn1.weight", [2], Weight),
        ParamSpec::new("bn1.bias", [2], Bias),
        ParamSpec::new("bn1.running_mean", [2], RunningMean),
        ParamSpec::new("bn1.running_var", [2], RunningVar),
        ParamSpec::new("bn1.num_batches_tracked", [], NumBatchesTracked),
        ParamSpec::new("fc.weight", [3, 8], Weight),
        ParamSpec::new("fc.bias", [3], Bias),
    ]
}

/// Runs `bytes` through every reader; results are ignored, only panics and aborts matter.
/// Error messages are formatted too, since they quote the input.
pub fn read_all(bytes: &[u8]) {
    let specs = specs();
    if let Err(e) = weights::load_bytes(bytes, Path::new("fuzz.safetensors"), &specs) {
        let _ = e.to_string();
    }
    let _ = weights::list_bytes(bytes, Path::new("fuzz.safetensors")).map_err(|e| e.to_string());
    let _ = io::npy_from_bytes(bytes, Path::new("fuzz.npy")).map_err(|e| e.to_string());
    let norm = ChannelNorm::imagenet();
    // Sizes of the seed images: 8×8 grey and 8 rows × 16 columns colour, each asked for both ways.
    for (shape, norm) in [
        ([1, 8, 8], None),
        ([3, 8, 8], Some(&norm)),
        ([1, 8, 16], None),
        ([3, 8, 16], Some(&norm)),
    ] {
        let _ =
            io::decode_image(bytes, Path::new("fuzz.png"), shape, norm).map_err(|e| e.to_string());
    }
    let _ = data::idx_images_from_bytes(bytes, Path::new("fuzz-images")).map_err(|e| e.to_string());
    let _ = data::idx_labels_from_bytes(bytes, Path::new("fuzz-labels")).map_err(|e| e.to_string());
}
