//! Feeds arbitrary bytes to both front-ends, then lowering, the checker, the renderers, the
//! planner and the code generator: none may panic.
//! Run from cnn-dsl/:
//! `cargo +nightly fuzz run frontends -- -max_total_time=60 -rss_limit_mb=2048 -malloc_limit_mb=2048`.
//! (The memory estimate lives in the `cnnc` binary, not in a library, so it is not reached here.)
#![no_main]

use cnn_dsl::{SourceMap, codegen, compile_source, diag::render_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
                let plan = cnn_dsl::plan::plan(&model);
                let _ = codegen::tokens_for_plan(&plan, &summary, &codegen::Options::default())
                    .to_string();
            }
        }
    }
});
