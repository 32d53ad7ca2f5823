//! Device set-up: picks the adapter, opens it with its own limits, captures
//! the errors wgpu reports outside an error scope, and builds the conv
//! pipelines once (one per workgroup tile and input mode).

use super::conv::{Kernel, Params, Tile};
use super::{ConvChoice, GpuBackend, GpuOptions, adapter, dev_err};
use crate::backend::BackendError;
use crate::vgg16::spec::VGG16_CONVS;
use crate::vgg16::weights::Vgg16Weights;
use std::sync::{Arc, Mutex};

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
        let conv = opts.conv;
        let tiles: Vec<Tile> = Tile::AUTO
            .into_iter()
            .filter(|t| t.fits(&limits, false))
            .collect();
        // The tiles that run with BK = 16 (AutoK16: those that have it and fit).
        let k16_tiles: Vec<Tile> = match conv {
            #[cfg(feature = "dev")]
            ConvChoice::AutoK16 => tiles
                .iter()
                .copied()
                .filter(|t| t.fits(&limits, true))
                .collect(),
            #[cfg(feature = "dev")]
            ConvChoice::TileK16(t) => vec![t],
            _ => Vec::new(),
        };
        let tiled = |t: Tile| {
            let k16 = k16_tiles.contains(&t);
            [Kernel::tiled(t, 4, k16), Kernel::tiled(t, 3, k16)]
        };
        let kernels: Vec<Kernel> = match conv {
            ConvChoice::Auto => tiles.iter().flat_map(|&t| tiled(t)).collect(),
            ConvChoice::Tile(t) => tiled(t).to_vec(),
            #[cfg(feature = "dev")]
            ConvChoice::AutoK16 => tiles.iter().flat_map(|&t| tiled(t)).collect(),
            #[cfg(feature = "dev")]
            ConvChoice::TileK16(t) => tiled(t).to_vec(),
            #[cfg(feature = "dev")]
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
            #[cfg(feature = "dev")]
            ConvChoice::AutoK16 => format!(
                "tiled, by layer size ({}), BK 16 on {}",
                names(&self.tiles),
                names(&self.k16_tiles)
            ),
            ConvChoice::Tile(t) => format!("tiled {}", t.name()),
            #[cfg(feature = "dev")]
            ConvChoice::TileK16(t) => format!("tiled {}, BK 16", t.name()),
            #[cfg(feature = "dev")]
            ConvChoice::V1 => "v1".to_string(),
        }
    }

    /// Storage-binding limit for activations in force (bytes).
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }
}
