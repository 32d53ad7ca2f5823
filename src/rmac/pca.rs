//! Applying PCA-whitening: `y = W·x + b`.

use crate::vgg16::weights::PcaWeights;

/// Independent f64 partial sums per dot product: lanes the compiler can keep
/// in one AVX-512 (or two AVX2) registers; a single running sum would chain
/// every addition on the previous one (4+ cycles each, ~6 ms per image).
const LANES: usize = 8;

/// `W·x + b` with W row-major `[n, n]`; accumulated in f64 (n = 512 products).
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
    assert!(xs.iter().all(|x| x.len() == n) && pca.weight.len() == n * n);
    let wide: Vec<Vec<f64>> = xs
        .iter()
        .map(|x| x.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut out = vec![Vec::with_capacity(n); xs.len()];
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
}
