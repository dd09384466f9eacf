//! Replays the committed corpus of the `readers` fuzz target (`fuzz/corpus/readers/`) on stable:
//! every file goes through the same readers as under the fuzzer, and none may panic.

mod fuzz_common;

use std::path::Path;

#[test]
fn readers_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/readers");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the readers corpus is committed") {
        let path = entry.expect("a corpus entry").path();
        let bytes = std::fs::read(&path).expect("a readable corpus file");
        fuzz_common::read_all(&bytes);
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}
