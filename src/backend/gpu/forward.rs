//! The forward pass: per layer, the kernel its size calls for and the row
//! bands that fit the binding limit; uploads the input, dispatches the layers
//! in order, reads pool5 back, and turns any GPU error into that image's error.

use super::conv::{self, Dispatch, Kernel, LayerShape, Tile};
use super::{ConvChoice, GpuBackend, LayerBufs, LayerTiming, dev_err};
use crate::backend::{Backend, BackendError};
use crate::tensor::Tensor3;
use std::time::Instant;

impl GpuBackend {
    /// The variant that runs layer `s`.
    pub(super) fn kernel_for(&self, s: &LayerShape) -> Kernel {
        let tiled = |t: Tile| Kernel::tiled(t, s.cin, self.k16_tiles.contains(&t));
        match self.conv {
            ConvChoice::Auto => tiled(conv::choose_tile(s, &self.tiles)),
            ConvChoice::Tile(t) => tiled(t),
            #[cfg(feature = "dev")]
            ConvChoice::AutoK16 => tiled(conv::choose_tile(s, &self.tiles)),
            #[cfg(feature = "dev")]
            ConvChoice::TileK16(t) => tiled(t),
            #[cfg(feature = "dev")]
            ConvChoice::V1 => Kernel::V1,
        }
    }

    pub(super) fn pipeline(&self, k: Kernel) -> &wgpu::ComputePipeline {
        &self
            .pipelines
            .iter()
            .find(|(pk, _)| *pk == k)
            .expect("every kernel kernel_for picks is built in open")
            .1
    }

    pub(super) fn wait(&self) -> Result<(), BackendError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| dev_err("waiting for the GPU", e))
    }

    /// Uploads `input`, runs `layers` in order (ping-pong), reads the last output back.
    /// `timed`: one submission per layer, each waited for and timed.
    pub(super) fn forward(
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

pub(super) fn check_input(input: &Tensor3) -> Result<(), BackendError> {
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
