//! `ModelSpec` → typed [`Model`]: binds arguments (PyTorch's positional order, then keywords),
//! evaluates expressions, applies PyTorch defaults and reports every unknown layer, unknown or
//! duplicate attribute, wrong type and invalid value, not just the first.

use crate::diag::{Diagnostic, codes, did_you_mean};
use crate::ir::{
    Attr, BatchNorm2d, Conv2d, Dims, Layer, LayerKind, Linear, Model, Padding, Pool2d, PoolKind,
};
use crate::span::{Span, Syntax};
use crate::spec::{Arg, EvalError, Item, LayerSpec, ModelSpec, Value, ValueKind};
use std::collections::HashMap;

/// The layer kinds and their parameters in PyTorch's positional order.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "conv2d",
        &[
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "bias",
            "padding_mode",
        ],
    ),
    (
        "maxpool2d",
        &[
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "return_indices",
            "ceil_mode",
        ],
    ),
    (
        "avgpool2d",
        &[
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
        ],
    ),
    ("adaptive_avgpool2d", &["output_size"]),
    ("batchnorm2d", &["num_features", "eps", "momentum"]),
    ("relu", &[]),
    ("leaky_relu", &["negative_slope"]),
    ("sigmoid", &[]),
    ("tanh", &[]),
    ("gelu", &["approximate"]),
    ("dropout", &["p"]),
    ("flatten", &[]),
    ("linear", &["in_features", "out_features", "bias"]),
    ("softmax", &["dim"]),
    ("log_softmax", &["dim"]),
];

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Resolves a written kind (`Conv2d`, `max_pool2d`, `ReLU`) to its canonical name.
pub fn canonical_kind(kind: &str) -> Option<&'static str> {
    let k = squash(kind);
    LAYERS.iter().map(|(n, _)| *n).find(|n| squash(n) == k)
}

/// Lowers a spec. All problems are returned together.
pub fn lower(spec: &ModelSpec, syntax: Syntax) -> Result<Model, Vec<Diagnostic>> {
    let mut cx = Lowerer { diags: Vec::new() };
    let mut input = None;
    for arg in &spec.args {
        match arg.name.as_ref().map(|n| n.value.as_str()) {
            Some("input") => input = cx.dims(&arg.value, "input"),
            Some(other) => {
                let span = arg.name.as_ref().map_or(arg.value.span, |n| n.span);
                cx.diags.push(
                    Diagnostic::new(
                        codes::UNKNOWN_ATTRIBUTE,
                        format!("unknown model argument `{other}`"),
                    )
                    .primary(span, "unknown argument")
                    .help("a model takes `input = [C, H, W]` (or `[features]`)"),
                );
            }
            None => {
                cx.diags.push(
                    Diagnostic::new(codes::ATTRIBUTE_TYPE, "model arguments must be named")
                        .primary(arg.value.span, "unnamed argument")
                        .help(format!("write {}", syntax.assign("input", "[C, H, W]"))),
                );
            }
        }
    }
    if input.is_none()
        && !spec
            .args
            .iter()
            .any(|a| a.name.as_ref().is_some_and(|n| n.value == "input"))
    {
        cx.diags.push(
            Diagnostic::new(
                codes::MISSING_ATTRIBUTE,
                if spec.name.value.is_empty() {
                    "the model has no input shape".to_string()
                } else {
                    format!("model `{}` has no input shape", spec.name.value)
                },
            )
            .primary(spec.name.span, "declared without `input`")
            .help(format!(
                "declare the per-sample input, e.g. {}",
                syntax.assign("input", "[1, 28, 28]")
            )),
        );
    }
    if !is_rust_identifier(&spec.name.value) {
        cx.diags.push(
            Diagnostic::new(
                codes::BAD_MODEL_NAME,
                format!("`{}` cannot name a model", spec.name.value),
            )
            .primary(spec.name.span, "not a Rust identifier")
            .help("use letters, digits and underscores, starting with a letter, e.g. `SeedCnn`"),
        );
    }
    let output = spec.output.as_ref().and_then(|v| cx.dims(v, "output"));
    let mut layers = Vec::new();
    cx.items(&spec.items, "", None, &mut layers);
    let Some(input) = input else {
        return Err(cx.diags);
    };
    if !cx.diags.is_empty() {
        return Err(cx.diags);
    }
    Ok(Model {
        name: spec.name.value.clone(),
        name_span: spec.name.span,
        input,
        output,
        layers,
        syntax,
    })
}

/// Whether `name` can be a Rust type name (generated code uses it for the model struct).
pub fn is_rust_identifier(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod",
        "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
        "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "become", "box",
        "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
        "_",
    ];
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name)
}

struct Lowerer {
    diags: Vec<Diagnostic>,
}

impl Lowerer {
    fn items(&mut self, items: &[Item], prefix: &str, top: Option<&str>, out: &mut Vec<Layer>) {
        let mut seen: HashMap<String, Span> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let (local, span) = match item {
                Item::Block(b) => (b.name.value.clone(), b.name.span),
                Item::Layer(l) => match &l.name {
                    Some(n) => (n.value.clone(), n.span),
                    None => (i.to_string(), l.kind.span),
                },
            };
            if let Some(first) = seen.get(&local) {
                self.diags.push(
                    Diagnostic::new(
                        codes::DUPLICATE_NAME,
                        format!("the name `{local}` is used twice"),
                    )
                    .primary(span, "second use")
                    .secondary(*first, "first used here")
                    .help("parameter names (`state_dict` keys) must be unique: rename one"),
                );
            } else {
                seen.insert(local.clone(), span);
            }
            let path = if prefix.is_empty() {
                local.clone()
            } else {
                format!("{prefix}.{local}")
            };
            let top_name = top.unwrap_or(&local).to_string();
            match item {
                Item::Block(b) => self.items(&b.items, &path, Some(&top_name), out),
                Item::Layer(l) => {
                    if let Some(kind) = self.layer(l) {
                        out.push(Layer {
                            path,
                            top: top_name,
                            kind,
                            span: l.kind.span,
                        });
                    }
                }
            }
        }
    }

    fn layer(&mut self, l: &LayerSpec) -> Option<LayerKind> {
        let Some(kind) = canonical_kind(&l.kind.value) else {
            let mut d = Diagnostic::new(
                codes::UNKNOWN_LAYER,
                format!("unknown layer `{}`", l.kind.value),
            )
            .primary(l.kind.span, "not a layer kind");
            let names = LAYERS.iter().map(|(n, _)| *n);
            if let Some(s) = did_you_mean(&l.kind.value, names) {
                d = d
                    .help(format!("did you mean `{s}`?"))
                    .suggest(l.kind.span, s);
            } else {
                let all: Vec<&str> = LAYERS.iter().map(|(n, _)| *n).collect();
                d = d.note(format!("known layers: {}", all.join(", ")));
            }
            self.diags.push(d);
            return None;
        };
        let params = LAYERS
            .iter()
            .find(|(n, _)| *n == kind)
            .map_or(&[][..], |(_, p)| *p);
        let mut args = Args {
            vals: HashMap::new(),
            layer: l,
            kind,
        };
        let mut positional = 0;
        let mut ok = true;
        for arg in &l.args {
            match &arg.name {
                None => {
                    if positional >= params.len() {
                        self.diags.push(
                            Diagnostic::new(
                                codes::DUPLICATE_ATTRIBUTE,
                                format!("too many positional arguments for `{kind}`"),
                            )
                            .primary(arg.value.span, "unexpected argument")
                            .help(if params.is_empty() {
                                format!("`{kind}` takes no arguments")
                            } else {
                                format!(
                                    "`{kind}` takes ({}) in that order; name the rest",
                                    params.join(", ")
                                )
                            }),
                        );
                        ok = false;
                        continue;
                    }
                    args.vals.insert(params[positional], arg);
                    positional += 1;
                }
                Some(name) => {
                    let Some(p) = params.iter().find(|p| **p == name.value) else {
                        let mut d = Diagnostic::new(
                            codes::UNKNOWN_ATTRIBUTE,
                            format!("`{kind}` has no attribute `{}`", name.value),
                        )
                        .primary(name.span, "unknown attribute");
                        if let Some(s) = did_you_mean(&name.value, params.iter().copied()) {
                            d = d.help(format!("did you mean `{s}`?")).suggest(name.span, s);
                        } else if params.is_empty() {
                            d = d.help(format!("`{kind}` takes no attributes"));
                        } else {
                            d = d.note(format!("`{kind}` takes: {}", params.join(", ")));
                        }
                        self.diags.push(d);
                        ok = false;
                        continue;
                    };
                    if let Some(prev) = args.vals.get(p) {
                        let prev_span = prev.name.as_ref().map_or(prev.value.span, |n| n.span);
                        self.diags.push(
                            Diagnostic::new(
                                codes::DUPLICATE_ATTRIBUTE,
                                format!("`{p}` is given twice"),
                            )
                            .primary(name.span, "given again here")
                            .secondary(prev_span, "first given here"),
                        );
                        ok = false;
                        continue;
                    }
                    args.vals.insert(p, arg);
                }
            }
        }
        let before = self.diags.len();
        let kind = self.build(&args);
        (ok && self.diags.len() == before).then_some(kind).flatten()
    }

    fn build(&mut self, a: &Args<'_>) -> Option<LayerKind> {
        Some(match a.kind {
            "conv2d" => {
                let in_channels = self.opt_size(a, "in_channels", 1);
                let out_channels = self.req_size(a, "out_channels", 1);
                let kernel_size = self.req_pair(a, "kernel_size", 1);
                let stride = self.pair_or(a, "stride", 1, [1, 1]);
                let padding = self.conv_padding(a);
                let dilation = self.pair_or(a, "dilation", 1, [1, 1]);
                let groups = self.size_or(a, "groups", 1, 1);
                let bias = self.bool_or(a, "bias", true);
                if let Some(v) = a.vals.get("padding_mode") {
                    let word = match &v.value.kind {
                        ValueKind::Word(w) => w.as_str(),
                        _ => "",
                    };
                    if word != "zeros" {
                        self.diags.push(
                            Diagnostic::new(
                                codes::INVALID_VALUE,
                                "only `padding_mode = zeros` is supported",
                            )
                            .primary(v.value.span, "unsupported padding mode")
                            .help("remove `padding_mode` (zero padding is PyTorch's default)"),
                        );
                    }
                }
                LayerKind::Conv2d(Conv2d {
                    in_channels: in_channels?,
                    out_channels: out_channels?,
                    kernel_size: kernel_size?,
                    stride: stride?,
                    padding: padding?,
                    dilation: dilation?,
                    groups: groups?,
                    bias: bias?,
                })
            }
            "maxpool2d" | "avgpool2d" => {
                let kernel_size = self.req_pair(a, "kernel_size", 1)?;
                let stride = match a.vals.get("stride") {
                    Some(_) => self.pair_or(a, "stride", 1, [1, 1])?,
                    None => Attr {
                        value: kernel_size.value,
                        span: None,
                    },
                };
                let padding = self.pair_or(a, "padding", 0, [0, 0])?;
                let dilation = self.pair_or(a, "dilation", 1, [1, 1])?;
                let ceil_mode = self.bool_or(a, "ceil_mode", false)?;
                let count_include_pad = self.bool_or(a, "count_include_pad", true)?;
                if let Some(v) = a.vals.get("return_indices")
                    && matches!(v.value.kind, ValueKind::Bool(true))
                {
                    self.diags.push(
                        Diagnostic::new(
                            codes::INVALID_VALUE,
                            "`return_indices = true` is not supported in a sequential model",
                        )
                        .primary(v.value.span, "would return a tuple")
                        .help("remove `return_indices`"),
                    );
                    return None;
                }
                let kind = if a.kind == "maxpool2d" {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                };
                LayerKind::Pool2d(Pool2d {
                    kind,
                    kernel_size,
                    stride,
                    padding,
                    dilation,
                    ceil_mode,
                    count_include_pad,
                })
            }
            "adaptive_avgpool2d" => LayerKind::AdaptiveAvgPool2d {
                output_size: self.req_pair(a, "output_size", 1)?,
            },
            "batchnorm2d" => {
                let num_features = self.opt_size(a, "num_features", 1);
                let eps = self.float_or(a, "eps", 1e-5, |x| x > 0.0, "must be greater than 0");
                let momentum = self.float_or(
                    a,
                    "momentum",
                    0.1,
                    |x| (0.0..=1.0).contains(&x),
                    "must be between 0 and 1",
                );
                LayerKind::BatchNorm2d(BatchNorm2d {
                    num_features: num_features?,
                    eps: eps?,
                    momentum: momentum?,
                })
            }
            "relu" => LayerKind::Relu,
            "leaky_relu" => LayerKind::LeakyRelu {
                negative_slope: self.float_or(
                    a,
                    "negative_slope",
                    0.01,
                    f64::is_finite,
                    "must be a finite number",
                )?,
            },
            "sigmoid" => LayerKind::Sigmoid,
            "tanh" => LayerKind::Tanh,
            "gelu" => {
                if let Some(v) = a.vals.get("approximate")
                    && !matches!(&v.value.kind, ValueKind::Word(w) if w == "none")
                {
                    self.diags.push(
                        Diagnostic::new(
                            codes::INVALID_VALUE,
                            "only the exact GELU (`approximate = none`) is supported",
                        )
                        .primary(v.value.span, "unsupported approximation"),
                    );
                    return None;
                }
                LayerKind::Gelu
            }
            "dropout" => LayerKind::Dropout {
                p: self.float_or(
                    a,
                    "p",
                    0.5,
                    |x| (0.0..=1.0).contains(&x),
                    "must be between 0 and 1",
                )?,
            },
            "flatten" => LayerKind::Flatten,
            "linear" => {
                let in_features = self.opt_size(a, "in_features", 1);
                let out_features = self.req_size(a, "out_features", 1);
                let bias = self.bool_or(a, "bias", true);
                let in_features_factors =
                    a.vals
                        .get("in_features")
                        .and_then(|arg| match &arg.value.kind {
                            ValueKind::Int(e) => e.product_factors(),
                            _ => None,
                        });
                LayerKind::Linear(Linear {
                    in_features: in_features?,
                    in_features_factors,
                    out_features: out_features?,
                    bias: bias?,
                })
            }
            "softmax" | "log_softmax" => {
                let dim = match a.vals.get("dim") {
                    Some(v) => Attr {
                        value: self.int(&v.value, "dim")?,
                        span: Some(v.value.span),
                    },
                    None => Attr::default_value(1),
                };
                if a.kind == "softmax" {
                    LayerKind::Softmax { dim }
                } else {
                    LayerKind::LogSoftmax { dim }
                }
            }
            _ => return None,
        })
    }

    // ---- typed extraction -------------------------------------------------------------------

    fn int(&mut self, v: &Value, name: &str) -> Option<i64> {
        match &v.kind {
            ValueKind::Int(e) => match e.eval() {
                Ok(x) => Some(x),
                Err(EvalError::Overflow(s)) => {
                    self.diags.push(
                        Diagnostic::new(
                            codes::OVERFLOW,
                            format!("`{name}` overflows a 64-bit integer"),
                        )
                        .primary(s, "this value does not fit in 64 bits"),
                    );
                    None
                }
                Err(EvalError::DivByZero(s)) => {
                    self.diags.push(
                        Diagnostic::new(
                            codes::BAD_EXPRESSION,
                            format!("division by zero in `{name}`"),
                        )
                        .primary(s, "divides by zero"),
                    );
                    None
                }
                Err(EvalError::Inexact { span, lhs, rhs }) => {
                    self.diags.push(
                        Diagnostic::new(
                            codes::BAD_EXPRESSION,
                            format!("{lhs} / {rhs} is not a whole number"),
                        )
                        .primary(
                            span,
                            format!("{lhs} / {rhs} leaves a remainder of {}", lhs % rhs),
                        )
                        .help("sizes are whole numbers: write the value you mean"),
                    );
                    None
                }
            },
            other => {
                self.diags.push(
                    Diagnostic::new(
                        codes::ATTRIBUTE_TYPE,
                        format!("`{name}` must be an integer, found {}", other.describe()),
                    )
                    .primary(
                        v.span,
                        format!("expected an integer, found {}", other.describe()),
                    ),
                );
                None
            }
        }
    }

    fn size(&mut self, v: &Value, name: &str, min: u64) -> Option<u64> {
        let x = self.int(v, name)?;
        if x < min as i64 {
            let what = if min == 0 {
                "cannot be negative"
            } else {
                "must be at least 1"
            };
            let mut d =
                Diagnostic::new(codes::INVALID_VALUE, format!("`{name}` {what}, found {x}"))
                    .primary(v.span, format!("this is {x}"));
            if name == "stride" && x == 0 {
                d = d.help("a stride of 0 would never move the window: use 1 for no downsampling");
            }
            self.diags.push(d);
            return None;
        }
        Some(x as u64)
    }

    fn pair(&mut self, v: &Value, name: &str, min: u64) -> Option<[u64; 2]> {
        match &v.kind {
            ValueKind::List(items) if items.len() == 2 => {
                let h = self.size(&items[0], name, min);
                let w = self.size(&items[1], name, min);
                Some([h?, w?])
            }
            ValueKind::List(items) => {
                self.diags.push(
                    Diagnostic::new(
                        codes::ATTRIBUTE_TYPE,
                        format!(
                            "`{name}` takes one number or `[height, width]`, found {} values",
                            items.len()
                        ),
                    )
                    .primary(v.span, "expected 1 or 2 values"),
                );
                None
            }
            _ => self.size(v, name, min).map(|x| [x, x]),
        }
    }

    fn opt_size(&mut self, a: &Args<'_>, name: &str, min: u64) -> Option<Option<Attr<u64>>> {
        match a.vals.get(name) {
            None => Some(None),
            Some(arg) => self.size(&arg.value, name, min).map(|x| {
                Some(Attr {
                    value: x,
                    span: Some(arg.value.span),
                })
            }),
        }
    }

    fn missing(&mut self, a: &Args<'_>, name: &str) {
        let example = match name {
            "out_channels" => "16",
            "kernel_size" => "3",
            "out_features" => "10",
            "output_size" => "[1, 1]",
            _ => "…",
        };
        self.diags.push(
            Diagnostic::new(
                codes::MISSING_ATTRIBUTE,
                format!("`{}` needs `{name}`", a.kind),
            )
            .primary(a.layer.kind.span, format!("`{name}` is not given"))
            .help(format!(
                "add `{name}`, e.g. `{}({name} = {example}, …)`",
                a.kind
            )),
        );
    }

    fn req_size(&mut self, a: &Args<'_>, name: &str, min: u64) -> Option<Attr<u64>> {
        match a.vals.get(name) {
            None => {
                self.missing(a, name);
                None
            }
            Some(arg) => self.size(&arg.value, name, min).map(|x| Attr {
                value: x,
                span: Some(arg.value.span),
            }),
        }
    }

    fn size_or(&mut self, a: &Args<'_>, name: &str, min: u64, default: u64) -> Option<Attr<u64>> {
        match a.vals.get(name) {
            None => Some(Attr::default_value(default)),
            Some(arg) => self.size(&arg.value, name, min).map(|x| Attr {
                value: x,
                span: Some(arg.value.span),
            }),
        }
    }

    fn req_pair(&mut self, a: &Args<'_>, name: &str, min: u64) -> Option<Attr<[u64; 2]>> {
        match a.vals.get(name) {
            None => {
                self.missing(a, name);
                None
            }
            Some(arg) => self.pair(&arg.value, name, min).map(|x| Attr {
                value: x,
                span: Some(arg.value.span),
            }),
        }
    }

    fn pair_or(
        &mut self,
        a: &Args<'_>,
        name: &str,
        min: u64,
        default: [u64; 2],
    ) -> Option<Attr<[u64; 2]>> {
        match a.vals.get(name) {
            None => Some(Attr::default_value(default)),
            Some(arg) => self.pair(&arg.value, name, min).map(|x| Attr {
                value: x,
                span: Some(arg.value.span),
            }),
        }
    }

    fn conv_padding(&mut self, a: &Args<'_>) -> Option<Attr<Padding>> {
        let Some(arg) = a.vals.get("padding") else {
            return Some(Attr::default_value(Padding::Explicit([0, 0])));
        };
        let span = Some(arg.value.span);
        match &arg.value.kind {
            ValueKind::Word(w) if w == "same" => Some(Attr {
                value: Padding::Same,
                span,
            }),
            ValueKind::Word(w) if w == "valid" => Some(Attr {
                value: Padding::Valid,
                span,
            }),
            ValueKind::Word(w) => {
                let mut d =
                    Diagnostic::new(codes::ATTRIBUTE_TYPE, format!("unknown padding `{w}`"))
                        .primary(
                            arg.value.span,
                            "expected a number, `[h, w]`, `same` or `valid`",
                        );
                if let Some(s) = did_you_mean(w, ["same", "valid"]) {
                    d = d
                        .help(format!("did you mean `{s}`?"))
                        .suggest(arg.value.span, s);
                }
                self.diags.push(d);
                None
            }
            _ => self.pair(&arg.value, "padding", 0).map(|p| Attr {
                value: Padding::Explicit(p),
                span,
            }),
        }
    }

    fn bool_or(&mut self, a: &Args<'_>, name: &str, default: bool) -> Option<bool> {
        match a.vals.get(name) {
            None => Some(default),
            Some(arg) => match &arg.value.kind {
                ValueKind::Bool(b) => Some(*b),
                other => {
                    self.diags.push(
                        Diagnostic::new(
                            codes::ATTRIBUTE_TYPE,
                            format!(
                                "`{name}` must be `true` or `false`, found {}",
                                other.describe()
                            ),
                        )
                        .primary(arg.value.span, "expected `true` or `false`"),
                    );
                    None
                }
            },
        }
    }

    fn float_or(
        &mut self,
        a: &Args<'_>,
        name: &str,
        default: f64,
        ok: impl Fn(f64) -> bool,
        rule: &str,
    ) -> Option<f64> {
        let Some(arg) = a.vals.get(name) else {
            return Some(default);
        };
        let x = match &arg.value.kind {
            ValueKind::Float(x) => *x,
            ValueKind::Int(e) => match e.eval() {
                Ok(i) => i as f64,
                Err(_) => return self.int(&arg.value, name).map(|i| i as f64),
            },
            other => {
                self.diags.push(
                    Diagnostic::new(
                        codes::ATTRIBUTE_TYPE,
                        format!("`{name}` must be a number, found {}", other.describe()),
                    )
                    .primary(arg.value.span, "expected a number"),
                );
                return None;
            }
        };
        if !ok(x) {
            self.diags.push(
                Diagnostic::new(codes::INVALID_VALUE, format!("`{name}` {rule}, found {x}"))
                    .primary(arg.value.span, format!("this is {x}")),
            );
            return None;
        }
        Some(x)
    }

    fn dims(&mut self, v: &Value, name: &str) -> Option<Attr<Dims>> {
        let ValueKind::List(items) = &v.kind else {
            self.diags.push(
                Diagnostic::new(
                    codes::BAD_INPUT,
                    format!(
                        "`{name}` must be a list such as `[1, 28, 28]`, found {}",
                        v.kind.describe()
                    ),
                )
                .primary(v.span, "expected `[C, H, W]` or `[features]`"),
            );
            return None;
        };
        if items.len() != 1 && items.len() != 3 {
            self.diags.push(
                Diagnostic::new(
                    codes::BAD_INPUT,
                    format!(
                        "`{name}` has {} dimensions; expected 3 (`[C, H, W]`) or 1 (`[features]`)",
                        items.len()
                    ),
                )
                .primary(v.span, "the batch dimension is implicit: leave it out"),
            );
            return None;
        }
        let mut dims = Vec::new();
        for it in items {
            dims.push(self.size(it, name, 1));
        }
        let dims: Option<Vec<u64>> = dims.into_iter().collect();
        Some(Attr {
            value: dims?,
            span: Some(v.span),
        })
    }
}

struct Args<'a> {
    vals: HashMap<&'static str, &'a Arg>,
    layer: &'a LayerSpec,
    kind: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SourceId;

    fn lower_dsl(text: &str) -> Result<Model, Vec<Diagnostic>> {
        let spec = crate::dsl::parse_model(text, SourceId(0)).map_err(|d| vec![d])?;
        lower(&spec, Syntax::Dsl)
    }

    #[test]
    fn positional_follows_pytorch_order_and_paths_follow_state_dict() {
        let m = lower_dsl("model M(input = [3, 32, 32]) { block f { Conv2d(3, 8, 3), ReLU, max_pool2d(2) } flatten, head: linear(8*15*15, 10) }").unwrap();
        let paths: Vec<_> = m.layers.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["f.0", "f.1", "f.2", "1", "head"]);
        let LayerKind::Conv2d(c) = &m.layers[0].kind else {
            panic!()
        };
        assert_eq!(c.in_channels.map(|a| a.value), Some(3));
        assert_eq!(c.out_channels.value, 8);
        assert_eq!(c.kernel_size.value, [3, 3]);
        let LayerKind::Pool2d(p) = &m.layers[2].kind else {
            panic!()
        };
        assert_eq!(p.stride.value, [2, 2], "stride defaults to kernel_size");
    }

    #[test]
    fn reports_every_problem() {
        let e = lower_dsl("model M(input = [1, 8, 8]) { conv(4, 3), conv2d(out_channels = 4, kernel_sise = 3), maxpool2d(2, stride = 0), linear(in_features = 2, bias = 1) }").unwrap_err();
        let ids: Vec<_> = e.iter().map(|d| d.code.id).collect();
        assert!(ids.contains(&"CNN0101"), "{ids:?}"); // conv → did you mean conv2d
        assert!(ids.contains(&"CNN0102"), "{ids:?}"); // kernel_sise
        assert!(ids.contains(&"CNN0108"), "{ids:?}"); // stride 0
        assert!(ids.contains(&"CNN0104"), "{ids:?}"); // out_features missing
        assert!(ids.contains(&"CNN0103"), "{ids:?}"); // bias = 1
        let unknown = e.iter().find(|d| d.code.id == "CNN0101").unwrap();
        assert_eq!(unknown.help.as_deref(), Some("did you mean `conv2d`?"));
    }

    #[test]
    fn duplicate_names_are_errors() {
        let e = lower_dsl("model M(input = [4]) { a: linear(4, 4), a: linear(4, 4) }").unwrap_err();
        assert_eq!(e[0].code.id, "CNN0109");
    }
}
