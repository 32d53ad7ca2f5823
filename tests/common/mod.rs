//! Helpers shared by the integration tests, one of each: the binary
//! ([`exe`]), fixture paths and tensors, deterministic random data ([`Rng`],
//! [`random`]), closeness measures ([`assert_close`], [`rel_err`]), and
//! [`test_device!`], which runs one test body on every CPU algorithm and the
//! GPU. [`batch`] holds the run-level helpers (a generated image batch).
#![allow(dead_code)]

pub mod batch;

use rmac_native::backend::{Backend, CpuAlgo, CpuBackend};
use rmac_native::vgg16::spec::ConvSpec;
use rmac_native::vgg16::synthetic::uniform;
use rmac_native::vgg16::weights::{ConvWeights, Vgg16Weights};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The built `rmac-native` binary.
pub fn exe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rmac-native"))
}

/// Downloads one pinned package from PyPI into `dir` with `python3 -m pip
/// download --no-deps --only-binary=:all:` (`extra`: platform or Python
/// version flags); the caller checks what arrived against its sha256.
#[track_caller]
pub fn pip_download(requirement: &str, extra: &[&str], dir: &Path) {
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .args(extra)
        .arg(requirement)
        .arg("-d")
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("python3 -m pip is needed to fetch {requirement}: {e}"));
    assert!(
        status.success(),
        "pip could not fetch {requirement} from PyPI"
    );
}

/// `search INDEX --image IMAGE -k 1 --json --backend cpu` with no model flags
/// (so the index's settings decide): its best hit, (path, score).
#[track_caller]
pub fn best_hit_for_image(index: &std::ffi::OsStr, image: &str) -> (String, f64) {
    let o = run_ok(
        exe()
            .args([
                "search",
                "--backend",
                "cpu",
                "--json",
                "-k",
                "1",
                "--image",
                image,
            ])
            .arg(index),
    );
    let line = String::from_utf8_lossy(&o.stdout);
    let answer: serde_json::Value =
        serde_json::from_str(line.lines().next().unwrap_or("")).unwrap();
    let hit = &answer["results"][0];
    (
        hit["path"].as_str().unwrap().to_owned(),
        hit["score"].as_f64().unwrap(),
    )
}

/// Runs `cmd` and returns its output, failing the test (with its stderr) unless it exited 0.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("cannot start the binary");
    assert!(
        out.status.success(),
        "{:?} failed ({}): {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Panics, naming the worst component, unless every `|got − want| <= tol`.
#[track_caller]
/// `n` random unit vectors of `dim` (row-major).
pub fn unit_rows(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let v: Vec<f64> = (0..dim).map(|_| rng.f() as f64).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        data.extend(v.iter().map(|x| (x / norm) as f32));
    }
    data
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (i, d) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold((0, 0.0f32), |(bi, bd), (i, d)| {
            if d > bd || d.is_nan() {
                (i, d)
            } else {
                (bi, bd)
            }
        });
    assert!(
        d <= tol,
        "{what}: component {i} is {} where {} was expected (|Δ| = {d:e} > {tol:e})",
        got[i],
        want[i]
    );
}

/// `max |got − want| / max |want|`, against a float64 reference.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Where one test body runs: a CPU algorithm, or the GPU (any adapter: lavapipe in CI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu(CpuAlgo),
    Gpu,
}

impl Device {
    pub fn name(self) -> String {
        match self {
            Device::Cpu(a) => format!("cpu {}", a.name()),
            Device::Gpu => "gpu".to_string(),
        }
    }

    /// The backend for this device with `weights` (2 CPU threads).
    pub fn backend(self, weights: Arc<Vgg16Weights>) -> Box<dyn Backend> {
        match self {
            Device::Cpu(algo) => Box::new(CpuBackend::with_algo(weights, 2, algo).unwrap()),
            #[cfg(feature = "gpu")]
            Device::Gpu => {
                use rmac_native::backend::gpu::{GpuBackend, GpuOptions, list_adapters};
                Box::new(
                    GpuBackend::new(weights, GpuOptions::default()).unwrap_or_else(|e| {
                        panic!(
                            "cannot open a GPU adapter: {e}; adapters: {:?}",
                            list_adapters()
                        )
                    }),
                )
            }
            #[cfg(not(feature = "gpu"))]
            Device::Gpu => {
                unreachable!("test_device! generates no GPU test without the gpu feature")
            }
        }
    }
}

/// One `#[test]` per device for `fn $body(device: Device)`: every CPU algorithm
/// (`im2col` is the reference) and, with the `gpu` feature, the GPU — as
/// candle's `test_device!` runs one body over every device.
#[macro_export]
macro_rules! test_device {
    ($body:ident) => {
        test_device!(@ $body, im2col Im2col, packed Packed, winograd2 Winograd2, winograd4 Winograd4, auto Auto);
    };
    (@ $body:ident, $($name:ident $algo:ident),*) => {
        mod $body {
            use super::*;
            $(
                #[test]
                fn $name() {
                    super::$body(Device::Cpu(rmac_native::backend::CpuAlgo::$algo))
                }
            )*
            #[cfg(feature = "gpu")]
            #[test]
            fn gpu() {
                super::$body(Device::Gpu)
            }
        }
    };
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
