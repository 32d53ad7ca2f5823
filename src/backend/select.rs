//! Choosing the backend for `--backend`: `cpu`, `gpu` (an error listing the
//! adapters when none is usable), or `auto` (a GPU when there is one, else the
//! CPU, saying which).

use super::{Backend, CpuBackend};
use crate::cli::BackendChoice;
use crate::vgg16::weights::Vgg16Weights;
use anyhow::Result;
use std::sync::Arc;

/// This process's rank among the ranks on its node, from whichever launcher
/// started it (Open MPI, MPICH/Hydra, Slurm); `None` when run plainly.
pub fn node_local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Picks the backend for `--backend`, with no `--gpu` override.
pub fn open_backend(
    choice: BackendChoice,
    weights: Arc<Vgg16Weights>,
    threads: usize,
) -> Result<Box<dyn Backend>> {
    open_backend_on(choice, weights, threads, None)
}

/// Picks the backend; `gpu_index` is `--gpu N` (otherwise ranks on one node
/// spread over its GPUs by node-local rank).
pub fn open_backend_on(
    choice: BackendChoice,
    weights: Arc<Vgg16Weights>,
    threads: usize,
    gpu_index: Option<usize>,
) -> Result<Box<dyn Backend>> {
    match choice {
        BackendChoice::Cpu => Ok(Box::new(CpuBackend::new(weights, threads)?)),
        BackendChoice::Gpu => Ok(open_gpu(weights, gpu_index)?.0),
        // A software rasteriser (lavapipe, llvmpipe) is far slower than the CPU
        // backend: `auto` only takes real GPUs, and looks before it uploads weights.
        BackendChoice::Auto => {
            if hardware_gpu_available() {
                match open_gpu(weights.clone(), gpu_index) {
                    Ok((gpu, false)) => {
                        eprintln!("note: --backend auto: using {}", gpu.name());
                        return Ok(gpu);
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("note: --backend auto: {e:#}"),
                }
            }
            let cpu = CpuBackend::new(weights, threads)?;
            eprintln!("note: --backend auto: no GPU, using {}", cpu.name());
            Ok(Box::new(cpu))
        }
    }
}

/// The GPU backend and whether its adapter is a software one.
#[cfg(feature = "gpu")]
fn open_gpu(
    weights: Arc<Vgg16Weights>,
    gpu_index: Option<usize>,
) -> Result<(Box<dyn Backend>, bool)> {
    use super::gpu::{GpuBackend, GpuOptions, list_adapters};
    let options = GpuOptions {
        adapter_index: gpu_index,
        local_rank: node_local_rank(),
        ..GpuOptions::default()
    };
    GpuBackend::new(weights, options).map(|g| {
        let software = g.adapter_info().device_type == wgpu::DeviceType::Cpu;
        (Box::new(g) as Box<dyn Backend>, software)
    }).map_err(|e| {
        let found = list_adapters();
        let found = if found.is_empty() { "none".to_string() } else { found.join("; ") };
        anyhow::anyhow!("cannot use a GPU: {e} (adapters found: {found}); use --backend cpu to run on the CPU")
    })
}

#[cfg(feature = "gpu")]
fn hardware_gpu_available() -> bool {
    super::gpu::hardware_adapter_available()
}

#[cfg(not(feature = "gpu"))]
fn hardware_gpu_available() -> bool {
    false
}

#[cfg(not(feature = "gpu"))]
fn open_gpu(
    _weights: Arc<Vgg16Weights>,
    _gpu_index: Option<usize>,
) -> Result<(Box<dyn Backend>, bool)> {
    anyhow::bail!(
        "this rmac-native was built without the `gpu` feature; rebuild with it, or use --backend cpu"
    )
}
