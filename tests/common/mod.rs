//! Helpers shared by the integration tests: fixture paths and tensor reading.
#![allow(dead_code)]

use rmac_native::vgg16::spec::ConvSpec;
use rmac_native::vgg16::synthetic::uniform;
use rmac_native::vgg16::weights::ConvWeights;
use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A tensor from a fixture safetensors file: (shape, f32 values).
pub fn read_f32(file: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

/// A u8 tensor from a fixture safetensors file.
pub fn read_u8(file: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()));
    assert_eq!(t.dtype(), safetensors::Dtype::U8, "{name}");
    (t.shape().to_vec(), t.data().to_vec())
}

/// Largest |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// `n` uniform values in ±`scale` from the synthetic-weights hash (stream `stream`).
pub fn random(seed: u8, stream: u64, n: usize, scale: f64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| ((2.0 * uniform(seed, stream, i) - 1.0) * scale) as f32)
        .collect()
}

/// A random conv layer (He-uniform kernel, small biases) of the given shape.
pub fn random_layer(cin: usize, cout: usize, pool: bool, seed: u8) -> ConvWeights {
    let spec = ConvSpec {
        name: "test",
        block: 1,
        cin,
        cout,
        pool_after: pool,
    };
    ConvWeights {
        spec,
        kernel: random(seed, 1, 9 * cin * cout, (6.0 / (9 * cin) as f64).sqrt()),
        bias: random(seed, 2, cout, 0.1),
    }
}
