//! Limits that keep hostile input from exhausting the stack.
//!
//! Every front-end recurses over brackets (the pest grammar, the walk into [`crate::spec`],
//! lowering of nested blocks, the evaluation of parenthesised expressions), and the macro runs
//! on rustc's proc-macro threads, whose stack may be as small as 2 MiB in a debug build. So the
//! nesting of a text is measured by a flat scan *before* anything recursive looks at it, and
//! anything deeper than [`MAX_NESTING`] is refused with a diagnostic at the bracket that passed
//! the limit. Long flat sequences (`1+1+…+1`, thousands of layers) are lists, not nesting, and
//! are never limited.
//!
//! ```
//! use cnn_dsl::{SourceId, limits};
//! let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
//! let d = limits::check_nesting(&deep, SourceId(0), 0).unwrap_err();
//! assert_eq!(d.code.id, "CNN0004");
//! assert_eq!(d.primary.unwrap().span.lo as usize, limits::MAX_NESTING);
//! assert!(limits::check_nesting("((1))", SourceId(0), 0).is_ok());
//! ```

use crate::diag::{Diagnostic, codes};
use crate::span::{SourceId, Span};

/// The deepest bracket nesting (`(`, `[`, `{` in the DSL; sequences and mappings in YAML) any
/// front-end accepts. Real models nest a handful of levels: a model body, a few blocks, an
/// argument list, a list value and a parenthesised expression.
pub const MAX_NESTING: usize = 64;

/// Checks that no bracket in `text` opens a level deeper than [`MAX_NESTING`], without
/// recursing. Comments and strings are skipped as the DSL grammar reads them. `offset` is where
/// `text` starts in its file. The error points at the first bracket past the limit.
#[expect(
    clippy::result_large_err,
    reason = "called once per parse; the Diagnostic is the whole point of the call"
)]
pub fn check_nesting(text: &str, source: SourceId, offset: usize) -> Result<(), Diagnostic> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut outermost = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = find_from(bytes, i + 2, b"\n").unwrap_or(bytes.len());
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = find_from(bytes, i + 2, b"*/").map_or(bytes.len(), |e| e + 2);
                continue;
            }
            b'"' => {
                i = find_from(bytes, i + 1, b"\"").map_or(bytes.len(), |e| e + 1);
                continue;
            }
            b'(' | b'[' | b'{' => {
                if depth == 0 {
                    outermost = i;
                }
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(too_deep(
                        Span::new(source, offset + i, offset + i + 1),
                        Some(Span::new(
                            source,
                            offset + outermost,
                            offset + outermost + 1,
                        )),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The diagnostic for input nested deeper than [`MAX_NESTING`]: `at` is where the limit was
/// passed, `outermost` (if known) where the nest begins.
pub fn too_deep(at: Span, outermost: Option<Span>) -> Diagnostic {
    let level = MAX_NESTING + 1;
    let mut d = Diagnostic::new(
        codes::TOO_DEEP,
        format!("nesting deeper than {MAX_NESTING} levels"),
    )
    .primary(at, format!("level {level} opens here"));
    if let Some(o) = outermost.filter(|o| *o != at) {
        d = d.secondary(o, "the outermost level opens here");
    }
    d.note(format!(
        "cnn reads at most {MAX_NESTING} nested brackets, lists or blocks, so that no input can overflow the stack"
    ))
    .help("write the value as a number or a flatter expression, and nest fewer blocks")
}

/// The first index at or after `from` where `needle` starts.
fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error_at(text: &str) -> Option<usize> {
        check_nesting(text, SourceId(0), 0)
            .err()
            .and_then(|d| d.primary)
            .map(|p| p.span.lo as usize)
    }

    #[test]
    fn the_limit_is_inclusive_and_reported_at_the_bracket_past_it() {
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert_eq!(depth_error_at(&ok), None);
        let deep = format!("x {}", "{(".repeat(MAX_NESTING));
        assert_eq!(depth_error_at(&deep), Some(2 + MAX_NESTING));
    }

    #[test]
    fn siblings_and_closed_levels_do_not_add_up() {
        let many = "(1)+".repeat(10_000);
        assert_eq!(depth_error_at(&many), None);
        assert_eq!(depth_error_at(&")".repeat(1000)), None);
    }

    #[test]
    fn comments_and_strings_are_skipped() {
        let open = "(".repeat(MAX_NESTING + 1);
        assert_eq!(depth_error_at(&format!("// {open}\n1")), None);
        assert_eq!(depth_error_at(&format!("/* {open} */ 1")), None);
        assert_eq!(depth_error_at(&format!("\"{open}\"")), None);
        // Unterminated comments and strings end the scan without panicking.
        assert_eq!(depth_error_at("/* ((("), None);
        assert_eq!(depth_error_at("\"((("), None);
        assert_eq!(depth_error_at("/"), None);
    }

    #[test]
    fn offsets_shift_the_place() {
        let deep = "(".repeat(MAX_NESTING + 1);
        let d = check_nesting(&deep, SourceId(3), 100).unwrap_err();
        let p = d.primary.unwrap();
        assert_eq!(
            (p.span.source, p.span.lo),
            (SourceId(3), 100 + MAX_NESTING as u32)
        );
        assert_eq!(d.secondary[0].span.lo, 100);
    }
}
