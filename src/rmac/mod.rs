//! R-MAC: region grid, region max-pooling, L2, PCA-whitening, sum, L2.
pub mod import_mat;
pub mod pca;
pub mod pool;
pub mod regions;
pub mod whiten;

use crate::tensor::Tensor3;
use pca::PcaWeights;
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
    /// Per region, the max-pooled 512 channels (before any normalisation).
    pub region_max: Vec<Vec<f32>>,
    /// Per region, after L2 → PCA → L2 (or just L2 without PCA).
    pub region_vectors: Vec<Vec<f32>>,
    /// The R-MAC vector: the sum of `region_vectors`, L2-normalised.
    pub vector: Vec<f32>,
}

/// The R-MAC head on a pool5 map with `levels` scales; `pca = None` skips the
/// whitening (and the L2 after it).
pub fn rmac(pool5: &Tensor3, levels: usize, pca: Option<&PcaWeights>) -> RmacParts {
    let regions = rmac_regions(pool5.w, pool5.h, levels);
    let region_max: Vec<Vec<f32>> = regions.iter().map(|r| pool::region_max(pool5, r)).collect();
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
    let mut sum = vec![0.0f64; pool5.c];
    for v in &region_vectors {
        for (s, &x) in sum.iter_mut().zip(v) {
            *s += f64::from(x);
        }
    }
    let mut vector: Vec<f32> = sum.iter().map(|&s| s as f32).collect();
    l2_normalize(&mut vector);
    RmacParts {
        regions,
        region_max,
        region_vectors,
        vector,
    }
}
