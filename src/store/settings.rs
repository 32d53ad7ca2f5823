//! The settings a vectors file was made with, kept beside it
//! (`vectors.jsonl` → `vectors.settings.json`), so that a resumed run cannot
//! silently mix vectors from different weights or recipes in one file.

use super::companions::{legacy_settings_path, settings_path};
use crate::extractor::ExtractConfig;
use crate::files::{file_digest, write_atomically};
use crate::rmac::pca::PcaWeights;
use crate::vgg16::spec::FEATURE_DIM;
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
    /// Floats per vector (512: R-MAC of VGG16's pool5; fewer with a PCA file
    /// that keeps fewer components). Files written before this field existed are 512.
    #[serde(default = "default_dimension")]
    pub dimension: usize,
    /// The opt-in recipe (docs/contract.md#pipeline): `--no-enlarge`, `--pool`
    /// (`max` or `gem:P`) and `--scales` (`1,0.7071,0.5`). Left out of the file
    /// at their defaults (keras_rmac's recipe), so files written before they
    /// existed read as what they are.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_enlarge: bool,
    #[serde(default = "default_pool", skip_serializing_if = "is_default_pool")]
    pub pool: String,
    #[serde(default = "default_scales", skip_serializing_if = "is_default_scales")]
    pub scales: String,
    /// Where the weights and the PCA file were when the vectors were made (as
    /// absolute paths): where a query looks first for the files with these
    /// digests. Never compared, so that moving the files changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pca_file: Option<String>,
    /// The folder the run was started in: what the relative image paths in
    /// the output are relative to (`search --html` finds the images there from
    /// any folder). Never compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// How videos were sampled (`fps=1`, `every-frame`, `keyframes`), when
    /// the input holds videos. Compared only when both runs had videos: a
    /// resume cannot mix two samplings, an image-only run can gain videos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_sampling: Option<String>,
    /// `--skip-static D`: video frames that differed from the last kept frame
    /// by a mean absolute difference below D were skipped (absent: none was).
    /// Compared like `video_sampling`, only when both runs had videos, and
    /// then absent ≠ D: a resume cannot mix two ways of skipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_static: Option<f64>,
    /// Database-side augmentation (`dba`: `k=K,alpha=A`) the vectors went
    /// through. Compared only when both sides have one (a resume of `dba`
    /// cannot mix two); queries are never augmented, so `search --image`
    /// against such vectors describes its image as the recipe says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dba: Option<String>,
}

fn default_dimension() -> usize {
    512
}

fn is_false(b: &bool) -> bool {
    !b
}

fn default_pool() -> String {
    "max".to_owned()
}

fn is_default_pool(p: &str) -> bool {
    p == "max"
}

fn default_scales() -> String {
    "1".to_owned()
}

fn is_default_scales(s: &str) -> bool {
    s == "1"
}

/// `--scales` as recorded: each scale as Rust prints an f64 (the shortest
/// text that reads back to the same value), comma-separated (`1,0.7071,0.5`).
pub fn scales_name(scales: &[f64]) -> String {
    scales
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`scales_name`].
pub fn parse_scales(s: &str) -> Option<Vec<f64>> {
    s.split(',').map(|t| t.trim().parse().ok()).collect()
}

impl RunSettings {
    /// The settings of vectors made with the weights file `weights`, the PCA
    /// file `pca` (or none) and the recipe `config`. The PCA file is read for
    /// its dimension.
    pub fn of(weights: &Path, pca: Option<&Path>, config: &ExtractConfig) -> Result<RunSettings> {
        Self::of_digested(weights, pca, config, &file_digest)
    }

    /// [`Self::of`], with the files' (sha256, bytes) from `file_digest` (a
    /// caller that has hashed them already passes what it knows).
    pub fn of_digested(
        weights: &Path,
        pca: Option<&Path>,
        config: &ExtractConfig,
        file_digest: &dyn Fn(&Path) -> std::io::Result<(String, u64)>,
    ) -> Result<RunSettings> {
        let digest =
            |p: &Path| file_digest(p).with_context(|| format!("cannot read {}", p.display()));
        let absolute = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .to_string_lossy()
                .into_owned()
        };
        let (weights_sha256, weights_bytes) = digest(weights)?;
        let dimension = match pca {
            None => FEATURE_DIM,
            Some(p) => PcaWeights::load(p)?.dim(),
        };
        Ok(RunSettings {
            weights_sha256,
            weights_bytes,
            pca_sha256: match pca {
                None => "none".to_owned(),
                Some(p) => digest(p)?.0,
            },
            max_size: config.max_size,
            levels: config.levels as u64,
            preprocess: config.preprocess.name().to_owned(),
            dimension,
            no_enlarge: config.no_enlarge,
            pool: config.pooling.name(),
            scales: scales_name(&config.scales),
            weights_file: Some(absolute(weights)),
            pca_file: pca.map(absolute),
            base: std::env::current_dir()
                .ok()
                .map(|d| d.to_string_lossy().into_owned()),
            video_sampling: None,
            skip_static: None,
            dba: None,
        })
    }

    /// What differs from `other`: (what, ours, theirs), every setting that
    /// decides the numbers (the file hints are not among them).
    pub fn differing(&self, other: &RunSettings) -> Vec<(&'static str, String, String)> {
        let ours = self.compared();
        let mut differing: Vec<_> = other
            .compared()
            .into_iter()
            .zip(ours)
            .filter(|((_, b), (_, a))| a != b)
            .map(|((what, b), (_, a))| (what, a, b))
            .collect();
        if let (Some(a), Some(b)) = (&self.video_sampling, &other.video_sampling) {
            if a != b {
                differing.push(("video sampling", a.clone(), b.clone()));
            }
            if self.skip_static != other.skip_static {
                let name = |d: Option<f64>| d.map_or("off".to_owned(), |d| d.to_string());
                differing.push((
                    "--skip-static",
                    name(self.skip_static),
                    name(other.skip_static),
                ));
            }
        }
        if let (Some(a), Some(b)) = (&self.dba, &other.dba)
            && a != b
        {
            differing.push(("dba", a.clone(), b.clone()));
        }
        differing
    }

    fn compared(&self) -> [(&'static str, String); 10] {
        [
            ("weights (sha256)", self.weights_sha256.clone()),
            ("weights (bytes)", self.weights_bytes.to_string()),
            ("pca (sha256)", self.pca_sha256.clone()),
            ("--max-size", self.max_size.to_string()),
            ("--levels", self.levels.to_string()),
            ("--preprocess", self.preprocess.clone()),
            ("dimension", self.dimension.to_string()),
            ("--no-enlarge", self.no_enlarge.to_string()),
            ("--pool", self.pool.clone()),
            ("--scales", self.scales.clone()),
        ]
    }

    /// Human-readable differences (`what: A before, B now`).
    pub fn differences(&self, now: &RunSettings) -> Vec<String> {
        self.differing(now)
            .into_iter()
            .map(|(what, a, b)| format!("{what}: {a} before, {b} now"))
            .collect()
    }

    /// The settings recorded beside the file output `out`, if any (the
    /// companion `.settings.json`, or where NPY outputs kept it before).
    pub fn read_beside(out: &Path) -> Result<Option<RunSettings>> {
        let file = settings_path(out);
        let read = std::fs::read(&file).or_else(|e| match legacy_settings_path(out) {
            Some(old) if e.kind() == std::io::ErrorKind::NotFound => std::fs::read(old),
            _ => Err(e),
        });
        match read {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "{} is damaged; repair it (it records the weights, PCA and recipe of {}), or start over with --restart",
                    file.display(),
                    out.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }

    /// Compares with the settings file beside `out` (when OUT already holds
    /// `done` records) and then writes ours there.
    pub fn check_and_write(&self, out: &Path, done: usize, restart: bool) -> Result<()> {
        let file = settings_path(out);
        let mut ours = self.clone();
        if done > 0 && !restart {
            match Self::read_beside(out)? {
                Some(before) => {
                    // A resume without videos keeps the sampling the earlier frames were made with.
                    if ours.video_sampling.is_none() {
                        ours.video_sampling = before.video_sampling.clone();
                        ours.skip_static = before.skip_static;
                    }
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
                None => bail!(
                    "{} holds {done} images but there is no {} beside it, so nothing says which weights, PCA \
                     and recipe made them; resuming could mix two kinds of vectors in one file. Restore the settings \
                     file, pass another --output, or start over with --restart",
                    out.display(),
                    file.display()
                ),
            }
        }
        write_atomically(&file, &serde_json::to_vec_pretty(&ours)?)
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
            dimension: 512,
            no_enlarge: false,
            pool: "max".into(),
            scales: "1".into(),
            weights_file: None,
            pca_file: None,
            base: None,
            video_sampling: None,
            skip_static: None,
            dba: None,
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
        let c = RunSettings {
            no_enlarge: true,
            pool: "gem:3".into(),
            scales: "1,0.7071,0.5".into(),
            ..b.clone()
        };
        let err = c.check_and_write(&out, 5, false).unwrap_err().to_string();
        assert!(
            err.contains("--no-enlarge: false before, true now")
                && err.contains("--pool: max before, gem:3 now")
                && err.contains("--scales: 1 before, 1,0.7071,0.5 now"),
            "{err}"
        );
    }

    #[test]
    fn skip_static_is_compared_when_both_runs_had_videos() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        let videos = |skip_static| RunSettings {
            video_sampling: Some("fps=1".into()),
            skip_static,
            ..settings()
        };
        videos(Some(2.0)).check_and_write(&out, 0, false).unwrap();
        videos(Some(2.0)).check_and_write(&out, 5, false).unwrap();
        for (now, said) in [
            (None, "2 before, off now"),
            (Some(2.5), "2 before, 2.5 now"),
        ] {
            let err = videos(now)
                .check_and_write(&out, 5, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("--skip-static: {said}")), "{err}");
        }
        // A resume of images only keeps the videos' settings in the file.
        settings().check_and_write(&out, 5, false).unwrap();
        let kept = RunSettings::read_beside(&out).unwrap().unwrap();
        assert_eq!(kept.skip_static, Some(2.0));
        let json = std::fs::read_to_string(dir.path().join("v.settings.json")).unwrap();
        assert!(json.contains("\"skip_static\": 2.0"), "{json}");
    }

    #[test]
    fn the_defaults_are_left_out_of_the_file_and_read_back() {
        let json = serde_json::to_string(&settings()).unwrap();
        assert!(
            !json.contains("no_enlarge") && !json.contains("pool") && !json.contains("scales"),
            "{json}"
        );
        let back: RunSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, settings());
        assert_eq!(scales_name(&[1.0, 0.75, 0.5]), "1,0.75,0.5");
        assert_eq!(parse_scales("1,0.75,0.5"), Some(vec![1.0, 0.75, 0.5]));
    }
}
