//! GPU memory: the layers' weights (uploaded once), the two ping-pong
//! activation buffers (reused between images, grown when a bigger image
//! comes), the per-dispatch parameters and the read-back staging buffer.

use super::conv::{self, Dispatch, Params};
use super::{GpuBackend, LayerBufs};
use crate::backend::BackendError;

impl GpuBackend {
    pub(super) fn upload_layer(
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

    /// Makes sure both activation buffers hold `act` bytes, the params buffer
    /// `slots` slots and the staging buffer `staging` bytes.
    pub(super) fn ensure_buffers(
        &mut self,
        act: u64,
        slots: usize,
        staging: u64,
    ) -> Result<(), BackendError> {
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

    pub(super) fn write_params(&self, plan: &[Dispatch]) {
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
    pub(super) fn bind_group(
        &self,
        slot: usize,
        d: &Dispatch,
        l: &LayerBufs,
        src: usize,
    ) -> wgpu::BindGroup {
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
}
