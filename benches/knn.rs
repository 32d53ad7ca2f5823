//! The exact kNN graph over N synthetic unit vectors (512-d, with planted
//! near-duplicate groups of 2–8), K = 10: seconds, GFLOP/s (N²·D multiply-adds
//! counted once: the symmetric tiles score each pair once, so this is the
//! all-pairs work the graph stands for, as dense GEMM would count it), peak RSS.
//! Not a test: a benchmark.
//!
//! Each size runs with the 8-bit pre-filter (`int8`, where the CPU has AVX-512
//! VNNI; the graph is the fp32 one, bit for bit) and with the fp32 kernel
//! alone (`none`); `RMAC_KNN_PREFILTER` picks (default both, int8 first).
//! GOP/s counts the same N²·D multiply-adds whatever their precision.
//!
//!     RMAC_KNN_N=20000,100000 RMAC_KNN_PREFILTER=int8 cargo bench --bench knn
use rmac_native::knn::int8::{Int8Kernel, Int8Stats, Quantized, knn_blocks_int8};
use rmac_native::knn::{Graph, Tiling, knn};
use std::time::Instant;

/// The process's peak RSS, MiB (0 where /proc is not there).
fn peak_rss_mib() -> f64 {
    rmac_native::bench::peak_rss_mib().unwrap_or(0.0)
}

/// xorshift64*, the tests' generator.
fn rng(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

fn vectors(n: usize, dim: usize) -> Vec<f32> {
    let mut s = 7u64;
    let mut data = Vec::with_capacity(n * dim);
    while data.len() < n * dim {
        let seed: Vec<f32> = (0..dim).map(|_| rng(&mut s)).collect();
        let copies = 1 + (rng(&mut s).abs() * 8.0) as usize;
        for _ in 0..copies {
            let v: Vec<f32> = seed.iter().map(|x| x + 0.01 * rng(&mut s)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            data.extend(v.iter().map(|x| x / norm));
        }
    }
    data.truncate(n * dim);
    data
}

fn main() {
    let sizes: Vec<usize> = std::env::var("RMAC_KNN_N")
        .unwrap_or_else(|_| "5000,20000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("RMAC_KNN_N: comma-separated sizes"))
        .collect();
    let prefilters: Vec<String> = std::env::var("RMAC_KNN_PREFILTER")
        .unwrap_or_else(|_| "int8,none".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let (dim, k) = (512, 10);
    let threads = rayon::current_num_threads();
    for n in sizes {
        let data = vectors(n, dim);
        let tiling = Tiling::for_budget(1 << 30, n, k, threads);
        let mut graphs = Vec::new();
        for pf in &prefilters {
            let start = Instant::now();
            let (g, what) = match pf.as_str() {
                "none" => (knn(&data, dim, k, tiling, &|_| {}), "fp32".to_string()),
                "int8" => {
                    let Some(kernel) = Int8Kernel::detect() else {
                        println!("knn n {n}: no AVX-512 VNNI on this CPU, int8 skipped");
                        continue;
                    };
                    let qz = Quantized::of(&data, dim);
                    let mut g = Graph::empty(n, k);
                    let blocks: Vec<usize> = (0..tiling.blocks(n)).collect();
                    let stats = Int8Stats::default();
                    knn_blocks_int8(
                        &data,
                        dim,
                        &qz,
                        kernel,
                        tiling,
                        &mut g,
                        &blocks,
                        &mut |_, _| {},
                        &stats,
                    );
                    let r = stats.rescored.into_inner();
                    (
                        g,
                        format!(
                            "int8 {} ({r} pairs re-scored, {:.0} per row)",
                            kernel.name(),
                            r as f64 / n as f64
                        ),
                    )
                }
                other => panic!("RMAC_KNN_PREFILTER: int8 or none, not {other}"),
            };
            let s = start.elapsed().as_secs_f64();
            println!(
                "knn n {n} dim {dim} k {k} {what}: {s:.1} s, {:.1} GOP/s, tiles {} rows, {threads} threads, peak RSS {:.0} MiB (first row's best {:?})",
                2.0 * (n as f64).powi(2) * dim as f64 / 2.0 / s / 1e9,
                tiling.rows,
                peak_rss_mib(),
                g.row(0).next()
            );
            graphs.push(g);
        }
        if graphs.len() == 2 {
            assert!(
                graphs[0] == graphs[1],
                "n {n}: the int8 and fp32 graphs differ"
            );
            println!("knn n {n}: the int8 and fp32 graphs are identical");
        }
    }
}
