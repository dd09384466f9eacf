//! Diagnostics: plain data, rendered three ways (terminal via annotate-snippets, JSON, and
//! `syn::Error` in the macro front-end).
//!
//! The anatomy is rustc's: `error[CNN0301]: message` → `--> file:line:col` → the snippet with a
//! primary label → `= note:` lines (the shape trace) → `= help:` (the fix).

use crate::span::{SourceMap, Span};
use annotate_snippets::{AnnotationKind, Group, Level, Patch, Renderer, Snippet};
use serde_json::json;

/// A stable error code with its one-line title and long explanation (`cnnc --explain CODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    /// `CNN0301`.
    pub id: &'static str,
    /// Longer explanation, shown by `cnnc --explain`.
    pub explanation: &'static str,
}

macro_rules! codes {
    ($($name:ident = $id:literal : $text:literal;)*) => {
        /// Every diagnostic code `cnn` emits.
        pub mod codes {
            use super::Code;
            $(
                #[doc = $text]
                pub const $name: Code = Code { id: $id, explanation: $text };
            )*
            /// All codes, for `--explain` and tests.
            pub const ALL: &[Code] = &[$($name),*];
        }
    };
}

codes! {
    YAML_SYNTAX = "CNN0001": "The YAML file could not be parsed: a syntax error such as bad indentation, an unclosed bracket or a tab used for indentation. The position points at the first character the parser could not accept.";
    DSL_SYNTAX = "CNN0002": "The `.cnn` text (or the body of `cnn! { … }`) does not follow the grammar. A model reads `model Name(input = [C, H, W]) { layer(args), block name { … }, name: layer(args) }`; the message lists what the parser expected at that position.";
    SPEC_STRUCTURE = "CNN0003": "The spec is valid YAML but not a model: a top-level `name`, `input` and `layers` are required, `layers` is a list, and each entry is a layer name (`relu`), a one-key mapping (`conv2d: { … }` or `maxpool2d: 2`) or a block (`block: name` with `layers:`).";
    TOO_DEEP = "CNN0004": "The spec nests brackets, lists, YAML mappings or blocks more than 64 levels deep. cnn refuses such input before reading it recursively, so that no file (and no `cnn!` invocation) can overflow the stack. Real models nest a few levels; write a deep expression as its value and flatten deep blocks. Long flat sequences such as `1+1+…+1` are not nesting and have no limit.";
    UNKNOWN_LAYER = "CNN0101": "The layer kind is not one that cnn knows. Layer names follow PyTorch's modules in snake case: conv2d, maxpool2d, avgpool2d, adaptive_avgpool2d, batchnorm2d, relu, leaky_relu, sigmoid, tanh, gelu, dropout, flatten, linear, softmax, log_softmax.";
    UNKNOWN_ATTRIBUTE = "CNN0102": "The layer has no attribute of that name. Attribute names follow the keyword arguments of the PyTorch module (for example `nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)`).";
    ATTRIBUTE_TYPE = "CNN0103": "An attribute has a value of the wrong type: sizes are whole numbers or integer expressions (`64*7*7`), pairs are a number or `[h, w]`, `padding` also accepts `same` or `valid`, flags are `true`/`false`, rates are decimal numbers.";
    MISSING_ATTRIBUTE = "CNN0104": "A required attribute is missing, for example `out_channels` and `kernel_size` of conv2d or `out_features` of linear. Attributes that the checker can infer (`in_channels`, `in_features`, `num_features`) may be left out.";
    DUPLICATE_ATTRIBUTE = "CNN0105": "An attribute is given twice, or more positional arguments are given than the layer takes.";
    BAD_EXPRESSION = "CNN0106": "An integer expression cannot be evaluated: division by zero or a division that is not exact (sizes are whole numbers; write the value you mean).";
    OVERFLOW = "CNN0107": "A number or a computed dimension does not fit: sizes must stay below 2^63, and products such as channels × height × width are checked for overflow.";
    INVALID_VALUE = "CNN0108": "An attribute has a value the layer cannot accept: sizes, strides, dilations and groups must be at least 1, padding at least 0, dropout `p` between 0 and 1.";
    BAD_MODEL_NAME = "CNN0110": "The model name becomes a Rust type name in generated code, so it must be an identifier: letters, digits and underscores, not starting with a digit, and not a Rust keyword. `SeedCnn` is a good name.";
    DUPLICATE_NAME = "CNN0109": "Two layers or blocks at the same level share a name, so their parameters would share `state_dict` keys. Rename one.";
    CHANNEL_MISMATCH = "CNN0201": "A conv2d declares `in_channels` (or a batchnorm2d `num_features`) that differs from the channel count its input really has. Fix the number, or leave the attribute out and let the checker infer it.";
    KERNEL_TOO_LARGE = "CNN0202": "The (dilated) kernel or pooling window is larger than the padded input, so the layer would produce no output. Use a smaller kernel, more padding, or remove a downsampling layer before it.";
    GROUPS = "CNN0203": "`groups` must divide both the input and the output channels of a conv2d.";
    POOL_PADDING = "CNN0204": "PyTorch requires pooling padding to be at most half the (effective) kernel size; larger padding would create windows that see only padding.";
    NEEDS_IMAGE = "CNN0205": "A spatial layer (conv2d, pooling, batchnorm2d) needs a [channels, height, width] input, but its input is a flat feature vector (it comes after `flatten` or `linear`).";
    BAD_DIM = "CNN0206": "`dim` is out of range for the layer's input. Dimensions count the batch as 0, as in PyTorch; negative values count from the end.";
    BAD_INPUT = "CNN0207": "The model's `input` must be `[channels, height, width]` or `[features]` with every size at least 1 (the batch dimension is implicit).";
    LINEAR_FEATURES = "CNN0301": "A linear layer declares `in_features` that differ from the number of features its input really has. The note traces where that number comes from; fix the declaration or leave it out to infer it.";
    LINEAR_NEEDS_FLAT = "CNN0302": "A linear layer receives a [channels, height, width] input. PyTorch's `nn.Linear` would apply to the last dimension only, which is almost never what a CNN means: insert `flatten` before it.";
    OUTPUT_MISMATCH = "CNN0303": "The model declares an output shape (`-> [10]`) that differs from what its layers produce.";
}

/// A label under a span of source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// What is underlined.
    pub span: Span,
    /// The text beside the underline (may be empty).
    pub text: String,
}

/// A machine-applicable fix: replace `span` with `replacement`.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// What to replace.
    pub span: Span,
    /// The replacement text.
    pub replacement: String,
}

/// One error, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Lowercase message, no trailing period.
    pub message: String,
    /// The primary label (the offending token), if the error has a place.
    pub primary: Option<Label>,
    /// Secondary labels (context, e.g. "in this layer").
    pub secondary: Vec<Label>,
    /// `= note:` lines, e.g. the shape trace.
    pub notes: Vec<String>,
    /// `= help:` line: the fix.
    pub help: Option<String>,
    /// A replacement the fix amounts to, where one exists.
    pub suggestion: Option<Suggestion>,
}

impl Diagnostic {
    /// A diagnostic with a code and message and nothing else yet.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
            suggestion: None,
        }
    }
    /// Sets the primary label.
    pub fn primary(mut self, span: Span, text: impl Into<String>) -> Self {
        self.primary = Some(Label {
            span,
            text: text.into(),
        });
        self
    }
    /// Adds a secondary label.
    pub fn secondary(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            text: text.into(),
        });
        self
    }
    /// Adds a note.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }
    /// Sets the help text.
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help = Some(text.into());
        self
    }
    /// Sets a machine-applicable suggestion.
    pub fn suggest(mut self, span: Span, replacement: impl Into<String>) -> Self {
        self.suggestion = Some(Suggestion {
            span,
            replacement: replacement.into(),
        });
        self
    }

    /// `file:line:col` of the primary label, if any.
    pub fn location(&self, sources: &SourceMap) -> Option<(String, usize, usize)> {
        let label = self.primary.as_ref()?;
        let file = sources.file(label.span.source);
        let (line, col) = file.line_col(label.span.lo as usize);
        Some((file.name().to_string(), line, col))
    }

    /// One JSON object (for `--message-format json`): code, message, file, line, column, byte
    /// span, labels, notes, help and the suggestion.
    pub fn to_json(&self, sources: &SourceMap) -> serde_json::Value {
        let label_json = |l: &Label, primary: bool| {
            let file = sources.file(l.span.source);
            let (line, column) = file.line_col(l.span.lo as usize);
            let (end_line, end_column) = file.line_col(l.span.hi as usize);
            json!({
                "file": file.name(), "line": line, "column": column,
                "end_line": end_line, "end_column": end_column,
                "byte_start": l.span.lo, "byte_end": l.span.hi,
                "text": sources.snippet(l.span), "label": l.text, "primary": primary,
            })
        };
        let mut labels: Vec<_> = self.primary.iter().map(|l| label_json(l, true)).collect();
        labels.extend(self.secondary.iter().map(|l| label_json(l, false)));
        let loc = self.location(sources);
        json!({
            "level": "error",
            "code": self.code.id,
            "message": self.message,
            "file": loc.as_ref().map(|l| l.0.clone()),
            "line": loc.as_ref().map(|l| l.1),
            "column": loc.as_ref().map(|l| l.2),
            "byte_start": self.primary.as_ref().map(|l| l.span.lo),
            "byte_end": self.primary.as_ref().map(|l| l.span.hi),
            "labels": labels,
            "notes": self.notes,
            "help": self.help,
            "suggestion": self.suggestion.as_ref().map(|s| json!({
                "byte_start": s.span.lo, "byte_end": s.span.hi, "replacement": s.replacement,
            })),
        })
    }

    /// Renders like rustc. `color` picks ANSI styles; `width` is the terminal width.
    pub fn render(&self, sources: &SourceMap, color: bool) -> String {
        let title = Level::ERROR
            .primary_title(self.message.as_str())
            .id(self.code.id);
        let mut group = Group::with_title(title);
        // Group labels by file, primary file first.
        let mut labels: Vec<(&Label, bool)> = self.primary.iter().map(|l| (l, true)).collect();
        labels.extend(self.secondary.iter().map(|l| (l, false)));
        let mut files: Vec<crate::span::SourceId> = Vec::new();
        for (l, _) in &labels {
            if !files.contains(&l.span.source) {
                files.push(l.span.source);
            }
        }
        for id in files {
            let file = sources.file(id);
            let mut snippet = Snippet::source(file.text()).path(file.name()).line_start(1);
            for (l, primary) in labels.iter().filter(|(l, _)| l.span.source == id) {
                let kind = if *primary {
                    AnnotationKind::Primary
                } else {
                    AnnotationKind::Context
                };
                snippet = snippet
                    .annotation(kind.span(clamp(l.span, file.text())).label(l.text.as_str()));
            }
            group = group.element(snippet);
        }
        for n in &self.notes {
            group = group.element(Level::NOTE.message(n.as_str()));
        }
        if let Some(h) = &self.help {
            group = group.element(Level::HELP.message(h.as_str()));
        }
        let mut report = vec![group];
        if let Some(s) = &self.suggestion {
            let file = sources.file(s.span.source);
            // Only offer the patch view when it differs from the help text's own wording.
            if self.help.is_none() {
                report.push(
                    Group::with_title(Level::HELP.secondary_title("replace it with")).element(
                        Snippet::source(file.text())
                            .path(file.name())
                            .line_start(1)
                            .patch(Patch::new(
                                clamp(s.span, file.text()),
                                s.replacement.as_str(),
                            )),
                    ),
                );
            }
        }
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        renderer.render(&report)
    }
}

/// Keeps a span inside the text and on char boundaries, so the renderer never panics.
fn clamp(span: Span, text: &str) -> std::ops::Range<usize> {
    let mut lo = (span.lo as usize).min(text.len());
    let mut hi = (span.hi as usize).min(text.len()).max(lo);
    while !text.is_char_boundary(lo) {
        lo -= 1;
    }
    while !text.is_char_boundary(hi) {
        hi += 1;
    }
    lo..hi
}

/// Renders every diagnostic, separated by blank lines, followed by rustc's summary line.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(sources, color));
        out.push_str("\n\n");
    }
    if !diags.is_empty() {
        let n = diags.len();
        out.push_str(&format!(
            "error: aborting due to {}\n",
            if n == 1 {
                "1 previous error".to_string()
            } else {
                format!("{n} previous errors")
            }
        ));
    }
    out
}

/// Looks up a code (`CNN0301`, `cnn0301` or `0301`) for `cnnc --explain`.
pub fn explain(code: &str) -> Option<Code> {
    let want = code.trim().to_ascii_uppercase();
    let want = if want.starts_with("CNN") {
        want
    } else {
        format!("CNN{want}")
    };
    codes::ALL.iter().copied().find(|c| c.id == want)
}

/// Suggests the closest candidate to `word` (Levenshtein distance ≤ a third of its length).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let limit = (w.chars().count() / 3).max(1);
    let candidates: Vec<&str> = candidates.into_iter().collect();
    // A prefix of a known name (`conv` for `conv2d`) is a likely abbreviation.
    if w.len() >= 3
        && let Some(c) = candidates
            .iter()
            .find(|c| c.to_ascii_lowercase().starts_with(&w))
    {
        return Some(c);
    }
    candidates
        .into_iter()
        .map(|c| (edit_distance(&w, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_explained() {
        let mut ids: Vec<_> = codes::ALL.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
        assert!(codes::ALL.iter().all(|c| c.explanation.len() > 40));
        assert_eq!(explain("cnn0301").map(|c| c.id), Some("CNN0301"));
        assert_eq!(explain("0301").map(|c| c.id), Some("CNN0301"));
        assert!(explain("CNN9999").is_none());
    }

    #[test]
    fn did_you_mean_finds_close_names() {
        let cands = ["conv2d", "maxpool2d", "linear"];
        assert_eq!(did_you_mean("conv2", cands), Some("conv2d"));
        assert_eq!(did_you_mean("max_pool2d", cands), Some("maxpool2d"));
        assert_eq!(did_you_mean("transformer", cands), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
