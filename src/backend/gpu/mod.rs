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
pub mod conv;

pub use adapter::{NO_ADAPTER_HINT, hardware_adapter_available, list_adapters};

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Backend, BackendError};
use crate::tensor::Tensor3;
use crate::vgg16::spec::VGG16_CONVS;
use crate::vgg16::weights::Vgg16Weights;
use conv::{Dispatch, Kernel, LayerShape, Params, Tile};

/// Which conv shader variant runs the layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvChoice {
    /// The tile each layer's size calls for ([`conv::choose_tile`]), BK = 8. The
    /// environment variable `RMAC_GPU_CONV` (any name [`Self::parse`] takes) overrides
    /// it, for A/B comparisons on a real GPU without rebuilding.
    #[default]
    Auto,
    /// Every layer on this tile (tests: each tile against the reference).
    Tile(Tile),
    /// As [`Self::Auto`] with BK = 16 (one barrier per 16 k; `RMAC_GPU_CONV=k16`) on
    /// the tiles that have it ([`Tile::has_k16`]) where the device's limits allow it,
    /// BK = 8 elsewhere.
    AutoK16,
    /// As [`Self::Tile`] with BK = 16 (`RMAC_GPU_CONV=128x128-k16`, `64x64-k16`,
    /// `128x64-k16`; the tile must have it).
    TileK16(Tile),
    /// The first shader, `shaders/conv3x3_v1.wgsl` (64 px × 64 ch, 4×4 per invocation).
    V1,
}

impl ConvChoice {
    /// `auto`, `k16`, `v1`, a tile name (`128x128`, `256x64`, `64x64`, `128x64`) or a
    /// tile name with `-k16` (`128x128-k16`; not 256x64).
    pub fn parse(s: &str) -> Option<ConvChoice> {
        match s {
            "auto" | "" => Some(ConvChoice::Auto),
            "k16" => Some(ConvChoice::AutoK16),
            "v1" => Some(ConvChoice::V1),
            t => match t.strip_suffix("-k16") {
                Some(t) => Tile::parse(t)
                    .filter(|t| t.has_k16())
                    .map(ConvChoice::TileK16),
                None => Tile::parse(t).map(ConvChoice::Tile),
            },
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

impl GpuBackend {
    /// Picks an adapter (see [`GpuOptions`]), opens it with the adapter's own limits,
    /// builds the pipeline and uploads the 13 layers' weights.
    pub fn new(weights: Arc<Vgg16Weights>, opts: GpuOptions) -> Result<Self, BackendError> {
        let mut b = Self::open(&opts)?;
        if weights.layers.len() != VGG16_CONVS.len() {
            return Err(BackendError::Device(format!(
                "expected {} conv layers, the weights have {}",
                VGG16_CONVS.len(),
                weights.layers.len()
            )));
        }
        for l in &weights.layers {
            let lb = b.upload_layer(
                &l.kernel,
                &l.bias,
                l.spec.cin,
                l.spec.cout,
                l.spec.pool_after,
                l.spec.name,
            )?;
            b.layers.push(lb);
        }
        Ok(b)
    }

    /// A backend with no network weights (for [`Self::conv_layer_for_test`]).
    pub fn without_weights(opts: GpuOptions) -> Result<Self, BackendError> {
        Self::open(&opts)
    }

    fn open(opts: &GpuOptions) -> Result<Self, BackendError> {
        let instance = adapter::instance();
        let adapter = adapter::select(&instance, opts)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("rmac-native"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| dev_err(&format!("cannot open {}", adapter::describe(&info)), e))?;

        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        {
            let sink = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                sink.lock().unwrap().push(e.to_string());
            }));
            let sink = uncaptured.clone();
            device.set_device_lost_callback(move |reason, msg| {
                sink.lock()
                    .unwrap()
                    .push(format!("device lost ({reason:?}): {msg}"));
            });
        }

        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("conv3x3"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(
                            std::mem::size_of::<Params>() as u64
                        ),
                    },
                    count: None,
                },
                storage(1, true),
                storage(2, true),
                storage(3, true),
                storage(4, false),
            ],
        });
        let conv = match opts.conv {
            ConvChoice::Auto => match std::env::var("RMAC_GPU_CONV") {
                Ok(v) => ConvChoice::parse(&v).ok_or_else(|| {
                    BackendError::Device(format!(
                        "RMAC_GPU_CONV={v}: expected auto, k16, v1, 128x128, 256x64, 64x64, \
                         128x64, 128x128-k16, 64x64-k16 or 128x64-k16"
                    ))
                })?,
                Err(_) => ConvChoice::Auto,
            },
            c => c,
        };
        let tiles: Vec<Tile> = Tile::AUTO
            .into_iter()
            .filter(|t| t.fits(&limits, false))
            .collect();
        // The tiles that run with BK = 16 (AutoK16: those that have it and fit).
        let k16_tiles: Vec<Tile> = match conv {
            ConvChoice::AutoK16 => tiles
                .iter()
                .copied()
                .filter(|t| t.fits(&limits, true))
                .collect(),
            ConvChoice::TileK16(t) => vec![t],
            _ => Vec::new(),
        };
        let tiled = |t: Tile| {
            let k16 = k16_tiles.contains(&t);
            [Kernel::tiled(t, 4, k16), Kernel::tiled(t, 3, k16)]
        };
        let kernels: Vec<Kernel> = match conv {
            ConvChoice::Auto | ConvChoice::AutoK16 => {
                tiles.iter().flat_map(|&t| tiled(t)).collect()
            }
            ConvChoice::Tile(t) | ConvChoice::TileK16(t) => tiled(t).to_vec(),
            ConvChoice::V1 => vec![Kernel::V1],
        };
        if kernels.is_empty() || kernels.iter().any(|k| !k.fits(&limits)) {
            return Err(BackendError::Device(format!(
                "{}: conv shader {conv:?} needs more than this device's limits \
                 ({} invocations, {} B of workgroup memory)",
                adapter::describe(&info),
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_storage_size
            )));
        }
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("conv3x3"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut pipelines = Vec::new();
        for k in kernels {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some("conv3x3.wgsl"),
                source: wgpu::ShaderSource::Wgsl(k.source().into()),
            };
            let module = if opts.checked_shaders {
                device.create_shader_module(desc)
            } else {
                // SAFETY: every buffer index in the conv shaders is guarded by the
                // band/image bounds it is given, and every binding holds the band
                // `conv::plan_layer` computed (see `conv::tests` and
                // tests/gpu_backend.rs); workgroup indices are in range by the tile's
                // constants; loops are bounded by uniforms; divisors (cin, 3) are
                // non-zero whenever a dispatch is made.
                unsafe {
                    device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            };
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("conv3x3"),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    // WebGPU zeroes workgroup memory at every workgroup's start. The tiled
                    // shader reads only what it wrote first (the prologue fills buffer 0,
                    // step s fills the other before the barrier that ends s; padding is
                    // never read), so skip it there; checked builds keep it, and the tests
                    // compare both bit for bit.
                    zero_initialize_workgroup_memory: opts.checked_shaders
                        || !matches!(k, Kernel::Tiled { .. }),
                    ..Default::default()
                },
                cache: None,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(dev_err(
                    &format!("conv shader {} does not build on this device", k.name()),
                    e,
                ));
            }
            pipelines.push((k, pipeline));
        }

        let binding_limit = limits
            .max_storage_buffer_binding_size
            .min(opts.max_binding_bytes.unwrap_or(u64::MAX));
        Ok(GpuBackend {
            device,
            queue,
            info,
            pipelines,
            conv,
            tiles,
            k16_tiles,
            layout,
            layers: Vec::new(),
            act: Vec::new(),
            act_bytes: 0,
            params: None,
            params_slots: 0,
            staging: None,
            staging_bytes: 0,
            binding_limit,
            storage_align: u64::from(limits.min_storage_buffer_offset_alignment).max(16),
            uniform_stride: u64::from(limits.min_uniform_buffer_offset_alignment).max(256),
            max_buffer: limits.max_buffer_size,
            uncaptured,
        })
    }

    /// The adapter in use, as in [`list_adapters`].
    pub fn adapter_description(&self) -> String {
        adapter::describe(&self.info)
    }

    /// The adapter's wgpu info (name, backend, device type, driver).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The conv shader variants in use: `v1`, `tiled 128x128`, `tiled 128x128, BK 16`
    /// or `tiled, by layer size (128x128 256x64 64x64)`.
    pub fn conv_description(&self) -> String {
        let names = |ts: &[Tile]| ts.iter().map(|t| t.name()).collect::<Vec<_>>().join(" ");
        match self.conv {
            ConvChoice::Auto => format!("tiled, by layer size ({})", names(&self.tiles)),
            ConvChoice::AutoK16 => format!(
                "tiled, by layer size ({}), BK 16 on {}",
                names(&self.tiles),
                names(&self.k16_tiles)
            ),
            ConvChoice::Tile(t) => format!("tiled {}", t.name()),
            ConvChoice::TileK16(t) => format!("tiled {}, BK 16", t.name()),
            ConvChoice::V1 => "v1".to_string(),
        }
    }

    /// The variant that runs layer `s`.
    fn kernel_for(&self, s: &LayerShape) -> Kernel {
        let tiled = |t: Tile| Kernel::tiled(t, s.cin, self.k16_tiles.contains(&t));
        match self.conv {
            ConvChoice::Auto | ConvChoice::AutoK16 => tiled(conv::choose_tile(s, &self.tiles)),
            ConvChoice::Tile(t) | ConvChoice::TileK16(t) => tiled(t),
            ConvChoice::V1 => Kernel::V1,
        }
    }

    fn pipeline(&self, k: Kernel) -> &wgpu::ComputePipeline {
        &self
            .pipelines
            .iter()
            .find(|(pk, _)| *pk == k)
            .expect("every kernel kernel_for picks is built in open")
            .1
    }

    /// Storage-binding limit for activations in force (bytes).
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    fn upload_layer(
        &self,
        kernel: &[f32],
        bias: &[f32],
        cin: usize,
        cout: usize,
        pool: bool,
        name: &str,
    ) -> Result<LayerBufs, BackendError> {
        if !cout.is_multiple_of(4) || cout == 0 {
            return Err(BackendError::Device(format!(
                "{name}: cout {cout} is not a multiple of 4"
            )));
        }
        if kernel.len() != 9 * cin * cout || bias.len() != cout {
            return Err(BackendError::Device(format!(
                "{name}: kernel has {} values (want 9·{cin}·{cout}), bias {} (want {cout})",
                kernel.len(),
                bias.len()
            )));
        }
        let buf = |label: &str, data: &[f32]| {
            let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (data.len() * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
            b
        };
        Ok(LayerBufs {
            kernel: buf(name, kernel),
            bias: buf(name, bias),
            cin,
            cout,
            pool,
            name: name.to_string(),
        })
    }

    /// Runs one 3×3 conv (+ bias + ReLU, + 2×2 max-pool when `pool`) with the given
    /// HWIO `kernel` `[3,3,cin,cout]` and `bias`, through exactly the code path of
    /// [`Backend::pool5`] (same shader, same row-band tiling). For tests and benches.
    pub fn conv_layer_for_test(
        &mut self,
        input: &Tensor3,
        kernel: &[f32],
        bias: &[f32],
        cout: usize,
        pool: bool,
    ) -> Result<Tensor3, BackendError> {
        let layer = self.upload_layer(kernel, bias, input.c, cout, pool, "test layer")?;
        let layers = [&layer];
        self.forward(input, &layers, false).map(|(t, _)| t)
    }

    /// [`Backend::pool5`] with the wall time of every layer (each layer is submitted
    /// and waited for on its own, so the total is a little above `pool5`'s; the input
    /// upload is done and waited for before the first layer's clock starts).
    pub fn pool5_timed(
        &mut self,
        input: &Tensor3,
    ) -> Result<(Tensor3, Vec<LayerTiming>), BackendError> {
        check_input(input)?;
        let layers = std::mem::take(&mut self.layers);
        let refs: Vec<&LayerBufs> = layers.iter().collect();
        let r = self.forward(input, &refs, true);
        self.layers = layers;
        r
    }

    /// Seconds for `iters` back-to-back runs of VGG16 layer `index` on an `h × w`
    /// input already on the GPU (no upload or read-back in the timing).
    pub fn time_layer(
        &mut self,
        index: usize,
        h: usize,
        w: usize,
        iters: u64,
    ) -> Result<f64, BackendError> {
        let layers = std::mem::take(&mut self.layers);
        let r = self.time_layer_inner(&layers[index], h, w, iters);
        self.layers = layers;
        r
    }

    fn time_layer_inner(
        &mut self,
        l: &LayerBufs,
        h: usize,
        w: usize,
        iters: u64,
    ) -> Result<f64, BackendError> {
        let shape = LayerShape {
            h,
            w,
            cin: l.cin,
            cout: l.cout,
            pool: l.pool,
        };
        let kernel = self.kernel_for(&shape);
        let plan = conv::plan_layer(&shape, self.binding_limit, self.storage_align, kernel)
            .map_err(BackendError::Device)?;
        self.ensure_buffers(shape.in_bytes().max(shape.out_bytes()), plan.len(), 0)?;
        let input: Vec<f32> = (0..h * w * l.cin)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        self.queue
            .write_buffer(&self.act[0], 0, bytemuck::cast_slice(&input));
        self.write_params(&plan);
        let bind_groups: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(i, d)| self.bind_group(i, d, l, 0))
            .collect();
        let encode = |n: u64| {
            let mut enc = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(self.pipeline(kernel));
                for _ in 0..n {
                    for (d, bg) in plan.iter().zip(&bind_groups) {
                        pass.set_bind_group(0, bg, &[]);
                        pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                    }
                }
            }
            enc.finish()
        };
        // Warm up (first-use costs), then time.
        self.queue.submit([encode(1)]);
        self.wait()?;
        let t = Instant::now();
        self.queue.submit([encode(iters)]);
        self.wait()?;
        Ok(t.elapsed().as_secs_f64())
    }

    fn wait(&self) -> Result<(), BackendError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| dev_err("waiting for the GPU", e))
    }

    /// Makes sure both activation buffers hold `act` bytes, the params buffer
    /// `slots` slots and the staging buffer `staging` bytes.
    fn ensure_buffers(&mut self, act: u64, slots: usize, staging: u64) -> Result<(), BackendError> {
        let act = act.max(16).next_multiple_of(256);
        if act > self.max_buffer {
            return Err(BackendError::Device(format!(
                "this image needs {:.0} MB activation buffers, over this GPU's maximum buffer size of {:.0} MB \
                 ({}); use a smaller --max-size or --backend cpu",
                act as f64 / 1e6,
                self.max_buffer as f64 / 1e6,
                self.adapter_description()
            )));
        }
        if act > self.act_bytes {
            self.act.clear(); // free the old ones first
            for name in ["activations A", "activations B"] {
                self.act
                    .push(self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(name),
                        size: act,
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    }));
            }
            self.act_bytes = act;
        }
        if slots > self.params_slots {
            let n = slots.next_power_of_two().max(32);
            self.params = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("conv params"),
                size: n as u64 * self.uniform_stride,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            self.params_slots = n;
        }
        let staging = staging.next_multiple_of(256);
        if staging > self.staging_bytes {
            self.staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("pool5 read-back"),
                size: staging,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            self.staging_bytes = staging;
        }
        Ok(())
    }

    fn write_params(&self, plan: &[Dispatch]) {
        let stride = self.uniform_stride as usize;
        let mut bytes = vec![0u8; plan.len() * stride];
        for (i, d) in plan.iter().enumerate() {
            bytes[i * stride..i * stride + std::mem::size_of::<Params>()]
                .copy_from_slice(bytemuck::bytes_of(&d.params));
        }
        self.queue
            .write_buffer(self.params.as_ref().unwrap(), 0, &bytes);
    }

    /// Bind group of dispatch `slot`, reading `act[src]` and writing `act[1 - src]`.
    fn bind_group(&self, slot: usize, d: &Dispatch, l: &LayerBufs, src: usize) -> wgpu::BindGroup {
        fn part(buffer: &wgpu::Buffer, r: conv::Range) -> wgpu::BindingResource<'_> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: r.offset,
                size: wgpu::BufferSize::new(r.size),
            })
        }
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: part(
                        self.params.as_ref().unwrap(),
                        conv::Range {
                            offset: slot as u64 * self.uniform_stride,
                            size: std::mem::size_of::<Params>() as u64,
                        },
                    ),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: part(&self.act[src], d.input),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: l.kernel.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: l.bias.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: part(&self.act[1 - src], d.output),
                },
            ],
        })
    }

    /// Uploads `input`, runs `layers` in order (ping-pong), reads the last output back.
    /// `timed`: one submission per layer, each waited for and timed.
    fn forward(
        &mut self,
        input: &Tensor3,
        layers: &[&LayerBufs],
        timed: bool,
    ) -> Result<(Tensor3, Vec<LayerTiming>), BackendError> {
        // Shapes and dispatch plans of every layer.
        let mut shapes = Vec::with_capacity(layers.len());
        let (mut h, mut w, mut c) = (input.h, input.w, input.c);
        let mut act = (h * w * c * 4) as u64;
        for l in layers {
            if l.cin != c {
                return Err(BackendError::Device(format!(
                    "{}: expects {} channels, got {c}",
                    l.name, l.cin
                )));
            }
            let s = LayerShape {
                h,
                w,
                cin: c,
                cout: l.cout,
                pool: l.pool,
            };
            act = act.max(s.out_bytes());
            (h, w) = s.out_hw();
            c = l.cout;
            shapes.push(s);
        }
        let mut plans = Vec::with_capacity(layers.len());
        for (s, l) in shapes.iter().zip(layers) {
            let kernel = self.kernel_for(s);
            let plan = conv::plan_layer(s, self.binding_limit, self.storage_align, kernel)
                .map_err(|e| {
                    BackendError::Device(format!(
                        "{}: image {}×{} cannot be tiled under the storage-binding limit ({e}); \
                     use a smaller --max-size or --backend cpu",
                        l.name, input.h, input.w
                    ))
                })?;
            plans.push((kernel, plan));
        }
        let out_bytes = (h * w * c * 4) as u64;
        let slots: usize = plans.iter().map(|(_, p)| p.len()).sum();
        self.ensure_buffers(act, slots, out_bytes)?;

        self.uncaptured.lock().unwrap().clear();
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result =
            self.forward_inner(input, layers, &shapes, &plans, timed, out_bytes, [h, w, c]);
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = o.or(v) {
            return Err(dev_err(
                &format!("GPU error on a {}×{} image", input.h, input.w),
                e,
            ));
        }
        if let Some(e) = self.uncaptured.lock().unwrap().first() {
            return Err(dev_err(
                &format!("GPU error on a {}×{} image", input.h, input.w),
                e,
            ));
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_inner(
        &mut self,
        input: &Tensor3,
        layers: &[&LayerBufs],
        shapes: &[LayerShape],
        plans: &[(Kernel, Vec<Dispatch>)],
        timed: bool,
        out_bytes: u64,
        [h, w, c]: [usize; 3],
    ) -> Result<(Tensor3, Vec<LayerTiming>), BackendError> {
        self.queue
            .write_buffer(&self.act[0], 0, bytemuck::cast_slice(&input.data));
        let flat: Vec<Dispatch> = plans.iter().flat_map(|(_, p)| p).copied().collect();
        self.write_params(&flat);
        if timed {
            // Queue writes run with the next submission: flush the input upload (and the
            // params) now, or the first layer's time would include them (~0.3 ms for a
            // 768×1024 image over PCIe, most of what conv1_1 itself takes).
            self.queue.submit([]);
            self.wait()?;
        }

        let mut timings = Vec::new();
        let mut enc = self.device.create_command_encoder(&Default::default());
        let mut slot = 0;
        let mut src = 0;
        for (i, (l, (kernel, plan))) in layers.iter().zip(plans).enumerate() {
            let t = Instant::now();
            let groups: Vec<_> = plan
                .iter()
                .enumerate()
                .map(|(j, d)| self.bind_group(slot + j, d, l, src))
                .collect();
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                });
                pass.set_pipeline(self.pipeline(*kernel));
                for (d, bg) in plan.iter().zip(&groups) {
                    pass.set_bind_group(0, bg, &[]);
                    pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                }
            }
            slot += plan.len();
            src = 1 - src;
            if timed {
                let done = std::mem::replace(
                    &mut enc,
                    self.device.create_command_encoder(&Default::default()),
                );
                self.queue.submit([done.finish()]);
                self.wait()?;
                let s = shapes[i];
                timings.push(LayerTiming {
                    name: l.name.clone(),
                    h: s.h,
                    w: s.w,
                    seconds: t.elapsed().as_secs_f64(),
                    flops: 2.0 * (s.h * s.w) as f64 * (9 * s.cin * s.cout) as f64,
                    kernel: kernel.name(),
                });
            }
        }
        let staging = self.staging.as_ref().unwrap();
        if out_bytes > 0 {
            enc.copy_buffer_to_buffer(&self.act[src], 0, staging, 0, out_bytes);
        }
        self.queue.submit([enc.finish()]);
        let mut data = vec![0f32; h * w * c];
        if out_bytes > 0 {
            let slice = staging.slice(0..out_bytes);
            let (tx, rx) = std::sync::mpsc::channel();
            slice.map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            self.wait()?;
            rx.recv()
                .map_err(|e| dev_err("read-back", e))?
                .map_err(|e| dev_err("read-back", e))?;
            {
                let view = slice
                    .get_mapped_range()
                    .map_err(|e| dev_err("read-back", e))?;
                data.copy_from_slice(bytemuck::cast_slice(&view));
            }
            staging.unmap();
        } else {
            self.wait()?;
        }
        Ok((Tensor3::from_vec(h, w, c, data), timings))
    }
}

fn check_input(input: &Tensor3) -> Result<(), BackendError> {
    if input.h < 32 || input.w < 32 {
        return Err(BackendError::TooSmall {
            h: input.h,
            w: input.w,
        });
    }
    if input.c != 3 {
        return Err(BackendError::Device(format!(
            "VGG16 input must have 3 channels, got {}",
            input.c
        )));
    }
    Ok(())
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        format!(
            "gpu ({}, {:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    fn pool5(&mut self, input: &Tensor3) -> Result<Tensor3, BackendError> {
        check_input(input)?;
        let layers = std::mem::take(&mut self.layers);
        if layers.is_empty() {
            return Err(BackendError::Device(
                "GpuBackend has no weights (built without_weights)".into(),
            ));
        }
        let refs: Vec<&LayerBufs> = layers.iter().collect();
        let r = self.forward(input, &refs, false);
        self.layers = layers;
        r.map(|(t, _)| t)
    }
}
