//! The binary as a user runs it: real files written here (good, corrupt,
//! truncated, empty, missing, text renamed .jpg, too small, a bomb header),
//! exit codes, and every input path exactly once across OUT and the error file.

mod common;

use common::{exe, run_ok};
use rmac_native::vgg16::synthetic;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Synthetic weights and PCA written into `dir`.
fn write_weights(dir: &Path) -> (PathBuf, PathBuf) {
    let (w, p) = (dir.join("vgg16.safetensors"), dir.join("pca.safetensors"));
    synthetic::vgg16(1).save(&w).unwrap();
    rmac_native::rmac::pca::synthetic(1).save(&p).unwrap();
    (w, p)
}

/// A structured RGB test picture.
fn picture(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 3 + seed * 31) % 256;
        image::Rgb([
            v as u8,
            ((x * y + seed) % 256) as u8,
            (((255 - v) ^ (y * 5)) as u8),
        ])
    })
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

struct Batch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    list: PathBuf,
    paths: Vec<String>,
    weights: PathBuf,
    pca: PathBuf,
}

/// Writes every kind of input the issue names and a list file naming them all.
fn batch() -> Batch {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (weights, pca) = write_weights(&root);
    let mut paths = Vec::new();
    let mut add = |name: &str, bytes: Option<Vec<u8>>| {
        let p = root.join(name);
        if let Some(b) = bytes {
            std::fs::write(&p, b).unwrap();
        }
        paths.push(p.to_string_lossy().into_owned());
    };
    let encode = |img: &image::RgbImage, fmt: image::ImageFormat| {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).unwrap();
        buf.into_inner()
    };
    let png = encode(&picture(48, 40, 1), image::ImageFormat::Png);
    let jpg = encode(&picture(64, 36, 2), image::ImageFormat::Jpeg);
    add("good1.png", Some(png.clone()));
    add("good2.jpg", Some(jpg.clone()));
    add(
        "good3.png",
        Some(encode(&picture(37, 70, 3), image::ImageFormat::Png)),
    );
    add("truncated.jpg", Some(jpg[..jpg.len() / 2].to_vec()));
    add("truncated.png", Some(png[..png.len() * 2 / 3].to_vec()));
    let mut corrupt = png.clone();
    for b in corrupt.iter_mut().skip(60).step_by(7) {
        *b ^= 0x5a;
    }
    add("corrupt.png", Some(corrupt));
    add("empty.jpg", Some(Vec::new()));
    add("missing.jpg", None);
    add(
        "text.jpg",
        Some(b"this is not an image, just text renamed to .jpg\n".to_vec()),
    );
    // 60×6 is enlarged to 64×7 by --max-size 64: still under 32 px high.
    add(
        "tiny.png",
        Some(encode(&picture(60, 6, 4), image::ImageFormat::Png)),
    );
    // A PNG header claiming 60000×60000 (no pixel data): refused before allocation.
    let mut bomb = Vec::new();
    bomb.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&60000u32.to_be_bytes());
    ihdr.extend_from_slice(&60000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    bomb.extend_from_slice(&13u32.to_be_bytes());
    bomb.extend_from_slice(&ihdr);
    bomb.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // A little compressed data and the end, as a real (malicious) file would have.
    for (kind, data) in [
        (
            &b"IDAT"[..],
            &[0x78u8, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01][..],
        ),
        (b"IEND", &[]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        bomb.extend_from_slice(&(data.len() as u32).to_be_bytes());
        bomb.extend_from_slice(&chunk);
        bomb.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    add("bomb.png", Some(bomb));
    let list = root.join("list.txt");
    std::fs::write(&list, paths.join("\n") + "\n").unwrap();
    Batch {
        _dir: dir,
        root,
        list,
        paths,
        weights,
        pca,
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Runs `extract` on the batch; `extra` may override `--backend` and `--pca`.
fn extract(b: &Batch, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = exe();
    cmd.args([
        "--input",
        b.list.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ])
    .args(["--weights", b.weights.to_str().unwrap()])
    .args(["--max-size", "64"]);
    if !extra.contains(&"--backend") {
        cmd.args(["--backend", "cpu"]);
    }
    if !extra.contains(&"--pca") {
        cmd.args(["--pca", b.pca.to_str().unwrap()]);
    }
    cmd.args(extra).output().unwrap()
}

#[test]
fn bad_images_become_error_records_and_the_rest_is_written() {
    let b = batch();
    let out = b.root.join("vectors.jsonl");
    let run = extract(&b, &out, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        run.status.code(),
        Some(3),
        "exit code 3 when some images failed; stderr:\n{stderr}"
    );

    let vectors = read_jsonl(&out);
    let errors = read_jsonl(&b.root.join("vectors.errors.jsonl"));
    let ok: Vec<&str> = vectors
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    let failed: HashMap<String, String> = errors
        .iter()
        .map(|e| {
            let name = Path::new(e["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, e["error"].as_str().unwrap().to_owned())
        })
        .collect();
    // Every path exactly once across both files.
    let mut all: Vec<String> = ok
        .iter()
        .map(|s| s.to_string())
        .chain(
            errors
                .iter()
                .map(|e| e["path"].as_str().unwrap().to_owned()),
        )
        .collect();
    all.sort();
    let mut want = b.paths.clone();
    want.sort();
    assert_eq!(all, want);
    let good: Vec<String> = ok
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(good.len(), 3, "good images: {good:?}; errors: {failed:#?}");
    for v in &vectors {
        let vec: Vec<f32> = v["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(vec.len(), 512);
        let norm: f32 = vec.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "R-MAC vectors are unit length, got {norm}"
        );
    }
    // The messages say what went wrong in words a person can act on.
    let says = |name: &str, words: &[&str]| {
        let msg = failed
            .get(name)
            .unwrap_or_else(|| panic!("{name} has no error record"));
        let lower = msg.to_lowercase();
        assert!(
            words.iter().any(|w| lower.contains(w)),
            "{name}: {msg:?} should mention one of {words:?}"
        );
    };
    says(
        "missing.jpg",
        &["not found", "no such file", "does not exist"],
    );
    says("empty.jpg", &["empty"]);
    says("truncated.jpg", &["truncated", "corrupt", "incomplete"]);
    says("truncated.png", &["truncated", "corrupt", "incomplete"]);
    says("corrupt.png", &["corrupt", "truncated", "invalid", "crc"]);
    says(
        "text.jpg",
        &[
            "not a recognised image",
            "unknown",
            "format",
            "not an image",
        ],
    );
    says("tiny.png", &["32 px"]);
    says("bomb.png", &["limit", "bomb", "too large", "pixels"]);
}

#[test]
fn a_clean_batch_exits_zero_and_a_rerun_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (weights, pca) = write_weights(root);
    let images = root.join("imgs");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    picture(50, 40, 5).save(images.join("a.png")).unwrap();
    picture(40, 60, 6).save(images.join("sub/b.PNG")).unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let out = root.join("v.jsonl");
    let run = |extra: &[&str]| {
        exe()
            .args([
                "extract",
                "--input",
                images.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ])
            .args([
                "--backend",
                "cpu",
                "--weights",
                weights.to_str().unwrap(),
                "--pca",
                pca.to_str().unwrap(),
            ])
            .args(["--max-size", "64"])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let lines = read_jsonl(&out);
    assert_eq!(lines.len(), 2);
    let second = run(&[]);
    assert_eq!(second.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&second.stderr).contains("2 already done"));
    assert_eq!(
        read_jsonl(&out),
        lines,
        "a rerun adds nothing and changes nothing"
    );
    let third = run(&["--restart"]);
    assert_eq!(third.status.code(), Some(0));
    assert_eq!(
        read_jsonl(&out),
        lines,
        "--restart recomputes the same vectors"
    );
}

#[test]
fn setup_errors_fail_fast_with_exit_1_and_a_helpful_message() {
    let b = batch();
    let out = b.root.join("v.jsonl");
    // Missing weights.
    let run = exe()
        .args([
            "--input",
            b.list.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--weights",
            "/nonexistent/w.safetensors",
        ])
        .args(["--pca", b.pca.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("/nonexistent/w.safetensors") && err.contains("rmac-native weights fetch"),
        "{err}"
    );
    // Missing input list.
    let run = exe()
        .args([
            "--input",
            "/nonexistent/list.txt",
            "--output",
            out.to_str().unwrap(),
        ])
        .args(["--weights", b.weights.to_str().unwrap()])
        .args(["--pca", b.pca.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("/nonexistent/list.txt"));
    // Missing PCA file names the way out.
    let run = extract(&b, &out, &["--pca", "/nonexistent/pca.safetensors"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--pca none"));
    // Unwritable output location.
    let run = extract(&b, Path::new("/nonexistent/dir/v.jsonl"), &[]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("/nonexistent/dir/v.jsonl"));
    // Bad usage is clap's exit 2.
    let run = exe().args(["--input"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
}

#[test]
fn pca_none_is_announced_once_and_changes_the_vectors() {
    let b = batch();
    let with = b.root.join("with.jsonl");
    let without = b.root.join("without.jsonl");
    extract(&b, &with, &[]);
    let run = extract(&b, &without, &["--pca", "none"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(stderr.matches("--pca none").count(), 1, "{stderr}");
    let (a, c) = (read_jsonl(&with), read_jsonl(&without));
    assert_eq!(a.len(), c.len());
    assert_ne!(a[0]["vector"], c[0]["vector"]);
}

/// `--backend gpu` gives the CPU's vectors within the contract's bound. Where
/// the only adapter is a software rasteriser (lavapipe in CI) it is refused
/// unless named with `--gpu N`.
#[cfg(feature = "gpu")]
#[test]
fn gpu_backend_vectors_match_cpu_backend() {
    let b = batch();
    let (cpu_out, gpu_out) = (b.root.join("cpu.jsonl"), b.root.join("gpu.jsonl"));
    extract(&b, &cpu_out, &[]);
    let mut gpu_flags = vec!["--backend", "gpu"];
    if !rmac_native::backend::gpu::hardware_adapter_available() {
        let refused = extract(&b, &gpu_out, &gpu_flags);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(
            err.contains("software rasteriser") && err.contains("--gpu N") && err.contains("[0] "),
            "{err}"
        );
        assert!(!gpu_out.exists(), "nothing is written before the refusal");
        gpu_flags.extend(["--gpu", "0"]);
    }
    // As on a server without a desktop session, where Mesa used to complain twice.
    let run = exe()
        .args(["--input", b.list.to_str().unwrap()])
        .args(["--output", gpu_out.to_str().unwrap()])
        .args(["--weights", b.weights.to_str().unwrap()])
        .args(["--pca", b.pca.to_str().unwrap(), "--max-size", "64"])
        .args(&gpu_flags)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !err.contains("XDG_RUNTIME_DIR"),
        "Mesa's display probe is silent: {err}"
    );
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (cpu, gpu) = (read_jsonl(&cpu_out), read_jsonl(&gpu_out));
    assert_eq!(cpu.len(), 3);
    let by_path: HashMap<&str, &serde_json::Value> = gpu
        .iter()
        .map(|v| (v["path"].as_str().unwrap(), &v["vector"]))
        .collect();
    for c in &cpu {
        let g = by_path[c["path"].as_str().unwrap()].as_array().unwrap();
        for (x, y) in c["vector"].as_array().unwrap().iter().zip(g) {
            assert!(
                (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 1e-4,
                "{} vs {}",
                x,
                y
            );
        }
    }
}

#[test]
fn a_second_run_on_the_same_output_is_refused_while_the_first_holds_it() {
    let b = batch();
    let out = b.root.join("locked.jsonl");
    // Another run's lock, held here (flock: per open file, so this process's
    // handle blocks the child exactly as a concurrent run would).
    let held = std::fs::File::create(b.root.join("locked.lock")).unwrap();
    held.try_lock().unwrap();
    let refused = extract(&b, &out, &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("another rmac-native run is writing"), "{err}");
    assert!(!out.exists(), "the refused run must not touch the output");
    drop(held);
    let ok = extract(&b, &out, &[]);
    assert_eq!(
        ok.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!read_jsonl(&out).is_empty());
}

#[test]
fn weights_synthetic_writes_the_test_generator_and_a_closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (w, p) = (
        dir.path().join("w.safetensors"),
        dir.path().join("p.safetensors"),
    );
    run_ok(
        exe()
            .args(["weights", "synthetic", "--seed", "2", "--output"])
            .arg(&w)
            .arg("--pca")
            .arg(&p),
    );
    let loaded = rmac_native::vgg16::weights::Vgg16Weights::load(&w).unwrap();
    let want = synthetic::vgg16(2);
    for (a, b) in loaded.layers.iter().zip(&want.layers) {
        assert_eq!((&a.kernel, &a.bias), (&b.kernel, &b.bias));
    }
    assert!(p.exists());

    // `weights check … | head -0`: stdout closed before the first line.
    let mut child = exe()
        .args(["weights", "check"])
        .arg(&w)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
