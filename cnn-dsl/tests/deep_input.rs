//! Hostile nesting and long chains end in a diagnostic (or a result), never a stack overflow.
//!
//! Every case runs on a thread with a 2 MiB stack, the size rustc gives proc-macro threads, in
//! whatever profile the tests are built with (a debug build included). The inputs are the sizes
//! that overflowed before the nesting limit existed, generated here rather than committed.

use cnn_dsl::limits::MAX_NESTING;
/// The stack rustc gives proc-macro threads. (At 512 KiB the cases pass too, unoptimised.)
const STACK: usize = 2 << 20;
use cnn_dsl::{Diagnostic, SourceMap, compile_source, diag::render_all};

/// Runs `f` on a 2 MiB thread; a stack overflow would abort the whole test binary.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .expect("spawn a thread")
        .join()
        .expect("the front-end must not panic")
}

/// Compiles `text` as file `name` on a small stack; on failure returns the diagnostics and
/// their rendering (rendering must not recurse either).
fn compile(name: &'static str, text: String) -> Result<Vec<u64>, (Vec<Diagnostic>, String)> {
    on_small_stack(move || {
        let mut sources = SourceMap::new();
        match compile_source(&mut sources, name, &text) {
            Ok(m) => Ok(m.output_shape().to_vec()),
            Err(d) => {
                let rendered = render_all(&d, &sources, false);
                Err((d, rendered))
            }
        }
    })
}

/// Asserts one CNN0004 diagnostic whose primary label starts at byte `at` of the text.
fn assert_too_deep(result: Result<Vec<u64>, (Vec<Diagnostic>, String)>, at: usize) {
    let (diags, rendered) = result.expect_err("too deep");
    assert_eq!(diags.len(), 1, "{rendered}");
    assert_eq!(diags[0].code.id, "CNN0004", "{rendered}");
    let primary = diags[0].primary.as_ref().expect("a place");
    assert_eq!(primary.span.lo as usize, at, "{rendered}");
    assert!(
        rendered.contains(&format!("nesting deeper than {MAX_NESTING} levels")),
        "{rendered}"
    );
}

fn dsl_with_in_features(expr: &str) -> String {
    format!(
        "model M(input = [1, 28, 28]) {{ flatten, linear(in_features = {expr}, out_features = 10) }}"
    )
}

fn yaml_with_in_features(expr: &str) -> String {
    format!(
        "name: M\ninput: [1, 28, 28]\nlayers:\n  - flatten\n  - linear: {{ in_features: {expr}, out_features: 10 }}\n"
    )
}

fn parens(n: usize, inner: &str) -> String {
    format!("{}{inner}{}", "(".repeat(n), ")".repeat(n))
}

#[test]
fn thousands_of_nested_parentheses_are_refused_at_the_limit() {
    for n in [5_000, 12_000] {
        let expr = parens(n, "784");
        let text = dsl_with_in_features(&expr);
        // Model body `{` and argument list `(` are the first two levels.
        let first = text.find("((").expect("parens");
        assert_too_deep(compile("deep.cnn", text), first + MAX_NESTING - 2);

        let text = yaml_with_in_features(&format!("\"{expr}\""));
        let first = text.find("((").expect("parens");
        assert_too_deep(compile("deep.yaml", text), first + MAX_NESTING);
    }
}

#[test]
fn the_deepest_accepted_expression_checks() {
    let dsl = dsl_with_in_features(&parens(MAX_NESTING - 2, "784"));
    assert_eq!(compile("ok.cnn", dsl), Ok(vec![10]));
    let yaml = yaml_with_in_features(&format!("\"{}\"", parens(MAX_NESTING, "784")));
    assert_eq!(compile("ok.yaml", yaml), Ok(vec![10]));
}

#[test]
fn a_130_000_term_chain_does_not_recurse() {
    // 784 + 1 - 1 + 1 - 1 …: 130,001 terms that sum to 784.
    let chain = format!("784{}", "+1-1".repeat(65_000));
    assert_eq!(
        compile("chain.cnn", dsl_with_in_features(&chain)),
        Ok(vec![10])
    );
    assert_eq!(
        compile("chain.yaml", yaml_with_in_features(&chain)),
        Ok(vec![10])
    );
    let product = format!("784{}", "*1".repeat(130_000));
    assert_eq!(
        compile("product.cnn", dsl_with_in_features(&product)),
        Ok(vec![10])
    );
    // A wrong declaration over a long product renders its factors without recursing either.
    let wrong = format!("783{}", "*1".repeat(130_000));
    let (diags, _) = compile("wrong.cnn", dsl_with_in_features(&wrong)).expect_err("wrong");
    assert_eq!(diags[0].code.id, "CNN0301");
}

#[test]
fn runs_of_minus_signs_do_not_nest() {
    let even = format!("{}784", "- ".repeat(100_000));
    assert_eq!(
        compile("minus.cnn", dsl_with_in_features(&even)),
        Ok(vec![10])
    );
    let odd = format!("-{even}");
    let (diags, _) = compile("minus.cnn", dsl_with_in_features(&odd)).expect_err("negative");
    assert_eq!(diags[0].code.id, "CNN0108");
}

#[test]
fn eight_thousand_nested_blocks_are_refused() {
    let n = 8_000;
    let text = format!(
        "model M(input = [4]) {{ {} linear(out_features = 2) {} }}",
        "block b { ".repeat(n),
        "} ".repeat(n)
    );
    // The model body is level 1, so the block that opens level 65 is block number 64.
    let at = text
        .match_indices('{')
        .nth(MAX_NESTING)
        .map(|(i, _)| i)
        .expect("braces");
    assert_too_deep(compile("blocks.cnn", text), at);
}

#[test]
fn the_deepest_accepted_blocks_check() {
    // The model body and the layer's argument list are two of the levels.
    let n = MAX_NESTING - 2;
    let text = format!(
        "model M(input = [4]) {{ {} linear(out_features = 2) {} }}",
        "block b { ".repeat(n),
        "} ".repeat(n)
    );
    assert_eq!(compile("blocks.cnn", text), Ok(vec![2]));
}

#[test]
fn deeply_nested_yaml_is_refused() {
    // Flow style: thousands of levels on one line.
    let n = 8_000;
    let flow = format!(
        "name: M\ninput: [4]\nlayers: {}linear{}\n",
        "[{block: b, layers: ".repeat(n),
        "}]".repeat(n)
    );
    let (diags, rendered) = compile("flow.yaml", flow).expect_err("too deep");
    assert_eq!(diags[0].code.id, "CNN0004", "{rendered}");

    // Block style, one nested block per indentation step.
    let mut block = String::from("name: M\ninput: [4]\nlayers:\n");
    for level in 0..200 {
        let pad = "  ".repeat(2 * level);
        block.push_str(&format!("{pad}  - block: b\n{pad}    layers:\n"));
    }
    block.push_str(&format!("{}  - linear: 2\n", "  ".repeat(400)));
    let (diags, rendered) = compile("block.yaml", block).expect_err("too deep");
    assert_eq!(diags[0].code.id, "CNN0004", "{rendered}");
    assert!(diags[0].primary.is_some(), "{rendered}");

    // Nested lists as a value.
    let lists = format!(
        "name: M\ninput: {}4{}\nlayers: [flatten]\n",
        "[".repeat(n),
        "]".repeat(n)
    );
    let (diags, rendered) = compile("lists.yaml", lists).expect_err("too deep");
    assert_eq!(diags[0].code.id, "CNN0004", "{rendered}");
}

#[test]
fn deep_lists_in_the_dsl_are_refused() {
    let n = 12_000;
    let text = format!(
        "model M(input = {}4{}) {{ flatten }}",
        "[".repeat(n),
        "]".repeat(n)
    );
    let first = text.find('[').expect("list");
    assert_too_deep(compile("lists.cnn", text), first + MAX_NESTING - 1);
}

#[test]
fn the_macro_front_end_refuses_deep_tokens_on_a_small_stack() {
    let text = dsl_with_in_features(&parens(12_000, "784"));
    let out = on_small_stack(move || {
        let tokens: proc_macro2::TokenStream = text.parse().expect("balanced tokens");
        cnn_dsl::expand::expand(tokens, None).to_string()
    });
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("nesting deeper than"), "{out}");
    assert!(out.contains("pub struct M"), "fallback stub: {out}");
}
