//! Resuming a long run: the time and memory `extract` spends reading an output
//! that already holds N records before it can go on (`JsonlSink::open`, the
//! only work a resume does before the first image). Not a test: a benchmark.
//!
//!     RMAC_RESUME_N=1000000 cargo bench --bench resume
//!
//! Writes `N` records of 512 floats (6.35 KB each, as `extract` writes them:
//! 6.35 GB at 1M) plus a 1% error file into `RMAC_BENCH_DIR` (default
//! `target/bench-resume`, reused when it already holds them), drops nothing from
//! the page cache (the common case: a restart right after a kill), then opens
//! the output three times and prints each time and the process's peak RSS.
use rmac_native::store::jsonl::JsonlSink;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// The process's peak RSS, MiB (0 where /proc is not there).
fn peak_rss_mib() -> f64 {
    rmac_native::bench::peak_rss_mib().unwrap_or(0.0)
}

fn main() {
    let n: usize = std::env::var("RMAC_RESUME_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::var("RMAC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/bench-resume"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("resume-{n}.jsonl"));
    let errors = rmac_native::store::companions::errors_path(&out);
    let marker = dir.join(format!("resume-{n}.complete"));
    if !marker.exists() {
        let t = Instant::now();
        // Values with the digits extract writes (ryu, float_roundtrip): ~12 characters each.
        let vector: Vec<f32> = (0..512)
            .map(|i| ((i * 7919) % 1000) as f32 * 1.234_567e-4 - 0.06)
            .collect();
        let tail = serde_json::to_string(&vector).unwrap();
        let mut v =
            std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&out).unwrap());
        let mut e = std::io::BufWriter::new(std::fs::File::create(&errors).unwrap());
        for i in 0..n {
            let path = format!("/data/frames/video{:05}/frame{:06}.jpg", i / 1000, i);
            if i % 100 == 99 {
                writeln!(
                    e,
                    "{{\"path\":\"{path}\",\"error\":\"truncated or corrupt JPEG data\"}}"
                )
                .unwrap();
            } else {
                writeln!(v, "{{\"path\":\"{path}\",\"vector\":{tail}}}").unwrap();
            }
        }
        v.flush().unwrap();
        e.flush().unwrap();
        std::fs::write(&marker, b"").unwrap();
        eprintln!(
            "wrote {n} records to {} in {:.1} s",
            out.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&out).unwrap().len();
    for pass in 1..=3 {
        let t = Instant::now();
        let (sink, done) = JsonlSink::open(&out, false, 512).unwrap();
        let s = t.elapsed().as_secs_f64();
        assert_eq!(done.len(), n);
        drop(sink);
        println!(
            "resume over {n} records ({:.2} GB): pass {pass}: {s:.2} s ({:.2} GB/s), peak RSS {:.0} MiB",
            bytes as f64 / 1e9,
            bytes as f64 / 1e9 / s,
            peak_rss_mib()
        );
    }
}
