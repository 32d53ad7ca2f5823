//! One pass of `serve`'s exact scan, the library alone (no HTTP): N synthetic
//! unit vectors (default 1M × 512) held in memory, the 8-bit copy built once
//! per kernel this CPU runs, then passes for 1, 2, 4, 8 and 16 random unit
//! queries (k = 10), back to back as a server under load runs them: median
//! and best of `RMAC_PASS_REPS` passes (15; the first 3 warm up and are not
//! counted), rows re-scored per query. The copy of an AMX index goes through
//! VNNI below 8 queries (`prefilter::AMX_FROM`), so its rows there are
//! VNNI's. The last pass's answers are checked against `search_many`. Not a
//! test: a benchmark.
//!
//!     cargo bench --locked --features dev --bench serve_pass
//!
//! Settings (environment): `RMAC_PASS_N` (vectors, 1000000),
//! `RMAC_PASS_QUERIES` (comma-separated, `1,2,4,8,16`), `RMAC_PASS_REPS` (15).
use rmac_native::search::search_many;
use rmac_native::serve::prefilter::{Int8Index, Kernel};
use rmac_native::store::VectorSet;
use std::time::Instant;

const DIM: usize = 512;
const K: usize = 10;
const WARM_UP: usize = 3;

#[path = "common/unit_vectors.rs"]
mod unit_vectors;
use unit_vectors::Rng;

#[path = "common/settings.rs"]
mod settings;
use settings::list;

fn main() {
    let n = list("RMAC_PASS_N", "1000000")[0];
    let counts = list("RMAC_PASS_QUERIES", "1,2,4,8,16");
    let reps = list("RMAC_PASS_REPS", "15")[0].max(WARM_UP + 1);
    let kernels: Vec<Kernel> = Kernel::all_here()
        .into_iter()
        .filter(|&k| k != Kernel::Portable)
        .collect();
    println!(
        "serve's scan pass: {n} × {DIM} in memory, k = {K}, {} threads, kernels here: {}",
        rayon::current_num_threads(),
        kernels
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if kernels.is_empty() {
        println!("this CPU lacks AVX-512 VNNI: serve scans in float32 (benches/search.rs)");
        return;
    }
    let mut rng = Rng(0x5EED);
    let mut data = Vec::with_capacity(n * DIM);
    for _ in 0..n {
        data.extend(rng.unit(DIM));
    }
    let set = VectorSet {
        paths: vec![String::new(); n],
        data,
        dim: DIM,
    };
    for kernel in kernels {
        let t = Instant::now();
        let ix = Int8Index::build(&set.data, DIM, kernel, &mut |_| {}).expect("the copy");
        println!(
            "{}: copy of {:.0} MiB built in {:.2} s",
            kernel.name(),
            ix.bytes_held() as f64 / 1048576.0,
            t.elapsed().as_secs_f64()
        );
        for &nq in &counts {
            let (mut times, mut rescored) = (Vec::new(), 0);
            for rep in 0..reps {
                let queries: Vec<Vec<f32>> = (0..nq).map(|_| rng.unit(DIM)).collect();
                let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
                let before = ix.rescored();
                let t = Instant::now();
                let hits = ix.search(&set, &refs, &vec![K; nq], &vec![None; nq]);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if rep + 1 == reps {
                    // After the timed passes: the float32 scan reads 2 GB,
                    // which would evict what one pass leaves cached for the
                    // next (a server under load runs them back to back).
                    let want = search_many(&set.data, DIM, &refs, K, &vec![None; nq]);
                    assert_eq!(hits, want, "the pass differs from search_many");
                }
                if rep >= WARM_UP {
                    times.push(ms);
                    rescored += ix.rescored() - before;
                }
            }
            times.sort_by(f64::total_cmp);
            println!(
                "  {nq:>2} queries: median {:6.2} ms, best {:6.2} ms, {:.0} rows re-scored per query",
                times[times.len() / 2],
                times[0],
                rescored as f64 / (times.len() * nq) as f64
            );
        }
    }
}
