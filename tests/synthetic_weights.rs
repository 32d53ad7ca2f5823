//! The Rust synthetic-weights generator against the check values written by
//! tests/reference/synthetic.py, so both sides provably use the same weights.
mod common;

use rmac_native::vgg16::synthetic;

#[derive(serde::Deserialize)]
struct Uniform {
    stream: u64,
    i: u64,
    value: f64,
}

#[derive(serde::Deserialize)]
struct Layer {
    name: String,
    kernel_first4: Vec<f32>,
    kernel_last4: Vec<f32>,
    kernel_sum: f64,
    bias_first4: Vec<f32>,
    bias_sum: f64,
}

#[derive(serde::Deserialize)]
struct Pca {
    weight_first4: Vec<f32>,
    weight_sum: f64,
    bias_first4: Vec<f32>,
    bias_sum: f64,
}

#[derive(serde::Deserialize)]
struct Seed {
    seed: u8,
    uniform: Vec<Uniform>,
    layers: Vec<Layer>,
    pca: Pca,
}

#[derive(serde::Deserialize)]
struct Check {
    seeds: Vec<Seed>,
}

fn seq_sum(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum()
}

#[test]
fn rust_generator_equals_python_generator() {
    let path = common::fixtures().join("keras/synthetic_check.json");
    let check: Check = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for s in &check.seeds {
        for u in &s.uniform {
            assert_eq!(
                synthetic::uniform(s.seed, u.stream, u.i),
                u.value,
                "seed {} stream {} i {}",
                s.seed,
                u.stream,
                u.i
            );
        }
        let w = synthetic::vgg16(s.seed);
        assert_eq!(w.layers.len(), s.layers.len());
        for (got, want) in w.layers.iter().zip(&s.layers) {
            assert_eq!(got.spec.name, want.name);
            assert_eq!(&got.kernel[..4], &want.kernel_first4[..]);
            assert_eq!(&got.kernel[got.kernel.len() - 4..], &want.kernel_last4[..]);
            assert_eq!(seq_sum(&got.kernel), want.kernel_sum, "{}", want.name);
            assert_eq!(&got.bias[..4], &want.bias_first4[..]);
            assert_eq!(seq_sum(&got.bias), want.bias_sum, "{}", want.name);
        }
        let p = rmac_native::rmac::pca::synthetic(s.seed);
        assert_eq!(&p.weight[..4], &s.pca.weight_first4[..]);
        assert_eq!(seq_sum(&p.weight), s.pca.weight_sum);
        assert_eq!(&p.bias[..4], &s.pca.bias_first4[..]);
        assert_eq!(seq_sum(&p.bias), s.pca.bias_sum);
    }
}
