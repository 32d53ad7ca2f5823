//! `pca fit`'s whitening against numpy's on the same data
//! (tests/reference/make_whiten_h5_evaluate_fixtures.py → tests/fixtures/whiten/pca_numpy.safetensors).

use rmac_native::rmac::whiten::{
    EIGEN_FLOOR_REL, FitOptions, WhiteningAccumulator, fit_whitening, fit_whitening_with,
};
use rmac_native::vgg16::synthetic::{self, uniform};
use std::path::Path;

const N: usize = 2000;
const D: usize = 512;

/// The script's `pca_data()`: v_ij = u³ / (1 + j/32), rows L2-normalised (sequential f64), f32.
fn pca_data() -> Vec<Vec<f32>> {
    (0..N)
        .map(|i| {
            let v: Vec<f64> = (0..D)
                .map(|j| {
                    let u = uniform(6, 600, (i * D + j) as u64);
                    u * u * u * (1.0 / (1.0 + j as f64 / 32.0))
                })
                .collect();
            let mut ss = 0.0f64;
            for x in &v {
                ss += x * x;
            }
            let n = ss.sqrt();
            v.iter().map(|x| (x / n) as f32).collect()
        })
        .collect()
}

fn read_f64(file: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F64);
    (
        t.shape().to_vec(),
        t.data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    )
}

fn apply64(w: &[f32], b: &[f32], x: &[f32]) -> Vec<f64> {
    w.chunks_exact(x.len())
        .zip(b)
        .map(|(row, &bb)| {
            row.iter()
                .zip(x)
                .map(|(&a, &v)| f64::from(a) * f64::from(v))
                .sum::<f64>()
                + f64::from(bb)
        })
        .collect()
}

#[test]
fn whitening_matches_numpy() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whiten/pca_numpy.safetensors");
    let data = pca_data();
    // The generator is the script's, bit for bit.
    let (_, head) = read_f64(&fixture, "x_head");
    for (k, &v) in head.iter().enumerate() {
        assert_eq!(v as f32, data[k / D][k % D], "input {k}");
    }
    let fit = fit_whitening(&data).unwrap();
    assert_eq!(fit.count, N as u64);
    assert_eq!(fit.clamped, 0);

    let (_, lam) = read_f64(&fixture, "eigenvalues");
    for (k, (a, b)) in fit.eigenvalues.iter().zip(&lam).enumerate() {
        assert!(
            (a - b).abs() <= 1e-9 * lam[0],
            "eigenvalue {k}: {a} vs numpy {b}"
        );
    }
    let (_, mean) = read_f64(&fixture, "mean");
    for (a, b) in fit.mean.iter().zip(&mean) {
        assert!((a - b).abs() < 1e-12, "mean {a} vs {b}");
    }
    // W and b: whitened probes, row sums and bias (W to f32 rounding: relative ~1e-7 of |W| ~ 1/sqrt(λ_min)).
    let (_, bias) = read_f64(&fixture, "bias");
    let scale = bias.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let bdiff = fit
        .pca
        .bias
        .iter()
        .zip(&bias)
        .map(|(&a, b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max);
    assert!(
        bdiff < 1e-5 * scale,
        "bias differs by {bdiff} (|b| up to {scale})"
    );
    let (_, probes) = read_f64(&fixture, "probes");
    let mut worst = 0.0f64;
    for p in 0..4 {
        let y = apply64(&fit.pca.weight, &fit.pca.bias, &data[p]);
        for (a, b) in y.iter().zip(&probes[p * D..(p + 1) * D]) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(
        worst < 1e-5,
        "whitened probes differ from numpy's by {worst}"
    );
    let (_, rowsum) = read_f64(&fixture, "rowsum");
    for (r, want) in rowsum.iter().enumerate() {
        let got: f64 = fit.pca.weight[r * D..(r + 1) * D]
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        assert!(
            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
            "row {r}: Σ W = {got}, numpy {want}"
        );
    }
    eprintln!("max |y − y_numpy| over 4 probes: {worst:.2e}; max |b − b_numpy|: {bdiff:.2e}");

    // W·C·Wᵀ = I on the data: whiten every vector, covariance of the outputs.
    let ys: Vec<Vec<f64>> = data
        .iter()
        .map(|x| apply64(&fit.pca.weight, &fit.pca.bias, x))
        .collect();
    let mut worst_c = 0.0f64;
    for a in 0..D {
        for b in (0..D).step_by(37).chain([a]) {
            let c: f64 = ys.iter().map(|y| y[a] * y[b]).sum::<f64>() / (N as f64 - 1.0);
            let want = if a == b { 1.0 } else { 0.0 };
            worst_c = worst_c.max((c - want).abs());
        }
    }
    assert!(
        worst_c < 1e-3,
        "whitened covariance off identity by {worst_c}"
    );
    let m0: f64 = ys.iter().map(|y| y[0]).sum::<f64>() / N as f64;
    assert!(m0.abs() < 1e-4, "whitened mean {m0}");
}

/// `--shrink A --dim D` against numpy on the same data
/// (tests/reference/make_whiten_shrink_fixtures.py → tests/fixtures/whiten/pca_shrink_numpy.safetensors).
#[test]
fn shrunk_and_reduced_whitening_match_numpy() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/whiten/pca_shrink_numpy.safetensors");
    let data = pca_data();
    for (name, shrink, dim) in [
        ("shrink0.5", 0.5, 512usize),
        ("dim128", 0.0, 128),
        ("shrink0.1_dim64", 0.1, 64),
    ] {
        let fit = fit_whitening_with(
            &data,
            FitOptions {
                shrink,
                dim: Some(dim),
            },
        )
        .unwrap();
        assert_eq!(fit.pca.dim(), dim, "{name}");
        assert_eq!(fit.pca.weight.len(), dim * D, "{name}: a D×512 weight");
        let (shape, bias) = read_f64(&fixture, &format!("{name}.bias"));
        assert_eq!(shape, [dim]);
        let scale = bias.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let bdiff = fit
            .pca
            .bias
            .iter()
            .zip(&bias)
            .map(|(&a, b)| (f64::from(a) - b).abs())
            .fold(0.0, f64::max);
        assert!(
            bdiff < 1e-5 * scale,
            "{name}: bias differs by {bdiff} (|b| up to {scale})"
        );
        let (_, probes) = read_f64(&fixture, &format!("{name}.probes"));
        let mut worst = 0.0f64;
        for p in 0..4 {
            let y = apply64(&fit.pca.weight, &fit.pca.bias, &data[p]);
            assert_eq!(y.len(), dim);
            for (a, b) in y.iter().zip(&probes[p * dim..(p + 1) * dim]) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(
            worst < 1e-5,
            "{name}: whitened probes differ from numpy's by {worst}"
        );
        let (_, rowsum) = read_f64(&fixture, &format!("{name}.rowsum"));
        for (r, want) in rowsum.iter().enumerate() {
            let got: f64 = fit.pca.weight[r * D..(r + 1) * D]
                .iter()
                .map(|&v| f64::from(v))
                .sum();
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{name} row {r}: Σ W = {got}, numpy {want}"
            );
        }
        eprintln!("{name}: max |y − y_numpy| {worst:.2e}, max |b − b_numpy| {bdiff:.2e}");
    }
    // The defaults are the plain whitening, bit for bit.
    let plain = fit_whitening(&data).unwrap();
    let zero = fit_whitening_with(&data, FitOptions::default()).unwrap();
    assert_eq!(plain.pca.weight, zero.pca.weight);
    assert_eq!(plain.pca.bias, zero.pca.bias);
    // Reducing keeps the leading rows of the full whitening.
    let full = fit_whitening_with(
        &data,
        FitOptions {
            shrink: 0.1,
            dim: None,
        },
    )
    .unwrap();
    let cut = fit_whitening_with(
        &data,
        FitOptions {
            shrink: 0.1,
            dim: Some(64),
        },
    )
    .unwrap();
    assert_eq!(&full.pca.weight[..64 * D], &cut.pca.weight[..]);
    assert!(
        fit_whitening_with(
            &data,
            FitOptions {
                shrink: -1.0,
                dim: None
            }
        )
        .is_err()
    );
    assert!(
        fit_whitening_with(
            &data,
            FitOptions {
                shrink: 0.0,
                dim: Some(513)
            }
        )
        .is_err()
    );
}

#[test]
fn streaming_in_any_block_split_gives_the_same() {
    let data: Vec<Vec<f32>> = pca_data()
        .into_iter()
        .take(700)
        .map(|v| v[..64].to_vec())
        .collect();
    let a = fit_whitening(&data).unwrap();
    let mut acc = WhiteningAccumulator::new();
    for v in &data {
        acc.add(v).unwrap();
    }
    let b = acc.finish().unwrap();
    assert_eq!(a.pca.weight, b.pca.weight);
    // A different order changes only rounding.
    let rev: Vec<Vec<f32>> = data.iter().rev().cloned().collect();
    let c = fit_whitening(&rev).unwrap();
    let d = a
        .pca
        .weight
        .iter()
        .zip(&c.pca.weight)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let m = a.pca.weight.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(d < 1e-4 * m, "order changed W by {d} (|W| ≤ {m})");
}

#[test]
fn rank_deficient_data_is_clamped_not_infinite() {
    // 100 vectors in 512 dimensions, and channel 5 always zero: rank ≤ 99.
    let data: Vec<Vec<f32>> = pca_data()
        .into_iter()
        .take(100)
        .map(|mut v| {
            v[5] = 0.0;
            v
        })
        .collect();
    let fit = fit_whitening(&data).unwrap();
    assert!(fit.clamped >= D - 99, "clamped {}", fit.clamped);
    assert!((fit.floor - fit.eigenvalues[0] * EIGEN_FLOOR_REL).abs() <= 1e-30);
    assert!(
        fit.pca
            .weight
            .iter()
            .chain(&fit.pca.bias)
            .all(|v| v.is_finite())
    );
    // The data's own directions are still whitened: first component has unit variance.
    let ys: Vec<f64> = data
        .iter()
        .map(|x| apply64(&fit.pca.weight, &fit.pca.bias, x)[0])
        .collect();
    let var = ys.iter().map(|y| y * y).sum::<f64>() / 99.0;
    assert!((var - 1.0).abs() < 1e-3, "{var}");
}

/// `pca fit` end to end: synthetic VGG16, a few generated images and a broken one.
#[test]
fn pca_fit_command() {
    use rmac_native::backend::CpuBackend;
    use rmac_native::extractor::{ExtractConfig, Extractor, prepare_path};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("vgg16.safetensors");
    synthetic::vgg16(1).save(&weights).unwrap();
    let mut list = String::new();
    for k in 0..4u64 {
        let img = image::RgbImage::from_fn(120, 96, |x, y| {
            let i = u64::from(y * 120 + x) * 3;
            image::Rgb([0, 1, 2].map(|c| (uniform(11, k, i + c) * 255.0) as u8))
        });
        let p = dir.path().join(format!("img{k}.png"));
        img.save(&p).unwrap();
        list.push_str(&format!("{}\n", p.display()));
    }
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8 not a jpeg").unwrap();
    list.push_str(&format!("{}\n", broken.display()));
    let list_path = dir.path().join("list.txt");
    std::fs::write(&list_path, &list).unwrap();
    let fit_cmd = |extra: &[&str]| {
        let out = dir.path().join("pca.safetensors");
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_rmac-native"))
            .args([
                "pca",
                "fit",
                "--backend",
                "cpu",
                "--max-size",
                "96",
                "--levels",
                "2",
                "--input",
            ])
            .arg(&list_path)
            .arg("--output")
            .arg(&out)
            .arg("--weights")
            .arg(&weights)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "{stderr}");
        let pca = rmac_native::rmac::pca::PcaWeights::load(&out).unwrap();
        (stderr, pca)
    };
    let (stderr, pca) = fit_cmd(&["--shrink", "0"]);
    assert!(
        stderr.contains("skipped") && stderr.contains("broken.jpg"),
        "{stderr}"
    );
    assert!(
        stderr.contains("clamped"),
        "few vectors, plain whitening: the floor must be reported: {stderr}"
    );
    assert!(stderr.contains("of 4 images (1 skipped)"), "{stderr}");
    let (stderr, default_pca) = fit_cmd(&[]);
    assert!(stderr.contains("(--shrink 3)"), "{stderr}");

    // The library on the same region vectors gives the same file.
    let config = ExtractConfig {
        max_size: 96,
        levels: 2,
        ..ExtractConfig::default()
    };
    let backend = CpuBackend::new(Arc::new(synthetic::vgg16(1)), 0).unwrap();
    let mut ex = Extractor::new(Box::new(backend), None, config.clone());
    let mut vectors = Vec::new();
    for k in 0..4 {
        let prep = prepare_path(&dir.path().join(format!("img{k}.png")), &config).unwrap();
        let (_, parts) = ex.describe_prepared_parts(&prep).unwrap();
        for (m, v) in parts.region_max.iter().zip(&parts.region_vectors) {
            let mut l2 = m.clone();
            rmac_native::rmac::l2_normalize(&mut l2);
            assert_eq!(
                &l2, v,
                "region vectors without PCA are the L2-normalised maxima"
            );
        }
        vectors.extend(parts.region_vectors);
    }
    let fit = fit_whitening(&vectors).unwrap();
    assert_eq!(fit.pca.weight, pca.weight);
    assert_eq!(fit.pca.bias, pca.bias);
    // Without --shrink, the measured default shrinkage.
    let fit = fit_whitening_with(
        &vectors,
        FitOptions {
            shrink: rmac_native::rmac::whiten::DEFAULT_SHRINK,
            dim: None,
        },
    )
    .unwrap();
    assert_eq!(fit.pca.weight, default_pca.weight);
    assert_eq!(fit.pca.bias, default_pca.bias);
    assert_ne!(default_pca.weight, pca.weight);
}
