//! Throughput of the WGSL conv shader (`shaders/conv3x3.wgsl`) on VGG16 layers, input
//! resident on the GPU, no upload/read-back. Criterion's "elem/s" is FLOP/s here
//! (throughput = 2·MACs per iteration).
//!
//!     cargo bench --bench gpu_conv                       # layer sizes for a 1024×768 image on a real GPU
//!     RMAC_BENCH_SCALE=32 cargo bench --bench gpu_conv   # each side / 32 (the default on a CPU adapter, e.g. lavapipe)
//!
//! Synthetic weights (the speed does not depend on the values).
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rmac_native::backend::gpu::{GpuBackend, GpuOptions};
use rmac_native::vgg16::spec::VGG16_CONVS;
use rmac_native::vgg16::synthetic;

fn bench(c: &mut Criterion) {
    let mut gpu = match GpuBackend::new(Arc::new(synthetic::vgg16(1)), GpuOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let cpu_adapter = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let scale: usize = std::env::var("RMAC_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cpu_adapter { 32 } else { 1 });
    let mut group = c.benchmark_group(format!("gpu_conv ({})", gpu.adapter_description()));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    // One mid layer per block, at its size inside a 768×1024 image (÷ scale).
    for (index, div) in [(1usize, 1usize), (3, 2), (5, 4), (8, 8), (11, 16)] {
        let spec = VGG16_CONVS[index];
        let (h, w) = ((768 / div / scale).max(2), (1024 / div / scale).max(2));
        group.throughput(Throughput::Elements(spec.flops(h, w) as u64));
        group.bench_with_input(
            BenchmarkId::new(spec.name, format!("{h}x{w}")),
            &(h, w),
            |b, &(h, w)| {
                b.iter_custom(|iters| {
                    Duration::from_secs_f64(gpu.time_layer(index, h, w, iters).unwrap())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
