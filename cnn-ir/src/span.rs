//! The small `Copy` spans that point into source files, and which front-end a file is for.
//!
//! A [`Span`] is a byte range in one file of the compiler's source map (`cnn_dsl::SourceMap`).
//! Spans are plain data (no lifetimes, `Send`), so they can live in the IR and diagnostics can be
//! rendered later.

use std::fmt;

/// Identifies one file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u32);

/// A byte range `lo..hi` in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file.
    pub source: SourceId,
    /// First byte.
    pub lo: u32,
    /// One past the last byte.
    pub hi: u32,
}

impl Span {
    /// A span from `lo` to `hi` (bytes) in `source`.
    pub fn new(source: SourceId, lo: usize, hi: usize) -> Self {
        let lo = u32::try_from(lo).unwrap_or(u32::MAX);
        let hi = u32::try_from(hi).unwrap_or(u32::MAX).max(lo);
        Span { source, lo, hi }
    }

    /// The smallest span covering `self` and `other` (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            source: self.source,
            lo: self.lo.min(other.lo),
            hi: self.hi.max(other.hi),
        }
    }

    /// The byte range as `usize`.
    pub fn range(self) -> std::ops::Range<usize> {
        self.lo as usize..self.hi as usize
    }
}

/// Which front-end a source file is written for; decides how fixes are spelled in help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syntax {
    /// YAML (`in_features: 64*7*7`).
    Yaml,
    /// The `.cnn` DSL, also the body of `cnn! { … }` (`in_features = 64*7*7`).
    Dsl,
}

impl Syntax {
    /// How an attribute assignment is written in this syntax.
    pub fn assign(self, name: &str, value: &str) -> String {
        match self {
            Syntax::Yaml => format!("{name}: {value}"),
            Syntax::Dsl => format!("{name} = {value}"),
        }
    }

    /// Picks the syntax from a file name's extension (`.yaml`/`.yml` or `.cnn`).
    pub fn from_path(path: &str) -> Option<Syntax> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Some(Syntax::Yaml)
        } else if lower.ends_with(".cnn") {
            Some(Syntax::Dsl)
        } else {
            None
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.lo, self.hi)
    }
}
