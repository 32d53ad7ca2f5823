//! The files that sit beside a file output, named by one rule: the output's
//! name without its format extension (`.jsonl`, `.npy`, `.parquet`, any case) plus a
//! suffix (docs/contract.md#companion-files):
//!
//! | output | errors | settings | summary | lock | paths |
//! |---|---|---|---|---|---|
//! | `v.jsonl` | `v.errors.jsonl` | `v.settings.json` | `v.summary.json` | `v.lock` | |
//! | `x.npy` | `x.errors.jsonl` | `x.settings.json` | `x.summary.json` | `x.lock` | `x.paths.txt` |
//! | `p.parquet` | `p.errors.jsonl` | `p.settings.json` | `p.summary.json` | `p.lock` | (journal: `p.journal.jsonl`) |
//!
//! So `v.jsonl` and `v.npy` would share every companion: [`claim`] refuses the
//! second, and the lock (one per stem) keeps two runs off the same companions.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// The output formats whose files have companions, by extension.
const FORMAT_EXTENSIONS: [&str; 3] = [".jsonl", ".npy", ".parquet"];

/// `out`'s file name without its format extension (`v.jsonl` → `v`, `out` → `out`).
fn stem(out: &Path) -> String {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    FORMAT_EXTENSIONS
        .iter()
        .find(|ext| lower.ends_with(*ext) && lower.len() > ext.len())
        .map_or(name.clone(), |ext| {
            name[..name.len() - ext.len()].to_owned()
        })
}

/// The companion of `out` with `suffix` (`companion("d/v.npy", ".lock")` is `d/v.lock`).
pub fn companion(out: &Path, suffix: &str) -> PathBuf {
    out.with_file_name(format!("{}{suffix}", stem(out)))
}

/// The settings the vectors were made with.
pub fn settings_path(out: &Path) -> PathBuf {
    companion(out, ".settings.json")
}

/// Where an NPY output kept its settings before the one naming rule
/// (`x.npy.settings.json`); read when the new name is missing.
pub fn legacy_settings_path(out: &Path) -> Option<PathBuf> {
    let name = out.file_name()?.to_string_lossy().into_owned();
    name.to_ascii_lowercase()
        .ends_with(".npy")
        .then(|| out.with_file_name(format!("{name}.settings.json")))
}

/// The run summary (per-rank stats).
pub fn summary_path(out: &Path) -> PathBuf {
    companion(out, ".summary.json")
}

/// The lock that keeps a second run off the output and its companions.
pub fn lock_path(out: &Path) -> PathBuf {
    companion(out, ".lock")
}

/// The error records of a file output.
pub fn errors_path(out: &Path) -> PathBuf {
    companion(out, ".errors.jsonl")
}

/// The image paths of an NPY output, one per line.
pub fn npy_paths_path(npy: &Path) -> PathBuf {
    companion(npy, ".paths.txt")
}

/// The vectors of a Parquet output not yet folded into it (see [`super::parquet`]).
pub fn journal_path(out: &Path) -> PathBuf {
    companion(out, ".journal.jsonl")
}

/// Every file a run on `out` writes besides `out` itself.
pub fn all(out: &Path) -> Vec<PathBuf> {
    vec![
        errors_path(out),
        settings_path(out),
        summary_path(out),
        lock_path(out),
        npy_paths_path(out),
        journal_path(out),
    ]
}

/// Refuses `out` when another output with the same stem exists (`v.jsonl`
/// beside `v.npy`): the two would share the error, settings and lock files, so
/// one's failures would count as the other's and `--restart` on one would
/// empty the other's.
pub fn claim(out: &Path) -> Result<()> {
    let base = stem(out);
    for ext in FORMAT_EXTENSIONS {
        for ext in [ext.to_owned(), ext.to_ascii_uppercase()] {
            let other = out.with_file_name(format!("{base}{ext}"));
            if other != out && other.is_file() {
                bail!(
                    "{} already exists beside {}: the two outputs would share {} and {}; \
                     pass another --output name (e.g. {}-2{})",
                    other.display(),
                    out.display(),
                    errors_path(out).display(),
                    settings_path(out).display(),
                    base,
                    out.extension()
                        .map(|e| format!(".{}", e.to_string_lossy()))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_table() {
        let j = Path::new("/d/vectors.jsonl");
        assert_eq!(settings_path(j), Path::new("/d/vectors.settings.json"));
        assert_eq!(
            summary_path(Path::new("out")),
            Path::new("out.summary.json")
        );
        assert_eq!(lock_path(j), Path::new("/d/vectors.lock"));
        assert_eq!(errors_path(j), Path::new("/d/vectors.errors.jsonl"));
        assert_eq!(errors_path(Path::new("out")), Path::new("out.errors.jsonl"));
        let n = Path::new("/d/x.npy");
        assert_eq!(errors_path(n), Path::new("/d/x.errors.jsonl"));
        assert_eq!(npy_paths_path(n), Path::new("/d/x.paths.txt"));
        assert_eq!(lock_path(n), Path::new("/d/x.lock"));
        let q = Path::new("/d/p.parquet");
        assert_eq!(errors_path(q), Path::new("/d/p.errors.jsonl"));
        assert_eq!(journal_path(q), Path::new("/d/p.journal.jsonl"));
        assert_eq!(settings_path(n), Path::new("/d/x.settings.json"));
        assert_eq!(
            legacy_settings_path(n).unwrap(),
            Path::new("/d/x.npy.settings.json")
        );
        assert_eq!(lock_path(Path::new("/d/V.JSONL")), Path::new("/d/V.lock"));
        assert_eq!(
            lock_path(Path::new("/d/.jsonl")),
            Path::new("/d/.jsonl.lock")
        );
    }

    #[test]
    fn a_second_output_with_the_same_stem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (j, n) = (dir.path().join("v.jsonl"), dir.path().join("v.npy"));
        claim(&j).unwrap();
        std::fs::write(&j, "").unwrap();
        claim(&j).unwrap();
        let err = claim(&n).unwrap_err().to_string();
        assert!(
            err.contains("v.jsonl") && err.contains("another --output"),
            "{err}"
        );
        claim(&dir.path().join("w.npy")).unwrap();
    }
}
