//! Which GPU to run on: enumerate every adapter wgpu finds (Vulkan, Metal, DX12,
//! GL), order them by preference, and pick one from [`GpuOptions`].
//!
//! Preference: device type (discrete GPU, integrated, virtual, other, CPU — Mesa's
//! lavapipe is a CPU device: last, but allowed), then backend (Vulkan, Metal, DX12
//! before GL, which usually shows the same device a second time). The numbering of
//! [`list_adapters`] is the numbering of `--gpu N`.

use super::GpuOptions;
use crate::backend::BackendError;
use std::path::Path;

/// What a person needs to do when no adapter exists.
pub const NO_ADAPTER_HINT: &str = "no Vulkan/Metal/DX12/GL adapter found; install a GPU driver or Mesa's lavapipe \
     (Debian: apt-get install mesa-vulkan-drivers libvulkan1), or use --backend cpu";

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

/// One line describing an adapter: `name (Backend, DeviceType)`.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

pub(crate) fn instance() -> wgpu::Instance {
    // `_from_env`: WGPU_BACKEND=vulkan|gl etc. restricts the backends.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter, best first.
pub(crate) fn ranked_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        (type_rank(info.device_type), backend_rank(info.backend))
    });
    adapters
}

/// The adapters this machine offers, best first, numbered as `--gpu N` counts them:
/// `"[0] NVIDIA H100 80GB HBM3 (Vulkan, DiscreteGpu)"`.
pub fn list_adapters() -> Vec<String> {
    ranked_adapters(&instance())
        .iter()
        .enumerate()
        .map(|(i, a)| format!("[{i}] {}", describe(&a.get_info())))
        .collect()
}

/// Whether any adapter is real GPU hardware (not a software rasteriser such as
/// lavapipe or llvmpipe), checked without creating a device.
pub fn hardware_adapter_available() -> bool {
    if !gpu_device_nodes_present() {
        return false;
    }
    ranked_adapters(&instance())
        .iter()
        .any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
}

/// On Linux a GPU that Vulkan or GL can drive shows up as a DRM render node
/// (`/dev/dri/renderD*`: AMD, Intel, Mesa) or as `/dev/nvidia*`. Without
/// either, loading the Vulkan drivers only to find a software rasteriser cost
/// ~55 MB of resident memory for the whole run (measured with lavapipe
/// installed), so `--backend auto` skips the probe. Elsewhere: always probe.
fn gpu_device_nodes_present() -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    has_entry_starting(Path::new("/dev/dri"), "renderD")
        || has_entry_starting(Path::new("/dev"), "nvidia")
}

/// Whether folder `dir` exists and holds an entry whose name starts with `prefix`.
fn has_entry_starting(dir: &Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
    })
}

/// Picks the adapter `opts` asks for (see [`GpuOptions`]).
pub(crate) fn select(
    instance: &wgpu::Instance,
    opts: &GpuOptions,
) -> Result<wgpu::Adapter, BackendError> {
    let mut adapters = ranked_adapters(instance);
    if adapters.is_empty() {
        return Err(BackendError::Device(NO_ADAPTER_HINT.to_string()));
    }
    if let Some(i) = opts.adapter_index {
        if i >= adapters.len() {
            return Err(BackendError::Device(format!(
                "--gpu {i}: no such adapter; found {}: {}",
                adapters.len(),
                adapters_listing(&adapters)
            )));
        }
        return Ok(adapters.swap_remove(i));
    }
    // The "primary" adapters: those of the best device type on the best backend for
    // it (so a GPU seen through both Vulkan and GL counts once).
    let best = {
        let info = adapters[0].get_info();
        (type_rank(info.device_type), backend_rank(info.backend))
    };
    let primary: Vec<usize> = (0..adapters.len())
        .filter(|&i| {
            let info = adapters[i].get_info();
            (type_rank(info.device_type), backend_rank(info.backend)) == best
        })
        .collect();
    let pick = primary[opts.local_rank.unwrap_or(0) % primary.len()];
    Ok(adapters.swap_remove(pick))
}

fn adapters_listing(adapters: &[wgpu::Adapter]) -> String {
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("[{i}] {}", describe(&a.get_info())))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_nodes_are_found_by_name_prefix() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_entry_starting(dir.path(), "renderD"));
        assert!(!has_entry_starting(&dir.path().join("missing"), "renderD"));
        std::fs::write(dir.path().join("card0"), "").unwrap();
        assert!(!has_entry_starting(dir.path(), "renderD"));
        std::fs::write(dir.path().join("renderD128"), "").unwrap();
        assert!(has_entry_starting(dir.path(), "renderD"));
    }
}
