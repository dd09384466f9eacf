//! One exit-code policy for every subcommand, and one way to print an error.
//!
//! - 0: success.
//! - 1: the spec, the weights or the data are wrong (diagnostics, mismatched or non-finite
//!   weights, a malformed `.npy`/IDX/image file, a loss that became NaN).
//! - 2: usage or I/O: a bad flag, a file that cannot be found, read or written.
//! - 130: training stopped by Ctrl-C (after saving a checkpoint).
//!
//! When a run meets both kinds (`cnnc check` of several files), 2 wins.

use std::fmt;
use std::process::ExitCode;

/// The spec, weights or data are wrong.
pub const INVALID: u8 = 1;
/// A usage or I/O error.
pub const USAGE_OR_IO: u8 = 2;
/// Interrupted by Ctrl-C.
pub const INTERRUPTED: u8 = 130;

/// The text of `cnnc --help`'s exit-code section (clap `after_help`).
pub const HELP: &str = "Exit codes: 0 success; 1 the spec, weights or data are wrong; \
2 usage or I/O error (a bad flag, a file that cannot be read or written); \
130 training interrupted by Ctrl-C after saving a checkpoint.";

/// A usage error found after parsing (a combination of flags that cannot work).
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// The exit code `e` calls for: [`USAGE_OR_IO`] if any cause is a usage error, a missing data
/// folder or an I/O failure of the system (not found, permission denied, disk full …);
/// [`INVALID`] otherwise, including I/O errors that mean a file's content is bad (truncated,
/// invalid data).
pub fn code(e: &anyhow::Error) -> u8 {
    use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
    for cause in e.chain() {
        if cause.is::<Usage>() {
            return USAGE_OR_IO;
        }
        if let Some(cnn::runtime::data::DataError::NotFound { .. }) = cause.downcast_ref() {
            return USAGE_OR_IO;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                InvalidData | InvalidInput | UnexpectedEof => INVALID,
                _ => USAGE_OR_IO,
            };
        }
    }
    INVALID
}

/// The error and its causes joined by `: `, leaving out a cause whose text is already part of
/// the message (errors that quote their source would otherwise print it twice).
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Prints `error: …` and returns the exit code for `e`.
pub fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", message(e));
    ExitCode::from(code(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn io(kind: std::io::ErrorKind) -> anyhow::Error {
        anyhow::Error::new(std::io::Error::new(kind, "boom")).context("reading x")
    }

    #[test]
    fn io_failures_are_2_and_bad_content_is_1() {
        assert_eq!(code(&io(std::io::ErrorKind::NotFound)), USAGE_OR_IO);
        assert_eq!(code(&io(std::io::ErrorKind::PermissionDenied)), USAGE_OR_IO);
        assert_eq!(code(&io(std::io::ErrorKind::UnexpectedEof)), INVALID);
        assert_eq!(code(&io(std::io::ErrorKind::InvalidData)), INVALID);
        assert_eq!(code(&anyhow::anyhow!("bad weights")), INVALID);
        assert_eq!(code(&usage("--x needs --y").context("run")), USAGE_OR_IO);
    }

    #[test]
    fn a_cause_quoted_by_its_context_is_printed_once() {
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let quoted = format!("cannot read `w`: {os}");
        let e = Err::<(), _>(os).context(quoted.clone()).unwrap_err();
        assert_eq!(message(&e), quoted);
        let e = io(std::io::ErrorKind::NotFound);
        assert_eq!(message(&e), "reading x: boom");
    }
}
