//! One VGG16 layer: 3×3 same convolution + bias + ReLU (+ 2×2 max-pool), by
//! im2col and sgemm on tiles of output rows.

use crate::tensor::Tensor3;
use crate::vgg16::spec::KERNEL;
use crate::vgg16::weights::ConvWeights;
use rayon::prelude::*;

/// Upper bound for one tile's im2col buffer. Several tiles are alive at once
/// (one per thread); 4 MiB each keeps a 1024×768 image well under 512 MB.
pub const PATCH_BUDGET_BYTES: usize = 4 << 20;

/// Output rows per tile: as many as the patch budget allows, but small enough
/// that every thread gets a few tiles; even when a pool follows.
pub(crate) fn rows_per_tile(h: usize, w: usize, cin: usize, threads: usize, pool: bool) -> usize {
    let patch_row_bytes = w * KERNEL * KERNEL * cin * std::mem::size_of::<f32>();
    let by_budget = (PATCH_BUDGET_BYTES / patch_row_bytes.max(1)).max(1);
    let by_balance = h.div_ceil(threads * 4).max(1);
    let rows = by_budget.min(by_balance).max(1);
    if pool { (rows & !1).max(2) } else { rows }
}

/// Fills `patches` (`rows·w` rows of `9·cin`) for output rows `y0 .. y0 + rows`.
/// Column order (ky, kx, ci) matches the HWIO kernel flattened to `[9·cin, cout]`.
pub(crate) fn im2col(input: &Tensor3, y0: usize, rows: usize, patches: &mut [f32]) {
    let (h, w, c) = (input.h as isize, input.w, input.c);
    let k = KERNEL * KERNEL * c;
    for r in 0..rows {
        let y = (y0 + r) as isize;
        for x in 0..w {
            let dst = &mut patches[(r * w + x) * k..(r * w + x + 1) * k];
            for ky in 0..KERNEL {
                let sy = y + ky as isize - 1;
                for kx in 0..KERNEL {
                    let sx = x as isize + kx as isize - 1;
                    let seg = &mut dst[(ky * KERNEL + kx) * c..(ky * KERNEL + kx + 1) * c];
                    if sy < 0 || sy >= h || sx < 0 || sx >= w as isize {
                        seg.fill(0.0);
                    } else {
                        seg.copy_from_slice(input.pixel(sy as usize, sx as usize));
                    }
                }
            }
        }
    }
}

/// `out[rows·w, cout] = patches · kernel + bias`, then ReLU.
fn gemm_bias_relu(patches: &[f32], m: usize, layer: &ConvWeights, out: &mut [f32]) {
    let k = layer.kernel.len() / layer.spec.cout;
    let n = layer.spec.cout;
    for row in out.chunks_exact_mut(n) {
        row.copy_from_slice(&layer.bias);
    }
    // SAFETY: the slices hold m·k, k·n and m·n floats with the strides given.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            patches.as_ptr(),
            k as isize,
            1,
            layer.kernel.as_ptr(),
            n as isize,
            1,
            1.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    for v in out.iter_mut() {
        *v = v.max(0.0);
    }
}

/// 2×2 stride-2 max-pool of `rows` (even) full-resolution rows of width `w`
/// into `rows / 2` rows of width `w / 2` (floor: an odd last column is dropped).
pub(crate) fn maxpool2(full: &[f32], rows: usize, w: usize, c: usize, out: &mut [f32]) {
    let wo = w / 2;
    for ry in 0..rows / 2 {
        let top = &full[(2 * ry) * w * c..(2 * ry + 1) * w * c];
        let bottom = &full[(2 * ry + 1) * w * c..(2 * ry + 2) * w * c];
        let dst = &mut out[ry * wo * c..(ry + 1) * wo * c];
        for x in 0..wo {
            let (a, b) = (
                &top[2 * x * c..(2 * x + 2) * c],
                &bottom[2 * x * c..(2 * x + 2) * c],
            );
            for ch in 0..c {
                dst[x * c + ch] = a[ch].max(a[c + ch]).max(b[ch].max(b[c + ch]));
            }
        }
    }
}

/// One layer on `input`; pooled when `layer.spec.pool_after`. Runs on the
/// current rayon pool.
pub fn conv3x3_relu(input: &Tensor3, layer: &ConvWeights, threads: usize) -> Tensor3 {
    let spec = layer.spec;
    assert_eq!(
        input.c, spec.cin,
        "{}: input has {} channels, expected {}",
        spec.name, input.c, spec.cin
    );
    let (h, w) = (input.h, input.w);
    let k = KERNEL * KERNEL * spec.cin;
    let n = spec.cout;
    let pool = spec.pool_after;
    let rows = rows_per_tile(h, w, spec.cin, threads, pool);

    if !pool {
        let mut out = Tensor3::zeros(h, w, n);
        out.data
            .par_chunks_mut(rows * w * n)
            .enumerate()
            .for_each_init(
                || vec![0.0f32; rows * w * k],
                |patches, (t, chunk)| {
                    let tile_rows = chunk.len() / (w * n);
                    let m = tile_rows * w;
                    im2col(input, t * rows, tile_rows, &mut patches[..m * k]);
                    gemm_bias_relu(&patches[..m * k], m, layer, chunk);
                },
            );
        out
    } else {
        // Only the rows the pool reads are computed (an odd last row is dropped).
        let (ho, wo) = (h / 2, w / 2);
        let mut out = Tensor3::zeros(ho, wo, n);
        if ho == 0 || wo == 0 {
            return out;
        }
        out.data
            .par_chunks_mut((rows / 2) * wo * n)
            .enumerate()
            .for_each_init(
                || (vec![0.0f32; rows * w * k], vec![0.0f32; rows * w * n]),
                |(patches, full), (t, chunk)| {
                    let tile_rows = 2 * (chunk.len() / (wo * n));
                    let m = tile_rows * w;
                    im2col(input, t * rows, tile_rows, &mut patches[..m * k]);
                    gemm_bias_relu(&patches[..m * k], m, layer, &mut full[..m * n]);
                    maxpool2(&full[..m * n], tile_rows, w, n, chunk);
                },
            );
        out
    }
}
