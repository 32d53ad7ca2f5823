//! The wgpu backend against the naive f64 reference (single layers) and against the
//! CPU backend (whole network), on tiny shapes so that it runs on Mesa's lavapipe
//! in CI (~2 GFLOP/s). No adapter at all is a FAILURE, not a skip: CI installs
//! lavapipe (`apt-get install mesa-vulkan-drivers libvulkan1`).
//!
//! Metric: `max |gpu − ref| / max |ref|` over all components of a map (the error
//! relative to the map's scale; a per-component relative error is meaningless for
//! ReLU outputs near 0).
//!
//! Also here, `#[ignore]`d, the real-size checks that `benches/gpu-check.sh` runs on
//! a real GPU: `real_size_parity` and `real_size_report`.
#![cfg(feature = "gpu")]

mod common;

use common::{Rng, rel_err};
use std::sync::Arc;
use std::time::Instant;

use rmac_native::backend::cpu::reference::{conv3x3_relu_f64, maxpool2_f64};
use rmac_native::backend::gpu::conv::Tile;
use rmac_native::backend::gpu::{
    ConvChoice, GpuBackend, GpuOptions, NO_ADAPTER_HINT, list_adapters,
};
use rmac_native::backend::{Backend, BackendError, CpuBackend};
use rmac_native::tensor::Tensor3;
use rmac_native::vgg16::synthetic;

/// Deterministic values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..n).map(|_| rng.f()).collect()
}

/// Every conv shader variant: by layer size and each tile forced, with BK 8 and, in
/// `dev` builds (the test command enables it), BK 16 where a tile has it, and v1.
const CHOICES: &[ConvChoice] = &[
    ConvChoice::Auto,
    ConvChoice::Tile(Tile::T128x128),
    ConvChoice::Tile(Tile::T256x64),
    ConvChoice::Tile(Tile::T64x64),
    ConvChoice::Tile(Tile::T128x64),
    #[cfg(feature = "dev")]
    ConvChoice::AutoK16,
    #[cfg(feature = "dev")]
    ConvChoice::TileK16(Tile::T128x128),
    #[cfg(feature = "dev")]
    ConvChoice::TileK16(Tile::T64x64),
    #[cfg(feature = "dev")]
    ConvChoice::TileK16(Tile::T128x64),
    #[cfg(feature = "dev")]
    ConvChoice::V1,
];

fn backend_with(max_binding_bytes: Option<u64>, conv: ConvChoice, checked: bool) -> GpuBackend {
    assert!(!list_adapters().is_empty(), "{NO_ADAPTER_HINT}");
    GpuBackend::without_weights(GpuOptions {
        max_binding_bytes,
        conv,
        checked_shaders: checked,
        ..Default::default()
    })
    .unwrap_or_else(|e| {
        panic!(
            "cannot open a GPU adapter: {e}; adapters: {:?}",
            list_adapters()
        )
    })
}

/// (h, w, cin, cout, pool). Between them, for every tile: the f32 gatherer (cin 2, 3, 5)
/// and the vec4 one (cin % 4 == 0) with a K step of 8 that runs past cin (4, 12, 20)
/// or not (8, 24, 64); an odd number of 8-k sub-steps (vec4: cin 4, 8, 20; f32: cin 2,
/// K = 18), which BK = 16 pads with a zero sub-step; odd H and W, pooled and not; maps
/// wider than one tile (16 px) and taller than the tallest (16 rows); cout below, at and
/// above a tile's channels (16, 20, 64, 68, 132, 512).
const SHAPES: [(usize, usize, usize, usize, bool); 16] = [
    (5, 7, 3, 16, false),
    (5, 7, 3, 16, true),
    (9, 13, 8, 64, false),
    (9, 13, 8, 64, true),
    (13, 9, 64, 16, true),
    (11, 17, 64, 64, false),
    (1, 1, 3, 16, false),
    (16, 16, 3, 128, true),
    (7, 19, 12, 64, true),
    (18, 33, 4, 132, false),
    (10, 21, 20, 512, true),
    (17, 35, 64, 512, false),
    (6, 18, 5, 68, true),
    (35, 20, 24, 64, true),
    (21, 3, 3, 64, false),
    (12, 23, 2, 20, true),
];

struct Case {
    input: Tensor3,
    kernel: Vec<f32>,
    bias: Vec<f32>,
    cout: usize,
    pool: bool,
}

fn case(i: usize, (h, w, cin, cout, pool): (usize, usize, usize, usize, bool)) -> Case {
    let scale = (3.0 / (9 * cin) as f32).sqrt();
    Case {
        input: Tensor3::from_vec(h, w, cin, noise(3 * i as u64 + 1, h * w * cin)),
        kernel: noise(3 * i as u64 + 2, 9 * cin * cout)
            .iter()
            .map(|v| v * scale)
            .collect(),
        bias: noise(3 * i as u64 + 3, cout)
            .iter()
            .map(|v| v * 0.1)
            .collect(),
        cout,
        pool,
    }
}

fn reference(c: &Case) -> Vec<f64> {
    let full = conv3x3_relu_f64(&c.input, &c.kernel, &c.bias, c.cout);
    if c.pool {
        maxpool2_f64(&full, c.input.h, c.input.w, c.cout)
    } else {
        full
    }
}

/// Every RMAC_GPU_CONV name gpu-check.sh uses selects its variant (no GPU needed).
#[test]
fn conv_choice_names() {
    let t = |s| ConvChoice::parse(s);
    assert_eq!(t("auto"), Some(ConvChoice::Auto));
    assert_eq!(t("128x64"), Some(ConvChoice::Tile(Tile::T128x64)));
    #[cfg(feature = "dev")]
    {
        assert_eq!(t("k16"), Some(ConvChoice::AutoK16));
        assert_eq!(t("v1"), Some(ConvChoice::V1));
        assert_eq!(t("128x128-k16"), Some(ConvChoice::TileK16(Tile::T128x128)));
        assert_eq!(t("64x64-k16"), Some(ConvChoice::TileK16(Tile::T64x64)));
        assert_eq!(t("128x64-k16"), Some(ConvChoice::TileK16(Tile::T128x64)));
    }
    #[cfg(not(feature = "dev"))]
    for name in ["k16", "v1", "128x128-k16"] {
        assert_eq!(t(name), None, "{name} is a dev-only variant");
    }
    // 256x64 has no BK 16 variant (see Tile::has_k16).
    assert_eq!(t("256x64-k16"), None);
    assert_eq!(t("96x96"), None);
    // Every listed name parses, and nothing else does.
    for name in ConvChoice::NAMES {
        assert!(t(name).is_some(), "{name}");
    }
}

#[test]
fn an_adapter_exists() {
    let found = list_adapters();
    eprintln!("adapters: {found:#?}");
    assert!(!found.is_empty(), "{NO_ADAPTER_HINT}");
}

#[test]
fn conv_shader_matches_f64_reference() {
    for &conv in CHOICES {
        conv_matches_f64_reference(conv);
    }
}

fn conv_matches_f64_reference(conv: ConvChoice) {
    let mut gpu = backend_with(None, conv, false);
    // The same shader with wgpu's run-time bounds checks kept must agree bit for bit.
    let mut checked = backend_with(None, conv, true);
    eprintln!("{conv:?}: {}", gpu.conv_description());
    for (i, &shape) in SHAPES.iter().enumerate() {
        let c = case(i, shape);
        let got = gpu
            .conv_layer_for_test(&c.input, &c.kernel, &c.bias, c.cout, c.pool)
            .unwrap();
        let safe = checked
            .conv_layer_for_test(&c.input, &c.kernel, &c.bias, c.cout, c.pool)
            .unwrap();
        assert_eq!(
            got, safe,
            "{conv:?} {shape:?}: trusted and checked shader differ"
        );
        let (ho, wo) = if c.pool {
            (shape.0 / 2, shape.1 / 2)
        } else {
            (shape.0, shape.1)
        };
        assert_eq!((got.h, got.w, got.c), (ho, wo, c.cout), "shape {shape:?}");
        let want = reference(&c);
        let e = rel_err(&got.data, &want);
        eprintln!("{conv:?} {shape:?}: rel err {e:.2e}");
        assert!(
            e <= 1e-5,
            "{conv:?} {shape:?}: max |gpu − f64| / max |f64| = {e:.3e}"
        );
    }
}

#[test]
fn row_band_tiling_gives_identical_results() {
    for &conv in CHOICES {
        row_bands_identical(conv);
    }
}

fn row_bands_identical(conv: ConvChoice) {
    let mut whole = backend_with(None, conv, false);
    for limit in [1500u64, 4096, 20_000] {
        let mut tiled = backend_with(Some(limit), conv, false);
        for (i, &shape) in SHAPES.iter().enumerate() {
            let c = case(i, shape);
            let a = whole
                .conv_layer_for_test(&c.input, &c.kernel, &c.bias, c.cout, c.pool)
                .unwrap();
            match tiled.conv_layer_for_test(&c.input, &c.kernel, &c.bias, c.cout, c.pool) {
                Ok(b) => assert_eq!(a, b, "{conv:?}, limit {limit}, shape {shape:?}"),
                // A band of 1–2 rows does not fit: must be a clear error, checked below.
                Err(BackendError::Device(msg)) => {
                    assert!(msg.contains("storage-binding limit"), "{msg}");
                    let row = (shape.1 * shape.2.max(shape.3) * 4) as u64;
                    assert!(
                        3 * row + 256 > limit,
                        "{conv:?}, limit {limit}, {shape:?}: unexpected error {msg}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn vgg_input(h: usize, w: usize) -> Tensor3 {
    // Roughly the range of mean-subtracted pixels, with structure and noise.
    let n = noise(99, h * w * 3);
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let smooth = 80.0 * ((x as f32 * 0.3 + c as f32).sin() * (y as f32 * 0.2).cos());
                data.push(smooth + 40.0 * n[(y * w + x) * 3 + c]);
            }
        }
    }
    Tensor3::from_vec(h, w, 3, data)
}

fn max_rel(a: &Tensor3, b: &Tensor3) -> f64 {
    assert_eq!((a.h, a.w, a.c), (b.h, b.w, b.c));
    let scale = b.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    f64::from(
        a.data
            .iter()
            .zip(&b.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale,
    )
}

#[test]
fn pool5_matches_cpu_backend() {
    let weights = Arc::new(synthetic::vgg16(1));
    let mut gpu = GpuBackend::new(weights.clone(), GpuOptions::default())
        .unwrap_or_else(|e| panic!("{e}; adapters: {:?}", list_adapters()));
    let mut tiled = GpuBackend::new(
        weights.clone(),
        GpuOptions {
            max_binding_bytes: Some(65_536),
            ..Default::default()
        },
    )
    .unwrap();
    let mut cpu = CpuBackend::new(weights, 1).unwrap();
    let name = gpu.name();
    assert!(name.starts_with("gpu (") && name.contains(", "), "{name}");
    eprintln!("{name}");
    // Bigger image first, then smaller ones: buffers are reused (and would grow).
    for (h, w) in [(64, 40), (33, 45), (37, 64)] {
        let x = vgg_input(h, w);
        let t = Instant::now();
        let g = gpu.pool5(&x).unwrap();
        let dt = t.elapsed();
        let c = cpu.pool5(&x).unwrap();
        assert_eq!((g.h, g.w, g.c), (h / 32, w / 32, 512));
        let e = max_rel(&g, &c);
        eprintln!("{h}×{w}: gpu {dt:.2?}, max |gpu − cpu| / max |cpu| = {e:.2e}");
        assert!(e <= 1e-4, "{h}×{w}: {e:.3e}");
        assert!(
            c.data.iter().any(|&v| v > 0.0),
            "degenerate test: pool5 all zero"
        );
        if (h, w) == (64, 40) {
            let b = tiled.pool5(&x).unwrap();
            assert_eq!(g, b, "{h}×{w}: tiled pool5 differs from untiled");
        }
    }
}

/// The whole network on each forced tile and on v1 (by layer size, a small image takes
/// the small tile everywhere), banded too, against the CPU backend.
#[test]
fn pool5_matches_cpu_backend_on_every_tile() {
    let weights = Arc::new(synthetic::vgg16(1));
    let mut cpu = CpuBackend::new(weights.clone(), 1).unwrap();
    let x = vgg_input(33, 45);
    let c = cpu.pool5(&x).unwrap();
    for &conv in CHOICES {
        let opts = |max_binding_bytes| GpuOptions {
            max_binding_bytes,
            conv,
            ..Default::default()
        };
        let mut gpu = GpuBackend::new(weights.clone(), opts(None)).unwrap();
        let g = gpu.pool5(&x).unwrap();
        let e = max_rel(&g, &c);
        eprintln!("{conv:?}: max |gpu − cpu| / max |cpu| = {e:.2e}");
        assert!(e <= 1e-4, "{conv:?}: {e:.3e}");
        let mut tiled = GpuBackend::new(weights.clone(), opts(Some(65_536))).unwrap();
        assert_eq!(
            g,
            tiled.pool5(&x).unwrap(),
            "{conv:?}: banded pool5 differs"
        );
    }
}

#[test]
fn bad_images_are_errors_not_crashes() {
    let weights = Arc::new(synthetic::vgg16(1));
    let mut gpu = GpuBackend::new(
        weights,
        GpuOptions {
            max_binding_bytes: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        gpu.pool5(&Tensor3::zeros(31, 64, 3)),
        Err(BackendError::TooSmall { h: 31, w: 64 })
    ));
    // A binding limit below one band of rows: a clear per-image error.
    match gpu.pool5(&Tensor3::zeros(64, 64, 3)) {
        Err(BackendError::Device(m)) => assert!(m.contains("--max-size"), "{m}"),
        other => panic!("expected a Device error, got {other:?}"),
    }
}

// ---- real-size checks for a real GPU (benches/gpu-check.sh) --------------------------

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// GPU vs CPU pool5 at RMAC_CHECK_H × RMAC_CHECK_W (default 768×1024), synthetic weights.
#[test]
#[ignore]
fn real_size_parity() {
    let (h, w) = (
        env_usize("RMAC_CHECK_H", 768),
        env_usize("RMAC_CHECK_W", 1024),
    );
    let weights = Arc::new(synthetic::vgg16(1));
    let mut gpu = GpuBackend::new(weights.clone(), GpuOptions::default()).unwrap();
    let mut cpu = CpuBackend::new(weights, 0).unwrap();
    for (h, w) in [(h, w), (w * 3 / 4 + 1, h * 3 / 4 + 3)] {
        let x = vgg_input(h, w);
        let t = Instant::now();
        let g = gpu.pool5(&x).unwrap();
        let tg = t.elapsed();
        let t = Instant::now();
        let c = cpu.pool5(&x).unwrap();
        let tc = t.elapsed();
        let e = max_rel(&g, &c);
        println!(
            "parity {h}×{w}: gpu {tg:.2?}, cpu {tc:.2?}, max |gpu − cpu| / max |cpu| = {e:.2e}"
        );
        assert!(e <= 1e-4, "{h}×{w}: {e:.3e}");
    }
}

/// Per-layer GFLOP/s and images/s at RMAC_CHECK_H × RMAC_CHECK_W (default 768×1024).
/// RMAC_PEAK_TFLOPS (default 67, H100 SXM fp32) for the fraction of peak.
///
/// Two timings per layer: "pass" is one `pool5_timed` pass (each layer encoded, submitted
/// and waited for on its own: launch, submit and wait latency included, about what a
/// single image sees); "steady" is `time_layer`: RMAC_CHECK_ITERS (default 10)
/// back-to-back runs of the layer in one submission, divided by their number (the
/// kernels' throughput when the GPU is kept busy, as in the criterion bench).
#[test]
#[ignore]
fn real_size_report() {
    let (h, w) = (
        env_usize("RMAC_CHECK_H", 768),
        env_usize("RMAC_CHECK_W", 1024),
    );
    let peak: f64 = std::env::var("RMAC_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(67.0);
    let iters = env_usize("RMAC_CHECK_ITERS", 10).max(1);
    let weights = Arc::new(synthetic::vgg16(1));
    // The variant under test, as the command line resolves it (the library never reads it).
    let conv = std::env::var("RMAC_GPU_CONV")
        .map(|v| {
            ConvChoice::parse(&v)
                .unwrap_or_else(|| panic!("RMAC_GPU_CONV={v}: not one of {:?}", ConvChoice::NAMES))
        })
        .unwrap_or_default();
    let mut gpu = GpuBackend::new(
        weights,
        GpuOptions {
            conv,
            ..GpuOptions::default()
        },
    )
    .unwrap();
    println!(
        "{} — binding limit {} MB — conv shader: {} (RMAC_GPU_CONV={})",
        gpu.name(),
        gpu.binding_limit() / 1_000_000,
        gpu.conv_description(),
        std::env::var("RMAC_GPU_CONV").unwrap_or_else(|_| "unset".into())
    );
    let x = vgg_input(h, w);
    gpu.pool5(&x).unwrap(); // warm-up
    let (_, timings) = gpu.pool5_timed(&x).unwrap();
    let pct = |f: f64, s: f64| 100.0 * f / s / (peak * 1e12);
    println!(
        "{:<14} {:>11} {:<16} {:>8} {:>9} {:>6} | steady ({iters} runs): {:>8} {:>9} {:>6}",
        "layer", "input", "kernel", "pass ms", "GFLOP/s", "%peak", "ms", "GFLOP/s", "%peak"
    );
    let mut total_f = 0.0;
    let mut total_t = 0.0;
    let mut total_s = 0.0;
    for (i, t) in timings.iter().enumerate() {
        let steady = gpu.time_layer(i, t.h, t.w, iters as u64).unwrap() / iters as f64;
        println!(
            "{:<14} {:>5}×{:<5} {:<16} {:>8.3} {:>9.1} {:>5.1}% | {:>29.3} {:>9.1} {:>5.1}%",
            t.name,
            t.h,
            t.w,
            t.kernel,
            t.seconds * 1e3,
            t.flops / t.seconds / 1e9,
            pct(t.flops, t.seconds),
            steady * 1e3,
            t.flops / steady / 1e9,
            pct(t.flops, steady),
        );
        total_f += t.flops;
        total_t += t.seconds;
        total_s += steady;
    }
    println!(
        "all convs: {:.1} GFLOP in {:.1} ms = {:.1} GFLOP/s ({:.1}% of peak), one pass",
        total_f / 1e9,
        total_t * 1e3,
        total_f / total_t / 1e9,
        pct(total_f, total_t)
    );
    println!(
        "all convs, steady state: {:.1} GFLOP in {:.1} ms = {:.1} GFLOP/s ({:.1}% of peak)",
        total_f / 1e9,
        total_s * 1e3,
        total_f / total_s / 1e9,
        pct(total_f, total_s)
    );
    let n = env_usize("RMAC_CHECK_IMAGES", 10);
    let t = Instant::now();
    for _ in 0..n {
        gpu.pool5(&x).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "pool5 {h}×{w}: {:.2} images/s ({n} images, upload + read-back included)",
        n as f64 / dt
    );
}
