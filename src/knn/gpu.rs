//! The kNN graph with the GPU as a pre-filter, exact: the GPU scores each tile
//! in fp32 (`shaders/knn_tile.wgsl`, any summation order) and sends back only
//! the pairs that may be among a row's k best; the CPU scores each of those
//! with [`crate::search::dot`] and keeps the best k. The graph is bit for bit
//! the CPU's ([`super::knn_blocks`]), whatever the GPU.
//!
//! Why nothing is missed. For vectors `x`, `y` of dimension `d`, a float32 sum
//! of the `d` products in any order (with or without fused multiply-adds) is
//! within `γ_d·Σ|x_i y_i| ≤ γ_d·|x||y|` of the exact inner product, `γ_d =
//! d·u / (1 − d·u)`, `u = 2⁻²⁴` (Higham, *Accuracy and Stability of Numerical
//! Algorithms*, §3.1); the CPU's score is within the same of it, so the GPU's
//! score `g` and the CPU's `c` of a pair differ by at most `E = 2·γ_d·|x||y|`.
//! Take, for one row, `T'` ≤ the k-th best GPU score over all its candidates
//! (the shader uses the k-th best within the tile, which is never higher). At
//! least k candidates have `g ≥ T'`, so `c ≥ T' − E`: the k-th best CPU score is
//! at least `T' − E`, and any candidate in the final k has `c ≥ T' − E`, so
//! `g ≥ T' − 2E`. Likewise, once the row already holds k exact scores, the
//! worst of them `w` is at most the final k-th best, so a final member has `c ≥
//! w`, `g ≥ w − E`. The shader keeps every pair with `g ≥ max(w − E, T' − 2E)`
//! (using the largest `E` of the tile's rows for the row's partner). Here `u` is
//! taken as `2⁻²³`, twice the rounding unit: that covers the rounding of the
//! thresholds themselves (one f32 subtraction, at most `2⁻²⁴·|x||y|`), and a
//! tiny absolute term covers GPUs that flush subnormal products to zero.
//! If a tile yields more pairs than the buffer holds, the CPU scores that tile
//! itself.

use super::{Graph, Tiling, offer, tile_scores};
use crate::backend::BackendError;
use crate::backend::gpu::GpuOptions;
use crate::backend::gpu::adapter;
use crate::search::dot;

const SHADER: &str = include_str!("../../shaders/knn_tile.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows_a: u32,
    rows_b: u32,
    dim: u32,
    k: u32,
    diagonal: u32,
    capacity: u32,
    _pad: [u32; 2],
}

/// Pairs a tile may send back before the CPU does the tile itself.
pub fn default_capacity(tile_rows: usize, k: usize) -> usize {
    2 * tile_rows * (k + 16) + 65536
}

/// How a GPU run went.
#[derive(Clone, Debug, Default)]
pub struct GpuKnnStats {
    pub tiles: usize,
    /// Pairs the GPU sent back (each scored again on the CPU).
    pub candidates: u64,
    /// Tiles whose candidates overflowed the buffer (scored on the CPU instead).
    pub cpu_tiles: usize,
}

/// The device, the three pipelines, the vectors uploaded block by block.
pub struct GpuKnn {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    layout: wgpu::BindGroupLayout,
    scores_pipe: wgpu::ComputePipeline,
    rows_pipe: wgpu::ComputePipeline,
    cols_pipe: wgpu::ComputePipeline,
    params: wgpu::Buffer,
    scores: wgpu::Buffer,
    limits: wgpu::Buffer,
    found: wgpu::Buffer,
    staging: wgpu::Buffer,
    blocks: Vec<wgpu::Buffer>,
    tiling: Tiling,
    capacity: usize,
    pub stats: GpuKnnStats,
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("{what}: {e}"))
}

impl GpuKnn {
    /// Opens the GPU `opts` picks and uploads `data` (`n × dim`) in blocks of
    /// `tiling`; `capacity`: pairs per tile before the CPU takes the tile over.
    pub fn new(
        opts: &GpuOptions,
        data: &[f32],
        dim: usize,
        tiling: Tiling,
        capacity: usize,
    ) -> Result<Self, BackendError> {
        let instance = adapter::instance();
        let adapter = adapter::select(&instance, opts)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("rmac-native knn"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| dev_err(&format!("cannot open {}", adapter::describe(&info)), e))?;
        let b = tiling.rows.max(4);
        let scores_bytes = (b * b * 4) as u64;
        let block_bytes = (b * dim * 4) as u64;
        let found_bytes = (4 + 8 * capacity) as u64;
        let largest = scores_bytes.max(block_bytes).max(found_bytes);
        if largest
            > limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size)
        {
            return Err(BackendError::Device(format!(
                "{}: a tile of {b} rows needs buffers of {largest} bytes, more than the device allows ({}); lower --memory",
                adapter::describe(&info),
                limits.max_storage_buffer_binding_size
            )));
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
            label: Some("knn"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(1, true),
                storage(2, true),
                storage(3, false),
                storage(4, true),
                storage(5, false),
            ],
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("knn"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("knn_tile.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipe = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let (scores_pipe, rows_pipe, cols_pipe) = (
            pipe("scores_main"),
            pipe("select_rows"),
            pipe("select_cols"),
        );
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(dev_err("the kNN shader does not build on this device", e));
        }
        let buffer = |label, size: u64, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(16),
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let params = buffer(
            "knn params",
            std::mem::size_of::<Params>() as u64,
            U::UNIFORM | U::COPY_DST,
        );
        let scores = buffer("knn scores", scores_bytes, U::STORAGE);
        let limits_buf = buffer("knn limits", (2 * b * 8) as u64, U::STORAGE | U::COPY_DST);
        let found = buffer(
            "knn found",
            found_bytes,
            U::STORAGE | U::COPY_DST | U::COPY_SRC,
        );
        let staging = buffer("knn read-back", found_bytes, U::MAP_READ | U::COPY_DST);
        let n = data.len() / dim.max(1);
        let blocks = (0..tiling.blocks(n))
            .map(|t| {
                let r = tiling.block(t, n);
                let rows = &data[r.start * dim..r.end * dim];
                let buf = buffer(
                    "knn vectors",
                    (rows.len() * 4) as u64,
                    U::STORAGE | U::COPY_DST,
                );
                queue.write_buffer(&buf, 0, bytemuck::cast_slice(rows));
                buf
            })
            .collect();
        Ok(GpuKnn {
            device,
            queue,
            info,
            layout,
            scores_pipe,
            rows_pipe,
            cols_pipe,
            params,
            scores,
            limits: limits_buf,
            found,
            staging,
            blocks,
            tiling,
            capacity,
            stats: GpuKnnStats::default(),
        })
    }

    /// The adapter in use: `name (Backend, DeviceType)`.
    pub fn describe(&self) -> String {
        adapter::describe(&self.info)
    }

    fn wait(&self) -> Result<(), BackendError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| dev_err("waiting for the GPU", e))
    }

    /// Reads `words` u32 of the found buffer from word `from`.
    fn read_found(&self, from: usize, words: usize) -> Result<Vec<u32>, BackendError> {
        let bytes = (words * 4) as u64;
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.found, (from * 4) as u64, &self.staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let slice = self.staging.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| dev_err("read-back", e))?
            .map_err(|e| dev_err("read-back", e))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| dev_err("read-back", e))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        self.staging.unmap();
        Ok(out)
    }

    /// The pairs of tile (bi, bj) the GPU keeps under `limits` (see the module docs):
    /// `(row, candidate)` as row numbers of the whole set; `None` when they overflow.
    fn tile_candidates(
        &mut self,
        n: usize,
        dim: usize,
        k: usize,
        (bi, bj): (usize, usize),
        limits: &[[f32; 2]],
    ) -> Result<Option<Vec<(u32, u32)>>, BackendError> {
        let (ri, rj) = (self.tiling.block(bi, n), self.tiling.block(bj, n));
        let p = Params {
            rows_a: ri.len() as u32,
            rows_b: rj.len() as u32,
            dim: dim as u32,
            k: k as u32,
            diagonal: (bi == bj) as u32,
            capacity: self.capacity as u32,
            _pad: [0; 2],
        };
        self.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        self.queue
            .write_buffer(&self.limits, 0, bytemuck::cast_slice(limits));
        self.queue.write_buffer(&self.found, 0, &0u32.to_le_bytes());
        fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            }
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &[
                entry(0, &self.params),
                entry(1, &self.blocks[bi]),
                entry(2, &self.blocks[bj]),
                entry(3, &self.scores),
                entry(4, &self.limits),
                entry(5, &self.found),
            ],
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_bind_group(0, &group, &[]);
            pass.set_pipeline(&self.scores_pipe);
            pass.dispatch_workgroups(
                rj.len().div_ceil(64) as u32,
                ri.len().div_ceil(64) as u32,
                1,
            );
            pass.set_pipeline(&self.rows_pipe);
            pass.dispatch_workgroups(ri.len().div_ceil(64) as u32, 1, 1);
            if bi != bj {
                pass.set_pipeline(&self.cols_pipe);
                pass.dispatch_workgroups(rj.len().div_ceil(64) as u32, 1, 1);
            }
        }
        self.queue.submit([enc.finish()]);
        // The count and the first pairs in one read; the rest only when there are more.
        let first = 2 * 8192usize.min(self.capacity);
        let mut words = self.read_found(0, 1 + first)?;
        let count = words[0] as usize;
        if count > self.capacity {
            return Ok(None);
        }
        if 2 * count > first {
            words.extend(self.read_found(1 + first, 2 * count - first)?);
        }
        Ok(Some(
            words[1..1 + 2 * count]
                .chunks_exact(2)
                .map(|w| {
                    if w[0] & 0x8000_0000 != 0 {
                        (
                            (rj.start as u32) + (w[0] & 0x7fff_ffff),
                            ri.start as u32 + w[1],
                        )
                    } else {
                        (ri.start as u32 + w[0], rj.start as u32 + w[1])
                    }
                })
                .collect(),
        ))
    }

    /// [`super::knn_blocks`] with the GPU as pre-filter: the same graph, bit for bit.
    pub fn knn_blocks(
        &mut self,
        data: &[f32],
        dim: usize,
        graph: &mut Graph,
        blocks: &[usize],
        done: &mut dyn FnMut(usize, &Graph),
    ) -> Result<(), BackendError> {
        let n = data.len() / dim.max(1);
        assert_eq!(graph.n, n);
        let (k, tiling) = (graph.k, self.tiling);
        let nblocks = tiling.blocks(n);
        let row = |i: usize| &data[i * dim..(i + 1) * dim];
        let norms: Vec<f64> = (0..n)
            .map(|i| {
                row(i)
                    .iter()
                    .map(|&x| x as f64 * x as f64)
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let block_max: Vec<f64> = (0..nblocks)
            .map(|b| tiling.block(b, n).map(|i| norms[i]).fold(0.0, f64::max))
            .collect();
        let u = f64::powi(2.0, -23);
        let gamma = dim as f64 * u / (1.0 - dim as f64 * u);
        // Subnormal products flushed to zero: at most 2⁻¹²⁶ each, twice over.
        let flush = 2.0 * dim as f64 * f64::powi(2.0, -126);
        let mut lens = graph.lens();
        let offer_to = |graph: &mut Graph, lens: &mut [usize], i: usize, j: usize, s: f32| {
            offer(
                &mut graph.score[i * k..(i + 1) * k],
                &mut graph.idx[i * k..(i + 1) * k],
                &mut lens[i],
                s,
                j as u32,
            );
        };
        for &bi in blocks {
            assert!(bi < nblocks, "block {bi} of {nblocks}");
            for bj in bi..nblocks {
                self.stats.tiles += 1;
                let (ri, rj) = (tiling.block(bi, n), tiling.block(bj, n));
                if k == 0 {
                    continue;
                }
                let limit = |i: usize, other: usize| -> [f32; 2] {
                    let e = 2.0 * gamma * norms[i] * block_max[other] + flush;
                    let floor = if lens[i] == k {
                        // Rounded down, so the f32 floor never rises above w − E.
                        let f = graph.score[i * k + k - 1] as f64 - e;
                        let f32v = f as f32;
                        if f32v as f64 > f {
                            f32v.next_down()
                        } else {
                            f32v
                        }
                    } else {
                        f32::MIN
                    };
                    [floor, (2.0 * e) as f32 * (1.0 + f32::EPSILON)]
                };
                let limits: Vec<[f32; 2]> = ri
                    .clone()
                    .map(|i| limit(i, bj))
                    .chain(rj.clone().map(|j| limit(j, bi)))
                    .collect();
                match self.tile_candidates(n, dim, k, (bi, bj), &limits)? {
                    Some(pairs) => {
                        self.stats.candidates += pairs.len() as u64;
                        for (i, j) in pairs {
                            let (i, j) = (i as usize, j as usize);
                            offer_to(graph, &mut lens, i, j, dot(row(i), row(j)));
                        }
                    }
                    None => {
                        self.stats.cpu_tiles += 1;
                        let mut tile = vec![0f32; ri.len() * rj.len()];
                        tile_scores(data, dim, ri.clone(), rj.clone(), &mut tile);
                        for (a, i) in ri.clone().enumerate() {
                            for (c, j) in rj.clone().enumerate() {
                                let s = tile[a * rj.len() + c];
                                if i != j {
                                    offer_to(graph, &mut lens, i, j, s);
                                }
                                if bi != bj {
                                    offer_to(graph, &mut lens, j, i, s);
                                }
                            }
                        }
                    }
                }
            }
            done(bi, graph);
        }
        Ok(())
    }
}
