//! Feeds arbitrary bytes to every file reader of the runtime — safetensors weights (matched and
//! listed), `.npy`, PNG/JPEG images and IDX images/labels (raw or gzip): none may panic, abort
//! or allocate without bound.
//! Run from cnn-runtime/:
//! `cargo +nightly fuzz run readers -- -max_total_time=60 -rss_limit_mb=2048 -malloc_limit_mb=2048`.
//! `cnn-runtime/tests/fuzz_corpus.rs` replays the committed corpus through the same calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_common/mod.rs"]
mod fuzz_common;

fuzz_target!(|data: &[u8]| {
    fuzz_common::read_all(data);
});
