//! The front-ends and the checker never panic, whatever the input: random bytes, random
//! printable text, and valid specs with random edits.

use cnn_dsl::{SourceMap, compile_source, diag::render_all};
use proptest::prelude::*;

const SEED_YAML: &str = include_str!("../../examples/models/seed.yaml");
const SEED_CNN: &str = include_str!("../../examples/models/seed.cnn");

fn run(name: &str, text: &str) {
    let mut sources = SourceMap::new();
    if let Err(diags) = compile_source(&mut sources, name, text) {
        // Rendering must not panic either (spans inside the text, on char boundaries).
        let _ = render_all(&diags, &sources, false);
        for d in &diags {
            let _ = d.to_json(&sources);
        }
    }
}

fn mutate(base: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for &(pos, op, c) in edits {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let i = pos % chars.len();
        match op % 3 {
            0 => {
                chars.remove(i);
            }
            1 => chars.insert(i, c),
            _ => chars[i] = c,
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        run("x.yaml", &text);
        run("x.cnn", &text);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        run("x.yaml", &text);
        run("x.cnn", &text);
    }

    #[test]
    fn mutated_specs_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![Just('0'), Just('9'), Just(':'), Just('['), Just(']'), Just('{'), Just('}'), Just(','), Just('-'), Just('*'), Just('/'), Just(' '), Just('\n'), Just('x'), Just('"'), Just('×')]), 1..6)) {
        run("seed.yaml", &mutate(SEED_YAML, &edits));
        run("seed.cnn", &mutate(SEED_CNN, &edits));
    }
}
