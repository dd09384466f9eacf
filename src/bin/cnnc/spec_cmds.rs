//! `cnnc check` and `cnnc summary`.

use crate::MessageFormat;
use crate::exit;
use cnn::dsl::{Diagnostic, SourceMap, Syntax, check::check_report, diag::render_all, summary};
use std::process::ExitCode;

/// Reads a spec file; `Err` is an I/O or usage problem (exit 2), already printed.
pub fn read_spec(path: &str) -> Result<String, ExitCode> {
    if Syntax::from_path(path).is_none() {
        eprintln!(
            "error: cannot tell the format of `{path}`: spec files end in .yaml, .yml or .cnn"
        );
        return Err(ExitCode::from(exit::USAGE_OR_IO));
    }
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read `{path}`: {e}");
        ExitCode::from(exit::USAGE_OR_IO)
    })
}

/// Prints diagnostics in the chosen format to stderr (human) or stdout (JSON).
pub fn emit(diags: &[Diagnostic], sources: &SourceMap, format: MessageFormat, color: bool) {
    match format {
        MessageFormat::Human => eprint!("{}", render_all(diags, sources, color)),
        MessageFormat::Json => {
            for d in diags {
                println!("{}", d.to_json(sources));
            }
        }
    }
}

pub fn check(files: &[String], format: MessageFormat, color: bool) -> ExitCode {
    let mut sources = SourceMap::new();
    let mut all = Vec::new();
    let mut io_error = false;
    for f in files {
        let text = match read_spec(f) {
            Ok(t) => t,
            Err(_) => {
                io_error = true;
                continue;
            }
        };
        match cnn::dsl::compile_source(&mut sources, f, &text) {
            Ok(m) => {
                if format == MessageFormat::Human {
                    println!(
                        "ok: {f}: `{}` {} → {}, {} parameters, {} multiply-adds per image",
                        m.name(),
                        cnn::dsl::check::fmt_dims(m.input_shape()),
                        cnn::dsl::check::fmt_dims(m.output_shape()),
                        summary::thousands(m.param_count()),
                        summary::thousands(m.macs())
                    );
                }
            }
            Err(d) => all.extend(d),
        }
    }
    emit(&all, &sources, format, color);
    if io_error {
        ExitCode::from(exit::USAGE_OR_IO)
    } else if all.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::INVALID)
    }
}

pub fn summary(
    file: &str,
    explain: bool,
    json: bool,
    format: MessageFormat,
    color: bool,
) -> ExitCode {
    let text = match read_spec(file) {
        Ok(t) => t,
        Err(c) => return c,
    };
    let mut sources = SourceMap::new();
    let model = match cnn::dsl::lower_source(&mut sources, file, &text) {
        Ok(m) => m,
        Err(d) => {
            emit(&d, &sources, format, color);
            return ExitCode::from(exit::INVALID);
        }
    };
    let report = check_report(&model);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary::to_json(&model, &report.layers))
                .unwrap_or_default()
        );
    } else {
        match report
            .diagnostics
            .is_empty()
            .then(|| cnn::dsl::check(model.clone()))
        {
            // Well-shaped: the full summary, including the inference plan's buffers.
            Some(Ok(checked)) => print!("{}", summary::summary(&checked, explain)),
            _ => print!("{}", summary::summary_report(&model, &report, explain)),
        }
    }
    if report.diagnostics.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!();
        emit(&report.diagnostics, &sources, format, color);
        ExitCode::from(exit::INVALID)
    }
}

/// Compiles a spec file, printing diagnostics; `Err(code)` to exit with.
pub fn load_model(file: &str, color: bool) -> Result<cnn::dsl::CheckedModel, ExitCode> {
    let text = read_spec(file)?;
    let mut sources = SourceMap::new();
    cnn::dsl::compile_source(&mut sources, file, &text).map_err(|d| {
        emit(&d, &sources, MessageFormat::Human, color);
        ExitCode::from(exit::INVALID)
    })
}
