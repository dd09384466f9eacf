//! Front-ends, IR, shape checker, diagnostics and code generation for `cnn`.
//!
//! The pipeline, the same for all three front-ends:
//! YAML / `.cnn` / `cnn! { … }` → [`spec::ModelSpec`] → [`lower`] → [`ir::Model`] →
//! [`check::check`] → [`check::CheckedModel`] → summary, plan, codegen.
//!
//! ```
//! use cnn_dsl::{SourceMap, compile_source};
//! let mut sources = SourceMap::new();
//! let text = "model Tiny(input = [1, 8, 8]) { conv2d(1, 4, 3), relu, flatten, linear(4*6*6, 2) }";
//! let model = compile_source(&mut sources, "tiny.cnn", text).expect("well-shaped");
//! assert_eq!(model.output_shape(), &[2]);
//! assert_eq!(model.param_count(), 4 * 9 + 4 + 144 * 2 + 2);
//! ```
#![warn(missing_docs)]

pub mod build;
pub mod check;
pub mod codegen;
pub mod diag;
pub mod dsl;
pub mod expand;
pub mod limits;
pub mod lower;
pub mod span;
pub mod spec;
pub mod summary;
pub mod yaml;

pub use cnn_ir::{geom, ir, plan};

pub use check::{CheckedModel, check};
pub use diag::Diagnostic;
pub use span::{SourceId, SourceMap, Span, Syntax};

/// Parses `text` (named `name`, whose extension picks the front-end) into a spec.
pub fn parse_source(
    sources: &mut SourceMap,
    name: &str,
    text: &str,
) -> Result<(spec::ModelSpec, Syntax), Vec<Diagnostic>> {
    let syntax = Syntax::from_path(name).unwrap_or(Syntax::Dsl);
    parse_with(sources, name, text, syntax)
}

/// Parses `text` with an explicit front-end.
pub fn parse_with(
    sources: &mut SourceMap,
    name: &str,
    text: &str,
    syntax: Syntax,
) -> Result<(spec::ModelSpec, Syntax), Vec<Diagnostic>> {
    let id = sources.add(name, text, syntax);
    let spec = match syntax {
        Syntax::Yaml => yaml::parse_model(text, id)?,
        Syntax::Dsl => dsl::parse_model(text, id).map_err(|d| vec![d])?,
    };
    Ok((spec, syntax))
}

/// Parses and lowers, without checking shapes.
pub fn lower_source(
    sources: &mut SourceMap,
    name: &str,
    text: &str,
) -> Result<ir::Model, Vec<Diagnostic>> {
    let (spec, syntax) = parse_source(sources, name, text)?;
    lower::lower(&spec, syntax)
}

/// Parses, lowers and checks: the whole front half of the pipeline.
pub fn compile_source(
    sources: &mut SourceMap,
    name: &str,
    text: &str,
) -> Result<CheckedModel, Vec<Diagnostic>> {
    check(lower_source(sources, name, text)?)
}
