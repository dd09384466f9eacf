//! Feeds arbitrary bytes to both front-ends, the checker and the renderers: none may panic.
//! Run from cnn-dsl/: `cargo +nightly fuzz run frontends -- -max_total_time=60`.
#![no_main]

use cnn_dsl::{SourceMap, compile_source, diag::render_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for name in ["fuzz.yaml", "fuzz.cnn"] {
        let mut sources = SourceMap::new();
        if let Err(diags) = compile_source(&mut sources, name, &text) {
            let _ = render_all(&diags, &sources, false);
            for d in &diags {
                let _ = d.to_json(&sources);
            }
        } else if let Ok(model) = compile_source(&mut SourceMap::new(), name, &text) {
            let _ = cnn_dsl::summary::summary(&model, true);
            let _ = cnn_dsl::plan::plan(&model);
        }
    }
});
