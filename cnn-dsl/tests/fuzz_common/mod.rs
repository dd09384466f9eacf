//! The calls the `frontends` fuzz target makes on each input, shared with the stable test that
//! replays its corpus (`tests/fuzz_corpus.rs`), so both run the same code.

use cnn_dsl::{SourceMap, codegen, compile_source, diag::render_all};

/// Feeds `data` to both front-ends, then lowering, the checker, the renderers, the planner and
/// the code generator: none may panic.
pub fn compile_all(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
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
                let plan = cnn_dsl::plan::plan(&model, cnn_dsl::plan::Mode::Infer);
                let _ = codegen::tokens_for_plan(&plan, &summary, &codegen::Options::default())
                    .to_string();
            }
        }
    }
}
