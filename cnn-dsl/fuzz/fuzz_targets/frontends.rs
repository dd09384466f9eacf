//! Feeds arbitrary bytes to both front-ends, then lowering, the checker, the renderers, the
//! planner and the code generator: none may panic.
//! Run from cnn-dsl/:
//! `cargo +nightly fuzz run frontends -- -max_total_time=60 -rss_limit_mb=2048 -malloc_limit_mb=2048`.
//! `cnn-dsl/tests/fuzz_corpus.rs` replays the committed corpus through the same calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_common/mod.rs"]
mod fuzz_common;

fuzz_target!(|data: &[u8]| {
    fuzz_common::compile_all(data);
});
