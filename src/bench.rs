//! `rmac-native bench`: per-layer and whole-image timings of a backend on a
//! synthetic image, with GFLOP/s and the process's peak RSS. Numbers for the
//! README come from here (and the criterion benches in `benches/`).

use crate::backend::CpuBackend;
use crate::backend::cpu::CpuAlgo;
use crate::rmac::rmac;
use crate::tensor::Tensor3;
use crate::vgg16::spec::VGG16_CONVS;
use crate::vgg16::synthetic;
use crate::vgg16::weights::Vgg16Weights;
use std::sync::Arc;
use std::time::Instant;

/// One timed forward pass.
#[derive(Clone, Debug)]
pub struct PassTiming {
    /// Seconds per layer, in [`VGG16_CONVS`] order (the fused pool included).
    pub layers: Vec<f64>,
    /// conv1_1 … pool5 as extraction runs it ([`CpuBackend::forward`]: block 1
    /// in bands on the fast paths, so not the sum of `layers`).
    pub pool5: f64,
    /// The R-MAC head after pool5 (regions, PCA, L2).
    pub head: f64,
    /// Process peak RSS (MiB) right after the image pass, before the
    /// layer-by-layer pass (which holds the full conv1_1 map).
    pub rss_after_image: Option<f64>,
}

/// A deterministic pseudo-image (values spread like a mean-subtracted photo).
pub fn synthetic_input(h: usize, w: usize) -> Tensor3 {
    let data = (0..(h * w * 3) as u64)
        .map(|i| ((synthetic::uniform(7, 200, i) - 0.5) * 255.0) as f32)
        .collect();
    Tensor3::from_vec(h, w, 3, data)
}

/// Times `repeat` passes of the CPU backend (default algorithm) on an `h × w` input.
pub fn time_cpu(
    weights: Arc<Vgg16Weights>,
    threads: usize,
    h: usize,
    w: usize,
    repeat: usize,
) -> anyhow::Result<Vec<PassTiming>> {
    let backend = CpuBackend::new(weights, threads)?;
    time_backend(&backend, h, w, repeat)
}

/// Times `repeat` passes of each algorithm, interleaved (pass 1 of every
/// algorithm, then pass 2 …) so that load from other processes hits all of
/// them alike. Returns the passes per algorithm, in `algos` order.
pub fn time_cpu_algos(
    weights: Arc<Vgg16Weights>,
    threads: usize,
    algos: &[CpuAlgo],
    h: usize,
    w: usize,
    repeat: usize,
) -> anyhow::Result<Vec<Vec<PassTiming>>> {
    let backends: Vec<CpuBackend> = algos
        .iter()
        .map(|&a| CpuBackend::with_algo(weights.clone(), threads, a))
        .collect::<Result<_, _>>()?;
    let mut passes = vec![Vec::with_capacity(repeat); algos.len()];
    for _ in 0..repeat {
        for (b, p) in backends.iter().zip(passes.iter_mut()) {
            p.extend(time_backend(b, h, w, 1)?);
        }
    }
    Ok(passes)
}

/// Times `repeat` passes of `backend` on an `h × w` input.
pub fn time_backend(
    backend: &CpuBackend,
    h: usize,
    w: usize,
    repeat: usize,
) -> anyhow::Result<Vec<PassTiming>> {
    let input = synthetic_input(h, w);
    let pca = crate::rmac::pca::synthetic(1);
    let mut passes = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        // The image as extraction runs it (block 1 in bands on the fast paths)…
        let start = Instant::now();
        let pool5 = backend.forward(&input)?;
        let pool5_s = start.elapsed().as_secs_f64();
        let head_start = Instant::now();
        std::hint::black_box(rmac(&pool5, 3, Some(&pca)));
        let head = head_start.elapsed().as_secs_f64();
        let rss_after_image = peak_rss_mib();
        // …then layer by layer, for the per-layer table.
        let mut layers = Vec::with_capacity(VGG16_CONVS.len());
        let mut last = Instant::now();
        let pool5 = backend.forward_observed(&input, |_, _| {
            let now = Instant::now();
            layers.push((now - last).as_secs_f64());
            last = now;
        })?;
        std::hint::black_box(pool5);
        passes.push(PassTiming {
            layers,
            pool5: pool5_s,
            head,
            rss_after_image,
        });
    }
    Ok(passes)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The report printed by `rmac-native bench`: the best of the passes per layer.
pub fn report(passes: &[PassTiming], h: usize, w: usize, threads: usize) -> String {
    report_algo(passes, h, w, threads, "")
}

/// [`report`] with the algorithm named in the title.
pub fn report_algo(
    passes: &[PassTiming],
    h: usize,
    w: usize,
    threads: usize,
    algo: &str,
) -> String {
    use std::fmt::Write;
    let best = |f: &dyn Fn(&PassTiming) -> f64| passes.iter().map(f).fold(f64::INFINITY, f64::min);
    let mut out = String::new();
    let algo = if algo.is_empty() {
        String::new()
    } else {
        format!(", algorithm {algo}")
    };
    let _ = writeln!(
        out,
        "VGG16 conv1_1…pool5 on the CPU, {w}×{h} input, {threads} threads{algo}, best of {} passes",
        passes.len()
    );
    let _ = writeln!(
        out,
        "{:<14} {:>14} {:>9} {:>9}",
        "layer", "input (h×w×c)", "ms", "GFLOP/s"
    );
    let (mut hh, mut ww) = (h, w);
    let mut total_flops = 0.0;
    for (i, spec) in VGG16_CONVS.iter().enumerate() {
        let s = best(&|p: &PassTiming| p.layers[i]);
        let flops = spec.flops(hh, ww);
        total_flops += flops;
        let _ = writeln!(
            out,
            "{:<14} {:>14} {:>9.1} {:>9.1}",
            if spec.pool_after {
                format!("{}+pool", spec.name)
            } else {
                spec.name.to_string()
            },
            format!("{hh}×{ww}×{}", spec.cin),
            s * 1e3,
            flops / s / 1e9
        );
        if spec.pool_after {
            (hh, ww) = (hh / 2, ww / 2);
        }
    }
    let pool5 = best(&|p: &PassTiming| p.pool5);
    let head = best(&|p: &PassTiming| p.head);
    let _ = writeln!(
        out,
        "{:<14} {:>14} {:>9.1} {:>9.1}",
        "total to pool5",
        "",
        pool5 * 1e3,
        total_flops / pool5 / 1e9
    );
    let _ = writeln!(out, "{:<14} {:>14} {:>9.2}", "R-MAC head", "", head * 1e3);
    let _ = writeln!(
        out,
        "images/s: {:.3} ({:.1} GFLOP per image)",
        1.0 / (pool5 + head),
        total_flops / 1e9
    );
    let _ = writeln!(out, "image ms (pool5 + R-MAC): {:.1}", (pool5 + head) * 1e3);
    if let Some(rss) = peak_rss_mib() {
        let _ = writeln!(
            out,
            "peak RSS of this benchmark so far: {rss:.0} MiB (weights included; the per-layer passes hold full-resolution maps)"
        );
    }
    out
}

/// What [`report_algo`] prints, as JSON (`bench --json`): the best of the
/// passes per layer, to pool5, the head, images/s.
pub fn report_algo_json(
    passes: &[PassTiming],
    h: usize,
    w: usize,
    algo: &str,
) -> serde_json::Value {
    let best = |f: &dyn Fn(&PassTiming) -> f64| passes.iter().map(f).fold(f64::INFINITY, f64::min);
    let (mut hh, mut ww) = (h, w);
    let mut layers = Vec::new();
    let mut total_flops = 0.0;
    for (i, spec) in VGG16_CONVS.iter().enumerate() {
        let s = best(&|p: &PassTiming| p.layers[i]);
        let flops = spec.flops(hh, ww);
        total_flops += flops;
        layers.push(serde_json::json!({
            "layer": spec.name,
            "pool_after": spec.pool_after,
            "input": [hh, ww, spec.cin],
            "ms": s * 1e3,
            "gflops_per_s": flops / s / 1e9,
        }));
        if spec.pool_after {
            (hh, ww) = (hh / 2, ww / 2);
        }
    }
    let (pool5, head) = (
        best(&|p: &PassTiming| p.pool5),
        best(&|p: &PassTiming| p.head),
    );
    serde_json::json!({
        "algo": algo,
        "passes": passes.len(),
        "layers": layers,
        "pool5_ms": pool5 * 1e3,
        "head_ms": head * 1e3,
        "images_per_s": 1.0 / (pool5 + head),
        "gflop_per_image": total_flops / 1e9,
        "peak_rss_after_image_mib": passes.first().and_then(|p| p.rss_after_image),
    })
}

/// Side-by-side table of several algorithms' best passes: per-layer ms, total,
/// images/s and speed-up against the first column's reference (`im2col` when present).
pub fn compare(
    algos: &[CpuAlgo],
    passes: &[Vec<PassTiming>],
    h: usize,
    w: usize,
    threads: usize,
) -> String {
    use std::fmt::Write;
    let best = |p: &[PassTiming], f: &dyn Fn(&PassTiming) -> f64| {
        p.iter().map(f).fold(f64::INFINITY, f64::min)
    };
    let mut out = String::new();
    let n = passes.first().map_or(0, Vec::len);
    let _ = writeln!(
        out,
        "VGG16 conv1_1…pool5 + R-MAC, {w}×{h}, {threads} threads, best of {n} interleaved passes (ms; GFLOP/s in brackets)"
    );
    let _ = write!(out, "{:<19}", "layer");
    for a in algos {
        let _ = write!(out, " {:>17}", a.name());
    }
    let _ = writeln!(out);
    let (mut hh, mut ww) = (h, w);
    let mut total_flops = 0.0;
    for (i, spec) in VGG16_CONVS.iter().enumerate() {
        let flops = spec.flops(hh, ww);
        total_flops += flops;
        let name = if spec.pool_after {
            format!("{}+pool", spec.name)
        } else {
            spec.name.to_string()
        };
        let _ = write!(out, "{name:<19}");
        for p in passes {
            let s = best(p, &|t: &PassTiming| t.layers[i]);
            let _ = write!(out, " {:>9.1} ({:>5.0})", s * 1e3, flops / s / 1e9);
        }
        let _ = writeln!(out);
        if spec.pool_after {
            (hh, ww) = (hh / 2, ww / 2);
        }
    }
    let image: Vec<f64> = passes
        .iter()
        .map(|p| best(p, &|t: &PassTiming| t.pool5 + t.head))
        .collect();
    let _ = write!(out, "{:<19}", "image (pool5+R-MAC)");
    for (p, s) in passes.iter().zip(&image) {
        let pool5 = best(p, &|t: &PassTiming| t.pool5);
        let _ = write!(
            out,
            " {:>9.1} ({:>5.0})",
            s * 1e3,
            total_flops / pool5 / 1e9
        );
    }
    let _ = writeln!(out);
    let _ = write!(out, "{:<19}", "images/s");
    for s in &image {
        let _ = write!(out, " {:>17.3}", 1.0 / s);
    }
    let _ = writeln!(out);
    if let Some(r) = algos.iter().position(|&a| a == CpuAlgo::Im2col) {
        let _ = write!(out, "{:<19}", "speed-up vs im2col");
        for s in &image {
            let _ = write!(out, " {:>16.2}x", image[r] / s);
        }
        let _ = writeln!(out);
    }
    for (a, s) in algos.iter().zip(&image) {
        let _ = writeln!(out, "image ms {} {:.1}", a.name(), s * 1e3);
    }
    out
}
