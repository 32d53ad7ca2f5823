//! Criterion benches of the CPU backend: each VGG16 layer at its 1024×768
//! input size (reference im2col path and the default fast path), and one full
//! 1024×768 image to pool5 per algorithm. GFLOP/s are printed from the
//! throughput (criterion's "elements" are FLOPs).
//!
//!     cargo bench --bench cpu_vgg16            # everything
//!     cargo bench --bench cpu_vgg16 -- image   # whole images only

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmac_native::backend::cpu::{CpuAlgo, CpuBackend};
use rmac_native::bench::synthetic_input;
use rmac_native::tensor::Tensor3;
use rmac_native::vgg16::spec::VGG16_CONVS;
use rmac_native::vgg16::synthetic;
use std::sync::Arc;
use std::time::Duration;

const H: usize = 768;
const W: usize = 1024;

fn threads() -> usize {
    std::env::var("RMAC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn layers(c: &mut Criterion) {
    let weights = Arc::new(synthetic::vgg16(1));
    let t = threads();
    let algos = [CpuAlgo::Auto, CpuAlgo::Im2col];
    let backends: Vec<CpuBackend> = algos
        .iter()
        .map(|&a| CpuBackend::with_algo(weights.clone(), t, a).unwrap())
        .collect();
    // Real-sized activations: each layer's input from one reference pass.
    let mut inputs: Vec<Tensor3> = vec![synthetic_input(H, W)];
    backends[0]
        .forward_observed(&inputs[0].clone(), |_, x| inputs.push(x.clone()))
        .unwrap();
    let mut g = c.benchmark_group(format!("layer_{W}x{H}_{t}t"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (i, spec) in VGG16_CONVS.iter().enumerate() {
        let x = &inputs[i];
        g.throughput(Throughput::Elements(spec.flops(x.h, x.w) as u64));
        for (a, b) in algos.iter().zip(&backends) {
            g.bench_function(format!("{}/{}", spec.name, a.name()), |bench| {
                bench.iter(|| b.forward_layer(x, i))
            });
        }
    }
    g.finish();
}

fn image(c: &mut Criterion) {
    let weights = Arc::new(synthetic::vgg16(1));
    let t = threads();
    let input = synthetic_input(H, W);
    let flops: f64 = {
        let (mut h, mut w, mut f) = (H, W, 0.0);
        for s in VGG16_CONVS {
            f += s.flops(h, w);
            if s.pool_after {
                (h, w) = (h / 2, w / 2);
            }
        }
        f
    };
    let mut g = c.benchmark_group(format!("image_{W}x{H}_{t}t"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(flops as u64));
    for algo in [CpuAlgo::Auto, CpuAlgo::Winograd2, CpuAlgo::Im2col] {
        let b = CpuBackend::with_algo(weights.clone(), t, algo).unwrap();
        g.bench_function(algo.name(), |bench| {
            bench.iter(|| b.forward(&input).unwrap())
        });
        drop(b);
    }
    g.finish();
}

criterion_group!(benches, image, layers);
criterion_main!(benches);
