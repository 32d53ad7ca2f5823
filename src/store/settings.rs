//! The settings a vectors file was made with, kept beside it
//! (`vectors.jsonl` → `vectors.settings.json`), so that a resumed run cannot
//! silently mix vectors from different weights or recipes in one file.

use super::companions::{legacy_settings_path, settings_path};
use crate::files::write_atomically;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What decides the numbers in OUT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub weights_sha256: String,
    pub weights_bytes: u64,
    /// sha256 of the PCA file, or `none`.
    pub pca_sha256: String,
    pub max_size: u32,
    pub levels: u64,
    pub preprocess: String,
}

impl RunSettings {
    /// Human-readable differences (`what: before → now`).
    pub fn differences(&self, now: &RunSettings) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |what: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{what}: {a} before, {b} now"));
            }
        };
        cmp(
            "weights (sha256)",
            self.weights_sha256.clone(),
            now.weights_sha256.clone(),
        );
        cmp(
            "weights (bytes)",
            self.weights_bytes.to_string(),
            now.weights_bytes.to_string(),
        );
        cmp(
            "pca (sha256)",
            self.pca_sha256.clone(),
            now.pca_sha256.clone(),
        );
        cmp(
            "--max-size",
            self.max_size.to_string(),
            now.max_size.to_string(),
        );
        cmp("--levels", self.levels.to_string(), now.levels.to_string());
        cmp(
            "--preprocess",
            self.preprocess.clone(),
            now.preprocess.clone(),
        );
        d
    }

    /// Compares with the settings file beside `out` (when OUT already holds
    /// `done` records) and then writes ours there.
    pub fn check_and_write(&self, out: &Path, done: usize, restart: bool) -> Result<()> {
        let file = settings_path(out);
        if done > 0 && !restart {
            let read = std::fs::read(&file).or_else(|e| match legacy_settings_path(out) {
                Some(old) if e.kind() == std::io::ErrorKind::NotFound => std::fs::read(old),
                _ => Err(e),
            });
            match read {
                Ok(bytes) => {
                    let before: RunSettings = serde_json::from_slice(&bytes).with_context(|| {
                        format!("{} is damaged; repair it (it records the weights, PCA and recipe of {}), or start over with --restart", file.display(), out.display())
                    })?;
                    let diff = before.differences(self);
                    if !diff.is_empty() {
                        bail!(
                            "{} already holds {done} images made with other settings ({}); resuming would mix them in one file. \
                             Use the same settings, another --output, or --restart to start over",
                            out.display(),
                            diff.join("; ")
                        );
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "{} holds {done} images but there is no {} beside it, so nothing says which weights, PCA \
                     and recipe made them; resuming could mix two kinds of vectors in one file. Restore the settings \
                     file, pass another --output, or start over with --restart",
                    out.display(),
                    file.display()
                ),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
            }
        }
        write_atomically(&file, &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RunSettings {
        RunSettings {
            weights_sha256: "ab".into(),
            weights_bytes: 10,
            pca_sha256: "none".into(),
            max_size: 1024,
            levels: 3,
            preprocess: "keras".into(),
        }
    }

    #[test]
    fn resuming_with_other_settings_is_refused_unless_restart() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        let a = settings();
        a.check_and_write(&out, 0, false).unwrap();
        a.check_and_write(&out, 5, false).unwrap();
        let b = RunSettings {
            max_size: 512,
            ..settings()
        };
        let err = b.check_and_write(&out, 5, false).unwrap_err().to_string();
        assert!(
            err.contains("--max-size: 1024 before, 512 now") && err.contains("--restart"),
            "{err}"
        );
        b.check_and_write(&out, 5, true).unwrap();
        b.check_and_write(&out, 5, false).unwrap();
    }
}
