//! The fast CPU paths (packed AVX-512/AVX2 kernel, direct small-`cin`
//! convolution on every ISA, Winograd F(2×2) and F(4×4))
//! against the reference im2col + matrixmultiply path and the float64 loop:
//! random shapes (odd sizes, 1-pixel maps, channel counts that are not
//! multiples of the vector width, with and without the fused pool), then the
//! Winograd error on real activations (the synthetic-weight network on a
//! fixture image, layer by layer). The final R-MAC vector of every algorithm
//! against the Keras fixtures is in tests/keras_parity.rs (every device).
mod common;

use common::{fixtures, max_abs, max_abs_diff, random, random_layer, rel_err};
use rmac_native::backend::cpu::conv::conv3x3_relu;
use rmac_native::backend::cpu::direct::DirectLayer;
use rmac_native::backend::cpu::kernel::{self, Isa};
use rmac_native::backend::cpu::packed::PackedLayer;
use rmac_native::backend::cpu::reference::{conv3x3_relu_f64, maxpool2_f64};
use rmac_native::backend::cpu::winograd::{Tile, WinogradLayer};
use rmac_native::backend::cpu::{CpuAlgo, CpuBackend};
use rmac_native::extractor::{ExtractConfig, prepare_image};
use rmac_native::image::decode::{DecodeLimits, load_rgb};
use rmac_native::image::preprocess::Preprocess;
use rmac_native::tensor::Tensor3;
use rmac_native::vgg16::synthetic;
use rmac_native::vgg16::weights::ConvWeights;
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
enum Fast {
    Packed,
    /// The direct small-`cin` kernel on one ISA (each one this CPU has is tested).
    Direct(Isa),
    Wino(Tile),
}

/// Every fast path this CPU can run.
fn fast_paths() -> Vec<Fast> {
    let mut all = vec![Fast::Packed, Fast::Direct(Isa::Portable)];
    if kernel::detect() != Isa::Portable {
        all.push(Fast::Direct(Isa::Avx2));
    }
    if kernel::detect() == Isa::Avx512 {
        all.push(Fast::Direct(Isa::Avx512));
    }
    all.extend([Fast::Wino(Tile::F2), Fast::Wino(Tile::F4)]);
    all
}

/// The layer through `kind`, or `None` where that path does not take the layer.
fn run_fast(kind: Fast, layer: &ConvWeights, input: &Tensor3, threads: usize) -> Option<Tensor3> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let isa = kernel::detect();
    pool.install(|| match kind {
        Fast::Packed => Some(PackedLayer::new(layer).forward(input, Vec::new(), threads, isa)),
        Fast::Direct(isa) => DirectLayer::supports(layer)
            .then(|| DirectLayer::new(layer).forward(input, Vec::new(), isa)),
        Fast::Wino(tile) => {
            Some(WinogradLayer::new(layer, tile).forward(input, Vec::new(), threads, isa))
        }
    })
}

fn tolerance(kind: Fast) -> f64 {
    match kind {
        Fast::Packed | Fast::Direct(_) => 5e-6,
        Fast::Wino(Tile::F2) => 5e-6,
        Fast::Wino(Tile::F4) => 5e-5,
    }
}

fn check_random(h: usize, w: usize, cin: usize, cout: usize, pool: bool, threads: usize, seed: u8) {
    let layer = random_layer(cin, cout, pool, seed);
    let input = Tensor3::from_vec(h, w, cin, random(seed, 3, h * w * cin, 1.0));
    let mut want = conv3x3_relu_f64(&input, &layer.kernel, &layer.bias, cout);
    let (mut wh, mut ww) = (h, w);
    if pool {
        want = maxpool2_f64(&want, h, w, cout);
        (wh, ww) = (h / 2, w / 2);
    }
    let rt = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let reference = rt.install(|| conv3x3_relu(&input, &layer, threads));
    for kind in fast_paths() {
        let Some(got) = run_fast(kind, &layer, &input, threads) else {
            continue;
        };
        let what = format!("{kind:?} {h}×{w}×{cin}→{cout} pool={pool} threads={threads}");
        assert_eq!((got.h, got.w, got.c), (wh, ww, cout), "{what}: shape");
        let e = rel_err(&got.data, &want);
        assert!(
            e <= tolerance(kind),
            "{what}: relative error {e:.2e} vs the f64 loop"
        );
        let scale = max_abs(&reference.data).max(1e-30);
        let d = max_abs_diff(&got.data, &reference.data) / scale;
        assert!(
            f64::from(d) <= 2.0 * tolerance(kind),
            "{what}: relative difference {d:.2e} vs the im2col path"
        );
    }
}

#[test]
fn kernels_agree_with_a_plain_product() {
    // The unit test inside kernel.rs covers every ISA; here the public entry.
    let (m, k, n) = (8, 5, 3);
    let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32).collect();
    let mut bp = Vec::new();
    let np = kernel::pack_b(&b, k, n, n, &mut bp);
    let mut c = vec![0.0; m * np];
    kernel::gemm_packed(kernel::detect(), m, k, &a, k, &bp, np, &mut c, np);
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            assert_eq!(c[i * np + j], want);
        }
    }
}

#[test]
fn fast_paths_match_references_on_random_shapes() {
    let shapes = [
        (1, 1, 3, 4),
        (1, 7, 16, 8),
        (7, 1, 5, 3),
        (5, 7, 3, 16),
        (9, 13, 17, 33),
        (16, 16, 64, 64),
        (13, 31, 32, 40),
        (33, 45, 3, 64),
        (6, 10, 128, 16),
        (11, 3, 1, 1),
        // The direct kernel: cin ≤ 8, cout a multiple of 64, widths around its
        // 4-pixel blocks.
        (5, 1, 3, 64),
        (1, 5, 2, 128),
        (17, 9, 8, 64),
        (4, 7, 1, 192),
        (3, 4, 3, 64),
    ];
    for (k, &(h, w, cin, cout)) in shapes.iter().enumerate() {
        for threads in [1, 3] {
            check_random(h, w, cin, cout, false, threads, k as u8 + 1);
        }
    }
}

#[test]
fn fast_paths_fuse_the_pool_including_odd_sizes() {
    let shapes = [
        (2, 2, 3, 4),
        (3, 3, 16, 4),
        (1, 9, 4, 4),
        (7, 9, 8, 16),
        (16, 10, 32, 8),
        (35, 21, 16, 24),
        (9, 5, 48, 64),
    ];
    for (k, &(h, w, cin, cout)) in shapes.iter().enumerate() {
        for threads in [1, 2, 5] {
            check_random(h, w, cin, cout, true, threads, 50 + k as u8);
        }
    }
}

#[test]
fn wide_maps_with_many_channels() {
    check_random(3, 300, 256, 40, false, 2, 90);
    check_random(4, 301, 128, 72, true, 2, 91);
}

/// The fixture image through the reference path; each layer's *real* input
/// activation is fed to the fast paths and to the f64 loop.
#[test]
fn winograd_error_on_real_activations_per_layer() {
    let dir = fixtures().join("keras");
    let config = ExtractConfig {
        max_size: 96,
        levels: 3,
        preprocess: Preprocess::Keras,
        limits: DecodeLimits::default(),
        sampling: Default::default(),
        ..ExtractConfig::default()
    };
    let img = load_rgb(&dir.join("images/r96x160.png"), &config.limits).unwrap();
    let x0 = prepare_image(&img, &config).unwrap().tensor;
    let weights = synthetic::vgg16(1);
    let rt = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut x = x0;
    let mut worst = [0.0f64; 3];
    eprintln!(
        "layer          input        packed     F(2×2)     F(4×4)   (max |Δ| / max |f64|; conv1_1: direct)"
    );
    for layer in &weights.layers {
        let spec = layer.spec;
        let mut want = conv3x3_relu_f64(&x, &layer.kernel, &layer.bias, spec.cout);
        if spec.pool_after {
            want = maxpool2_f64(&want, x.h, x.w, spec.cout);
        }
        let mut errs = [0.0f64; 3];
        for (i, kind) in [Fast::Packed, Fast::Wino(Tile::F2), Fast::Wino(Tile::F4)]
            .into_iter()
            .enumerate()
        {
            if matches!(kind, Fast::Wino(_)) && spec.cin < 16 {
                // conv1_1 runs direct: measured in its own column below.
                let direct = run_fast(Fast::Direct(kernel::detect()), layer, &x, 2).unwrap();
                errs[i] = rel_err(&direct.data, &want);
                assert!(errs[i] <= 5e-6, "{}: direct {:.2e}", spec.name, errs[i]);
                continue;
            }
            errs[i] = rel_err(&run_fast(kind, layer, &x, 2).unwrap().data, &want);
            worst[i] = worst[i].max(errs[i]);
            assert!(
                errs[i] <= tolerance(kind),
                "{}: {kind:?} relative error {:.2e}",
                spec.name,
                errs[i]
            );
        }
        eprintln!(
            "{:<14} {:>3}×{:<3}×{:<3} {:>9.2e}  {:>9.2e}  {:>9.2e}",
            spec.name, x.h, x.w, x.c, errs[0], errs[1], errs[2]
        );
        x = rt.install(|| conv3x3_relu(&x, layer, 2));
    }
    eprintln!(
        "worst: packed {:.2e}, F(2×2) {:.2e}, F(4×4) {:.2e}",
        worst[0], worst[1], worst[2]
    );
}

/// Block 1 in bands (the extraction path) gives the layer-by-layer result.
#[test]
fn banded_block1_matches_the_layer_by_layer_forward() {
    let (h, w) = (233, 41);
    let input = Tensor3::from_vec(h, w, 3, random(7, 9, h * w * 3, 120.0));
    let weights = Arc::new(synthetic::vgg16(2));
    for algo in CpuAlgo::ALL {
        let b = CpuBackend::with_algo(weights.clone(), 2, algo).unwrap();
        let banded = b.forward(&input).unwrap();
        let whole = b.forward_observed(&input, |_, _| {}).unwrap();
        assert_eq!((banded.h, banded.w, banded.c), (whole.h, whole.w, whole.c));
        let d = max_abs_diff(&banded.data, &whole.data) / max_abs(&whole.data);
        assert!(
            d <= 1e-5,
            "{}: banded block 1 differs by {d:.2e}",
            algo.name()
        );
    }
}

/// Layer outputs reuse buffers between layers and images without clearing
/// them: with every kept buffer poisoned (NaN) after a larger image, a smaller
/// one must give exactly what a fresh backend gives.
#[test]
fn reused_buffers_are_fully_overwritten() {
    let weights = Arc::new(synthetic::vgg16(3));
    let big = Tensor3::from_vec(230, 75, 3, random(8, 9, 230 * 75 * 3, 120.0));
    let (h, w) = (203, 37);
    let small = Tensor3::from_vec(h, w, 3, random(9, 9, h * w * 3, 120.0));
    for algo in CpuAlgo::ALL {
        let fresh = CpuBackend::with_algo(weights.clone(), 2, algo).unwrap();
        let want = fresh.forward(&small).unwrap();
        let used = CpuBackend::with_algo(weights.clone(), 2, algo).unwrap();
        used.forward(&big).unwrap();
        used.forward_observed(&big, |_, _| {}).unwrap();
        used.poison_buffers(f32::NAN);
        let got = used.forward(&small).unwrap();
        assert!(
            got.data.iter().all(|v| v.is_finite()),
            "{}: NaN leaked",
            algo.name()
        );
        assert_eq!(
            got,
            want,
            "{}: reused buffers changed the result",
            algo.name()
        );
        used.poison_buffers(f32::NAN);
        let layered = used.forward_observed(&small, |_, _| {}).unwrap();
        assert!(
            layered.data.iter().all(|v| v.is_finite()),
            "{}: NaN leaked (layer by layer)",
            algo.name()
        );
    }
}
