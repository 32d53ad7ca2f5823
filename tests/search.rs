//! File search: the parallel SIMD scan against a naive loop, query expansion
//! against a worked example, and the `search` command's outputs.

mod common;

use common::{Rng, exe, run_ok};
use rmac_native::search::{dot, expand_query, search_many, search_qe, top_k_naive};

fn unit_rows(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n * dim).map(|_| rng.f()).collect();
    for row in v.chunks_exact_mut(dim) {
        let s = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= s);
    }
    v
}

#[test]
fn parallel_scan_equals_the_naive_loop_with_ties_and_exclusions() {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for &(n, dim) in &[(10_000usize, 512usize), (5_001, 37), (3, 16)] {
        let mut data = unit_rows(&mut rng, n, dim);
        // Exact ties: copies of row 5 further down (they must rank after row 5, in row order).
        if n > 100 {
            let r5 = data[5 * dim..6 * dim].to_vec();
            for &r in &[n / 2, n - 1, 4099] {
                data[r * dim..(r + 1) * dim].copy_from_slice(&r5);
            }
        }
        let r5 = 5 % n;
        let queries: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                if i == 0 {
                    data[r5 * dim..(r5 + 1) * dim].to_vec()
                } else {
                    unit_rows(&mut rng, 1, dim)
                }
            })
            .collect();
        let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        for &k in &[1usize, 5, 37, 1000, n + 3] {
            for exclude in [vec![None; 4], vec![Some(5), Some(0), None, Some(n - 1)]] {
                let got = search_many(&data, dim, &refs, k, &exclude);
                for (qi, q) in refs.iter().enumerate() {
                    let want = top_k_naive(&data, dim, q, k, exclude[qi]);
                    assert_eq!(
                        got[qi], want,
                        "n={n} dim={dim} k={k} query {qi} exclude {:?}",
                        exclude[qi]
                    );
                }
            }
        }
        if n > 100 {
            let hits = search_many(&data, dim, &refs[..1], 4, &[None]);
            let rows: Vec<usize> = hits[0].iter().map(|h| h.0).collect();
            let mut want = vec![5, 4099, n / 2, n - 1];
            want.sort();
            assert_eq!(rows, want, "ties keep row order");
        }
    }
}

#[test]
fn scores_are_inner_products() {
    let mut rng = Rng(42);
    let (a, b) = (unit_rows(&mut rng, 1, 512), unit_rows(&mut rng, 1, 512));
    let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    assert!((dot(&a, &b) as f64 - exact).abs() < 1e-6);
}

/// Query expansion, worked by hand. Rows x0=(1,0,0), x1=(0.8,0.6,0),
/// x2=(0,1,0), x3=(0,0,1); query q=(0.6,0.8,0). Scores: 0.6, 0.96, 0.8, 0,
/// so the first two results are x1 then x2.
#[test]
fn query_expansion_matches_the_worked_example() {
    let data = [
        1.0, 0.0, 0.0, 0.8, 0.6, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0f32,
    ];
    let q = [0.6, 0.8, 0.0f32];
    let first = search_many(&data, 3, &[&q], 2, &[None]);
    assert_eq!(first[0].iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2]);
    let row = |i: usize| data[i * 3..i * 3 + 3].to_vec();

    // Average QE, n=2: q + x1 + x2 = (1.4, 2.4, 0), norm sqrt(1.96 + 5.76) = sqrt(7.72).
    let n = 7.72f64.sqrt();
    let aqe = expand_query(&q, &first[0], row, 2, 0.0);
    let want = [1.4 / n, 2.4 / n, 0.0];
    for (g, w) in aqe.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{aqe:?}");
    }
    // New scores: x0 = 1.4/n = 0.50387, x1 = (0.8·1.4 + 0.6·2.4)/n = 2.56/n = 0.92136, x2 = 2.4/n = 0.86378, x3 = 0.
    let (hits, _) = search_qe(&data, 3, &[&q], 4, &[None], 2, 0.0);
    assert_eq!(
        hits[0].iter().map(|h| h.0).collect::<Vec<_>>(),
        vec![1, 2, 0, 3]
    );
    for (h, w) in hits[0].iter().zip([2.56 / n, 2.4 / n, 1.4 / n, 0.0]) {
        assert!((h.1 as f64 - w).abs() < 1e-6, "{hits:?}");
    }

    // αQE, α=3: weights 0.96³ = 0.884736 and 0.8³ = 0.512:
    // q + 0.884736·x1 + 0.512·x2 = (0.6 + 0.7077888, 0.8 + 0.5308416 + 0.512, 0) = (1.3077888, 1.8428416, 0).
    let (a, b) = (1.3077888f64, 1.8428416f64);
    let n = (a * a + b * b).sqrt();
    let aq = expand_query(&q, &first[0], row, 2, 3.0);
    for (g, w) in aq.iter().zip([a / n, b / n, 0.0]) {
        assert!((*g as f64 - w).abs() < 1e-6, "{aq:?}");
    }
    // Only the first n results count, and a negative score weighs 0 under αQE.
    let only_first = expand_query(&q, &[(1, 0.96), (2, 0.8)], row, 1, 0.0);
    let n1 = ((0.6f64 + 0.8).powi(2) + (0.8f64 + 0.6).powi(2)).sqrt();
    assert!((only_first[0] as f64 - 1.4 / n1).abs() < 1e-6);
    let neg = expand_query(&q, &[(3, -0.5)], row, 1, 3.0);
    assert!((neg[0] - 0.6).abs() < 1e-6 && (neg[1] - 0.8).abs() < 1e-6 && neg[2] == 0.0);
}

#[test]
fn search_command_answers_in_json_and_as_a_table_and_draws_a_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let n = 300;
    let data = unit_rows(&mut rng, n, 512);
    // Small real images for the contact sheet: the first 3 paths exist.
    let mut paths: Vec<String> = (0..n).map(|i| format!("img{i:03}.png")).collect();
    for (i, p) in paths.iter_mut().enumerate().take(3) {
        let full = dir.path().join(&*p);
        image::RgbImage::from_pixel(40, 30, image::Rgb([i as u8 * 80, 100, 200]))
            .save(&full)
            .unwrap();
        *p = full.to_string_lossy().into_owned();
    }
    let npy = dir.path().join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, 512).unwrap();
    let html = dir.path().join("sheet.html");
    // The results are printed; the sheet marks the images that do not exist
    // (all but the first 3 paths) and the exit status says some are missing.
    let out = exe()
        .args([
            "search",
            npy.to_str().unwrap(),
            "--path",
            &paths[1],
            "-k",
            "5",
            "--json",
            "--exclude-query",
            "--html",
        ])
        .arg(&html)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("could not show"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = top_k_naive(&data, 512, &data[512..1024], 5, Some(1));
    let got: Vec<(String, f32)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_owned(),
                h["score"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(
        got,
        want.iter()
            .map(|(i, s)| (paths[*i].clone(), *s))
            .collect::<Vec<_>>()
    );
    let sheet = std::fs::read_to_string(&html).unwrap();
    assert!(
        sheet.contains("data:image/jpeg;base64,")
            && sheet.contains("query")
            && sheet.contains("missing: not found"),
        "thumbnails in the sheet"
    );

    // A vector query from a file, as a table, with QE; the JSONL copy answers the same.
    let qfile = dir.path().join("q.json");
    std::fs::write(&qfile, serde_json::to_string(&data[..512]).unwrap()).unwrap();
    let jsonl = dir.path().join("v.jsonl");
    run_ok(exe().args(["convert", npy.to_str().unwrap(), jsonl.to_str().unwrap()]));
    let table = |src: &std::path::Path| {
        let o = run_ok(exe().args([
            "search",
            src.to_str().unwrap(),
            "--vector",
            &format!("@{}", qfile.display()),
            "-k",
            "4",
            "--qe",
            "3",
            "--alpha",
            "3",
        ]));
        String::from_utf8(o.stdout).unwrap()
    };
    let t = table(&npy);
    assert_eq!(t, table(&jsonl));
    assert!(
        t.starts_with("query (vector): vector\n") && t.contains("rank") && t.lines().count() == 7,
        "{t}"
    );
    assert!(
        t.lines().nth(2).unwrap().trim_end().ends_with(&paths[0]),
        "{t}"
    );
}
