//! The all-pairs engine (`knn`, `dedup`, `neighbours`) against plain loops:
//! the graph equals a sort of every row's scores computed one pair at a time
//! with `search::dot` (bit for bit), the scores equal float64 dot products to
//! rounding, and the groups equal a union-find over all pairs.

mod common;

use common::{Rng, exe, run_ok, unit_rows};
use rmac_native::knn::dedup::{UnionFind, groups};
use rmac_native::knn::{Graph, Tiling, knn};
use rmac_native::search::dot;

/// Every row's k best other rows: score each pair alone, sort (ties by lower row).
fn naive(data: &[f32], dim: usize, k: usize) -> Graph {
    let n = data.len() / dim;
    let k = k.min(n.saturating_sub(1));
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let (mut idx, mut score) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut all: Vec<(usize, f32)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (j, dot(row(i), row(j))))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for &(j, s) in &all[..k] {
            idx.push(j as u32);
            score.push(s);
        }
    }
    Graph { n, k, idx, score }
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn check(data: &[f32], dim: usize, k: usize, tiling: Tiling, what: &str) {
    let got = knn(data, dim, k, tiling, &|_| {});
    let want = naive(data, dim, k);
    assert_eq!(
        got, want,
        "{what}: the graph equals the one-pair-at-a-time sort, bit for bit"
    );
    // And the scores are the float64 inner products, to float32 rounding.
    for i in 0..got.n {
        for (j, s) in got.row(i) {
            let exact = dot64(&data[i * dim..(i + 1) * dim], &data[j * dim..(j + 1) * dim]);
            assert!(
                (s as f64 - exact).abs() < 1e-5,
                "{what}: {i}→{j} {s} vs {exact}"
            );
        }
    }
}

#[test]
fn the_graph_is_exact_on_random_sets_of_any_dimension_and_tile() {
    let mut rng = Rng(11);
    for (n, dim) in [(257, 7), (130, 128), (203, 512)] {
        let data = unit_rows(&mut rng, n, dim);
        for rows in [4, 8, 64, 2048] {
            check(
                &data,
                dim,
                5,
                Tiling { rows },
                &format!("n {n} dim {dim} tiles {rows}"),
            );
        }
    }
}

#[test]
fn ties_duplicates_zero_vectors_and_tiny_sets_are_exact() {
    let mut rng = Rng(3);
    let dim = 16;
    // Many exact ties: 40 rows that are 5 distinct vectors repeated, plus zero rows.
    let base = unit_rows(&mut rng, 5, dim);
    let mut data = Vec::new();
    for i in 0..40 {
        data.extend_from_slice(&base[(i % 5) * dim..(i % 5 + 1) * dim]);
    }
    data.extend(std::iter::repeat_n(0.0, 3 * dim));
    for rows in [4, 12] {
        check(&data, dim, 9, Tiling { rows }, "ties");
    }
    // N < K: every other row; N = 1 and N = 0: nothing.
    let three = unit_rows(&mut rng, 3, dim);
    let g = knn(&three, dim, 10, Tiling { rows: 4 }, &|_| {});
    assert_eq!(g.k, 2);
    check(&three, dim, 10, Tiling { rows: 4 }, "n < k");
    let g = knn(&three[..dim], dim, 3, Tiling { rows: 4 }, &|_| {});
    assert_eq!((g.n, g.k, g.idx.len()), (1, 0, 0));
    let g = knn(&[], dim, 3, Tiling { rows: 4 }, &|_| {});
    assert_eq!((g.n, g.k), (0, 0));
}

#[test]
fn the_graph_does_not_depend_on_the_thread_count() {
    let mut rng = Rng(5);
    let data = unit_rows(&mut rng, 300, 64);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| knn(&data, 64, 7, Tiling { rows: 16 }, &|_| {}));
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap()
        .install(|| knn(&data, 64, 7, Tiling { rows: 16 }, &|_| {}));
    assert_eq!(one, many);
}

/// Planted groups (a few copies of each of some vectors, slightly perturbed)
/// among random vectors; the groups equal a union-find over all pairs.
#[test]
fn dedup_groups_equal_a_union_find_over_all_pairs() {
    let mut rng = Rng(9);
    let dim = 32;
    let mut data = unit_rows(&mut rng, 60, dim);
    let seeds = unit_rows(&mut rng, 6, dim);
    for (g, size) in [2usize, 3, 5, 1, 8, 2].into_iter().enumerate() {
        for _ in 0..size {
            let v: Vec<f64> = seeds[g * dim..(g + 1) * dim]
                .iter()
                .map(|&x| x as f64 + rng.f() as f64 * 0.01)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            data.extend(v.iter().map(|x| (x / norm) as f32));
        }
    }
    let n = data.len() / dim;
    let threshold = 0.97;
    let mut uf = UnionFind::new(n);
    let mut paired = vec![false; n];
    for i in 0..n {
        for j in i + 1..n {
            if dot(&data[i * dim..(i + 1) * dim], &data[j * dim..(j + 1) * dim]) >= threshold {
                uf.union(i as u32, j as u32);
                paired[i] = true;
                paired[j] = true;
            }
        }
    }
    let mut want: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for i in (0..n).filter(|&i| paired[i]) {
        want.entry(uf.find(i as u32)).or_default().push(i);
    }
    // Every pair scored in fp32, and through the 8-bit pre-filter on each kernel.
    let qz = rmac_native::knn::int8::Quantized::of(&data, dim);
    let scorers: Vec<_> = std::iter::once(None)
        .chain(int8_kernels().into_iter().map(|k| Some((&qz, k))))
        .collect();
    for (rows, prefilter) in [4, 16, 2048]
        .into_iter()
        .flat_map(|r| scorers.iter().map(move |&p| (r, p)))
    {
        let (got, summaries) = groups(
            &data,
            dim,
            &[threshold, 0.9, 0.5, 0.995],
            Tiling { rows },
            prefilter,
            &mut |_| {},
        );
        // Each threshold's counts equal its own union-find over all pairs.
        for s in &summaries {
            let mut uf = UnionFind::new(n);
            let mut paired = vec![false; n];
            for i in 0..n {
                for j in i + 1..n {
                    if dot(&data[i * dim..(i + 1) * dim], &data[j * dim..(j + 1) * dim])
                        >= s.threshold
                    {
                        uf.union(i as u32, j as u32);
                        paired[i] = true;
                        paired[j] = true;
                    }
                }
            }
            let roots = (0..n)
                .filter(|&i| paired[i] && uf.find(i as u32) == i as u32)
                .count();
            assert_eq!(
                (s.groups, s.in_groups),
                (roots, paired.iter().filter(|&&p| p).count()),
                "threshold {}",
                s.threshold
            );
        }
        assert_eq!(summaries[0].groups, want.len());
        let got_sets: Vec<(usize, Vec<usize>)> = got
            .iter()
            .map(|g| (g.keeper, g.members.iter().map(|m| m.0).collect()))
            .collect();
        let want_sets: Vec<(usize, Vec<usize>)> =
            want.iter().map(|(r, m)| (*r as usize, m.clone())).collect();
        assert_eq!(got_sets, want_sets, "tiles of {rows}");
        assert_eq!(
            got.iter().map(|g| g.members.len()).collect::<Vec<_>>(),
            [2, 3, 5, 8, 2]
        );
        for g in &got {
            assert_eq!(
                g.members[0],
                (
                    g.keeper,
                    dot(
                        &data[g.keeper * dim..(g.keeper + 1) * dim],
                        &data[g.keeper * dim..(g.keeper + 1) * dim]
                    )
                )
            );
        }
    }
}

/// Through the binary: `knn` writes NPY (int32 rows, float32 scores, paths)
/// or JSONL; `dedup` writes groups, a summary and a keep-list; `neighbours`
/// prints the same neighbours as the graph.
#[test]
fn knn_and_dedup_commands_write_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(21);
    let dim = 512;
    let mut data = unit_rows(&mut rng, 40, dim);
    // Rows 40 and 41 copy row 3: one group of three.
    let copy = data[3 * dim..4 * dim].to_vec();
    data.extend_from_slice(&copy);
    data.extend_from_slice(&copy);
    let n = data.len() / dim;
    let paths: Vec<String> = (0..n).map(|i| format!("frames/{i:03}.png")).collect();
    let npy = dir.path().join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, dim).unwrap();
    let want = naive(&data, dim, 4);

    let g = dir.path().join("graph");
    run_ok(
        exe()
            .arg("knn")
            .arg(&npy)
            .args(["-k", "4", "--output"])
            .arg(&g),
    );
    let idx = std::fs::read(dir.path().join("graph.idx.npy")).unwrap();
    assert!(String::from_utf8_lossy(&idx[..128]).contains("'descr': '<i4'"));
    assert!(String::from_utf8_lossy(&idx[..128]).contains(&format!("'shape': ({n}, 4)")));
    let got_idx: Vec<u32> = idx[128..]
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    assert_eq!(got_idx, want.idx);
    let score = std::fs::read(dir.path().join("graph.score.npy")).unwrap();
    let got_score: Vec<f32> = score[128..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got_score, want.score);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("graph.paths.txt")).unwrap(),
        paths.join("\n") + "\n"
    );

    let jsonl = dir.path().join("graph.jsonl");
    run_ok(
        exe()
            .arg("knn")
            .arg(&npy)
            .args(["-k", "2", "--output"])
            .arg(&jsonl),
    );
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&jsonl)
            .unwrap()
            .lines()
            .nth(3)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["path"], "frames/003.png");
    assert_eq!(first["neighbours"][0][0], "frames/040.png");

    let groups_out = dir.path().join("groups.jsonl");
    let keep = dir.path().join("keep.txt");
    run_ok(
        exe()
            .arg("dedup")
            .arg(&npy)
            .args(["--threshold", "0.99,0.999999", "--output"])
            .arg(&groups_out)
            .arg("--keep-list")
            .arg(&keep),
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&groups_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one group and the summary: {lines:?}");
    assert_eq!(lines[0]["keeper"], "frames/003.png");
    assert_eq!(lines[0]["size"], 3);
    assert_eq!(lines[1]["summary"]["droppable"], 2);
    // Per threshold, highest first: the copies are exact, so 0.999999 groups them too.
    let by = &lines[1]["summary"]["by_threshold"];
    assert_eq!(by.as_array().unwrap().len(), 2, "{by}");
    assert_eq!(
        (
            by[0]["threshold"].as_f64().unwrap() as f32,
            by[1]["threshold"].as_f64().unwrap() as f32
        ),
        (0.999999, 0.99)
    );
    assert_eq!(
        (by[0]["droppable"].as_u64(), by[0]["kept"].as_u64()),
        (Some(2), Some(n as u64 - 2))
    );
    let kept = std::fs::read_to_string(&keep).unwrap();
    assert_eq!(kept.lines().count(), n - 2);
    assert!(kept.contains("frames/003.png\n") && !kept.contains("frames/040.png"));

    // neighbours: the same neighbours, as text.
    let text =
        String::from_utf8(run_ok(exe().arg("neighbours").arg(&npy).args(["-k", "4"])).stdout)
            .unwrap();
    let block: Vec<&str> = text.lines().skip(5 * 3).take(5).collect();
    assert_eq!(block[0], "frames/003.png");
    assert!(block[1].ends_with(&paths[want.idx[3 * 4] as usize]));

    // Bad input: a NaN in the vectors is a clear error.
    let mut bad = data.clone();
    bad[5] = f32::NAN;
    let bad_npy = dir.path().join("bad.npy");
    rmac_native::store::npy::write_npy(&bad_npy, &paths, &bad, dim).unwrap();
    let o = exe()
        .arg("knn")
        .arg(&bad_npy)
        .args(["--output"])
        .arg(dir.path().join("b"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `dedup --html`: a row of thumbnails per group, the keeper first; a missing
/// image is marked and makes the exit status 3.
#[test]
fn dedup_draws_each_group_as_a_row_of_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(4);
    let dim = 8;
    let mut data = unit_rows(&mut rng, 4, dim);
    let copy = data[..dim].to_vec();
    data.extend_from_slice(&copy); // row 4 = row 0
    let mut paths = Vec::new();
    for i in 0..5u8 {
        let p = dir.path().join(format!("{i}.png"));
        image::RgbImage::from_pixel(30, 20, image::Rgb([i * 50, 90, 200]))
            .save(&p)
            .unwrap();
        paths.push(p.to_string_lossy().into_owned());
    }
    let npy = dir.path().join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, dim).unwrap();
    let page = dir.path().join("groups.html");
    let dedup = || {
        exe()
            .arg("dedup")
            .arg(&npy)
            .args(["--threshold", "0.999", "--output"])
            .arg(dir.path().join("g.jsonl"))
            .arg("--html")
            .arg(&page)
            .output()
            .unwrap()
    };
    let o = dedup();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        html.matches("data:image/jpeg;base64,").count(),
        2,
        "keeper + its copy"
    );
    assert!(html.contains("2 copies: keep") && html.contains("<dt>threshold</dt><dd>0.999</dd>"));
    std::fs::remove_file(&paths[4]).unwrap();
    let o = dedup();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains("missing: not found")
    );
}

/// Any split of the blocks (over ranks, or a stopped run and its resumption)
/// gives partial graphs that merge into the graph of one uninterrupted run,
/// bit for bit — also when a block was scored twice (by a run that was
/// stopped after its last checkpoint and the run that redid it).
#[test]
fn partial_graphs_of_any_split_merge_into_the_whole_graph() {
    use rmac_native::knn::{knn_blocks, share_blocks};
    let mut rng = Rng(13);
    let (dim, k) = (24, 6);
    let n = 150;
    let data = unit_rows(&mut rng, n, dim);
    let tiling = Tiling { rows: 16 };
    let full = knn(&data, dim, k, tiling, &|_| {});
    assert_eq!(full, naive(&data, dim, k));
    let blocks: Vec<usize> = (0..tiling.blocks(n)).collect();
    assert_eq!(blocks.len(), 10);
    for ranks in [1, 2, 3, 7, 12] {
        let parts = share_blocks(tiling, n, &blocks, ranks);
        assert_eq!(parts.len(), ranks);
        let mut all: Vec<usize> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, blocks, "{ranks} ranks: every block exactly once");
        let cost = |p: &[usize]| p.iter().map(|&b| tiling.block_pairs(b, n)).sum::<u64>();
        let (most, biggest) = (
            parts.iter().map(|p| cost(p)).max().unwrap(),
            blocks
                .iter()
                .map(|&b| tiling.block_pairs(b, n))
                .max()
                .unwrap(),
        );
        let total = cost(&blocks);
        assert!(
            most <= total / ranks as u64 + biggest,
            "{ranks} ranks: the most loaded scores {most} of {total} pairs"
        );
        let mut merged = Graph::empty(n, k);
        // In reverse, to show the merge's order does not matter.
        for part in parts.iter().rev() {
            let mut g = Graph::empty(n, k);
            knn_blocks(&data, dim, tiling, &mut g, part, &mut |_, _| {});
            merged.merge(&g);
        }
        assert_eq!(merged, full, "{ranks} ranks");
    }
    // A resumption: a stopped run's partial graph (blocks 0, 3, 4) and the
    // blocks it had not finished, scored into it; block 4 scored again apart.
    let mut stopped = Graph::empty(n, k);
    knn_blocks(&data, dim, tiling, &mut stopped, &[0, 3, 4], &mut |_, _| {});
    let mut again = Graph::empty(n, k);
    knn_blocks(&data, dim, tiling, &mut again, &[4], &mut |_, _| {});
    let rest: Vec<usize> = blocks
        .iter()
        .copied()
        .filter(|b| ![0, 3, 4].contains(b))
        .collect();
    let mut seen = Vec::new();
    knn_blocks(&data, dim, tiling, &mut stopped, &rest, &mut |b, _| {
        seen.push(b)
    });
    assert_eq!(seen, rest);
    stopped.merge(&again);
    assert_eq!(stopped, full, "resumed, with block 4 twice");
}

/// The state file after some blocks, as a killed run leaves it.
fn wait_for_state(child: &mut std::process::Child, state: &std::path::Path) {
    let start = std::time::Instant::now();
    while !state.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "knn ended before its first checkpoint"
        );
        assert!(start.elapsed().as_secs() < 60, "no state file after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// `knn` killed (SIGKILL) after some blocks and rerun: it says how many blocks
/// it goes on from, scores only the others, and writes the same files as an
/// uninterrupted run, bit for bit; the state files are gone at the end. A
/// state file of other vectors is refused with what to do.
#[test]
fn a_killed_knn_run_resumes_by_block_and_writes_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(31);
    let (n, dim) = (12_000, 512);
    let data = unit_rows(&mut rng, n, dim);
    let paths: Vec<String> = (0..n).map(|i| format!("f/{i}.png")).collect();
    let npy = dir.path().join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, dim).unwrap();
    let knn_cmd = |vectors: &std::path::Path, out: &std::path::Path| {
        let mut c = exe();
        c.arg("knn")
            .arg(vectors)
            .args([
                "-k",
                "7",
                "--memory",
                "2MiB",
                "--checkpoint-every",
                "0",
                "--output",
            ])
            .arg(out);
        c
    };
    let whole = dir.path().join("whole");
    let o = run_ok(&mut knn_cmd(&npy, &whole));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(!said.contains("resuming"), "{said}");
    assert!(!dir.path().join("whole.knn-state.0").exists());

    let out = dir.path().join("g");
    let state = dir.path().join("g.knn-state.0");
    let mut child = knn_cmd(&npy, &out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_state(&mut child, &state);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("g.idx.npy").exists(),
        "killed before the end"
    );

    // Other vectors, same output: refused, the state kept.
    let mut other = data.clone();
    other[0] = -other[0];
    let other_npy = dir.path().join("other.npy");
    rmac_native::store::npy::write_npy(&other_npy, &paths, &other, dim).unwrap();
    let o = knn_cmd(&other_npy, &out).output().unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains("state of a different knn run") && said.contains("Delete"),
        "{said}"
    );
    assert!(state.exists());

    let o = run_ok(&mut knn_cmd(&npy, &out));
    let said = String::from_utf8_lossy(&o.stderr);
    let resumed = said
        .lines()
        .find_map(|l| l.split("resuming ").nth(1))
        .unwrap_or_else(|| panic!("no resume line: {said}"));
    let (done, total) = resumed
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(" blocks").next())
        .and_then(|r| r.split_once(" of "))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
        .unwrap_or_else(|| panic!("{resumed}"));
    assert!(done > 0 && done < total, "{done} of {total} blocks");
    for suffix in [".idx.npy", ".score.npy", ".paths.txt"] {
        assert_eq!(
            std::fs::read(dir.path().join(format!("g{suffix}"))).unwrap(),
            std::fs::read(dir.path().join(format!("whole{suffix}"))).unwrap(),
            "{suffix}"
        );
    }
    assert!(
        !state.exists(),
        "the state is removed once the graph is written"
    );
}

/// The GPU as pre-filter (lavapipe in CI): the graph equals the CPU's bit for
/// bit, on random sets, on sets full of exact ties and near-copies (many
/// candidates inside the error window), for k above the shader's tile-local
/// bound (64, where only the CPU's floor filters), across tile sizes, and when
/// a tile's candidates overflow their buffer (the CPU takes the tile over).
#[cfg(feature = "gpu")]
#[test]
fn the_gpu_prefilter_gives_the_cpu_graph_bit_for_bit() {
    use rmac_native::backend::gpu::GpuOptions;
    use rmac_native::knn::gpu::{GpuKnn, default_capacity};
    let mut rng = Rng(41);
    let gpu = |data: &[f32], dim: usize, k: usize, rows: usize, capacity: usize| {
        let n = data.len() / dim;
        let tiling = Tiling { rows };
        let mut g = GpuKnn::new(&GpuOptions::default(), data, dim, tiling, capacity)
            .expect("a GPU adapter (lavapipe in CI)");
        let mut graph = Graph::empty(n, k.min(n.saturating_sub(1)));
        let blocks: Vec<usize> = (0..tiling.blocks(n)).collect();
        g.knn_blocks(data, dim, &mut graph, &blocks, &mut |_, _| {})
            .unwrap();
        (graph, g.stats.clone())
    };
    // Near-copies: 30 seeds, 6 copies each, perturbed by 1e-5, and exact repeats.
    let dim = 96;
    let seeds = unit_rows(&mut rng, 30, dim);
    let mut near = Vec::new();
    for s in 0..30 {
        for c in 0..6 {
            near.extend(
                seeds[s * dim..(s + 1) * dim]
                    .iter()
                    .map(|&x| x + if c % 2 == 0 { 0.0 } else { 1e-5 * rng.f() }),
            );
        }
    }
    let random = unit_rows(&mut rng, 301, 130);
    for (what, data, dim, k, rows) in [
        ("random", &random, 130, 5, 64),
        ("random, small tiles", &random, 130, 9, 16),
        ("random, k 80", &random, 130, 80, 128),
        ("near-copies", &near, dim, 7, 32),
    ] {
        let want = knn(data, dim, k, Tiling { rows }, &|_| {});
        assert_eq!(want, naive(data, dim, k), "{what}: the CPU reference");
        let (got, stats) = gpu(data, dim, k, rows, default_capacity(rows, k));
        assert_eq!(got, want, "{what}: GPU pre-filter vs CPU");
        assert_eq!(stats.cpu_tiles, 0, "{what}: no overflow");
        let n = data.len() / dim;
        assert!(
            stats.candidates < (n * n) as u64,
            "{what}: the pre-filter sent back {} of {} pairs",
            stats.candidates,
            n * n
        );
    }
    // A buffer of 8 pairs: every tile overflows and is scored on the CPU.
    let (got, stats) = gpu(&random, 130, 5, 64, 8);
    assert_eq!(got, knn(&random, 130, 5, Tiling { rows: 64 }, &|_| {}));
    assert_eq!(stats.cpu_tiles, stats.tiles);
}

/// Each kernel the 8-bit pre-filter can run on this CPU: the portable one
/// always, AVX-512 VNNI where present.
fn int8_kernels() -> Vec<rmac_native::knn::int8::Int8Kernel> {
    use rmac_native::knn::int8::Int8Kernel;
    let mut k = vec![Int8Kernel::Portable];
    k.extend(Int8Kernel::detect());
    k
}

/// The bound the pre-filter relies on: every pair's computed upper bound is
/// at or above its fp32 score (`search::dot`), on unit rows, rows of any norm
/// (tiny, huge, zero), constant rows (every component at the quantization
/// limit) and dimensions that are not multiples of 4; the bound is tight
/// enough to filter (within 0.05 of the score on unit rows); and the kernels
/// give the same bounds, bit for bit.
#[test]
fn the_int8_upper_bound_holds_for_every_pair_and_the_kernels_agree() {
    use rmac_native::knn::int8::{Quantized, upper_tile};
    let mut rng = Rng(77);
    for (n, dim, scaled) in [
        (70, 512, false),
        (45, 7, true),
        (66, 130, true),
        (9, 1024, false),
    ] {
        let mut data = unit_rows(&mut rng, n, dim);
        if scaled {
            for (i, row) in data.chunks_mut(dim).enumerate() {
                let s = [1.0, 1e-20, 3e4, 0.0, 0.5][i % 5];
                row.iter_mut().for_each(|x| *x *= s);
            }
            // A constant row and its negation: every component at ±127.
            data[..dim].iter_mut().for_each(|x| *x = 0.3);
            data[dim..2 * dim].iter_mut().for_each(|x| *x = -0.3);
        }
        let qz = Quantized::of(&data, dim);
        let row = |i: usize| &data[i * dim..(i + 1) * dim];
        let mut tiles = Vec::new();
        for kernel in int8_kernels() {
            let up = upper_tile(kernel, &qz, 0..n, 0..n);
            for i in 0..n {
                for j in 0..n {
                    let s = dot(row(i), row(j));
                    let u = up[i * n + j];
                    assert!(
                        u >= s,
                        "{kernel:?} n {n} dim {dim}: {i}·{j} = {s}, bound {u}"
                    );
                    if !scaled {
                        assert!(
                            u - s < 0.05,
                            "{kernel:?} dim {dim}: {i}·{j} = {s}, bound {u} (loose)"
                        );
                    }
                }
            }
            // Tiles that are not multiples of the kernel's 6 rows and 64 columns.
            let part = upper_tile(kernel, &qz, 3..n - 1, 1..n);
            for (a, i) in (3..n - 1).enumerate() {
                for (c, j) in (1..n).enumerate() {
                    assert_eq!(part[a * (n - 1) + c].to_bits(), up[i * n + j].to_bits());
                }
            }
            tiles.push(up);
        }
        for t in &tiles[1..] {
            assert!(
                t.iter()
                    .zip(&tiles[0])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "the kernels disagree (n {n} dim {dim})"
            );
        }
    }
}

/// The 8-bit pre-filter's graph is the fp32 graph, bit for bit: random
/// sets, near-copies and exact repeats (many scores inside the bound),
/// rows of mixed norms, zero rows, dimensions not multiples of 4, k above n,
/// small and large tiles, every kernel; and it re-scores far fewer pairs
/// than there are.
#[test]
fn the_int8_prefilter_gives_the_fp32_graph_bit_for_bit() {
    use rmac_native::knn::int8::{Int8Stats, Quantized, knn_blocks_int8};
    let mut rng = Rng(91);
    let near = {
        let dim = 96;
        let seeds = unit_rows(&mut rng, 40, dim);
        let mut near = Vec::new();
        for s in 0..40 {
            for c in 0..6 {
                near.extend(
                    seeds[s * dim..(s + 1) * dim]
                        .iter()
                        .map(|&x| x + if c % 3 == 0 { 0.0 } else { 1e-4 * rng.f() }),
                );
            }
        }
        near
    };
    let random = unit_rows(&mut rng, 700, 512);
    let mut mixed = unit_rows(&mut rng, 150, 130);
    for (i, row) in mixed.chunks_mut(130).enumerate() {
        let s = [1.0, 2.5, 0.01, 0.0, 40.0][i % 5];
        row.iter_mut().for_each(|x| *x *= s);
    }
    let tiny = unit_rows(&mut rng, 5, 7);
    for (what, data, dim, k, rows) in [
        ("random", &random, 512, 10, 128),
        ("random, one tile", &random, 512, 3, 2048),
        ("near-copies", &near, 96, 7, 64),
        ("near-copies, k 30", &near, 96, 30, 16),
        ("mixed norms and zero rows", &mixed, 130, 6, 32),
        ("k above n", &tiny, 7, 9, 4),
    ] {
        let n = data.len() / dim;
        let want = naive(data, dim, k);
        let qz = Quantized::of(data, dim);
        for kernel in int8_kernels() {
            let tiling = Tiling { rows };
            let mut graph = Graph::empty(n, k.min(n - 1));
            let blocks: Vec<usize> = (0..tiling.blocks(n)).collect();
            let stats = Int8Stats::default();
            knn_blocks_int8(
                data,
                dim,
                &qz,
                kernel,
                tiling,
                &mut graph,
                &blocks,
                &mut |_, _| {},
                &stats,
            );
            assert_eq!(
                graph, want,
                "{what} ({kernel:?}): int8 pre-filter vs one pair at a time"
            );
            let rescored = stats.rescored.into_inner();
            if what == "random" {
                assert!(
                    rescored < (n * n / 4) as u64,
                    "{what}: {rescored} of {} pairs re-scored",
                    n * (n - 1) / 2
                );
            }
        }
    }
}

/// Through the binary: `--prefilter int8` and `--prefilter none` write the
/// same files, and the run says which it used.
#[test]
fn knn_prefilter_int8_and_none_write_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(23);
    let dim = 256;
    let data = unit_rows(&mut rng, 500, dim);
    let paths: Vec<String> = (0..500).map(|i| format!("f/{i}.png")).collect();
    let npy = dir.path().join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, dim).unwrap();
    let mut out = Vec::new();
    for pf in ["int8", "none"] {
        let g = dir.path().join(format!("g-{pf}"));
        let o = run_ok(
            exe()
                .arg("knn")
                .arg(&npy)
                .args([
                    "-k",
                    "8",
                    "--backend",
                    "cpu",
                    "--prefilter",
                    pf,
                    "--memory",
                    "64MiB",
                    "--output",
                ])
                .arg(&g),
        );
        let said = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(said.contains("8-bit pre-filter"), pf == "int8", "{said}");
        out.push((
            std::fs::read(dir.path().join(format!("g-{pf}.idx.npy"))).unwrap(),
            std::fs::read(dir.path().join(format!("g-{pf}.score.npy"))).unwrap(),
        ));
    }
    assert!(out[0] == out[1], "int8 and fp32 graphs differ");
    assert_eq!(
        naive(&data, dim, 8).idx,
        out[1].0[128..]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect::<Vec<_>>()
    );
}

/// Vectors built to sit right at the threshold: a row, then copies of it
/// changed in one component by a few units in the last place, so that their
/// scores to it differ by an ulp or a few and their 8-bit copies are (almost) all the same (the
/// pre-filter sees one score for all of them and must send every one back):
/// the int8 graph and dedup pairs equal the fp32 ones, bit for bit, with k
/// and the dedup threshold landing inside the run of near-equal scores.
#[test]
fn the_int8_prefilter_is_exact_for_scores_a_few_ulps_apart_at_the_threshold() {
    use rmac_native::knn::int8::{Quantized, pairs_at_least_int8};
    use rmac_native::knn::pairs_at_least;
    let mut rng = Rng(5150);
    let dim = 64;
    let base = unit_rows(&mut rng, 1, dim);
    let mut data = base.clone();
    for c in 1..40 {
        let mut v = base.clone();
        // Component 5, nudged by ±c·10⁻⁶ (the 8-bit step is ~10⁻³): scores to row 0
        // about an ulp apart per step, repeats among them.
        v[5] += (c / 2) as f32 * if c % 2 == 0 { 1e-6 } else { -1e-6 };
        data.extend(v);
    }
    data.extend(unit_rows(&mut rng, 25, dim));
    let n = data.len() / dim;
    let qz = Quantized::of(&data, dim);
    let scores: Vec<f32> = (1..40)
        .map(|j| dot(&data[..dim], &data[j * dim..(j + 1) * dim]))
        .collect();
    let mut sorted = scores.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted.dedup();
    assert!(
        sorted.len() > 3,
        "the copies' scores must differ: {sorted:?}"
    );
    for k in [3, 11, 20] {
        let want = naive(&data, dim, k);
        for kernel in int8_kernels() {
            for rows in [8, 64] {
                let g = rmac_native::knn::int8::knn_int8(&data, dim, k, Tiling { rows }, kernel);
                assert_eq!(g, want, "k {k} {kernel:?} tiles {rows}");
            }
        }
    }
    // Thresholds at, just above and just below the copies' scores.
    for &t in &[
        sorted[1],
        sorted[2].next_up(),
        sorted[sorted.len() / 2].next_down(),
    ] {
        let mut want = Vec::new();
        pairs_at_least(&data, dim, t, Tiling { rows: 16 }, &mut |_, p| {
            want.extend_from_slice(p)
        });
        want.sort_by_key(|&(i, j, _)| (i, j));
        for kernel in int8_kernels() {
            let mut got = Vec::new();
            pairs_at_least_int8(
                &data,
                dim,
                &qz,
                kernel,
                t,
                Tiling { rows: 16 },
                &mut |_, p| got.extend_from_slice(p),
            );
            got.sort_by_key(|&(i, j, _)| (i, j));
            assert_eq!(got, want, "threshold {t} {kernel:?}");
        }
        assert!(!want.is_empty() && want.len() < n * n / 2);
    }
}

/// Bad vectors files are clear errors naming the file: a truncated NPY, a
/// JSONL line of another dimension.
#[test]
fn knn_and_dedup_refuse_truncated_and_ragged_vectors_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(8);
    let data = unit_rows(&mut rng, 10, 8);
    let paths: Vec<String> = (0..10).map(|i| format!("{i}.png")).collect();
    let npy = dir.path().join("t.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, 8).unwrap();
    let bytes = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &bytes[..bytes.len() - 20]).unwrap();
    let jsonl = dir.path().join("w.jsonl");
    let mut text = String::new();
    for i in 0..5 {
        let v: Vec<f32> = data[i * 8..i * 8 + if i == 3 { 7 } else { 8 }].to_vec();
        text += &serde_json::json!({"path": paths[i], "vector": v}).to_string();
        text.push('\n');
    }
    std::fs::write(&jsonl, text).unwrap();
    for (file, says) in [(&npy, "t.npy is cut short"), (&jsonl, "line 4 of")] {
        for cmd in [vec!["knn"], vec!["dedup", "--threshold", "0.9"]] {
            let o = exe()
                .args(&cmd)
                .arg(file)
                .arg("--output")
                .arg(dir.path().join("out.jsonl"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{cmd:?} {err}");
            assert!(err.contains(says), "{cmd:?}: {err}");
        }
    }
}
