//! `dba` (database-side augmentation) against a naive loop: each row's top-K
//! others found by sorting every pair's `search::dot` score (ties to the lower
//! row), the weighted sum (weight 1 for the row itself, score^alpha for a
//! neighbour, negative scores 0) in float64, L2-normalised.

mod common;

use common::{Rng, exe, run_ok, unit_rows};
use rmac_native::search::dot;
use rmac_native::store::VectorSource;
use rmac_native::store::npy::{MappedVectors, write_npy};
use std::path::Path;

fn naive_dba(data: &[f32], dim: usize, k: usize, alpha: f64) -> Vec<f64> {
    let n = data.len() / dim;
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let mut others: Vec<(usize, f32)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (j, dot(row(i), row(j))))
            .collect();
        others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut v: Vec<f64> = row(i).iter().map(|&x| x as f64).collect();
        for &(j, s) in others.iter().take(k) {
            let w = if alpha == 0.0 {
                1.0
            } else {
                (s.max(0.0) as f64).powf(alpha)
            };
            for (a, &b) in v.iter_mut().zip(row(j)) {
                *a += w * b as f64;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        out.extend(v.iter().map(|x| x / norm));
    }
    out
}

fn read(npy: &Path) -> (Vec<String>, Vec<f32>, usize) {
    let m = MappedVectors::open(npy).unwrap();
    (m.paths().to_vec(), m.data().to_vec(), m.dim())
}

/// Random rows plus two exact copies of the first, so that ties and
/// duplicates decide neighbours (any dimension: a reduced whitening's too).
fn data(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    let mut d = unit_rows(rng, n, dim);
    let copy = d[..dim].to_vec();
    d.extend_from_slice(&copy);
    d.extend_from_slice(&copy);
    d
}

#[test]
fn dba_equals_a_naive_loop_for_any_k_alpha_and_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(77);
    for (dim, n, k, alpha) in [
        (512, 30, 3, 0.0),
        (512, 50, 5, 3.0),
        (512, 40, 1, 1.0),
        (512, 12, 20, 2.0),
    ] {
        let d = data(&mut rng, n, dim);
        let rows = d.len() / dim;
        let paths: Vec<String> = (0..rows).map(|i| format!("img/{i:03}.jpg")).collect();
        let src = dir.path().join(format!("v{n}.npy"));
        write_npy(&src, &paths, &d, dim).unwrap();
        let out = dir.path().join(format!("dba{n}.npy"));
        run_ok(
            exe()
                .arg("dba")
                .arg(&src)
                .args([
                    "-k",
                    &k.to_string(),
                    "--alpha",
                    &alpha.to_string(),
                    "--output",
                ])
                .arg(&out),
        );
        let (got_paths, got, got_dim) = read(&out);
        assert_eq!(got_paths, paths);
        assert_eq!(got_dim, dim);
        let want = naive_dba(&d, dim, k.min(rows - 1), alpha);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0f64, f64::max);
        assert!(
            worst < 1e-6,
            "dim {dim}, k {k}, alpha {alpha}: max |dba − naive| = {worst:e}"
        );
        // Every vector is unit length again.
        for r in got.chunks_exact(dim) {
            let norm: f64 = r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
    }
}

#[test]
fn dba_records_itself_resumes_and_refuses_to_mix() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let dim = 64;
    let d = data(&mut rng, 20, dim);
    let rows = d.len() / dim;
    let paths: Vec<String> = (0..rows).map(|i| format!("img/{i:03}.jpg")).collect();
    // A JSONL source (as `extract` writes it) and a JSONL destination.
    let src = dir.path().join("v.jsonl");
    let mut text = String::new();
    for (p, r) in paths.iter().zip(d.chunks_exact(dim)) {
        text += &serde_json::json!({"path": p, "vector": r}).to_string();
        text += "\n";
    }
    std::fs::write(&src, text).unwrap();
    let out = dir.path().join("dba.jsonl");
    let dba = |k: &str, alpha: &str| {
        let mut c = exe();
        c.arg("dba")
            .arg(&src)
            .args(["-k", k, "--alpha", alpha, "--output"])
            .arg(&out);
        c
    };
    run_ok(&mut dba("2", "3"));
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count(), rows);
    let want = naive_dba(&d, dim, 2, 3.0);
    for (line, w) in lines.lines().zip(want.chunks_exact(dim)) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let got: Vec<f64> = v["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let worst = got
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{worst:e}");
    }
    // The same command again: everything is already there.
    let again = run_ok(&mut dba("2", "3"));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("0 vectors and 0 errors written"), "{said}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), lines);
    // Another k on the same output would mix two kinds of vectors: refused
    // when the source records settings (extract's outputs do).
    let settings = dir.path().join("v.settings.json");
    let base = serde_json::json!({
        "weights_sha256": "ab", "weights_bytes": 1, "pca_sha256": "none",
        "max_size": 1024, "levels": 3, "preprocess": "keras", "dimension": dim
    });
    std::fs::write(&settings, base.to_string()).unwrap();
    let out2 = dir.path().join("dba2.jsonl");
    let mut first = exe();
    first
        .arg("dba")
        .arg(&src)
        .args(["-k", "2", "--output"])
        .arg(&out2);
    run_ok(&mut first);
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dba2.settings.json")).unwrap())
            .unwrap();
    assert_eq!(recorded["dba"], "k=2,alpha=0");
    let mixed = exe()
        .arg("dba")
        .arg(&src)
        .args(["-k", "3", "--output"])
        .arg(&out2)
        .output()
        .unwrap();
    assert!(!mixed.status.success());
    let said = String::from_utf8_lossy(&mixed.stderr);
    assert!(
        said.contains("dba: k=2,alpha=0 before, k=3,alpha=0 now"),
        "{said}"
    );
}

#[test]
fn dba_refuses_bad_arguments_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(9);
    let d = unit_rows(&mut rng, 1, 8);
    let src = dir.path().join("one.npy");
    write_npy(&src, &["a.jpg".to_string()], &d, 8).unwrap();
    let out = dir.path().join("o.npy");
    for (args, says) in [
        (vec!["-k", "2"], "needs at least 2"),
        (vec!["-k", "0"], "-k must be at least 1"),
        (vec!["-k", "2", "--alpha", "-1"], "--alpha takes a number"),
    ] {
        let o = exe()
            .arg("dba")
            .arg(&src)
            .args(&args)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
