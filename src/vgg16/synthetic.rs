//! Deterministic synthetic weights, shared bit-for-bit with
//! `tests/reference/synthetic.py`, so that tests can regenerate the weights the
//! Keras reference fixtures were computed with instead of committing them.
//!
//! The generator is counter based (no state, any element computable alone):
//!
//! ```text
//! splitmix64(z): z += 0x9E3779B97F4A7C15; z = (z ^ z>>30)·0xBF58476D1CE4E5B9;
//!                z = (z ^ z>>27)·0x94D049BB133111EB; z ^ z>>31      (wrapping u64)
//! uniform(seed, stream, i) = (splitmix64((seed << 56) ^ (stream << 40) ^ i) >> 11) · 2⁻⁵³   ∈ [0, 1)
//! ```
//!
//! * conv layer k (0..13 in [`VGG16_CONVS`] order), kernel HWIO flat index i:
//!   `(2u − 1) · sqrt(6 / (9·cin))` with `u = uniform(seed, 2k, i)` (He-uniform),
//! * its bias j: `(u − 0.5) · 0.2` with `u = uniform(seed, 2k + 1, j)`,
//! * PCA weight (`rmac::pca::synthetic`), row-major `[512, 512]` flat index i: `(2u − 1) · sqrt(3 / 512)` with
//!   `u = uniform(seed, 100, i)`,
//! * PCA bias: `b_r = −Σ_c W_rc / sqrt(512)` (f64 sum over c in order, of the f32
//!   weights), which centres the (non-negative, unit-norm) region vectors so that
//!   different images do not all come out nearly parallel.
//!
//! Every value is computed in f64 and rounded once to f32.

use super::spec::{KERNEL, VGG16_CONVS};
use super::weights::{ConvWeights, Vgg16Weights};

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) for element `i` of `stream` under `seed`.
pub fn uniform(seed: u8, stream: u64, i: u64) -> f64 {
    let key = (u64::from(seed) << 56) ^ (stream << 40) ^ i;
    (splitmix64(key) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Synthetic VGG16 weights for `seed`.
pub fn vgg16(seed: u8) -> Vgg16Weights {
    let layers = VGG16_CONVS
        .iter()
        .enumerate()
        .map(|(k, spec)| {
            let limit = (6.0 / (KERNEL * KERNEL * spec.cin) as f64).sqrt();
            let kernel = (0..spec.kernel_len() as u64)
                .map(|i| ((2.0 * uniform(seed, 2 * k as u64, i) - 1.0) * limit) as f32)
                .collect();
            let bias = (0..spec.cout as u64)
                .map(|j| ((uniform(seed, 2 * k as u64 + 1, j) - 0.5) * 0.2) as f32)
                .collect();
            ConvWeights {
                spec: *spec,
                kernel,
                bias,
            }
        })
        .collect();
    Vgg16Weights { layers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_published_sequence() {
        // splitmix64 seeded with 0 (state advanced by the golden gamma each call):
        // first outputs from the reference C implementation by Vigna.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn uniform_is_in_unit_interval_and_seed_dependent() {
        for i in 0..1000 {
            let u = uniform(1, 3, i);
            assert!((0.0..1.0).contains(&u));
        }
        assert_ne!(uniform(1, 0, 0), uniform(2, 0, 0));
        assert_ne!(uniform(1, 0, 0), uniform(1, 1, 0));
    }
}
