//! Source files; the small `Copy` spans that point into them are defined in `cnn-ir`.
//!
//! A [`Span`] is a byte range in one file of a [`SourceMap`]. Spans are plain data (no lifetimes,
//! `Send`), so diagnostics can be built anywhere and rendered later; the macro front-end maps them
//! back to token spans at the very end.

pub use cnn_ir::span::{SourceId, Span, Syntax};

/// One source file: its display name, text and line index.
#[derive(Debug, Clone)]
pub struct SourceFile {
    name: String,
    text: String,
    syntax: Syntax,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// The name shown in diagnostics (`examples/models/seed.yaml`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// The front-end this file is written for.
    pub fn syntax(&self) -> Syntax {
        self.syntax
    }

    /// 1-based line and column (in characters) of byte offset `pos`.
    pub fn line_col(&self, pos: usize) -> (usize, usize) {
        let pos = pos.min(self.text.len());
        let line = match self.line_starts.binary_search(&pos) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..pos)
            .map_or(pos - start, |s| s.chars().count());
        (line + 1, col + 1)
    }
}

/// All source files a compilation has read.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        text: impl Into<String>,
        syntax: Syntax,
    ) -> SourceId {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let id = SourceId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(SourceFile {
            name: name.into(),
            text,
            syntax,
            line_starts,
        });
        id
    }

    /// The file behind `id`.
    ///
    /// # Panics
    /// If `id` was not returned by this map's [`SourceMap::add`].
    pub fn file(&self, id: SourceId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// The text a span covers (empty if out of range).
    pub fn snippet(&self, span: Span) -> &str {
        self.file(span.source).text.get(span.range()).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        let mut map = SourceMap::new();
        let id = map.add("a.cnn", "ab\n× cd\n", Syntax::Dsl);
        let f = map.file(id);
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(3), (2, 1));
        // `×` is two bytes, one column.
        assert_eq!(f.line_col(6), (2, 3));
        assert_eq!(f.line_col(100), (3, 1));
    }
}
