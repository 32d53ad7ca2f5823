//! VGG16 on a GPU through wgpu compute shaders (Vulkan, Metal, DX12 or GL).
//!
//! * Weights are uploaded once ([`GpuBackend::new`]); the conv pipelines
//!   (`shaders/conv3x3.wgsl`: register-blocked implicit GEMM, bias + ReLU and the 2×2
//!   max-pool fused; one pipeline per workgroup tile and input mode, [`conv::Kernel`])
//!   are built once; each layer takes the tile that suits its size
//!   ([`conv::choose_tile`]); any image size runs without rebuilding anything.
//! * Two activation buffers ping-pong between layers; they are reused between images
//!   and grow when a bigger image comes.
//! * A layer whose input or output would exceed the storage-binding limit (128 MiB on
//!   lavapipe; conv1 at 1024×768 is 201 MB) is cut into row bands with a one-row halo
//!   ([`conv::plan_layer`]). An image too large even for that, or for the device's
//!   maximum buffer size, is a [`BackendError::Device`] for that image, never a crash.
//! * Only pool5 is read back; region pooling and PCA stay on the CPU.
//!
//! Measured on Mesa lavapipe (llvmpipe 15, 2 shared cores, no GPU) with the v1 shader:
//! `RMAC_BENCH_SCALE=8 cargo bench --bench gpu_conv -- block3_conv2` gives 3.4 GFLOP/s
//! (1.5 with wgpu's shader bounds checks kept); a whole 768×1024 image takes ~160 s
//! there (row bands under lavapipe's 128 MiB binding limit), matching the CPU backend
//! to 3.6e-6 of the map's scale. Real-GPU numbers come from `benches/gpu-check.sh`.
pub mod adapter;
mod buffers;
pub mod conv;
mod device;
mod forward;
mod probe;

pub use adapter::{NO_ADAPTER_HINT, hardware_adapter_available, list_adapters};

use super::BackendError;
use conv::{Kernel, Tile};
use std::sync::{Arc, Mutex};

/// Which conv shader variant runs the layers. Production uses [`Self::Auto`]; the
/// variants measured slower (BK = 16, the first shader) are kept for A/B runs on a
/// real GPU in builds with the `dev` feature only (`RMAC_GPU_CONV` names them on the
/// command line), as llm.c keeps its kernel variants out of the production path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvChoice {
    /// The tile each layer's size calls for ([`conv::choose_tile`]), BK = 8.
    #[default]
    Auto,
    /// Every layer on this tile (tests: each tile against the reference).
    Tile(Tile),
    /// As [`Self::Auto`] with BK = 16 (one barrier per 16 k; `RMAC_GPU_CONV=k16`) on
    /// the tiles that have it ([`Tile::has_k16`]) where the device's limits allow it,
    /// BK = 8 elsewhere.
    #[cfg(feature = "dev")]
    AutoK16,
    /// As [`Self::Tile`] with BK = 16 (`RMAC_GPU_CONV=128x128-k16`, `64x64-k16`,
    /// `128x64-k16`; the tile must have it).
    #[cfg(feature = "dev")]
    TileK16(Tile),
    /// The first shader, `shaders/conv3x3_v1.wgsl` (64 px × 64 ch, 4×4 per invocation).
    #[cfg(feature = "dev")]
    V1,
}

impl ConvChoice {
    /// Every name [`Self::parse`] takes in this build.
    #[cfg(not(feature = "dev"))]
    pub const NAMES: &[&str] = &["auto", "128x128", "256x64", "64x64", "128x64"];
    #[cfg(feature = "dev")]
    pub const NAMES: &[&str] = &[
        "auto",
        "128x128",
        "256x64",
        "64x64",
        "128x64",
        "k16",
        "v1",
        "128x128-k16",
        "64x64-k16",
        "128x64-k16",
    ];

    /// `auto` or a tile name (`128x128`, `256x64`, `64x64`, `128x64`); with the `dev`
    /// feature also `k16`, `v1` and a tile name with `-k16` (`128x128-k16`; not 256x64).
    pub fn parse(s: &str) -> Option<ConvChoice> {
        match s {
            "auto" | "" => Some(ConvChoice::Auto),
            #[cfg(feature = "dev")]
            "k16" => Some(ConvChoice::AutoK16),
            #[cfg(feature = "dev")]
            "v1" => Some(ConvChoice::V1),
            #[cfg(feature = "dev")]
            t if t.ends_with("-k16") => t
                .strip_suffix("-k16")
                .and_then(Tile::parse)
                .filter(|t| t.has_k16())
                .map(ConvChoice::TileK16),
            t => Tile::parse(t).map(ConvChoice::Tile),
        }
    }
}

/// How to choose and drive the GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `--gpu N`: index into [`list_adapters`] (best first). Overrides `local_rank`.
    pub adapter_index: Option<usize>,
    /// MPI local rank: ranks on one node spread over its GPUs, rank `r` taking the
    /// `r % count`-th of the best kind of adapter (discrete GPUs when there are any).
    pub local_rank: Option<usize>,
    /// Cap on one storage binding of activations, in bytes (the device's own limit
    /// applies anyway). Tests set it small to force the row-band path.
    pub max_binding_bytes: Option<u64>,
    /// Keep wgpu's run-time bounds checks in the shader (slower). By default the
    /// conv shader is built "trusted": its indices are in range by construction
    /// (tested against the reference, with and without this flag).
    pub checked_shaders: bool,
    /// Conv shader variant (default: by layer size; see [`ConvChoice::Auto`]).
    pub conv: ConvChoice,
}

/// Per-layer wall time of one [`GpuBackend::pool5_timed`] run.
#[derive(Clone, Debug)]
pub struct LayerTiming {
    pub name: String,
    /// Input size of the layer.
    pub h: usize,
    pub w: usize,
    pub seconds: f64,
    /// 2·MACs of the layer (as [`crate::vgg16::spec::ConvSpec::flops`]).
    pub flops: f64,
    /// The shader variant that ran it ([`Kernel::name`]).
    pub kernel: String,
}

struct LayerBufs {
    kernel: wgpu::Buffer,
    bias: wgpu::Buffer,
    cin: usize,
    cout: usize,
    pool: bool,
    name: String,
}

/// The wgpu backend. See the module docs.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// Every conv variant this backend may use, built once in [`Self::open`].
    pipelines: Vec<(Kernel, wgpu::ComputePipeline)>,
    conv: ConvChoice,
    /// The tiles the device's limits allow.
    tiles: Vec<Tile>,
    /// Those of them that run with BK = 16 (empty unless AutoK16 or TileK16).
    k16_tiles: Vec<Tile>,
    layout: wgpu::BindGroupLayout,
    layers: Vec<LayerBufs>,
    /// Ping-pong activations (both the same size), grown on demand.
    act: Vec<wgpu::Buffer>,
    act_bytes: u64,
    params: Option<wgpu::Buffer>,
    params_slots: usize,
    staging: Option<wgpu::Buffer>,
    staging_bytes: u64,
    /// Activation binding limit actually used (device limit ∧ option).
    binding_limit: u64,
    storage_align: u64,
    uniform_stride: u64,
    max_buffer: u64,
    uncaptured: Arc<Mutex<Vec<String>>>,
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("{what}: {e}"))
}
