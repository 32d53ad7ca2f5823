//! The files that sit beside a file output, one naming rule each
//! (docs/contract.md#companion-files):
//!
//! | output | errors | settings | summary | lock | paths |
//! |---|---|---|---|---|---|
//! | `v.jsonl` | `v.errors.jsonl` | `v.settings.json` | `v.summary.json` | `v.lock` | |
//! | `x.npy` | `x.errors.jsonl` | `x.npy.settings.json` | `x.npy.summary.json` | `x.npy.lock` | `x.paths.txt` |

use std::path::{Path, PathBuf};

/// The file next to `path` named like it, without the extension `strip`
/// (when it has it) and with `suffix` added: `sibling("v.jsonl", ".jsonl",
/// ".lock")` is `v.lock`.
pub fn sibling(path: &Path, strip: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(strip).unwrap_or(&name);
    path.with_file_name(format!("{stem}{suffix}"))
}

/// `vectors.jsonl` → `vectors.<what>.json` (settings, summary).
pub fn beside(out: &Path, what: &str) -> PathBuf {
    sibling(out, ".jsonl", &format!(".{what}.json"))
}

/// The settings the vectors were made with.
pub fn settings_path(out: &Path) -> PathBuf {
    beside(out, "settings")
}

/// The run summary (per-rank stats).
pub fn summary_path(out: &Path) -> PathBuf {
    beside(out, "summary")
}

/// The lock that keeps a second run off the output.
pub fn lock_path(out: &Path) -> PathBuf {
    sibling(out, ".jsonl", ".lock")
}

/// The error records of a JSONL output (`vectors.jsonl` → `vectors.errors.jsonl`).
pub fn jsonl_errors_path(out: &Path) -> PathBuf {
    sibling(out, ".jsonl", ".errors.jsonl")
}

/// The error records of an NPY output (`x.npy` → `x.errors.jsonl`).
pub fn npy_errors_path(npy: &Path) -> PathBuf {
    sibling(npy, ".npy", ".errors.jsonl")
}

/// The image paths of an NPY output, one per line (`x.npy` → `x.paths.txt`).
pub fn npy_paths_path(npy: &Path) -> PathBuf {
    sibling(npy, ".npy", ".paths.txt")
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
        assert_eq!(jsonl_errors_path(j), Path::new("/d/vectors.errors.jsonl"));
        assert_eq!(
            jsonl_errors_path(Path::new("out")),
            Path::new("out.errors.jsonl")
        );
        let n = Path::new("/d/x.npy");
        assert_eq!(npy_errors_path(n), Path::new("/d/x.errors.jsonl"));
        assert_eq!(npy_paths_path(n), Path::new("/d/x.paths.txt"));
        assert_eq!(lock_path(n), Path::new("/d/x.npy.lock"));
        assert_eq!(settings_path(n), Path::new("/d/x.npy.settings.json"));
    }
}
