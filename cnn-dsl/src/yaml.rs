//! The YAML front-end: serde with serde-saphyr, whose `Spanned<T>` gives every node its
//! line, column and byte offset.
//!
//! The file is read into a small generic node tree (a custom `Deserialize` that keeps a span on
//! every scalar, sequence, mapping and key), then walked into [`ModelSpec`]. Scalars that hold
//! values (`16`, `64*7*7`, `same`, `[5, 5]`) go through the same value grammar as the DSL, so
//! both front-ends accept the same expressions.

use crate::diag::{Diagnostic, codes, did_you_mean};
use crate::dsl;
use crate::limits::{self, MAX_NESTING};
use crate::span::{SourceId, Span};
use crate::spec::{Arg, BlockSpec, Item, LayerSpec, ModelSpec, Spanned, Value, ValueKind};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

type SNode = serde_saphyr::Spanned<Node>;

/// A YAML node; scalars keep their source text via the span, so only their kind matters here.
#[derive(Debug)]
enum Node {
    Null,
    Scalar(String),
    Seq(Vec<SNode>),
    Map(Vec<(serde_saphyr::Spanned<String>, SNode)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

/// Reads one nested YAML node. serde reads nesting by recursion, and without optimisation
/// (a debug build) one level of the reader's generic code takes tens of KiB of stack; the depth
/// budget ([`MAX_NESTING`]) bounds the levels, and this moves them to a fresh heap-allocated
/// stack segment whenever less than [`RED_ZONE`] is left, so even a 2 MiB thread never
/// overflows.
fn nested<R>(read: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, read)
}

/// The stack a nested read may need before the next check (generous for debug builds).
const RED_ZONE: usize = 256 << 10;
/// The size of each extra stack segment.
const STACK_SEGMENT: usize = 2 << 20;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(format!("{v:e}")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = nested(|| seq.next_element::<SNode>())? {
            out.push(v);
        }
        Ok(Node::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<serde_saphyr::Spanned<String>>()? {
            let v = nested(|| map.next_value::<SNode>())?;
            out.push((k, v));
        }
        Ok(Node::Map(out))
    }
}

struct Walker<'a> {
    text: &'a str,
    source: SourceId,
    diags: Vec<Diagnostic>,
}

/// Byte offset of a 1-based line/column (in chars) in `text`.
fn offset_of(text: &str, line: u64, col: u64) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            let c = col.saturating_sub(1) as usize;
            return off
                + l.char_indices()
                    .nth(c)
                    .map_or(l.trim_end_matches('\n').len(), |(b, _)| b);
        }
        off += l.len();
    }
    text.len()
}

impl Walker<'_> {
    fn span_of(&self, loc: &serde_saphyr::Location) -> Span {
        let s = loc.span();
        match (s.byte_offset(), s.byte_len()) {
            (Some(o), Some(l)) => Span::new(self.source, o as usize, (o + l) as usize),
            _ => {
                let o = offset_of(self.text, loc.line(), loc.column());
                Span::new(self.source, o, o)
            }
        }
    }
    fn node_span(&self, n: &SNode) -> Span {
        self.span_of(&n.referenced)
    }
    fn key_span(&self, k: &serde_saphyr::Spanned<String>) -> Span {
        let s = self.span_of(&k.referenced);
        if s.lo == s.hi {
            Span::new(self.source, s.lo as usize, s.lo as usize + k.value.len())
        } else {
            s
        }
    }

    fn structure(&mut self, span: Span, msg: impl Into<String>, label: impl Into<String>) {
        self.diags
            .push(Diagnostic::new(codes::SPEC_STRUCTURE, msg).primary(span, label));
    }

    fn value(&mut self, n: &SNode) -> Option<Value> {
        let span = self.node_span(n);
        match &n.value {
            Node::Null => {
                self.structure(span, "expected a value, found nothing", "empty value");
                None
            }
            Node::Seq(items) => {
                let vals: Vec<Value> = items.iter().filter_map(|i| self.value(i)).collect();
                (vals.len() == items.len()).then_some(Value {
                    kind: ValueKind::List(vals),
                    span,
                })
            }
            Node::Map(_) => {
                self.diags.push(
                    Diagnostic::new(codes::ATTRIBUTE_TYPE, "expected a value, found a mapping")
                        .primary(span, "a mapping is not a value here"),
                );
                None
            }
            Node::Scalar(s) => {
                // Re-read the scalar from the source through the value grammar, so `64*7*7`,
                // `1e-5` and `same` mean the same as in the DSL and keep exact positions.
                let raw = self.text.get(span.range()).unwrap_or("");
                let (text, offset) = if !raw.is_empty() && !raw.starts_with('\'') {
                    (raw.to_string(), span.lo as usize)
                } else {
                    (s.clone(), span.lo as usize)
                };
                let (text, offset) = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
                {
                    Some(inner) => (inner.to_string(), offset + 1),
                    None => (text, offset),
                };
                match dsl::parse_value(&text, self.source, offset) {
                    Ok(mut v) => {
                        if let ValueKind::Word(w) = &v.kind {
                            // YAML spellings of booleans.
                            match w.as_str() {
                                "True" | "TRUE" | "yes" => v.kind = ValueKind::Bool(true),
                                "False" | "FALSE" | "no" => v.kind = ValueKind::Bool(false),
                                _ => {}
                            }
                        }
                        Some(v)
                    }
                    Err(mut d) => {
                        if d.code == codes::DSL_SYNTAX {
                            d.message = format!(
                                "cannot read `{}` as a value: {}",
                                abbreviate(text.trim()),
                                d.message.trim_start_matches("syntax error: ")
                            );
                        }
                        self.diags.push(d);
                        None
                    }
                }
            }
        }
    }

    fn items(&mut self, n: &SNode) -> Vec<Item> {
        let span = self.node_span(n);
        let Node::Seq(list) = &n.value else {
            self.structure(span, "`layers` must be a list", "expected a list of layers");
            return Vec::new();
        };
        list.iter().filter_map(|i| self.item(i)).collect()
    }

    fn item(&mut self, n: &SNode) -> Option<Item> {
        let span = self.node_span(n);
        match &n.value {
            Node::Scalar(kind) => {
                let kspan = Span::new(self.source, span.lo as usize, span.lo as usize + kind.len());
                Some(Item::Layer(LayerSpec {
                    name: None,
                    kind: Spanned::new(kind.clone(), kspan),
                    args: Vec::new(),
                    span: kspan,
                }))
            }
            Node::Map(entries) if entries.iter().any(|(k, _)| k.value == "block") => {
                self.block(entries, span)
            }
            Node::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let kspan = self.key_span(k);
                let kind = Spanned::new(k.value.clone(), kspan);
                let vspan = self.node_span(v);
                let mut name = None;
                let mut args = Vec::new();
                match &v.value {
                    Node::Null => {}
                    Node::Map(attrs) => {
                        for (ak, av) in attrs {
                            let aspan = self.key_span(ak);
                            if ak.value == "name" {
                                match &av.value {
                                    Node::Scalar(s) => {
                                        name = Some(Spanned::new(s.clone(), self.node_span(av)))
                                    }
                                    _ => self.structure(
                                        self.node_span(av),
                                        "a layer name must be a plain word",
                                        "expected a name",
                                    ),
                                }
                                continue;
                            }
                            if let Some(value) = self.value(av) {
                                args.push(Arg {
                                    name: Some(Spanned::new(ak.value.clone(), aspan)),
                                    value,
                                });
                            }
                        }
                    }
                    _ => {
                        if let Some(value) = self.value(v) {
                            args.push(Arg { name: None, value });
                        }
                    }
                }
                let end = if vspan.hi > kspan.hi {
                    vspan.hi
                } else {
                    kspan.hi
                };
                Some(Item::Layer(LayerSpec {
                    name,
                    kind,
                    args,
                    span: Span::new(self.source, kspan.lo as usize, end as usize),
                }))
            }
            Node::Map(entries) => {
                let keys: Vec<&str> = entries.iter().map(|(k, _)| k.value.as_str()).collect();
                self.diags.push(
                    Diagnostic::new(codes::SPEC_STRUCTURE, format!("a layer entry has {} keys: {}", keys.len(), keys.join(", ")))
                        .primary(span, "expected one layer per list entry")
                        .help("write each layer as its own `- kind: { … }` entry, with its attributes inside the braces"),
                );
                None
            }
            Node::Null | Node::Seq(_) => {
                self.structure(span, "expected a layer", "not a layer");
                None
            }
        }
    }

    fn block(
        &mut self,
        entries: &[(serde_saphyr::Spanned<String>, SNode)],
        span: Span,
    ) -> Option<Item> {
        let mut name = None;
        let mut kw = span;
        let mut items = None;
        for (k, v) in entries {
            match k.value.as_str() {
                "block" => {
                    kw = self.key_span(k);
                    match &v.value {
                        Node::Scalar(s) => name = Some(Spanned::new(s.clone(), self.node_span(v))),
                        _ => self.structure(
                            self.node_span(v),
                            "a block name must be a plain word",
                            "expected a name",
                        ),
                    }
                }
                "layers" => items = Some(self.items(v)),
                other => {
                    let mut d = Diagnostic::new(
                        codes::SPEC_STRUCTURE,
                        format!("unknown key `{other}` in a block"),
                    )
                    .primary(self.key_span(k), "unknown key");
                    d = d.help("a block has exactly two keys: `block: NAME` and `layers: [ … ]`");
                    self.diags.push(d);
                }
            }
        }
        let Some(items) = items else {
            self.structure(
                kw,
                "a block needs `layers`",
                "this block has no `layers` list",
            );
            return None;
        };
        Some(Item::Block(BlockSpec {
            name: name?,
            items,
            span: kw,
        }))
    }

    /// The model, built even when parts are missing or wrong (so that lowering can still
    /// report the independent errors of the rest), and whether its name is real.
    fn model(&mut self, root: &SNode) -> Option<(ModelSpec, bool)> {
        let rspan = self.node_span(root);
        let Node::Map(entries) = &root.value else {
            self.structure(
                rspan,
                "a model spec must be a mapping with `name`, `input` and `layers`",
                "expected a mapping",
            );
            return None;
        };
        let mut name = None;
        let mut name_written = None;
        let mut args = Vec::new();
        let mut output = None;
        let mut items = None;
        for (k, v) in entries {
            let kspan = self.key_span(k);
            match k.value.as_str() {
                "name" => match &v.value {
                    Node::Scalar(s) => name = Some(Spanned::new(s.clone(), self.node_span(v))),
                    _ => {
                        let span = self.node_span(v);
                        name_written = Some(span);
                        self.structure(
                            span,
                            "the model name must be a plain word",
                            "expected a name such as `SeedCnn`",
                        );
                    }
                },
                "input" => {
                    if let Some(value) = self.value(v) {
                        args.push(Arg {
                            name: Some(Spanned::new("input".into(), kspan)),
                            value,
                        });
                    }
                }
                "output" => output = self.value(v),
                "layers" => items = Some(self.items(v)),
                other => {
                    let mut d = Diagnostic::new(
                        codes::SPEC_STRUCTURE,
                        format!("unknown top-level key `{other}`"),
                    )
                    .primary(kspan, "unknown key");
                    if let Some(s) = did_you_mean(other, ["name", "input", "output", "layers"]) {
                        d = d.help(format!("did you mean `{s}`?")).suggest(kspan, s);
                    } else {
                        d = d.help("a model has the keys `name`, `input`, `layers` and optionally `output`");
                    }
                    self.diags.push(d);
                }
            }
        }
        let head = Span::new(self.source, rspan.lo as usize, rspan.lo as usize);
        // A name that is there but wrong was reported above; "no name" would be a second report.
        if name.is_none() && name_written.is_none() {
            self.structure(
                head,
                "the model has no `name`",
                "expected `name: ModelName` here",
            );
        }
        if items.is_none() {
            self.structure(
                head,
                "the model has no `layers`",
                "expected `layers:` with a list of layers",
            );
        }
        let name_ok = name.is_some();
        let name =
            name.unwrap_or_else(|| Spanned::new(String::new(), name_written.unwrap_or(head)));
        Some((
            ModelSpec {
                span: name.span,
                name,
                args,
                output,
                items: items.unwrap_or_default(),
            },
            name_ok,
        ))
    }
}

/// At most this many characters of a scalar are quoted in a message.
const QUOTE_CHARS: usize = 40;

/// `text`, cut to [`QUOTE_CHARS`] characters with `…` when longer.
fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Parses a YAML model spec. Returns every problem found, not just the first.
///
/// Sequences and mappings nested deeper than [`MAX_NESTING`] are refused by the YAML reader
/// itself (its depth budget), before the node tree gets deep.
pub fn parse_model(text: &str, source: SourceId) -> Result<ModelSpec, Vec<Diagnostic>> {
    let mut budget = serde_saphyr::Budget::default();
    // The scanner reads up to `simple_key_max_lookahead` characters ahead of the events the
    // depth budget counts, and each flow level takes at least one character: with the flow
    // limit that much above the budget, the budget (which counts flow and block collections
    // alike and knows the place) always speaks first, never the parser's "recursion limit".
    // The scanner counts flow levels without recursing, so the higher limit costs nothing.
    budget.flow_nesting_limit = MAX_NESTING + 1 + budget.simple_key_max_lookahead;
    budget.max_depth = MAX_NESTING;
    let options = serde_saphyr::options! { budget: Some(budget) };
    let root: SNode = match serde_saphyr::from_str_with_options(text, options) {
        Ok(r) => r,
        Err(e) => return Err(vec![yaml_error(&e, text, source)]),
    };
    let mut w = Walker {
        text,
        source,
        diags: Vec::new(),
    };
    match w.model(&root) {
        Some((m, _)) if w.diags.is_empty() => Ok(m),
        Some((m, name_ok)) => {
            // Every independent error in one run: what the walk could read is lowered too, so
            // a bad `input` or attribute is reported beside a structural mistake elsewhere.
            let mut diags = w.diags;
            if let Err(more) = crate::lower::lower(&m, crate::Syntax::Yaml) {
                diags.extend(
                    more.into_iter()
                        .filter(|d| name_ok || d.code != codes::BAD_MODEL_NAME),
                );
            }
            Err(diags)
        }
        None => Err(w.diags),
    }
}

fn yaml_error(e: &serde_saphyr::Error, text: &str, source: SourceId) -> Diagnostic {
    let plain = e.without_snippet();
    if let serde_saphyr::Error::Budget {
        breach: serde_saphyr::budget::BudgetBreach::Depth { .. },
        location,
    } = plain
    {
        let o = offset_of(text, location.line(), location.column());
        return limits::too_deep(Span::new(source, o, o + 1), None);
    }
    if let serde_saphyr::Error::DuplicateMappingKey { key, location } = plain {
        let o = offset_of(text, location.line(), location.column());
        let len = key.as_ref().map_or(1, |k| k.len().max(1));
        let message = match key {
            Some(k) => format!("duplicate key `{k}`"),
            None => "duplicate key".to_string(),
        };
        return Diagnostic::new(codes::YAML_SYNTAX, message)
            .primary(Span::new(source, o, o + len), "given a second time here")
            .help("a YAML mapping holds each key once: delete one of the two, or merge them");
    }
    let (span, what) = match plain.location() {
        Some(loc) => {
            let o = offset_of(text, loc.line(), loc.column());
            let end = text[o..].chars().next().map_or(o, |c| o + c.len_utf8());
            (Span::new(source, o, end), format!("{plain}"))
        }
        None => (Span::new(source, 0, 0), format!("{plain}")),
    };
    // serde-saphyr appends " at line L column C"; the snippet shows the place already.
    let msg = match what.find(" at line ") {
        Some(i) => what[..i].to_string(),
        None => what,
    };
    let msg = msg.trim().trim_end_matches('.').to_string();
    let msg = match msg.chars().next() {
        Some(c) if c.is_uppercase() => c.to_lowercase().collect::<String>() + &msg[c.len_utf8()..],
        _ => msg,
    };
    Diagnostic::new(codes::YAML_SYNTAX, format!("invalid YAML: {msg}")).primary(span, "here")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "name: SeedCnn\ninput: [1, 28, 28]\nlayers:\n  - block: conv1\n    layers:\n      - conv2d: { out_channels: 16, kernel_size: 5, padding: 2 }\n      - relu\n      - maxpool2d: 2\n  - flatten\n  - linear: { name: out, in_features: 64*7*7, out_features: 10 }\n";

    #[test]
    fn spans_point_at_tokens() {
        let m = parse_model(SEED, SourceId(0)).expect("parses");
        assert_eq!(m.name.value, "SeedCnn");
        let Item::Block(b) = &m.items[0] else {
            panic!()
        };
        let Item::Layer(conv) = &b.items[0] else {
            panic!()
        };
        assert_eq!(&SEED[conv.kind.span.range()], "conv2d");
        assert_eq!(&SEED[conv.args[1].value.span.range()], "5");
        let Item::Layer(pool) = &b.items[2] else {
            panic!()
        };
        assert_eq!(pool.args.len(), 1);
        let Item::Layer(lin) = &m.items[2] else {
            panic!()
        };
        assert_eq!(lin.name.as_ref().unwrap().value, "out");
        assert_eq!(&SEED[lin.args[0].value.span.range()], "64*7*7");
        assert_eq!(
            &SEED[lin.args[0].name.as_ref().unwrap().span.range()],
            "in_features"
        );
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let e = parse_model("name: X\ninput: [1, 2\nlayers: []\n", SourceId(0)).unwrap_err();
        assert_eq!(e[0].code.id, "CNN0001");
        assert!(e[0].primary.is_some());
    }

    #[test]
    fn a_bad_name_is_reported_once_beside_a_bad_input() {
        let e = parse_model(
            "name: [1, 2]\ninput: \"big\"\nlayers: [flatten]\n",
            SourceId(0),
        )
        .unwrap_err();
        let messages: Vec<&str> = e.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(e.len(), 2, "{messages:?}");
        assert_eq!(e[0].message, "the model name must be a plain word");
        assert!(
            messages.iter().all(|m| !m.contains("no `name`")),
            "{messages:?}"
        );
        assert!(messages[1].contains("input"), "{messages:?}");
    }

    #[test]
    fn duplicate_keys_say_how_to_fix_them() {
        let e = parse_model("name: A\nname: B\ninput: [3]\nlayers: []\n", SourceId(0)).unwrap_err();
        assert_eq!(e[0].message, "duplicate key `name`");
        assert!(!format!("{:?}", e[0]).contains("DuplicateKeyPolicy"));
        let p = e[0].primary.as_ref().unwrap();
        assert_eq!(p.span.lo, 8, "the second `name`");
    }

    #[test]
    fn quoted_values_keep_positions() {
        let t = "name: X\ninput: [3, 8, 8]\nlayers:\n  - conv2d: { out_channels: 4, kernel_size: 3, padding: \"same\" }\n";
        let m = parse_model(t, SourceId(0)).unwrap();
        let Item::Layer(l) = &m.items[0] else {
            panic!()
        };
        assert_eq!(l.args[2].value.kind, ValueKind::Word("same".into()));
        assert_eq!(&t[l.args[2].value.span.range()], "same");
    }
}
