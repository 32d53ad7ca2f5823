//! The opt-in recipe of issue 16 (`--no-enlarge`, `--pool gem --gem-p P`,
//! `--scales`) against float64 references written here, independently of the
//! library's code; and the default path unchanged by it, bit for bit.

mod common;

use common::exe;
use rmac_native::backend::{Backend, CpuBackend};
use rmac_native::extractor::{ExtractConfig, Extractor, prepare_image, scale_sizes};
use rmac_native::image::preprocess::to_bgr_tensor;
use rmac_native::image::resize::{resize_bicubic, target_size};
use rmac_native::rmac::pca::{self, PcaWeights};
use rmac_native::rmac::{Pooling, rmac, rmac_pooled, rmac_regions};
use rmac_native::tensor::Tensor3;
use rmac_native::vgg16::synthetic::{self, uniform};
use std::sync::Arc;

/// A pool5-like map: non-negative (ReLU), with zeros (ReLU's floor) and a few large values.
fn relu_map(seed: u8, h: usize, w: usize, c: usize) -> Tensor3 {
    let data = (0..h * w * c)
        .map(|i| {
            let u = uniform(seed, 900, i as u64);
            if u < 0.3 { 0.0 } else { (u * u * 40.0) as f32 }
        })
        .collect();
    Tensor3::from_vec(h, w, c, data)
}

fn l2_f64(v: &mut [f64]) {
    let n = v.iter().map(|x| x * x).sum::<f64>().max(1e-12).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// The R-MAC head in f64 with naive GeM (direct powers, no rescaling):
/// per region ((1/|R|) Σ x^p)^(1/p) → L2 → PCA → L2, the sum over regions (unnormalised).
fn reference_head(
    map: &Tensor3,
    levels: usize,
    p: Option<f64>,
    pca: Option<&PcaWeights>,
) -> Vec<f64> {
    let dim = pca.map_or(map.c, |q| q.bias.len());
    let mut sum = vec![0.0f64; dim];
    for r in rmac_regions(map.w, map.h, levels) {
        let (y2, x2) = ((r.y + r.h).min(map.h), (r.x + r.w).min(map.w));
        let mut v = vec![0.0f64; map.c];
        for (ch, out) in v.iter_mut().enumerate() {
            let mut acc = 0.0f64;
            let mut max = 0.0f64;
            let mut n = 0usize;
            for y in r.y..y2 {
                for x in r.x..x2 {
                    let val = f64::from(map.data[(y * map.w + x) * map.c + ch]);
                    if let Some(p) = p {
                        acc += val.powf(p);
                    }
                    max = max.max(val);
                    n += 1;
                }
            }
            *out = match p {
                Some(p) => (acc / n as f64).powf(1.0 / p),
                None => max,
            };
        }
        l2_f64(&mut v);
        if let Some(q) = pca {
            let c = map.c;
            let mut y: Vec<f64> = (0..dim)
                .map(|row| {
                    (0..c)
                        .map(|col| f64::from(q.weight[row * c + col]) * v[col])
                        .sum::<f64>()
                        + f64::from(q.bias[row])
                })
                .collect();
            l2_f64(&mut y);
            v = y;
        }
        for (s, x) in sum.iter_mut().zip(&v) {
            *s += x;
        }
    }
    sum
}

fn max_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
}

#[test]
fn gem_pooling_matches_a_float64_reference() {
    let pca = pca::synthetic(2);
    for (seed, h, w) in [(1u8, 5usize, 7usize), (2, 9, 4), (3, 3, 3), (4, 1, 6)] {
        let map = relu_map(seed, h, w, 512);
        for p in [1.0, 3.0, 4.5] {
            for q in [None, Some(&pca)] {
                let got = rmac_pooled(&map, 3, Pooling::Gem { p }, q);
                let mut want = reference_head(&map, 3, Some(p), q);
                l2_f64(&mut want);
                let d = max_diff(&got.vector, &want);
                assert!(d < 2e-6, "{h}×{w} p={p} pca={}: {d}", q.is_some());
                // Each region's pooled values too (before any normalisation).
                let r = got.regions[0];
                for ch in [0, 17, 511] {
                    let vals: Vec<f64> = (r.y..(r.y + r.h).min(h))
                        .flat_map(|y| (r.x..(r.x + r.w).min(w)).map(move |x| (y, x)))
                        .map(|(y, x)| f64::from(map.data[(y * w + x) * 512 + ch]))
                        .collect();
                    let gem = (vals.iter().map(|v| v.powf(p)).sum::<f64>() / vals.len() as f64)
                        .powf(1.0 / p);
                    let g = f64::from(got.region_max[0][ch]);
                    assert!(
                        (g - gem).abs() <= 1e-6 * gem.max(1.0),
                        "channel {ch}: {g} vs {gem}"
                    );
                }
            }
        }
        // Max pooling through the same reference: the head is the one of `rmac`.
        let mut want = reference_head(&map, 3, None, Some(&pca));
        l2_f64(&mut want);
        assert!(max_diff(&rmac(&map, 3, Some(&pca)).vector, &want) < 2e-6);
        assert_eq!(
            rmac(&map, 3, Some(&pca)).vector,
            rmac_pooled(&map, 3, Pooling::Max, Some(&pca)).vector,
            "--pool max is keras_rmac's head, bit for bit"
        );
    }
}

/// A test image with structure at every scale.
fn image(seed: u64, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let i = u64::from(y * w + x) * 3;
        let wave = ((f64::from(x) / 7.0).sin() * (f64::from(y) / 5.0).cos() * 90.0) as i32;
        image::Rgb([0, 1, 2].map(|c| {
            (i32::from((uniform(13, seed, i + c) * 120.0) as u8) + 100 + wave).clamp(0, 255) as u8
        }))
    })
}

fn extractor(config: &ExtractConfig, pca: Option<PcaWeights>) -> Extractor {
    let backend = CpuBackend::new(Arc::new(synthetic::vgg16(1)), 0).unwrap();
    Extractor::new(Box::new(backend), pca, config.clone())
}

/// The stated rule, written out: L = max_size (with no_enlarge: min(max_size,
/// longest side)); S = round(s·L); scale = S / longest; (ceil(scale·w), ceil(scale·h)).
fn rule(w: u32, h: u32, max_size: u32, no_enlarge: bool, s: f64) -> (u32, u32) {
    let longest = w.max(h);
    let base = if no_enlarge {
        max_size.min(longest)
    } else {
        max_size
    };
    let side = (s * f64::from(base)).round();
    let k = side / f64::from(longest);
    (
        (k * f64::from(w)).ceil() as u32,
        (k * f64::from(h)).ceil() as u32,
    )
}

#[test]
fn multi_scale_matches_a_float64_reference_from_the_single_scale_pieces() {
    // 0.7071 as the command line reads it (`--scales 1,0.7071,0.5`).
    let scales = vec![1.0, "0.7071".parse().unwrap(), 0.5];
    let pca = pca::synthetic(3);
    for (w, h, max_size, no_enlarge) in [
        (150u32, 110u32, 128u32, false),
        (90, 140, 128, false),
        (100, 75, 160, true),
        (300, 200, 160, true),
    ] {
        for pooling in [Pooling::Max, Pooling::Gem { p: 3.0 }] {
            let config = ExtractConfig {
                max_size,
                levels: 3,
                no_enlarge,
                pooling,
                scales: scales.clone(),
                ..ExtractConfig::default()
            };
            let img = image(u64::from(w), w, h);
            let sizes = scale_sizes(w, h, &config);
            let want_sizes: Vec<_> = scales
                .iter()
                .map(|&s| rule(w, h, max_size, no_enlarge, s))
                .collect();
            assert_eq!(sizes, want_sizes);
            let mut ex = extractor(&config, Some(pca.clone()));
            let got = ex.describe(&img).unwrap();

            // The reference: each scale resized from the decoded image, one pass
            // each through a backend of its own, the f64 head, summed, L2.
            let mut backend = CpuBackend::new(Arc::new(synthetic::vgg16(1)), 0).unwrap();
            let mut sum = vec![0.0f64; 512];
            for &(nw, nh) in &want_sizes {
                let resized = if (nw, nh) == (w, h) {
                    img.clone()
                } else {
                    resize_bicubic(&img, nw, nh)
                };
                let pool5 = backend
                    .pool5(&to_bgr_tensor(&resized, config.preprocess))
                    .unwrap();
                let p = match pooling {
                    Pooling::Max => None,
                    Pooling::Gem { p } => Some(p),
                };
                for (s, x) in sum.iter_mut().zip(reference_head(&pool5, 3, p, Some(&pca))) {
                    *s += x;
                }
            }
            l2_f64(&mut sum);
            let d = max_diff(&got, &sum);
            assert!(d < 1e-5, "{w}×{h} at {max_size} ({pooling:?}): {d}");
        }
    }
}

#[test]
fn the_default_recipe_is_keras_rmac_bit_for_bit() {
    let pca = pca::synthetic(1);
    let config = ExtractConfig {
        max_size: 96,
        ..ExtractConfig::default()
    };
    let img = image(7, 120, 80);
    let mut ex = extractor(&config, Some(pca.clone()));
    let got = ex.describe(&img).unwrap();
    let mut backend = CpuBackend::new(Arc::new(synthetic::vgg16(1)), 0).unwrap();
    let (nw, nh) = target_size(120, 80, 96);
    let pool5 = backend
        .pool5(&to_bgr_tensor(
            &resize_bicubic(&img, nw, nh),
            config.preprocess,
        ))
        .unwrap();
    assert_eq!(got, rmac(&pool5, 3, Some(&pca)).vector);
    // One scale is the single-scale path (so `--scales 1` changes nothing).
    let one = ExtractConfig {
        scales: vec![1.0],
        ..config.clone()
    };
    assert_eq!(extractor(&one, Some(pca)).describe(&img).unwrap(), got);
}

#[test]
fn no_enlarge_keeps_small_images_at_their_size() {
    let config = ExtractConfig {
        max_size: 128,
        no_enlarge: true,
        ..ExtractConfig::default()
    };
    let small = image(1, 80, 60);
    let p = prepare_image(&small, &config).unwrap();
    assert_eq!((p.tensor.w, p.tensor.h), (80, 60));
    assert!(p.more_scales.is_empty());
    let enlarging = prepare_image(
        &small,
        &ExtractConfig {
            no_enlarge: false,
            ..config.clone()
        },
    )
    .unwrap();
    assert_eq!((enlarging.tensor.w, enlarging.tensor.h), (128, 96));
    // Larger images shrink as before.
    let big = image(2, 200, 150);
    let p = prepare_image(&big, &config).unwrap();
    assert_eq!((p.tensor.w, p.tensor.h), (128, 96));
    // The small image's vector is the default path's at its own size.
    let own = ExtractConfig {
        max_size: 80,
        ..ExtractConfig::default()
    };
    assert_eq!(
        extractor(&config, None).describe(&small).unwrap(),
        extractor(&own, None).describe(&small).unwrap()
    );
    // A scale too small for VGG16 is left out; only all of them too small is an error.
    let tiny_scales = ExtractConfig {
        scales: vec![1.0, 0.25],
        ..config.clone()
    };
    let p = prepare_image(&small, &tiny_scales).unwrap();
    assert!(p.more_scales.is_empty(), "80×60 at 0.25 is 20×15: left out");
    let err = prepare_image(
        &image(3, 40, 30),
        &ExtractConfig {
            scales: vec![0.5],
            ..config
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("32 px"), "{err}");
}

fn write_images(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let mut list = String::new();
    for k in 0..n {
        let p = dir.join(format!("img{k}.png"));
        image(k + 20, 70 + 13 * k as u32, 64).save(&p).unwrap();
        list.push_str(&format!("{}\n", p.display()));
    }
    let list_path = dir.join("list.txt");
    std::fs::write(&list_path, list).unwrap();
    list_path
}

/// The knobs on the command line: in --help, recorded in the settings, and a
/// resume or a query with another value refused.
#[test]
fn every_knob_is_recorded_and_a_mix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("vgg16.safetensors");
    synthetic::vgg16(1).save(&weights).unwrap();
    let help = exe().args(["extract", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--no-enlarge", "--pool", "--gem-p", "--scales"] {
        assert!(help.contains(flag), "{flag} not in --help:\n{help}");
    }
    for sub in [["search", "--help"], ["serve", "--help"]] {
        let out = exe().args(sub).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("--scales"));
    }
    let list = write_images(dir.path(), 3);
    let out = dir.path().join("v.jsonl");
    let extract = |extra: &[&str]| {
        exe()
            .args([
                "extract",
                "--backend",
                "cpu",
                "--pca",
                "none",
                "--max-size",
                "96",
                "--input",
            ])
            .arg(&list)
            .arg("--output")
            .arg(&out)
            .arg("--weights")
            .arg(&weights)
            .args(extra)
            .output()
            .unwrap()
    };
    let knobs = [
        "--no-enlarge",
        "--pool",
        "gem",
        "--gem-p",
        "2.5",
        "--scales",
        "1,0.7071",
    ];
    let run = extract(&knobs);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("v.settings.json")).unwrap())
            .unwrap();
    assert_eq!(settings["no_enlarge"], true);
    assert_eq!(settings["pool"], "gem:2.5");
    assert_eq!(settings["scales"], "1,0.7071");
    // The vectors are the library's with the same recipe.
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let config = ExtractConfig {
        max_size: 96,
        no_enlarge: true,
        pooling: Pooling::Gem { p: 2.5 },
        scales: vec![1.0, "0.7071".parse().unwrap()],
        ..ExtractConfig::default()
    };
    let path = first["path"].as_str().unwrap();
    let want = extractor(&config, None)
        .describe(&image::open(path).unwrap().to_rgb8())
        .unwrap();
    let got: Vec<f32> = first["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got, want);

    // A resume with the default recipe would mix two kinds of vectors.
    let run = extract(&[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--no-enlarge: true before, false now")
            && stderr.contains("--pool: gem:2.5 before, max now")
            && stderr.contains("--scales: 1,0.7071 before, 1 now"),
        "{stderr}"
    );
    // The same knobs resume fine.
    assert!(extract(&knobs).status.success());

    // A query takes the index's recipe, and refuses another.
    let search = |extra: &[&str]| {
        exe()
            .arg("search")
            .arg(&out)
            .args(["--backend", "cpu", "-k", "1", "--json", "--image", path])
            .args(extra)
            .output()
            .unwrap()
    };
    let run = search(&[]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let hit: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let score = hit["results"][0]["score"]
        .as_f64()
        .unwrap_or_else(|| panic!("{hit}"));
    assert!(score > 0.9999, "the image finds itself: {hit}");
    // The contact sheet's header says which recipe made the vectors.
    let html = dir.path().join("sheet.html");
    let run = search(&["--html", html.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let sheet = std::fs::read_to_string(&html).unwrap();
    assert!(
        sheet.contains("no-enlarge, pool gem:2.5, scales 1,0.7071"),
        "the sheet's header lacks the recipe"
    );
    for other in [
        &["--pool", "max"][..],
        &["--scales", "1"],
        &["--pool", "gem", "--gem-p", "3"],
    ] {
        let run = search(other);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{other:?}: {stderr}");
        assert!(stderr.contains("would not be comparable"), "{stderr}");
    }
    // Bad values are refused with what to do.
    for (bad, says) in [
        (&["--scales", "1,1.5"][..], "(0, 1]"),
        (&["--scales", "1,0.5,1"], "twice"),
        (&["--pool", "gem", "--gem-p", "0.5"], "--gem-p"),
        (&["--pool", "max", "--gem-p", "3"], "--pool gem"),
    ] {
        let run = extract(bad);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{bad:?}: {stderr}");
        assert!(stderr.contains(says), "{bad:?}: {stderr}");
    }
}

/// `pca fit --shrink --dim --sample --seed`, then D-dimensional vectors through
/// every sink and every reader: extract (JSONL, NPY, Parquet, resumed),
/// convert, search --image, evaluate, knn.
#[test]
fn reduced_vectors_flow_through_sinks_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("vgg16.safetensors");
    synthetic::vgg16(1).save(&weights).unwrap();
    let list = write_images(dir.path(), 5);
    let fit = |out: &std::path::Path, seed: &str| {
        let run = exe()
            .args([
                "pca",
                "fit",
                "--backend",
                "cpu",
                "--max-size",
                "96",
                "--levels",
                "2",
            ])
            .args([
                "--shrink", "0.5", "--dim", "24", "--sample", "4", "--seed", seed, "--input",
            ])
            .arg(&list)
            .arg("--output")
            .arg(out)
            .arg("--weights")
            .arg(&weights)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "{stderr}");
        stderr
    };
    let pca_file = dir.path().join("pca24.safetensors");
    let said = fit(&pca_file, "1");
    assert!(
        said.contains("learning from 4 of the 5 listed images"),
        "{said}"
    );
    assert!(
        said.contains("to 24 dimensions") && said.contains("--shrink 0.5"),
        "{said}"
    );
    let again = dir.path().join("again.safetensors");
    fit(&again, "1");
    assert_eq!(
        std::fs::read(&pca_file).unwrap(),
        std::fs::read(&again).unwrap(),
        "same seed, same file"
    );
    fit(&again, "2");
    assert_ne!(
        std::fs::read(&pca_file).unwrap(),
        std::fs::read(&again).unwrap(),
        "another seed, other images"
    );
    let pca = PcaWeights::load(&pca_file).unwrap();
    assert_eq!((pca.dim(), pca.weight.len()), (24, 24 * 512));

    let extract = |out: &std::path::Path| {
        let run = exe()
            .args([
                "extract",
                "--backend",
                "cpu",
                "--max-size",
                "96",
                "--levels",
                "2",
                "--input",
            ])
            .arg(&list)
            .arg("--output")
            .arg(out)
            .arg("--weights")
            .arg(&weights)
            .arg("--pca")
            .arg(&pca_file)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}: {}",
            out.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    };
    let jsonl = dir.path().join("v.jsonl");
    extract(&jsonl);
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    // The library's vector, 24 floats.
    let config = ExtractConfig {
        max_size: 96,
        levels: 2,
        ..ExtractConfig::default()
    };
    let first_path = lines[0]["path"].as_str().unwrap().to_owned();
    let want = extractor(&config, Some(pca.clone()))
        .describe(&image::open(&first_path).unwrap().to_rgb8())
        .unwrap();
    let got: Vec<f32> = lines[0]["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got.len(), 24);
    assert_eq!(got, want);
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("v.settings.json")).unwrap())
            .unwrap();
    assert_eq!(settings["dimension"], 24);
    // A resume reads the 24-float lines as done (nothing redone, nothing torn).
    extract(&jsonl);
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap(), text);
    for out in ["v2.npy", "v3.parquet"] {
        extract(&dir.path().join(out));
        extract(&dir.path().join(out));
    }
    // convert: JSONL → NPY → Parquet → JSONL keeps the 24 floats.
    let npy = dir.path().join("c.npy");
    let parquet = dir.path().join("c.parquet");
    let back = dir.path().join("c.jsonl");
    for (from, to) in [(&jsonl, &npy), (&npy, &parquet), (&parquet, &back)] {
        let run = exe().arg("convert").arg(from).arg(to).output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert_eq!(std::fs::read_to_string(&back).unwrap(), text);
    // search --image on each format: the image finds itself.
    for index in [
        &jsonl,
        &dir.path().join("v2.npy"),
        &dir.path().join("v3.parquet"),
    ] {
        let run = exe()
            .arg("search")
            .arg(index)
            .args([
                "--backend",
                "cpu",
                "-k",
                "1",
                "--json",
                "--image",
                &first_path,
            ])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let hit: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&run.stdout).lines().next().unwrap())
                .unwrap();
        assert_eq!(hit["results"][0]["path"], first_path.as_str(), "{hit}");
    }
    // evaluate: each image's own path as its only relevant result.
    let gnd: serde_json::Map<String, serde_json::Value> = lines
        .iter()
        .map(|l| {
            let p = l["path"].as_str().unwrap().to_owned();
            (p.clone(), serde_json::json!([p]))
        })
        .collect();
    let gnd_file = dir.path().join("gnd.json");
    std::fs::write(&gnd_file, serde_json::to_vec(&gnd).unwrap()).unwrap();
    let run = exe()
        .arg("evaluate")
        .arg(&npy)
        .arg("--gnd")
        .arg(&gnd_file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // knn: a graph over the 24-float vectors.
    let graph = dir.path().join("g.jsonl");
    let run = exe()
        .arg("knn")
        .arg(&jsonl)
        .args(["-k", "2", "--backend", "cpu", "--output"])
        .arg(&graph)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(std::fs::read_to_string(&graph).unwrap().lines().count(), 5);
}
