//! A build.rs API in the style of prost-build: compile spec files to Rust in `OUT_DIR`.
//!
//! ```no_run
//! // In build.rs's main:
//! if let Err(e) = cnn_dsl::build::Builder::new().spec("models/seed.yaml").compile() {
//!     eprintln!("{e}");
//!     std::process::exit(1);
//! }
//! // In src/lib.rs:  include!(concat!(env!("OUT_DIR"), "/seed_cnn.rs"));
//! ```
//! Each spec becomes `OUT_DIR/<model name in snake_case>.rs`, rewritten only when its content
//! changes; `cargo:rerun-if-changed` is printed for each spec. Shape errors fail the build with
//! the rendered diagnostics.

use crate::codegen::{self, Options};
use crate::diag::render_all;
use crate::{SourceMap, compile_source};
use proc_macro2::TokenStream;
use std::path::{Path, PathBuf};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A spec could not be read or the output not written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `OUT_DIR` is not set and no output directory was given.
    #[error("OUT_DIR is not set: call Builder::out_dir, or run from a build script")]
    NoOutDir,
    /// The specs have errors; the rendered diagnostics.
    #[error("{rendered}")]
    Diagnostics {
        /// rustc-style text of every diagnostic.
        rendered: String,
    },
    /// The generated code did not parse (a bug in cnn).
    #[error("internal error generating `{name}`: {message}")]
    Codegen {
        /// Model name.
        name: String,
        /// syn's message.
        message: String,
    },
}

/// Compiles spec files to Rust source.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    specs: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    runtime: Option<String>,
    emit_rerun: bool,
    no_training: bool,
}

impl Builder {
    /// A builder writing to `OUT_DIR`.
    pub fn new() -> Self {
        Builder {
            emit_rerun: true,
            ..Default::default()
        }
    }

    /// Adds a spec (`.yaml`, `.yml` or `.cnn`), relative to the crate root.
    pub fn spec(mut self, path: impl AsRef<Path>) -> Self {
        self.specs.push(path.as_ref().to_path_buf());
        self
    }

    /// Writes to `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The path of the runtime support module in generated code (default `::cnn::__private`).
    pub fn runtime_path(mut self, path: &str) -> Self {
        self.runtime = Some(path.to_string());
        self
    }

    /// Whether the generated types get `train_plan()` and `trainer()` (default true). Turn it off
    /// for a program that depends on `cnn-runtime` without its `train` feature.
    pub fn training(mut self, yes: bool) -> Self {
        self.no_training = !yes;
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines (default true).
    pub fn emit_rerun_if_changed(mut self, yes: bool) -> Self {
        self.emit_rerun = yes;
        self
    }

    /// Generates every spec. Returns the written (or unchanged) files.
    pub fn compile(self) -> Result<Vec<PathBuf>, BuildError> {
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(BuildError::NoOutDir)?,
        };
        let runtime: TokenStream = match &self.runtime {
            Some(r) => r.parse().map_err(|e| BuildError::Codegen {
                name: r.clone(),
                message: format!("{e}"),
            })?,
            None => quote::quote!(::cnn::__private),
        };
        let mut sources = SourceMap::new();
        let mut diags = Vec::new();
        let mut written = Vec::new();
        for spec in &self.specs {
            if self.emit_rerun {
                println!("cargo:rerun-if-changed={}", spec.display());
            }
            let text = std::fs::read_to_string(spec).map_err(|source| BuildError::Io {
                action: "read",
                path: spec.clone(),
                source,
            })?;
            let name = spec.display().to_string();
            match compile_source(&mut sources, &name, &text) {
                Ok(model) => {
                    let opts = Options {
                        runtime: runtime.clone(),
                        source_name: name.clone(),
                        training: !self.no_training,
                    };
                    let src = codegen::source(&model, &opts).map_err(|e| BuildError::Codegen {
                        name: model.name().into(),
                        message: e.to_string(),
                    })?;
                    let path = out_dir.join(format!("{}.rs", snake_case(model.name())));
                    write_if_changed(&path, &src)?;
                    written.push(path);
                }
                Err(d) => diags.extend(d),
            }
        }
        if !diags.is_empty() {
            return Err(BuildError::Diagnostics {
                rendered: render_all(&diags, &sources, false),
            });
        }
        Ok(written)
    }
}

/// `SeedCnn` → `seed_cnn`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

fn write_if_changed(path: &Path, content: &str) -> Result<(), BuildError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    std::fs::write(path, content).map_err(|source| BuildError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("SeedCnn"), "seed_cnn");
        assert_eq!(snake_case("MNISTNet2"), "mnist_net2");
        assert_eq!(snake_case("tiny"), "tiny");
    }

    #[test]
    fn writes_files_and_fails_with_rendered_diagnostics() {
        let dir = std::env::temp_dir().join(format!("cnn-build-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("tiny.cnn");
        std::fs::write(&good, "model Tiny(input = [4]) { linear(4, 2) }").unwrap();
        let files = Builder::new()
            .emit_rerun_if_changed(false)
            .out_dir(&dir)
            .spec(&good)
            .compile()
            .unwrap();
        assert_eq!(files, [dir.join("tiny.rs")]);
        let modified = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
        Builder::new()
            .emit_rerun_if_changed(false)
            .out_dir(&dir)
            .spec(&good)
            .compile()
            .unwrap();
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
            modified,
            "unchanged output is not rewritten"
        );
        let bad = dir.join("bad.cnn");
        std::fs::write(&bad, "model Bad(input = [4]) { linear(5, 2) }").unwrap();
        let err = Builder::new()
            .emit_rerun_if_changed(false)
            .out_dir(&dir)
            .spec(&bad)
            .compile()
            .unwrap_err();
        assert!(err.to_string().contains("error[CNN0301]"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
