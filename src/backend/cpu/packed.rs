//! im2col + the packed GEMM kernel ([`super::kernel`]): the same tiling as the
//! reference path in [`super::conv`], with the kernel's weights packed once at
//! load. Used for conv1_1 (3 input channels: 27-long dot products, where
//! Winograd's channel-wise transforms gain nothing) and as a direct-convolution
//! fallback for any layer.

use super::conv::{im2col, maxpool2, rows_per_tile};
use super::kernel::{self, Isa, MR, round_up};
use crate::tensor::Tensor3;
use crate::vgg16::spec::KERNEL;
use crate::vgg16::weights::ConvWeights;
use rayon::prelude::*;

/// A layer's HWIO kernel as `[9·cin, cout]`, packed for the kernel.
pub struct PackedLayer {
    cin: usize,
    cout: usize,
    cout_pad: usize,
    bp: Vec<f32>,
    bias: Vec<f32>,
    pool: bool,
}

impl PackedLayer {
    pub fn new(layer: &ConvWeights) -> Self {
        let (cin, cout) = (layer.spec.cin, layer.spec.cout);
        let k = KERNEL * KERNEL * cin;
        let mut bp = Vec::new();
        let cout_pad = kernel::pack_b(&layer.kernel, k, cout, cout, &mut bp);
        PackedLayer {
            cin,
            cout,
            cout_pad,
            bp,
            bias: layer.bias.clone(),
            pool: layer.spec.pool_after,
        }
    }

    pub fn weight_bytes(&self) -> usize {
        self.bp.len() * 4
    }

    /// Runs the layer on the current rayon pool.
    /// The output goes into `storage` (reused as it is: every element is
    /// written; see [`Tensor3::reuse`]).
    pub fn forward(&self, input: &Tensor3, storage: Vec<f32>, threads: usize, isa: Isa) -> Tensor3 {
        assert_eq!(
            input.c, self.cin,
            "packed layer expects {} input channels, got {}",
            self.cin, input.c
        );
        let (h, w, n) = (input.h, input.w, self.cout);
        let k = KERNEL * KERNEL * self.cin;
        let np = self.cout_pad;
        let pool = self.pool;
        let rows = rows_per_tile(h, w, self.cin, threads, pool);
        let mpad = round_up(rows * w, MR);
        // One tile: im2col, GEMM into `full` (m_pad × cout_pad), bias + ReLU.
        let tile = |t: usize, tile_rows: usize, patches: &mut Vec<f32>, full: &mut Vec<f32>| {
            let m = tile_rows * w;
            let mp = round_up(m, MR);
            im2col(input, t * rows, tile_rows, &mut patches[..m * k]);
            patches[m * k..mp * k].fill(0.0);
            kernel::gemm_packed(
                isa,
                mp,
                k,
                &patches[..mp * k],
                k,
                &self.bp,
                np,
                &mut full[..mp * np],
                np,
            );
            for r in 0..m {
                // Compact rows to stride n while adding the bias: row r moves
                // down to r·n ≤ r·np, past everything already written.
                for c in 0..n {
                    let v = full[r * np + c] + self.bias[c];
                    full[r * n + c] = v.max(0.0);
                }
            }
        };
        if !pool {
            let mut out = Tensor3::reuse(h, w, n, storage);
            out.data
                .par_chunks_mut(rows * w * n)
                .enumerate()
                .for_each_init(
                    || (vec![0.0f32; mpad * k], vec![0.0f32; mpad * np]),
                    |(patches, full), (t, chunk)| {
                        let tile_rows = chunk.len() / (w * n);
                        tile(t, tile_rows, patches, full);
                        chunk.copy_from_slice(&full[..tile_rows * w * n]);
                    },
                );
            out
        } else {
            let (ho, wo) = (h / 2, w / 2);
            let mut out = Tensor3::reuse(ho, wo, n, storage);
            if ho == 0 || wo == 0 {
                return out;
            }
            out.data
                .par_chunks_mut((rows / 2) * wo * n)
                .enumerate()
                .for_each_init(
                    || (vec![0.0f32; mpad * k], vec![0.0f32; mpad * np]),
                    |(patches, full), (t, chunk)| {
                        let tile_rows = 2 * (chunk.len() / (wo * n));
                        tile(t, tile_rows, patches, full);
                        maxpool2(&full[..tile_rows * w * n], tile_rows, w, n, chunk);
                    },
                );
            out
        }
    }
}
