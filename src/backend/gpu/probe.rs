//! Hooks for tests and benchmarks: one layer through the production code path
//! with given weights, pool5 with per-layer wall times, and a single layer
//! timed back to back on the device.

use super::conv::{self, LayerShape};
use super::forward::check_input;
use super::{GpuBackend, LayerBufs, LayerTiming};
use crate::backend::BackendError;
use crate::tensor::Tensor3;
use std::time::Instant;

impl GpuBackend {
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
}
