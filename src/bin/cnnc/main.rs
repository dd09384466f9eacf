//! `cnnc`: check, summarise, run, generate and train `cnn` models from the command line.
//!
//! Exit codes: 0 success, 1 the spec (or weights/data) has errors, 2 usage or I/O errors.

mod spec_cmds;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// The cnn model compiler.
#[derive(Parser)]
#[command(name = "cnnc", version, about = "Check, explain, run, generate and train declared CNNs", long_about = None)]
struct Cli {
    /// Print the long explanation of an error code (e.g. CNN0301), like `rustc --explain`.
    #[arg(long, value_name = "CODE")]
    explain: Option<String>,
    /// Colour in diagnostics.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// How diagnostics are printed.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum MessageFormat {
    /// Rendered like rustc.
    Human,
    /// One JSON object per diagnostic, one per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check that every spec is well-shaped (YAML `.yaml`/`.yml` or DSL `.cnn`).
    Check {
        /// Spec files.
        #[arg(required = true)]
        files: Vec<String>,
        /// Diagnostic output format.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Print a per-layer table: output shapes, parameters, multiply-adds and totals.
    Summary {
        /// Spec file.
        file: String,
        /// Also say where each dimension of each shape comes from.
        #[arg(long)]
        explain: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Diagnostic output format.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none()
        }
    };
    if let Some(code) = cli.explain {
        return match cnn::dsl::diag::explain(&code) {
            Some(c) => {
                println!("{}\n\n{}", c.id, c.explanation);
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: no such error code `{code}` (codes look like CNN0301)");
                ExitCode::from(2)
            }
        };
    }
    let Some(command) = cli.command else {
        eprintln!("error: no command given; try `cnnc --help`");
        return ExitCode::from(2);
    };
    match command {
        Command::Check {
            files,
            message_format,
        } => spec_cmds::check(&files, message_format, color),
        Command::Summary {
            file,
            explain,
            json,
            message_format,
        } => spec_cmds::summary(&file, explain, json, message_format, color),
    }
}
