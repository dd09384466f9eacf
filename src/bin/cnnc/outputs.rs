//! Output files: checked for writability before any work starts, written atomically through
//! [`cnn::runtime::io::write_atomic`] (a temporary file beside the target, then a rename), and
//! temporary files of killed runs cleaned up.

use crate::exit;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically, naming the file in the error.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    cnn::runtime::io::write_atomic(path, bytes)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Creates `dir` if needed and proves a file can be created in it (a probe file is made and
/// removed), so an unwritable folder is an error before training, not after it.
pub fn ensure_writable_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder `{}`", dir.display()))?;
    let probe = cnn::runtime::io::temp_path(&dir.join("write-probe"))
        .with_context(|| format!("cannot write in `{}`", dir.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("cannot write in the folder `{}`", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Proves that `path` can be written: it is not a folder, and its folder (created if needed)
/// is writable.
pub fn ensure_writable_file(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(exit::usage(format!(
            "`{}` is a folder: give a file name to write",
            path.display()
        )));
    }
    if path.file_name().is_none() {
        return Err(exit::usage(format!(
            "`{}` names no file to write",
            path.display()
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_writable_dir(dir).with_context(|| format!("cannot write `{}`", path.display()))
}

/// Removes temporary files that killed runs left in `dir`, saying so on stderr.
pub fn clean_stale_temps(dir: &Path) {
    match cnn::runtime::io::remove_stale_temps(dir) {
        Ok(removed) if !removed.is_empty() => eprintln!(
            "removed {} temporary file{} left in {} by an interrupted run",
            removed.len(),
            if removed.len() == 1 { "" } else { "s" },
            dir.display()
        ),
        // Nothing to clean, or a folder we cannot list: the writability check reports that.
        _ => {}
    }
}

/// The files of `written` joined for a "wrote …" line, keeping only those that exist.
pub fn existing(written: &[PathBuf]) -> Vec<String> {
    written
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_places_are_refused_with_their_name() {
        let e = ensure_writable_dir(Path::new("/proc/cnnc-no-such-dir")).unwrap_err();
        assert!(format!("{e:#}").contains("/proc/cnnc-no-such-dir"), "{e:#}");
        assert_eq!(exit::code(&e), exit::USAGE_OR_IO);
        let e = ensure_writable_file(&std::env::temp_dir()).unwrap_err();
        assert!(format!("{e:#}").contains("is a folder"), "{e:#}");
        let dir = std::env::temp_dir().join(format!("cnnc-outputs-{}", std::process::id()));
        ensure_writable_file(&dir.join("sub/w.safetensors")).unwrap();
        assert!(dir.join("sub").is_dir());
        assert_eq!(
            std::fs::read_dir(dir.join("sub")).unwrap().count(),
            0,
            "probe removed"
        );
        write(&dir.join("sub/a.csv"), b"x").unwrap();
        assert_eq!(
            existing(&[dir.join("sub/a.csv"), dir.join("sub/b.csv")]).len(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
