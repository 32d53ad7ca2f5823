//! Learning PCA-whitening from region vectors (`rmac-native pca fit`).
//!
//! The training vectors are what the R-MAC head feeds to the PCA: per region,
//! the per-channel max over the region, L2-normalised (see [`super::rmac`]).
//! From n such vectors x (d = 512):
//!
//! ```text
//! μ = Σx / n
//! C = Σ (x − μ)(x − μ)ᵀ / (n − 1)            (numpy's np.cov: unbiased)
//! C = E Λ Eᵀ                                 (symmetric eigendecomposition, f64; λ decreasing)
//! sᵢ = λᵢ + A · mean(λ)                      (shrinkage, `--shrink A`; A = 0 by default)
//! λ'ᵢ = max(sᵢ, EIGEN_FLOOR_REL · s₁)        (tiny / negative eigenvalues clamped)
//! W = diag(λ'^-1/2) · Eᵀ, rows 1..D          (row i = i-th eigenvector / sqrt(λ'ᵢ); `--dim D`, default d)
//! b = −W · μ                                 so that y = W·x + b = W·(x − μ)
//! ```
//!
//! Why shrinkage: with few vectors the smallest eigenvalues are noise, and
//! whitening divides by their square roots, so it amplifies exactly the
//! directions the data know least. Adding A·mean(λ) to every eigenvalue (the
//! same total variance spread evenly) bounds that amplification: A → ∞ tends
//! to PCA without whitening, A = 0 is plain whitening. Keeping only the top D
//! components drops those directions altogether and gives D-float vectors.
//!
//! Each eigenvector's sign is fixed so that its largest-magnitude component is
//! positive (ties: the first), making the result independent of the solver's
//! arbitrary signs. Then `W · C · Wᵀ = I` on every unclamped direction.
//!
//! Streaming: only Σ(x − x₀) and Σ(x − x₀)(x − x₀)ᵀ are kept, in f64 (x₀ = the
//! first vector, a shift that avoids the cancellation of the naive
//! `Σxxᵀ − nμμᵀ`), so memory is d² doubles (2 MiB) whatever the image count.
//! Vectors are buffered in blocks of [`BLOCK`] rows and added with one matrix
//! product per block.

use super::pca::PcaWeights;
use ndarray::{Array1, Array2, Axis};

/// Eigenvalues below this fraction of the largest are clamped to it (so their
/// directions are amplified at most `1/sqrt(EIGEN_FLOOR_REL)` = 10⁴·⁵ times more
/// than the first principal direction). Data with fewer vectors than
/// dimensions, or with channels that are always zero, have such eigenvalues.
pub const EIGEN_FLOOR_REL: f64 = 1e-9;

/// `pca fit`'s default `--shrink`: measured on the near-duplicate benchmark
/// (benches/retrieval, README "Better vectors"): learnt from ~100 images
/// (~2000 region vectors in 512 dimensions), plain whitening (A = 0) lost 26
/// mAP points against no whitening at all, A = 3 the best of 0.03–3 gained 3
/// points on copy detection. A user's first `pca fit` is on few images, so
/// the default must be safe there; `--shrink 0` is keras_rmac's plain whitening.
pub const DEFAULT_SHRINK: f64 = 3.0;

/// Rows buffered before a block update of the second-moment matrix.
pub const BLOCK: usize = 256;

/// How the whitening is made from the covariance (`pca fit --shrink`, `--dim`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// A ≥ 0: every eigenvalue gets A · mean(λ) added before the inverse square
    /// root. 0 (the default) is plain whitening, as before shrinkage existed.
    pub shrink: f64,
    /// The components kept (the whitened vectors' dimension); `None`: all.
    pub dim: Option<usize>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            shrink: 0.0,
            dim: None,
        }
    }
}

/// What a fit found, besides the weights.
#[derive(Clone, Debug)]
pub struct WhiteningFit {
    pub pca: PcaWeights,
    /// Number of vectors the statistics were computed from.
    pub count: u64,
    /// Eigenvalues of the covariance, decreasing, before shrinkage and clamping.
    pub eigenvalues: Vec<f64>,
    /// What was added to each eigenvalue (A · mean(λ)).
    pub shrinkage: f64,
    /// The floor (absolute) the shrunk eigenvalues were clamped at.
    pub floor: f64,
    /// How many of the kept eigenvalues were below the floor and clamped.
    pub clamped: usize,
    /// The mean vector μ.
    pub mean: Vec<f64>,
}

/// Why a fit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WhitenError {
    #[error("vector {index} has {found} components, earlier vectors {expected}")]
    Dimension {
        index: u64,
        expected: usize,
        found: usize,
    },
    #[error("vector {index} has a non-finite component")]
    NonFinite { index: u64 },
    #[error("PCA-whitening needs at least 2 vectors, got {0}")]
    TooFew(u64),
    #[error("all training vectors are identical: the covariance is zero")]
    ZeroCovariance,
    #[error("the eigendecomposition failed: {0}")]
    Eigh(String),
    #[error("the shrinkage must be a finite number ≥ 0, not {0}")]
    Shrink(f64),
    #[error("cannot keep {kept} components of {dim}-dimensional vectors (1 to {dim})")]
    Dim { kept: usize, dim: usize },
}

/// Streaming statistics of the training vectors.
pub struct WhiteningAccumulator {
    dim: usize,
    count: u64,
    /// x₀, the shift (the first vector).
    shift: Vec<f64>,
    /// Σ(x − x₀).
    sum: Array1<f64>,
    /// Σ(x − x₀)(x − x₀)ᵀ.
    moment: Array2<f64>,
    /// Up to [`BLOCK`] shifted vectors not yet added to `moment`.
    block: Vec<f64>,
}

impl Default for WhiteningAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl WhiteningAccumulator {
    pub fn new() -> Self {
        WhiteningAccumulator {
            dim: 0,
            count: 0,
            shift: Vec::new(),
            sum: Array1::zeros(0),
            moment: Array2::zeros((0, 0)),
            block: Vec::new(),
        }
    }

    /// Number of vectors added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds one training vector (any dimension, the same for all).
    pub fn add(&mut self, x: &[f32]) -> Result<(), WhitenError> {
        if x.iter().any(|v| !v.is_finite()) {
            return Err(WhitenError::NonFinite { index: self.count });
        }
        if self.count == 0 && self.dim == 0 {
            self.dim = x.len();
            self.shift = x.iter().map(|&v| f64::from(v)).collect();
            self.sum = Array1::zeros(self.dim);
            self.moment = Array2::zeros((self.dim, self.dim));
            self.block.reserve(BLOCK * self.dim);
        } else if x.len() != self.dim {
            return Err(WhitenError::Dimension {
                index: self.count,
                expected: self.dim,
                found: x.len(),
            });
        }
        for (&v, &s0) in x.iter().zip(&self.shift) {
            self.block.push(f64::from(v) - s0);
        }
        self.count += 1;
        if self.block.len() == BLOCK * self.dim {
            self.flush();
        }
        Ok(())
    }

    /// Adds the buffered rows to Σ and Σxxᵀ (one `XᵀX` product).
    fn flush(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let rows = self.block.len() / self.dim;
        let x =
            ndarray::ArrayView2::from_shape((rows, self.dim), &self.block).expect("block shape");
        self.sum += &x.sum_axis(Axis(0));
        self.moment += &x.t().dot(&x);
        self.block.clear();
    }

    /// The fit with the default options: plain whitening, every component.
    pub fn finish(self) -> Result<WhiteningFit, WhitenError> {
        self.finish_with(FitOptions::default())
    }

    /// The fit: covariance, eigendecomposition, whitening matrix and bias.
    pub fn finish_with(mut self, options: FitOptions) -> Result<WhiteningFit, WhitenError> {
        self.flush();
        if self.count < 2 {
            return Err(WhitenError::TooFew(self.count));
        }
        let d = self.dim;
        if !(options.shrink.is_finite() && options.shrink >= 0.0) {
            return Err(WhitenError::Shrink(options.shrink));
        }
        let kept = options.dim.unwrap_or(d);
        if kept == 0 || kept > d {
            return Err(WhitenError::Dim { kept, dim: d });
        }
        let n = self.count as f64;
        // Shifted mean m = mean(x − x₀); C = (Σ(x−x₀)(x−x₀)ᵀ − n·m·mᵀ) / (n − 1).
        let m = &self.sum / n;
        let mut cov = self.moment.clone();
        for i in 0..d {
            for j in 0..d {
                cov[[i, j]] = (cov[[i, j]] - n * m[i] * m[j]) / (n - 1.0);
            }
        }
        // Exact symmetry (the product is symmetric up to rounding).
        for i in 0..d {
            for j in 0..i {
                let v = 0.5 * (cov[[i, j]] + cov[[j, i]]);
                cov[[i, j]] = v;
                cov[[j, i]] = v;
            }
        }
        let mean: Vec<f64> = m.iter().zip(&self.shift).map(|(a, b)| a + b).collect();
        // Pure Rust (nalgebra's symmetric QR iteration, f64), so `pca fit` links no LAPACK; checked
        // against numpy's eigh (LAPACK) in tests/whiten.rs. Eigenvalue order and eigenvector signs
        // are fixed below, so the result does not depend on the solver's conventions.
        let matrix =
            nalgebra::DMatrix::from_row_slice(d, d, cov.as_slice().expect("standard layout"));
        let eig = nalgebra::SymmetricEigen::try_new(matrix, f64::EPSILON, 0).ok_or_else(|| {
            WhitenError::Eigh("the symmetric QR iteration did not converge".into())
        })?;
        let (vals, vecs) = (eig.eigenvalues, eig.eigenvectors);
        // Decreasing eigenvalues (ties: the solver's order).
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]).then(a.cmp(&b)));
        let eigenvalues: Vec<f64> = order.iter().map(|&i| vals[i]).collect();
        let top = eigenvalues[0];
        if top.is_nan() || top <= 0.0 {
            return Err(WhitenError::ZeroCovariance);
        }
        // A = 0 adds exactly 0.0: the plain whitening, bit for bit.
        let shrinkage = options.shrink * (eigenvalues.iter().sum::<f64>() / d as f64);
        let shrunk: Vec<f64> = eigenvalues.iter().map(|&l| l + shrinkage).collect();
        let floor = shrunk[0] * EIGEN_FLOOR_REL;
        let clamped = shrunk[..kept].iter().filter(|&&l| l < floor).count();
        let mut w = Array2::<f64>::zeros((kept, d));
        for (row, &k) in order.iter().take(kept).enumerate() {
            let e = vecs.column(k);
            // Sign: the largest |component| positive (first on ties).
            let (mut big, mut at) = (0.0f64, 0usize);
            for (j, &v) in e.iter().enumerate() {
                if v.abs() > big {
                    big = v.abs();
                    at = j;
                }
            }
            let sign = if e[at] < 0.0 { -1.0 } else { 1.0 };
            let scale = sign / shrunk[row].max(floor).sqrt();
            for (j, &v) in e.iter().enumerate() {
                w[[row, j]] = v * scale;
            }
        }
        let mu = Array1::from(mean.clone());
        let bias = -w.dot(&mu);
        let pca = PcaWeights {
            weight: w.iter().map(|&v| v as f32).collect(),
            bias: bias.iter().map(|&v| v as f32).collect(),
        };
        Ok(WhiteningFit {
            pca,
            count: self.count,
            eigenvalues,
            shrinkage,
            floor,
            clamped,
            mean,
        })
    }
}

/// PCA-whitening from an iterator of region vectors (each L2-normalised region
/// maximum, all of one dimension; 512 for the contract's PCA file, docs/contract.md#weights).
pub fn fit_whitening<I, V>(vectors: I) -> Result<WhiteningFit, WhitenError>
where
    I: IntoIterator<Item = V>,
    V: AsRef<[f32]>,
{
    fit_whitening_with(vectors, FitOptions::default())
}

/// [`fit_whitening`] with shrinkage and a reduced dimension.
pub fn fit_whitening_with<I, V>(
    vectors: I,
    options: FitOptions,
) -> Result<WhiteningFit, WhitenError>
where
    I: IntoIterator<Item = V>,
    V: AsRef<[f32]>,
{
    let mut acc = WhiteningAccumulator::new();
    for v in vectors {
        acc.add(v.as_ref())?;
    }
    acc.finish_with(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_dimensional_example() {
        // Points on a line y = x plus a little spread: two eigenvalues.
        let pts: Vec<Vec<f32>> = vec![
            vec![0.0, 0.0],
            vec![1.0, 1.0],
            vec![2.0, 2.2],
            vec![3.0, 2.8],
        ];
        let fit = fit_whitening(&pts).unwrap();
        assert_eq!(fit.count, 4);
        assert!(fit.eigenvalues[0] > fit.eigenvalues[1]);
        // Whitened data: zero mean, identity covariance.
        let y: Vec<[f64; 2]> = pts
            .iter()
            .map(|p| {
                let w = &fit.pca.weight;
                let b = &fit.pca.bias;
                [
                    f64::from(w[0]) * f64::from(p[0])
                        + f64::from(w[1]) * f64::from(p[1])
                        + f64::from(b[0]),
                    f64::from(w[2]) * f64::from(p[0])
                        + f64::from(w[3]) * f64::from(p[1])
                        + f64::from(b[1]),
                ]
            })
            .collect();
        for k in 0..2 {
            let mean: f64 = y.iter().map(|v| v[k]).sum::<f64>() / 4.0;
            assert!(mean.abs() < 1e-6, "{mean}");
            for l in 0..2 {
                let c: f64 = y.iter().map(|v| v[k] * v[l]).sum::<f64>() / 3.0;
                let want = if k == l { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 1e-5, "cov[{k}][{l}] = {c}");
            }
        }
    }

    #[test]
    fn too_few_and_mismatched() {
        assert!(matches!(
            fit_whitening([vec![1.0f32, 0.0]]),
            Err(WhitenError::TooFew(1))
        ));
        assert!(matches!(
            fit_whitening([vec![1.0f32, 0.0], vec![1.0]]),
            Err(WhitenError::Dimension { .. })
        ));
        assert!(matches!(
            fit_whitening([vec![1.0f32, 0.0], vec![1.0, 0.0]]),
            Err(WhitenError::ZeroCovariance)
        ));
    }
}
