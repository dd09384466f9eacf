//! Replays the committed corpus of the `frontends` fuzz target (`fuzz/corpus/frontends/`) on
//! stable, through the same calls as `fuzz/fuzz_targets/frontends.rs`: none may panic.

use std::path::Path;

mod fuzz_common;

#[test]
fn frontends_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frontends");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the frontends corpus is committed") {
        let bytes = std::fs::read(entry.expect("a corpus entry").path()).expect("a corpus file");
        fuzz_common::compile_all(&bytes);
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}
