//! Exact top-k search over 1M × 512 float32 vectors (2 GB), the scan behind
//! `rmac-native search FILE`: one query, 8 queries at once, and QE (two scans).
//!
//!     cargo bench --bench search            # RMAC_BENCH_ROWS=200000 for a smaller set
//!
//! The CLI on a real file (mapped .npy, warm page cache) times the same scan:
//!     rmac-native search v.npy --path P -k 10 --repeat 10

use criterion::{Criterion, criterion_group, criterion_main};
use rmac_native::search::{search_many, search_qe};
use std::hint::black_box;
use std::time::Duration;

fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    let mut v: Vec<f32> = (0..n * dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    for row in v.chunks_exact_mut(dim) {
        let s = row.iter().map(|a| a * a).sum::<f32>().sqrt();
        row.iter_mut().for_each(|a| *a /= s);
    }
    v
}

fn bench(c: &mut Criterion) {
    let rows: usize = std::env::var("RMAC_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dim = 512;
    let data = unit_rows(rows, dim, 0x9E3779B97F4A7C15);
    let queries = unit_rows(8, dim, 7);
    let q: Vec<&[f32]> = queries.chunks_exact(dim).collect();
    let mut g = c.benchmark_group(format!("search_{rows}x{dim}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("1_query_k10", |b| {
        b.iter(|| black_box(search_many(&data, dim, &q[..1], 10, &[None])))
    });
    g.bench_function("1_query_k1000", |b| {
        b.iter(|| black_box(search_many(&data, dim, &q[..1], 1000, &[None])))
    });
    g.bench_function("8_queries_k10", |b| {
        b.iter(|| black_box(search_many(&data, dim, &q, 10, &[None; 8])))
    });
    g.bench_function("1_query_k10_qe5", |b| {
        b.iter(|| black_box(search_qe(&data, dim, &q[..1], 10, &[None], 5, 3.0)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
