//! Replays the committed corpus of the `frontends` fuzz target (`fuzz/corpus/frontends/`) on
//! stable, through the same calls as `fuzz/fuzz_targets/frontends.rs`: none may panic.

use std::path::Path;

use cnn_dsl::{SourceMap, codegen, compile_source, diag::render_all};

#[test]
fn frontends_corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frontends");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the frontends corpus is committed") {
        let bytes = std::fs::read(entry.expect("a corpus entry").path()).expect("a corpus file");
        let text = String::from_utf8_lossy(&bytes);
        for name in ["fuzz.yaml", "fuzz.cnn"] {
            let mut sources = SourceMap::new();
            match compile_source(&mut sources, name, &text) {
                Err(diags) => {
                    let _ = render_all(&diags, &sources, false);
                    for d in &diags {
                        let _ = d.to_json(&sources);
                    }
                }
                Ok(model) => {
                    let summary = cnn_dsl::summary::summary(&model, true);
                    let plan = cnn_dsl::plan::plan(&model);
                    let _ = codegen::tokens_for_plan(&plan, &summary, &codegen::Options::default())
                        .to_string();
                }
            }
        }
        n += 1;
    }
    assert!(n > 0, "empty corpus in {}", dir.display());
}
