//! The shape checker: [`check`] walks the model once, computing every layer's output shape with
//! the formulas in [`rules`], and is the only way to make a [`CheckedModel`]. Codegen, summaries
//! and the runtime take a `CheckedModel`, so "forgot to check" does not compile.

pub use cnn_ir::rules;

mod layers;
use layers::LayerCx;

use crate::diag::{Diagnostic, codes};
use crate::geom::{AdaptivePoolGeom, BatchNormGeom, Conv2dGeom, LinearGeom, Pool2dGeom};
use crate::ir::{Attr, Dims, Layer, LayerKind, Model, PoolKind};
use crate::span::{Span, Syntax};
use rules::RuleError;

pub use cnn_ir::checked::{Activation, CheckedLayer, CheckedModel, Op, ParamTensor, TensorRole};

/// Everything the checker learned, also when it failed: the layers it could check (for
/// `summary` on a broken spec) and the diagnostics.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Layers checked successfully, in order, up to the first layer whose output is unknown.
    pub layers: Vec<CheckedLayer>,
    /// Index (into the model's layers) of the first failing layer.
    pub failed_at: Option<usize>,
    /// All diagnostics.
    pub diagnostics: Vec<Diagnostic>,
}

/// Formats dims as `[16,28,28]` for traces.
pub fn fmt_dims(d: &[u64]) -> String {
    format!(
        "[{}]",
        d.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    )
}

/// Formats dims as `64×7×7` for prose.
pub fn fmt_times(d: &[u64]) -> String {
    d.iter().map(u64::to_string).collect::<Vec<_>>().join("×")
}

/// Checks a model; on success every layer's shapes and sizes are resolved.
pub fn check(model: Model) -> Result<CheckedModel, Vec<Diagnostic>> {
    let report = check_report(&model);
    if report.diagnostics.is_empty() {
        let input_origins = input_origins(&model);
        Ok(CheckedModel::from_checker(
            model,
            report.layers,
            input_origins,
        ))
    } else {
        Err(report.diagnostics)
    }
}

fn input_origins(model: &Model) -> Vec<String> {
    let d = &model.input.value;
    if d.len() == 3 {
        vec![
            format!("{} channels: model input", d[0]),
            format!("height {}: model input", d[1]),
            format!("width {}: model input", d[2]),
        ]
    } else {
        d.iter()
            .map(|x| format!("{x} features: model input"))
            .collect()
    }
}

/// Checks as far as possible and reports everything.
pub fn check_report(model: &Model) -> CheckReport {
    let mut cx = Checker {
        model,
        trace: Vec::new(),
        diags: Vec::new(),
        channel_origin: match model.input.value.as_slice() {
            [c, _, _] => format!(
                "the model input has {c} channel{}",
                if *c == 1 { "" } else { "s" }
            ),
            _ => "the model input is a flat vector".to_string(),
        },
    };
    let mut cur = model.input.value.clone();
    let mut origins = input_origins(model);
    let mut layers = Vec::new();
    let mut failed_at = None;
    for (i, layer) in model.layers.iter().enumerate() {
        let prev_top = if i > 0 {
            Some(&model.layers[i - 1])
        } else {
            None
        };
        match cx.layer(layer, &cur, &origins, prev_top) {
            Ok(checked) => {
                if checked.output != cur {
                    cx.trace.push((layer.path.clone(), checked.output.clone()));
                }
                cur = checked.output.clone();
                origins = checked.origins.clone();
                layers.push(checked);
            }
            Err(recovered) => {
                failed_at.get_or_insert(i);
                match *recovered {
                    // The output is known despite the error: keep checking the rest.
                    Some(checked) => {
                        if checked.output != cur {
                            cx.trace.push((layer.path.clone(), checked.output.clone()));
                        }
                        cur = checked.output.clone();
                        origins = checked.origins.clone();
                    }
                    None => break,
                }
            }
        }
    }
    if failed_at.is_none()
        && let Some(decl) = &model.output
        && decl.value != cur
    {
        let last = model
            .layers
            .last()
            .map_or("the input".to_string(), |l| format!("`{}`", l.path));
        let span = decl.span.unwrap_or(model.name_span);
        cx.diags.push(
            Diagnostic::new(
                codes::OUTPUT_MISMATCH,
                format!(
                    "model `{}` declares output {} but produces {}",
                    model.name,
                    fmt_dims(&decl.value),
                    fmt_dims(&cur)
                ),
            )
            .primary(span, format!("declared {}", fmt_dims(&decl.value)))
            .note(format!(
                "{last} produces {}\n{}",
                fmt_dims(&cur),
                cx.trace_line(&model.input.value)
            )),
        );
        failed_at = Some(model.layers.len());
    }
    CheckReport {
        layers,
        failed_at,
        diagnostics: cx.diags,
    }
}

struct Checker<'m> {
    model: &'m Model,
    trace: Vec<(String, Dims)>,
    diags: Vec<Diagnostic>,
    channel_origin: String,
}

/// `Err(Some(layer))`: the layer has an error but its output is known, so checking goes on.
type LayerResult = Result<CheckedLayer, Box<Option<CheckedLayer>>>;

fn us(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

impl Checker<'_> {
    fn syntax(&self) -> Syntax {
        self.model.syntax
    }

    /// `[1,28,28] → conv1.0 → [16,28,28] → … → conv3.0 → [64,7,7]`
    fn trace_line(&self, input: &[u64]) -> String {
        self.trace_upto(input, self.trace.len())
    }

    /// The trace of the first `n` shape changes.
    fn trace_upto(&self, input: &[u64], n: usize) -> String {
        let steps: Vec<String> = self.trace[..n.min(self.trace.len())]
            .iter()
            .map(|(p, d)| format!("{p} → {}", fmt_dims(d)))
            .collect();
        let body = if steps.len() > 4 {
            format!(
                "{} → {} → … → {}",
                steps[0],
                steps[1],
                steps[steps.len() - 1]
            )
        } else {
            steps.join(" → ")
        };
        if body.is_empty() {
            fmt_dims(input)
        } else {
            format!("{} → {body}", fmt_dims(input))
        }
    }

    fn span_or(&self, attr: Option<Span>, layer: &Layer) -> Span {
        attr.unwrap_or(layer.span)
    }

    fn rule_error(&mut self, layer: &Layer, input: &[u64], e: RuleError, attr_span: Option<Span>) {
        let kind = layer.kind.name();
        let trace = self.trace_line(&self.model.input.value);
        let d = match e {
            RuleError::NeedsImage => {
                let from = self.trace.last().map_or("the model input".to_string(), |(p, _)| format!("`{p}`"));
                Diagnostic::new(codes::NEEDS_IMAGE, format!("{} ({kind}) needs a [channels, height, width] input, but its input is {} features", display_path(&layer.path), fmt_times(input)))
                    .primary(layer.span, "needs an image-shaped input")
                    .note(format!("{from} produces a flat vector\n{trace}"))
                    .help(format!("move `{kind}` before `flatten`, or remove it"))
            }
            RuleError::Groups { groups, channels, which } => {
                let g = gcd(groups, channels);
                Diagnostic::new(codes::GROUPS, format!("{} ({kind}) has groups = {groups}, which does not divide its {channels} {which} channels", display_path(&layer.path)))
                    .primary(self.span_or(attr_span, layer), format!("{channels} is not a multiple of {groups}"))
                    .note(trace)
                    .help(format!("use a `groups` that divides both channel counts (e.g. {})", g.max(1)))
            }
            RuleError::KernelTooLarge { axis, input: size, padding, window } => {
                let padded = size + padding;
                Diagnostic::new(codes::KERNEL_TOO_LARGE, format!("{} ({kind}) window {window} does not fit its input {axis} {size}{}", display_path(&layer.path), if padding > 0 { format!(" (padded to {padded})") } else { String::new() }))
                    .primary(self.span_or(attr_span, layer), format!("{window} > {padded}"))
                    .note(format!("the input of {} is {}\n{trace}", display_path(&layer.path), fmt_dims(input)))
                    .help(format!("use a window of at most {padded}, add padding of at least {} per side, or remove a downsampling layer before it", (window - size).div_ceil(2)))
            }
            RuleError::PoolPadding { axis, padding, window } => Diagnostic::new(codes::POOL_PADDING, format!("{} ({kind}) pads {padding} along {axis}, more than half its window {window}", display_path(&layer.path)))
                .primary(self.span_or(attr_span, layer), format!("at most {} allowed", window / 2))
                .help(format!("use padding of at most {} (PyTorch's limit: half the window)", window / 2)),
            RuleError::SameWithStride => Diagnostic::new(codes::INVALID_VALUE, format!("{} ({kind}) uses `padding = same` with a stride other than 1", display_path(&layer.path)))
                .primary(self.span_or(attr_span, layer), "`same` needs stride 1")
                .help("PyTorch supports `same` only for stride 1: give the padding as a number instead"),
            RuleError::Overflow => Diagnostic::new(codes::OVERFLOW, format!("the output of {} ({kind}) is too large: a dimension overflows 64 bits", display_path(&layer.path)))
                .primary(layer.span, "overflows")
                .note(trace),
            RuleError::NeedsFlat => {
                let mut d = Diagnostic::new(codes::LINEAR_NEEDS_FLAT, format!("{} (linear) gets a {} input; it needs a flat vector", display_path(&layer.path), fmt_dims(input)))
                    .primary(layer.span, format!("input is {}", fmt_dims(input)))
                    .note(trace)
                    .help(format!("insert `flatten` before {} ({} features)", display_path(&layer.path), fmt_times(input)));
                if self.syntax() == Syntax::Dsl {
                    d = d.suggest(Span { hi: layer.span.lo, ..layer.span }, "flatten, ");
                }
                d
            }
            RuleError::BadDim { dim, rank } => Diagnostic::new(codes::BAD_DIM, format!("{} ({kind}) has dim = {dim}, out of range for a {rank}-dimensional input (batch included)", display_path(&layer.path)))
                .primary(self.span_or(attr_span, layer), format!("valid: 1..{} or -{}..-1", rank - 1, rank - 1))
                .help("dim 0 is the batch; use 1 (or -1) for the features of a flat input"),
            RuleError::ChannelMismatch { .. } | RuleError::Features { .. } => return,
        };
        self.diags.push(d);
    }

    fn layer(
        &mut self,
        layer: &Layer,
        input: &[u64],
        origins: &[String],
        prev: Option<&Layer>,
    ) -> LayerResult {
        let mut cx = LayerCx {
            layer,
            input,
            origins,
            prev,
            tensors: Vec::new(),
            recovered_error: false,
        };
        let (output, op, params, macs, new_origins) = match self.arm(&mut cx) {
            Ok(arm) => arm,
            Err((e, span)) => {
                self.rule_error(layer, input, e, span);
                return Err(Box::new(None));
            }
        };
        let checked = CheckedLayer {
            layer: layer.clone(),
            input: input.to_vec(),
            output,
            op,
            params,
            macs,
            tensors: cx.tensors,
            origins: new_origins,
        };
        if cx.recovered_error {
            Err(Box::new(Some(checked)))
        } else {
            Ok(checked)
        }
    }

    fn channel_mismatch(&mut self, layer: &Layer, decl: Attr<u64>, actual: u64, attr: &str) {
        let span = decl.span.unwrap_or(layer.span);
        let trace = self.trace_line(&self.model.input.value);
        let what = if attr == "num_features" {
            "features (channels)"
        } else {
            "input channels"
        };
        self.diags.push(
            Diagnostic::new(
                codes::CHANNEL_MISMATCH,
                format!(
                    "{} ({}) expects {} {what}, but its input has {actual}",
                    display_path(&layer.path),
                    layer.kind.name(),
                    decl.value
                ),
            )
            .primary(span, format!("declared {}", decl.value))
            .note(format!("{}\n{trace}", self.channel_origin))
            .help(format!(
                "write `{}` (or leave it out to infer it)",
                self.syntax().assign(attr, &actual.to_string())
            ))
            .suggest(span, actual.to_string()),
        );
    }

    fn features_mismatch(
        &mut self,
        layer: &Layer,
        decl: Attr<u64>,
        factors: Option<&[String]>,
        actual: u64,
        prev: Option<&Layer>,
    ) {
        let span = decl.span.unwrap_or(layer.span);
        // After a flatten, the trace ends at the layer whose output was flattened.
        let flattened = prev.is_some_and(|p| {
            matches!(p.kind, LayerKind::Flatten)
                && self.trace.last().is_some_and(|(path, _)| path == &p.path)
        });
        let trace = self.trace_upto(
            &self.model.input.value,
            self.trace.len() - usize::from(flattened),
        );
        let declared_text = match factors {
            Some(f) if f.len() > 1 => format!("declared {} = {}", f.join("×"), decl.value),
            _ => format!("declared {}", decl.value),
        };
        // Where the real count comes from: the shape before a flatten, spelt as a product.
        let before_flatten = match prev {
            Some(p) if matches!(p.kind, LayerKind::Flatten) => {
                let idx = self.trace.iter().rposition(|(path, _)| path == &p.path);
                let pre = match idx {
                    Some(i) if i > 0 => Some(self.trace[i - 1].clone()),
                    Some(_) => Some((
                        String::from("the model input"),
                        self.model.input.value.clone(),
                    )),
                    None => None,
                };
                pre.map(|(path, dims)| {
                    let owner = self
                        .model
                        .layers
                        .iter()
                        .find(|l| l.path == path)
                        .map_or(path.clone(), |l| l.top.clone());
                    (owner, dims)
                })
            }
            _ => None,
        };
        let (note, fix) = match before_flatten {
            Some((owner, dims)) if dims.len() > 1 => {
                let who = if owner == "the model input" {
                    owner
                } else {
                    let plain = display_path(&owner).replace('`', "");
                    format!("{plain}'s")
                };
                (
                    format!(
                        "flatten turns {who} output {} into {actual} features",
                        fmt_times(&dims)
                    ),
                    dims.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join("*"),
                )
            }
            _ => {
                let who = prev.map_or("the model input".to_string(), |p| format!("`{}`", p.path));
                (
                    format!("{who} produces {actual} features"),
                    actual.to_string(),
                )
            }
        };
        self.diags.push(
            Diagnostic::new(
                codes::LINEAR_FEATURES,
                format!(
                    "{} (linear) expects {} input features, but its input has {actual}",
                    display_path(&layer.path),
                    decl.value
                ),
            )
            .primary(span, declared_text)
            .note(format!("{note}\n{trace}"))
            .help(format!(
                "write `{}` (or leave it out to infer it)",
                self.syntax().assign("in_features", &fix)
            ))
            .suggest(span, fix),
        );
    }
}

/// How a layer is named in messages: `` `conv1.0` `` or, for an unnamed top-level layer,
/// `layer 3` (its index, as in `nn.Sequential`).
pub fn display_path(path: &str) -> String {
    if path.chars().all(|c| c.is_ascii_digit()) {
        format!("layer {path}")
    } else {
        format!("`{path}`")
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn pair(p: [u64; 2]) -> String {
    if p[0] == p[1] {
        p[0].to_string()
    } else {
        format!("{}x{}", p[0], p[1])
    }
}

fn pad_desc(p: [u64; 4]) -> String {
    let (th, tw) = (p[2], p[3]);
    if th == 2 * p[0] && tw == 2 * p[1] {
        pair([p[0], p[1]])
    } else {
        format!("{}+{}x{}+{}", p[0], th - p[0], p[1], tw - p[1])
    }
}

/// Extends a dimension's history: `height 28: model input → conv1.2 (maxpool k2 s2) → 14`.
fn step(prev: &str, desc: &str, new: u64) -> String {
    let (label, rest) = prev.split_once(':').unwrap_or((prev, ""));
    let word = label.split_whitespace().next().unwrap_or("");
    let old: Option<u64> = label.split_whitespace().nth(1).and_then(|x| x.parse().ok());
    if old == Some(new) && desc.contains("conv") && !rest.contains('→') {
        // Unchanged by a size-preserving conv: keep the history short.
        return prev.to_string();
    }
    if old == Some(new) {
        return prev.to_string();
    }
    format!("{word} {new}:{rest} → {desc} → {new}")
}
