//! R-MAC: region grid, region max-pooling (or GeM), L2, PCA-whitening, sum, L2;
//! and its multi-scale form (the sum over several image sizes, `--scales`).
pub mod import_mat;
pub mod pca;
pub mod pool;
pub mod regions;
pub mod whiten;

use crate::tensor::Tensor3;
use pca::PcaWeights;
pub use pool::Pooling;
pub use regions::{Region, rmac_regions};

/// The ε under the square root of keras_rmac's `K.l2_normalize`.
const L2_EPS: f64 = 1e-12;

/// `x / sqrt(max(Σx², 1e-12))`, the sum in f64.
pub fn l2_normalize(x: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let inv = 1.0 / sum.max(L2_EPS).sqrt();
    for v in x.iter_mut() {
        *v = (f64::from(*v) * inv) as f32;
    }
}

/// Every intermediate of the R-MAC head, for tests and debugging.
#[derive(Clone, Debug)]
pub struct RmacParts {
    pub regions: Vec<Region>,
    /// Per region, the pooled 512 channels (before any normalisation): the
    /// maximum, or the generalised mean with [`Pooling::Gem`].
    pub region_max: Vec<Vec<f32>>,
    /// Per region, after L2 → PCA → L2 (or just L2 without PCA).
    pub region_vectors: Vec<Vec<f32>>,
    /// The R-MAC vector: the sum of `region_vectors`, L2-normalised.
    pub vector: Vec<f32>,
}

/// The R-MAC head on a pool5 map with `levels` scales; `pca = None` skips the
/// whitening (and the L2 after it).
pub fn rmac(pool5: &Tensor3, levels: usize, pca: Option<&PcaWeights>) -> RmacParts {
    rmac_pooled(pool5, levels, Pooling::Max, pca)
}

/// [`rmac`] with the regions pooled by `pooling`.
pub fn rmac_pooled(
    pool5: &Tensor3,
    levels: usize,
    pooling: Pooling,
    pca: Option<&PcaWeights>,
) -> RmacParts {
    let regions = rmac_regions(pool5.w, pool5.h, levels);
    let region_max: Vec<Vec<f32>> = regions.iter().map(|r| pooling.region(pool5, r)).collect();
    let mut region_vectors: Vec<Vec<f32>> = region_max
        .iter()
        .map(|m| {
            let mut v = m.clone();
            l2_normalize(&mut v);
            v
        })
        .collect();
    if let Some(p) = pca {
        // All regions at once: each row of W is read once per image.
        region_vectors = pca::apply_many(p, &region_vectors);
        region_vectors.iter_mut().for_each(|v| l2_normalize(v));
    }
    // The PCA may keep fewer components than pool5 has channels (`pca fit --dim`).
    let dim = pca.map_or(pool5.c, PcaWeights::dim);
    let mut vector = sum_to_f32(std::iter::once(&region_vectors), dim);
    l2_normalize(&mut vector);
    RmacParts {
        regions,
        region_max,
        region_vectors,
        vector,
    }
}

/// The region vectors of every scale summed in f64 (scale by scale, region by
/// region, in order), then rounded to f32: the R-MAC vector before its final L2.
fn sum_to_f32<'a>(scales: impl Iterator<Item = &'a Vec<Vec<f32>>>, dim: usize) -> Vec<f32> {
    let mut sum = vec![0.0f64; dim];
    for v in scales.flatten() {
        for (s, &x) in sum.iter_mut().zip(v) {
            *s += f64::from(x);
        }
    }
    sum.iter().map(|&s| s as f32).collect()
}

/// The multi-scale R-MAC vector (`--scales`): each scale's R-MAC vector before
/// its final L2 (the sum of its region vectors), summed over the scales, then
/// L2-normalised, as the retrieval toolboxes do. `pool5s` holds one map per
/// scale; with one map this is [`rmac_pooled`]'s vector, bit for bit.
pub fn rmac_multiscale(
    pool5s: &[Tensor3],
    levels: usize,
    pooling: Pooling,
    pca: Option<&PcaWeights>,
) -> (Vec<RmacParts>, Vec<f32>) {
    let parts: Vec<RmacParts> = pool5s
        .iter()
        .map(|p| rmac_pooled(p, levels, pooling, pca))
        .collect();
    let dim = pca.map_or(pool5s.first().map_or(0, |p| p.c), PcaWeights::dim);
    let mut vector = sum_to_f32(parts.iter().map(|p| &p.region_vectors), dim);
    l2_normalize(&mut vector);
    (parts, vector)
}
