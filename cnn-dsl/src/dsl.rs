//! The `.cnn` front-end: a pest grammar (`dsl.pest`) and the walk from its parse tree to
//! [`ModelSpec`].
#![expect(
    clippy::result_large_err,
    reason = "a Diagnostic is returned once per parse, never on a hot path; boxing would only add noise at every call site"
)]

use crate::diag::{Diagnostic, codes};
use crate::limits;
use crate::span::{SourceId, Span};
use crate::spec::{
    Arg, BinOp, BlockSpec, Expr, Item, LayerSpec, ModelSpec, Spanned, Value, ValueKind,
};
use pest::Parser;
use pest::iterators::Pair;

mod grammar {
    /// The parser generated from `dsl.pest`.
    #[derive(pest_derive::Parser)]
    #[grammar = "dsl.pest"]
    pub struct DslParser;
}
use grammar::{DslParser, Rule};

/// Parses a whole `.cnn` text (one `model`).
///
/// Text nested deeper than [`MAX_NESTING`](crate::limits::MAX_NESTING) brackets is refused
/// before the recursive parser sees it.
pub fn parse_model(text: &str, source: SourceId) -> Result<ModelSpec, Diagnostic> {
    limits::check_nesting(text, source, 0)?;
    let mut pairs = DslParser::parse(Rule::file, text).map_err(|e| syntax_error(e, source))?;
    let file = pairs.next().ok_or_else(|| internal(source))?;
    let model = file.into_inner().next().ok_or_else(|| internal(source))?;
    Ok(walk_model(model, source))
}

/// Parses one value (`64*7*7`, `[5, 5]`, `same`); `offset` is where `text` starts in the file.
/// Nesting is limited as in [`parse_model`].
pub fn parse_value(text: &str, source: SourceId, offset: usize) -> Result<Value, Diagnostic> {
    limits::check_nesting(text, source, offset)?;
    let mut pairs = DslParser::parse(Rule::value_only, text).map_err(|e| {
        let mut d = syntax_error(e, source);
        if let Some(p) = &mut d.primary {
            p.span.lo += offset as u32;
            p.span.hi += offset as u32;
        }
        d
    })?;
    let v = pairs
        .next()
        .and_then(|p| p.into_inner().next())
        .ok_or_else(|| internal(source))?;
    Ok(walk_value(v, &Ctx { source, offset }))
}

struct Ctx {
    source: SourceId,
    offset: usize,
}

impl Ctx {
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.source, s.start() + self.offset, s.end() + self.offset)
    }
}

fn internal(source: SourceId) -> Diagnostic {
    Diagnostic::new(codes::DSL_SYNTAX, "unexpected end of input")
        .primary(Span::new(source, 0, 0), "")
}

fn rule_name(r: &Rule) -> &'static str {
    match r {
        Rule::EOI => "end of input",
        Rule::model | Rule::kw_model => "`model`",
        Rule::kw_block | Rule::block => "`block`",
        Rule::body => "`{`",
        Rule::layer | Rule::layer_name => "a layer",
        Rule::args | Rule::arg | Rule::arg_name => "an argument",
        Rule::value | Rule::value_only | Rule::expr | Rule::product | Rule::unary => "a value",
        Rule::list => "`[`",
        Rule::string | Rule::string_inner => "a string",
        Rule::word | Rule::ident => "a name",
        Rule::int => "an integer",
        Rule::float => "a decimal number",
        Rule::neg => "`-`",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*`, `/` or `%`",
        Rule::output => "`->`",
        Rule::comma => "`,`",
        Rule::rparen => "`)`",
        Rule::rbrace => "`}`",
        _ => "something else",
    }
}

fn syntax_error(e: pest::error::Error<Rule>, source: SourceId) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (lo, hi) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((a, b)) => (a, b),
    };
    let (message, label) = match &e.variant {
        ErrorVariant::ParsingError {
            positives,
            negatives,
        } => {
            // Operators are always possible after a number; mention them only when nothing
            // structural is expected, so the message names the likely fix (`,` or `)`).
            let structural: Vec<&Rule> = positives
                .iter()
                .filter(|r| !matches!(r, Rule::add_op | Rule::mul_op))
                .collect();
            let chosen: Vec<&Rule> = if structural.is_empty() {
                positives.iter().collect()
            } else {
                structural
            };
            let mut names: Vec<&str> = chosen.into_iter().map(rule_name).collect();
            names.sort_unstable();
            names.dedup();
            let expected = match names.as_slice() {
                [] => String::new(),
                [one] => (*one).to_string(),
                [init @ .., last] => format!("{} or {}", init.join(", "), last),
            };
            if expected.is_empty() {
                let unexpected: Vec<&str> = negatives.iter().map(rule_name).collect();
                (
                    format!("unexpected {}", unexpected.join(", ")),
                    "unexpected here".to_string(),
                )
            } else {
                (
                    format!("expected {expected}"),
                    format!("expected {expected}"),
                )
            }
        }
        ErrorVariant::CustomError { message } => (message.clone(), String::new()),
    };
    Diagnostic::new(codes::DSL_SYNTAX, format!("syntax error: {message}"))
        .primary(Span::new(source, lo, hi.max(lo)), label)
}

fn walk_model(p: Pair<'_, Rule>, source: SourceId) -> ModelSpec {
    let cx = Ctx { source, offset: 0 };
    let header = cx.span(&p);
    let mut name = Spanned::new(String::new(), header);
    let mut args = Vec::new();
    let mut output = None;
    let mut items = Vec::new();
    let mut header_end = header;
    for inner in p.into_inner() {
        match inner.as_rule() {
            Rule::ident => name = Spanned::new(inner.as_str().to_string(), cx.span(&inner)),
            Rule::args => args = walk_args(inner, &cx),
            Rule::output => {
                header_end = cx.span(&inner);
                output = inner.into_inner().next().map(|v| walk_value(v, &cx));
            }
            Rule::body => items = walk_body(inner, &cx),
            _ => {}
        }
    }
    let span = Span::new(
        source,
        header.lo as usize,
        header_end.hi.max(name.span.hi) as usize,
    );
    ModelSpec {
        name,
        args,
        output,
        items,
        span,
    }
}

fn walk_body(p: Pair<'_, Rule>, cx: &Ctx) -> Vec<Item> {
    p.into_inner()
        .filter_map(|item| match item.as_rule() {
            Rule::block => {
                let mut it = item.into_inner();
                let kw = it.next()?;
                let name = it.next()?;
                let body = it.next()?;
                Some(Item::Block(BlockSpec {
                    name: Spanned::new(name.as_str().to_string(), cx.span(&name)),
                    span: cx.span(&kw),
                    items: walk_body(body, cx),
                }))
            }
            Rule::layer => {
                let span = cx.span(&item);
                let mut name = None;
                let mut kind = None;
                let mut args = Vec::new();
                for part in item.into_inner() {
                    match part.as_rule() {
                        Rule::layer_name => {
                            name = Some(Spanned::new(part.as_str().to_string(), cx.span(&part)))
                        }
                        Rule::ident => {
                            kind = Some(Spanned::new(part.as_str().to_string(), cx.span(&part)))
                        }
                        Rule::args => args = walk_args(part, cx),
                        _ => {}
                    }
                }
                Some(Item::Layer(LayerSpec {
                    name,
                    kind: kind?,
                    args,
                    span,
                }))
            }
            _ => None,
        })
        .collect()
}

fn walk_args(p: Pair<'_, Rule>, cx: &Ctx) -> Vec<Arg> {
    p.into_inner()
        .filter(|a| a.as_rule() == Rule::arg)
        .filter_map(|a| {
            let mut name = None;
            let mut value = None;
            for part in a.into_inner() {
                match part.as_rule() {
                    Rule::arg_name => {
                        name = Some(Spanned::new(part.as_str().to_string(), cx.span(&part)))
                    }
                    Rule::value => value = Some(walk_value(part, cx)),
                    _ => {}
                }
            }
            Some(Arg {
                name,
                value: value?,
            })
        })
        .collect()
}

fn walk_value(p: Pair<'_, Rule>, cx: &Ctx) -> Value {
    let span = cx.span(&p);
    // `value` wraps exactly one alternative.
    let inner = if p.as_rule() == Rule::value {
        p.into_inner().next()
    } else {
        Some(p)
    };
    let kind = match inner {
        None => ValueKind::Word(String::new()),
        Some(inner) => match inner.as_rule() {
            Rule::list => ValueKind::List(inner.into_inner().map(|v| walk_value(v, cx)).collect()),
            Rule::string => ValueKind::Word(
                inner
                    .into_inner()
                    .next()
                    .map_or("", |s| s.as_str())
                    .to_string(),
            ),
            Rule::float => ValueKind::Float(inner.as_str().parse().unwrap_or(f64::NAN)),
            Rule::expr => ValueKind::Int(walk_expr(inner, cx)),
            Rule::word => match inner.as_str() {
                "true" => ValueKind::Bool(true),
                "false" => ValueKind::Bool(false),
                w => ValueKind::Word(w.to_string()),
            },
            _ => ValueKind::Word(inner.as_str().to_string()),
        },
    };
    Value { kind, span }
}

fn walk_expr(p: Pair<'_, Rule>, cx: &Ctx) -> Expr {
    let span = cx.span(&p);
    match p.as_rule() {
        Rule::expr | Rule::product => {
            // `a + b - c`: one flat chain, however long (no left-nested tree to recurse over).
            let mut it = p.into_inner();
            let Some(first) = it.next() else {
                return Expr::Lit(String::new(), span);
            };
            let first = walk_expr(first, cx);
            let mut rest = Vec::new();
            while let (Some(op), Some(rhs)) = (it.next(), it.next()) {
                let op = match op.as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    "/" => BinOp::Div,
                    _ => BinOp::Rem,
                };
                rest.push((op, walk_expr(rhs, cx)));
            }
            if rest.is_empty() {
                first
            } else {
                Expr::Chain(Box::new(first), rest, span)
            }
        }
        Rule::unary => {
            let parts: Vec<_> = p.into_inner().collect();
            let negs = parts.iter().filter(|q| q.as_rule() == Rule::neg).count();
            let Some(atom) = parts.into_iter().find(|q| q.as_rule() != Rule::neg) else {
                return Expr::Lit(String::new(), span);
            };
            let e = walk_expr(atom, cx);
            // `- - - x` is `-x`: a run of signs is one negation or none, never a deep tree.
            if negs % 2 == 1 {
                Expr::Neg(Box::new(e), span)
            } else {
                e
            }
        }
        _ => Expr::Lit(p.as_str().to_string(), span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_names_and_expressions() {
        let text = "model M(input = [1, 28, 28]) -> [10] {\n block b { conv2d(16, kernel_size = 5), relu }\n flatten;\n out: linear(in_features = (28 - 4) / 2 * 3, out_features = 10),\n}";
        let m = parse_model(text, SourceId(0)).expect("parses");
        assert_eq!(m.name.value, "M");
        assert_eq!(m.items.len(), 3);
        let Item::Block(b) = &m.items[0] else {
            panic!("block")
        };
        assert_eq!(b.items.len(), 2);
        let Item::Layer(l) = &m.items[2] else {
            panic!("layer")
        };
        assert_eq!(l.name.as_ref().map(|n| n.value.as_str()), Some("out"));
        let ValueKind::Int(e) = &l.args[0].value.kind else {
            panic!("int")
        };
        assert_eq!(e.eval(), Ok(36));
        assert_eq!(&text[l.args[0].value.span.range()], "(28 - 4) / 2 * 3");
    }

    #[test]
    fn floats_words_and_strings() {
        let v = parse_value("1e-5", SourceId(0), 0).unwrap();
        assert_eq!(v.kind, ValueKind::Float(1e-5));
        let v = parse_value("\"same\"", SourceId(0), 0).unwrap();
        assert_eq!(v.kind, ValueKind::Word("same".into()));
        let v = parse_value("-1", SourceId(0), 0).unwrap();
        let ValueKind::Int(e) = v.kind else { panic!() };
        assert_eq!(e.eval(), Ok(-1));
        let v = parse_value("0.5", SourceId(0), 0).unwrap();
        assert_eq!(v.kind, ValueKind::Float(0.5));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse_model(
            "model M(input = [1, 28, 28]) {\n conv2d(16 kernel_size = 5)\n}",
            SourceId(0),
        )
        .unwrap_err();
        assert_eq!(e.code.id, "CNN0002");
        let p = e.primary.unwrap();
        assert_eq!(p.span.lo, 42);
        // Two layers without a separator are an error, not silently two layers.
        assert!(parse_model("model M(input=[3]) { relu relu }", SourceId(0)).is_err());
        // A trailing offset is applied to value errors.
        let e = parse_value("64**7", SourceId(0), 100).unwrap_err();
        assert!(e.primary.unwrap().span.lo >= 100);
    }
}
