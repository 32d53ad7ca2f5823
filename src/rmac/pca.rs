//! Applying PCA-whitening: `y = W·x + b`.

use crate::vgg16::weights::PcaWeights;

/// `W·x + b` with W row-major `[n, n]`; accumulated in f64 (n = 512 products).
pub fn apply(pca: &PcaWeights, x: &[f32]) -> Vec<f32> {
    let n = x.len();
    pca.weight
        .chunks_exact(n)
        .zip(&pca.bias)
        .map(|(row, &b)| {
            let dot: f64 = row
                .iter()
                .zip(x)
                .map(|(&w, &v)| f64::from(w) * f64::from(v))
                .sum();
            (dot + f64::from(b)) as f32
        })
        .collect()
}
