//! `bench`: per-layer timings.

use crate::cli::BenchArgs;
use anyhow::Result;
use rmac_native::backend::cpu::CpuAlgo;
use rmac_native::vgg16::weights::Vgg16Weights;
use std::sync::Arc;

/// `bench`: per-layer timings on the CPU.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let weights = match &args.weights {
        Some(path) => Vgg16Weights::load(path)?,
        None => rmac_native::vgg16::synthetic::vgg16(1),
    };
    let threads = if args.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        args.threads
    };
    let algos = parse_algos(&args.algo)?;
    let weights = Arc::new(weights);
    let (h, w) = (args.height, args.width);
    let passes =
        rmac_native::bench::time_cpu_algos(weights, threads, &algos, h, w, args.repeat.max(1))?;
    if args.json {
        let report = serde_json::json!({
            "width": w,
            "height": h,
            "threads": threads,
            "algos": algos
                .iter()
                .zip(&passes)
                .map(|(a, p)| rmac_native::bench::report_algo_json(p, h, w, a.name()))
                .collect::<Vec<_>>(),
            "peak_rss_mib": rmac_native::bench::peak_rss_mib(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for (a, p) in algos.iter().zip(&passes) {
        print!(
            "{}",
            rmac_native::bench::report_algo(p, h, w, threads, a.name())
        );
        println!();
    }
    if algos.len() > 1 {
        print!(
            "{}",
            rmac_native::bench::compare(&algos, &passes, h, w, threads)
        );
    }
    if let Some(rss) = passes
        .first()
        .and_then(|p| p.first())
        .and_then(|p| p.rss_after_image)
    {
        println!(
            "peak RSS after the first image (extraction path): {rss:.0} MiB (weights and the prepared weights of {} included)",
            args.algo
        );
    }
    if let Some(rss) = rmac_native::bench::peak_rss_mib() {
        println!(
            "peak RSS of the whole benchmark: {rss:.0} MiB (every algorithm's backend and full-resolution per-layer passes; the extraction path is the line above)"
        );
    }
    Ok(())
}

/// `--algo auto,im2col` → the algorithms in that order; `all` → every one.
fn parse_algos(spec: &str) -> Result<Vec<CpuAlgo>> {
    if spec == "all" {
        return Ok(CpuAlgo::ALL.to_vec());
    }
    spec.split(',')
        .map(|name| {
            CpuAlgo::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = CpuAlgo::ALL.iter().map(|a| a.name()).collect();
                anyhow::anyhow!(
                    "unknown --algo {name:?}: use one or more of {} (comma-separated) or all",
                    known.join(", ")
                )
            })
        })
        .collect()
}
