//! PCA-whitening: the weights file (docs/contract.md#weights: `pca.weight` D×512,
//! `pca.bias` D, safetensors; D = 512 but for a whitening that keeps fewer
//! components, `pca fit --dim D`) and applying it, `y = W·x + b`. Learning it
//! from images is [`super::whiten`]; keras_rmac's `PCAmatrices.mat` is read by
//! [`super::import_mat`].

use crate::vgg16::spec::FEATURE_DIM;
use crate::vgg16::synthetic::uniform;
use crate::vgg16::weights::{Checked, WeightsError, serialize, with_mapped_file, write_file};
use std::path::Path;

/// PCA-whitening: `y = weight · x + bias`.
#[derive(Clone, Debug)]
pub struct PcaWeights {
    /// `[D, 512]` row-major: `weight[r * 512 + c]`.
    pub weight: Vec<f32>,
    /// `[D]`.
    pub bias: Vec<f32>,
}

/// safetensors key of the PCA matrix, `[512, 512]`.
pub const PCA_WEIGHT_KEY: &str = "pca.weight";
/// safetensors key of the PCA bias, `[512]`.
pub const PCA_BIAS_KEY: &str = "pca.bias";

/// What to do when a PCA weights file is missing.
pub const PCA_MISSING_HINT: &str = "convert keras_rmac's PCAmatrices.mat with `rmac-native pca import PCAmatrices.mat` (see weights/README.md), \
     or pass --pca";

/// The tensors of a PCA file keeping `dim` components.
fn expected_pca(dim: usize) -> Vec<(String, Vec<usize>)> {
    vec![
        (PCA_WEIGHT_KEY.to_owned(), vec![dim, FEATURE_DIM]),
        (PCA_BIAS_KEY.to_owned(), vec![dim]),
    ]
}

impl PcaWeights {
    /// The dimension of the whitened vectors (the rows of the weight).
    pub fn dim(&self) -> usize {
        self.bias.len()
    }

    /// Loads and validates a PCA weights file (memory mapped).
    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        with_mapped_file(path, PCA_MISSING_HINT, |bytes| {
            Self::from_safetensors_bytes(bytes, path)
        })
    }

    /// Parses and validates the bytes of a PCA safetensors file; `origin` names it in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &Path) -> Result<Self, WeightsError> {
        let file = Checked::parse(bytes, origin)?;
        // D×512 with 1 ≤ D ≤ 512 (a reduced whitening); any other shape is
        // reported against the contract's 512×512.
        let dim = match file.shape(PCA_WEIGHT_KEY).as_deref() {
            Some(&[d, c]) if (1..=FEATURE_DIM).contains(&d) && c == FEATURE_DIM => d,
            _ => FEATURE_DIM,
        };
        let weight = file.tensor(PCA_WEIGHT_KEY, &[dim, FEATURE_DIM])?;
        let bias = file.tensor(PCA_BIAS_KEY, &[dim])?;
        file.warn_extras(&expected_pca(dim));
        // A matrix with a zero row maps every image to the same value in that
        // component (an all-zero one gives every image the same vector).
        if let Some(r) = weight
            .chunks_exact(FEATURE_DIM)
            .position(|row| row.iter().all(|&w| w == 0.0))
        {
            return Err(WeightsError::Malformed {
                path: origin.to_owned(),
                format: "PCA file",
                reason: format!(
                    "row {r} of {PCA_WEIGHT_KEY} is all zeros, so every image would get the same value there \
                     (a degenerate whitening); fit it again with `rmac-native pca fit` or import PCAmatrices.mat"
                ),
            });
        }
        Ok(Self { weight, bias })
    }

    /// The safetensors bytes of this PCA (validated first).
    pub fn to_safetensors_bytes(&self, origin: &Path) -> Result<Vec<u8>, WeightsError> {
        let shapes = expected_pca(self.dim());
        let tensors = vec![
            (
                shapes[0].0.clone(),
                shapes[0].1.clone(),
                self.weight.as_slice(),
            ),
            (
                shapes[1].0.clone(),
                shapes[1].1.clone(),
                self.bias.as_slice(),
            ),
        ];
        serialize(origin, &tensors)
    }

    /// Writes the PCA to `path` (atomically).
    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes = self.to_safetensors_bytes(path)?;
        write_file(path, &bytes)
    }
}

/// Stream id of the synthetic PCA weight matrix (see [`crate::vgg16::synthetic`]).
const SYNTHETIC_PCA_STREAM: u64 = 100;

/// Deterministic synthetic PCA-whitening for `seed`, mirrored bit for bit in
/// `tests/reference/synthetic.py`: weight `(2u − 1) · sqrt(3 / 512)` with
/// `u = uniform(seed, 100, i)`, bias `b_r = −Σ_c W_rc / sqrt(512)` (f64 sum in
/// order), which centres the non-negative region vectors so that different
/// images do not all come out nearly parallel. Not a model: for tests and
/// benchmarks.
pub fn synthetic(seed: u8) -> PcaWeights {
    let n = FEATURE_DIM;
    let limit = (3.0 / n as f64).sqrt();
    let weight: Vec<f32> = (0..(n * n) as u64)
        .map(|i| ((2.0 * uniform(seed, SYNTHETIC_PCA_STREAM, i) - 1.0) * limit) as f32)
        .collect();
    let inv_sqrt_n = 1.0 / (n as f64).sqrt();
    let bias = weight
        .chunks_exact(n)
        .map(|row| (-row.iter().map(|&w| f64::from(w) * inv_sqrt_n).sum::<f64>()) as f32)
        .collect();
    PcaWeights { weight, bias }
}

/// Independent f64 partial sums per dot product: lanes the compiler can keep
/// in one AVX-512 (or two AVX2) registers; a single running sum would chain
/// every addition on the previous one (4+ cycles each, ~6 ms per image).
const LANES: usize = 8;

/// `W·x + b` with W row-major `[D, n]`; accumulated in f64 (n = 512 products).
pub fn apply(pca: &PcaWeights, x: &[f32]) -> Vec<f32> {
    apply_many(pca, std::slice::from_ref(&x.to_vec()))
        .pop()
        .expect("one input, one output")
}

/// [`apply`] to every vector of `xs` (an image's regions): each row of W is
/// read once for all of them.
pub fn apply_many(pca: &PcaWeights, xs: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let Some(n) = xs.first().map(Vec::len) else {
        return Vec::new();
    };
    assert!(xs.iter().all(|x| x.len() == n) && pca.weight.len() == pca.dim() * n);
    let wide: Vec<Vec<f64>> = xs
        .iter()
        .map(|x| x.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut out = vec![Vec::with_capacity(pca.dim()); xs.len()];
    for (row, &b) in pca.weight.chunks_exact(n).zip(&pca.bias) {
        for (x, y) in wide.iter().zip(out.iter_mut()) {
            y.push((dot(row, x) + f64::from(b)) as f32);
        }
    }
    out
}

/// `a · b` in f64 (`a` widened as it is read).
fn dot(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(&x, y)| f64::from(x) * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for ((a, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *a += f64::from(x) * y;
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_f64_loop_on_odd_sizes() {
        for n in [1usize, 7, 8, 13, 64] {
            let pca = PcaWeights {
                weight: (0..n * n)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                    .collect(),
                bias: (0..n).map(|i| i as f32 * 0.25 - 1.0).collect(),
            };
            let xs: Vec<Vec<f32>> = (0..3)
                .map(|k| {
                    (0..n)
                        .map(|i| ((i * 13 + k * 7) % 29) as f32 / 9.0)
                        .collect()
                })
                .collect();
            let got = apply_many(&pca, &xs);
            for (x, y) in xs.iter().zip(&got) {
                for (r, &yr) in y.iter().enumerate() {
                    let want: f64 = (0..n)
                        .map(|c| f64::from(pca.weight[r * n + c]) * f64::from(x[c]))
                        .sum::<f64>()
                        + f64::from(pca.bias[r]);
                    assert!(
                        (f64::from(yr) - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "n={n}"
                    );
                }
                assert_eq!(&apply(&pca, x), y);
            }
        }
    }

    #[test]
    fn pca_round_trip_in_memory() {
        let p = synthetic(3);
        let origin = Path::new("mem.safetensors");
        let bytes = p.to_safetensors_bytes(origin).unwrap();
        let q = PcaWeights::from_safetensors_bytes(&bytes, origin).unwrap();
        assert_eq!(p.weight, q.weight);
        assert_eq!(p.bias, q.bias);
    }

    #[test]
    fn unaligned_data_is_read() {
        // Shift the whole file by one byte inside a buffer: the f32 data are then
        // misaligned in memory, which must not matter.
        let p = synthetic(4);
        let origin = Path::new("mem.safetensors");
        let bytes = p.to_safetensors_bytes(origin).unwrap();
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        let q = PcaWeights::from_safetensors_bytes(&shifted[1..], origin).unwrap();
        assert_eq!(p.weight, q.weight);
    }
}
