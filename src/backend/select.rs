//! Choosing the backend: `cpu`, `gpu` (an error listing the adapters when none
//! is usable), or `auto` (a GPU when there is one, else the CPU, saying which).
//! Everything it needs comes in as [`EngineOptions`], resolved once by the
//! caller (the command line reads the flags and `RMAC_*` variables).

use super::cpu::CpuAlgo;
use super::{Backend, CpuBackend};
use crate::vgg16::weights::Vgg16Weights;
use anyhow::Result;
use std::sync::Arc;

#[cfg(feature = "gpu")]
pub use super::gpu::GpuOptions;

/// How to choose and drive the GPU (a build without the `gpu` feature has none).
#[cfg(not(feature = "gpu"))]
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub adapter_index: Option<usize>,
    pub local_rank: Option<usize>,
}

/// Which device runs the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// A hardware GPU when one is usable, else the CPU (says which).
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// Everything a backend is opened with.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// CPU threads (0: all available cores).
    pub threads: usize,
    /// The CPU backend's algorithm (the default: [`CpuAlgo::Auto`]).
    pub cpu_algo: CpuAlgo,
    /// Adapter choice and shader options of the GPU backend.
    pub gpu: GpuOptions,
}

/// Opens the backend for `choice`.
pub fn open_backend(
    choice: BackendChoice,
    weights: Arc<Vgg16Weights>,
    options: &EngineOptions,
) -> Result<Box<dyn Backend>> {
    let cpu = |weights| CpuBackend::with_algo(weights, options.threads, options.cpu_algo);
    match choice {
        BackendChoice::Cpu => Ok(Box::new(cpu(weights)?)),
        // A software rasteriser runs only when named (`--gpu N`): picked by
        // default it would be a silent 50× slow-down against the CPU backend.
        BackendChoice::Gpu => {
            refuse_software_gpu(choice, options)?;
            let (gpu, software) = open_gpu(weights, &options.gpu)?;
            if software {
                eprintln!(
                    "note: {} is a software rasteriser (it runs on the CPU): expect it to be much slower than --backend cpu",
                    gpu.name()
                );
            }
            Ok(gpu)
        }
        // A software rasteriser (lavapipe, llvmpipe) is far slower than the CPU
        // backend: `auto` only takes real GPUs, and looks before it uploads weights.
        BackendChoice::Auto => {
            if hardware_gpu_available() {
                match open_gpu(weights.clone(), &options.gpu) {
                    Ok((gpu, false)) => {
                        eprintln!("note: --backend auto: using {}", gpu.name());
                        return Ok(gpu);
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("note: --backend auto: {e:#}"),
                }
            }
            let cpu = cpu(weights)?;
            eprintln!("note: --backend auto: no GPU, using {}", cpu.name());
            Ok(Box::new(cpu))
        }
    }
}

/// Refuses `--backend gpu` where the only adapters are software rasterisers,
/// unless one is named (`--gpu N`). Cheap (no device is created): a run calls
/// it before it touches its output.
pub fn refuse_software_gpu(choice: BackendChoice, options: &EngineOptions) -> Result<()> {
    if choice == BackendChoice::Gpu
        && options.gpu.adapter_index.is_none()
        && gpu_built()
        && !hardware_gpu_available()
    {
        anyhow::bail!(
            "--backend gpu: no GPU hardware here; the only adapters are software rasterisers that run \
             on the CPU, far slower than --backend cpu ({}). Use --backend cpu (or auto), or name one \
             with --gpu N to run on it anyway",
            adapters_found()
        );
    }
    Ok(())
}

/// The GPU backend and whether its adapter is a software one.
#[cfg(feature = "gpu")]
fn open_gpu(weights: Arc<Vgg16Weights>, options: &GpuOptions) -> Result<(Box<dyn Backend>, bool)> {
    use super::gpu::GpuBackend;
    GpuBackend::new(weights, options.clone())
        .map(|g| {
            let software = g.adapter_info().device_type == wgpu::DeviceType::Cpu;
            (Box::new(g) as Box<dyn Backend>, software)
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot use a GPU: {e} ({}); use --backend cpu to run on the CPU",
                adapters_found()
            )
        })
}

#[cfg(feature = "gpu")]
fn hardware_gpu_available() -> bool {
    super::gpu::hardware_adapter_available()
}

fn gpu_built() -> bool {
    cfg!(feature = "gpu")
}

/// The adapters found, as `--gpu N` numbers them (or `none`).
fn adapters_found() -> String {
    #[cfg(feature = "gpu")]
    let found = super::gpu::list_adapters();
    #[cfg(not(feature = "gpu"))]
    let found: Vec<String> = Vec::new();
    if found.is_empty() {
        "adapters found: none".to_owned()
    } else {
        format!("adapters found: {}", found.join("; "))
    }
}

#[cfg(not(feature = "gpu"))]
fn hardware_gpu_available() -> bool {
    false
}

#[cfg(not(feature = "gpu"))]
fn open_gpu(
    _weights: Arc<Vgg16Weights>,
    _options: &GpuOptions,
) -> Result<(Box<dyn Backend>, bool)> {
    anyhow::bail!(
        "this rmac-native was built without the `gpu` feature; rebuild with it, or use --backend cpu"
    )
}
