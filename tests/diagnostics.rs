//! Snapshot tests of rendered diagnostics: one snapshot per broken spec in `specs/bad/`.
//!
//! Files are named after the code they must produce (`CNN0301_linear_features.yaml`), so a
//! spec that stops producing its error fails even if someone blindly accepts snapshots.

use cnn::dsl::{SourceMap, compile_source, diag::render_all};
use std::path::Path;

fn render(path: &Path) -> (String, Vec<cnn::dsl::Diagnostic>, SourceMap) {
    let text = std::fs::read_to_string(path).expect("readable spec");
    let name = format!("specs/bad/{}", path.file_name().unwrap().to_string_lossy());
    let mut sources = SourceMap::new();
    let diags = compile_source(&mut sources, &name, &text).expect_err("bad spec must not check");
    (render_all(&diags, &sources, false), diags, sources)
}

#[test]
fn bad_specs_render_like_rustc() {
    insta::glob!("specs/bad/*", |path| {
        let (rendered, diags, sources) = render(path);
        let stem = path.file_stem().unwrap().to_string_lossy();
        if let Some(code) = stem.split('_').next().filter(|c| c.starts_with("CNN")) {
            assert!(
                diags.iter().any(|d| d.code.id == code),
                "{stem}: expected {code} in\n{rendered}"
            );
        }
        // Every diagnostic points somewhere and says what to do or why.
        for d in &diags {
            assert!(d.primary.is_some(), "{stem}: no position in {d:?}");
            assert!(
                !d.message.ends_with('.'),
                "{stem}: message ends with a period"
            );
            assert!(
                d.message.chars().next().is_some_and(|c| !c.is_uppercase()),
                "{stem}: message starts uppercase"
            );
        }
        let json: Vec<_> = diags.iter().map(|d| d.to_json(&sources)).collect();
        for j in &json {
            assert!(
                j["line"].as_u64().is_some_and(|l| l >= 1),
                "{stem}: JSON without a line: {j}"
            );
        }
        insta::assert_snapshot!(rendered);
    });
}

#[test]
fn several_independent_errors_are_reported_together() {
    let (_, diags, _) = render(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/specs/bad/multiple_shape_errors.cnn"
    )));
    let codes: Vec<_> = diags.iter().map(|d| d.code.id).collect();
    assert_eq!(codes, ["CNN0201", "CNN0201", "CNN0301"]);
    let (_, diags, _) = render(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/specs/bad/multiple_errors.yaml"
    )));
    assert!(diags.len() >= 2, "{diags:?}");
}

#[test]
fn canonical_bug_json() {
    let (_, diags, sources) = render(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/specs/bad/CNN0301_linear_features.yaml"
    )));
    let j = diags[0].to_json(&sources);
    assert_eq!(j["code"], "CNN0301");
    assert_eq!(j["line"], 21);
    assert_eq!(j["column"], 39);
    assert_eq!(j["labels"][0]["text"], "32*7*7");
    assert_eq!(j["suggestion"]["replacement"], "64*7*7");
    insta::assert_json_snapshot!(j);
}
