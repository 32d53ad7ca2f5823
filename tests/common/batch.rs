//! A batch for the run-level tests (tests/mpi.rs, tests/resume.rs): generated
//! PNGs of 40–70 px plus a few bad files, synthetic weights, and helpers to
//! run the built binary and read its output as path → vector maps.
use rmac_native::vgg16::synthetic;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Synthetic weights and PCA, written once per test binary.
pub fn weights() -> &'static (PathBuf, PathBuf) {
    static W: OnceLock<(tempfile::TempDir, (PathBuf, PathBuf))> = OnceLock::new();
    &W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (w, p) = (
            dir.path().join("vgg16.safetensors"),
            dir.path().join("pca.safetensors"),
        );
        synthetic::vgg16(1).save(&w).unwrap();
        rmac_native::rmac::pca::synthetic(1).save(&p).unwrap();
        (dir, (w, p))
    })
    .1
}

pub struct Batch {
    pub dir: tempfile::TempDir,
    pub list: PathBuf,
    pub paths: Vec<String>,
    pub bad: Vec<String>,
}

impl Batch {
    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `good` pictures (40–70 px, varied) and 4 bad entries: a truncated PNG, text
/// named .png, an empty file, a missing file.
pub fn batch(good: usize) -> Batch {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..good as u32 {
        let (w, h) = (40 + (i * 7) % 31, 40 + (i * 13) % 31);
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let v = (x * (7 + i) + y * 3 + i * 31) % 256;
            image::Rgb([
                v as u8,
                ((x * y + i) % 256) as u8,
                ((255 - v) ^ (y * 5)) as u8,
            ])
        });
        let p = dir.path().join(format!("img{i:03}.png"));
        img.save(&p).unwrap();
        paths.push(p.to_string_lossy().into_owned());
    }
    let mut bad = Vec::new();
    let full = std::fs::read(&paths[0]).unwrap();
    let truncated = dir.path().join("truncated.png");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let text = dir.path().join("text.png");
    std::fs::write(&text, b"this is not an image\n").unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.png");
    for p in [truncated, text, empty, missing] {
        bad.push(p.to_string_lossy().into_owned());
    }
    // Bad entries spread through the list, so every rank meets some.
    let step = (paths.len() / bad.len()).max(1);
    for (k, b) in bad.iter().enumerate() {
        paths.insert((k * (step + 1)).min(paths.len()), b.clone());
    }
    let list = dir.path().join("list.txt");
    std::fs::write(&list, paths.join("\n") + "\n").unwrap();
    Batch {
        dir,
        list,
        paths,
        bad,
    }
}

/// The common arguments: the list, OUT, synthetic weights, `--max-size 64`.
pub fn args(b: &Batch, out: &Path) -> Vec<String> {
    let (w, p) = weights();
    [
        "extract",
        "--backend",
        "cpu",
        "--input",
        b.list.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--pca",
        p.to_str().unwrap(),
        "--max-size",
        "64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("cannot start the binary");
    if !matches!(out.status.code(), Some(0 | 3)) {
        eprintln!("stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// What a run left on disk: path → vector bits, the failed paths, and the
/// video frames skipped as static (`--skip-static`) with their reasons.
#[derive(Debug, PartialEq)]
pub struct Results {
    pub vectors: BTreeMap<String, Vec<u32>>,
    pub errors: BTreeSet<String>,
    pub skipped: BTreeMap<String, String>,
}

/// Reads OUT and its error file, asserting that no path appears twice.
pub fn results(out: &Path) -> Results {
    let errors_file = rmac_native::store::jsonl::errors_path(out);
    let mut vectors = BTreeMap::new();
    let mut errors = BTreeSet::new();
    let mut skipped = BTreeMap::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: bad line {line:.80}: {e}", out.display()));
        let path = v["path"].as_str().unwrap().to_owned();
        let bits: Vec<u32> = v["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x.as_f64().unwrap() as f32).to_bits())
            .collect();
        assert_eq!(bits.len(), 512);
        assert!(
            vectors.insert(path.clone(), bits).is_none(),
            "{path} twice in {}",
            out.display()
        );
    }
    for line in std::fs::read_to_string(&errors_file)
        .unwrap_or_default()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let path = v["path"].as_str().unwrap().to_owned();
        if let Some(why) = v["skipped"].as_str() {
            assert!(v.get("error").is_none(), "{line}");
            assert!(!why.is_empty());
            assert!(
                skipped.insert(path.clone(), why.to_owned()).is_none(),
                "{path} skipped twice"
            );
        } else {
            assert!(!v["error"].as_str().unwrap().is_empty());
            assert!(
                errors.insert(path.clone()),
                "{path} twice in the error file"
            );
        }
        assert!(
            !vectors.contains_key(&path),
            "{path} both written and failed or skipped"
        );
        assert!(
            !(errors.contains(&path) && skipped.contains_key(&path)),
            "{path} both failed and skipped"
        );
    }
    Results {
        vectors,
        errors,
        skipped,
    }
}

/// Every listed path exactly once; the bad ones among the errors.
pub fn assert_complete(b: &Batch, r: &Results) {
    let all: BTreeSet<String> = r.vectors.keys().chain(r.errors.iter()).cloned().collect();
    let want: BTreeSet<String> = b.paths.iter().cloned().collect();
    assert_eq!(all, want);
    assert_eq!(r.vectors.len() + r.errors.len(), b.paths.len());
    let bad: BTreeSet<String> = b.bad.iter().cloned().collect();
    assert_eq!(r.errors, bad);
}

/// Lines in a file (0 when it does not exist yet).
pub fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}
