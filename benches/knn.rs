//! The exact kNN graph over N synthetic unit vectors (512-d, with planted
//! near-duplicate groups of 2–8), K = 10: seconds, GFLOP/s (N²·D multiply-adds
//! counted once: the symmetric tiles score each pair once, so this is the
//! all-pairs work the graph stands for, as dense GEMM would count it), peak RSS.
//! Not a test: a benchmark.
//!
//!     RMAC_KNN_N=20000,100000 cargo bench --bench knn
use rmac_native::knn::{Tiling, knn};
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
    let (dim, k) = (512, 10);
    let threads = rayon::current_num_threads();
    for n in sizes {
        let data = vectors(n, dim);
        let tiling = Tiling::for_budget(1 << 30, n, k, threads);
        let start = Instant::now();
        let g = knn(&data, dim, k, tiling, &|_| {});
        let s = start.elapsed().as_secs_f64();
        println!(
            "knn n {n} dim {dim} k {k}: {s:.1} s, {:.1} GFLOP/s, tiles {} rows, {threads} threads, peak RSS {:.0} MiB (first row's best {:?})",
            2.0 * (n as f64).powi(2) * dim as f64 / 2.0 / s / 1e9,
            tiling.rows,
            peak_rss_mib(),
            g.row(0).next()
        );
    }
}
