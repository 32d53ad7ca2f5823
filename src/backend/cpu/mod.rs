//! VGG16 on the CPU, one [`CpuAlgo`] per backend.
//!
//! The default ([`CpuAlgo::Auto`]) runs conv1_1 (3 input channels) as a direct
//! AVX-512/AVX2 kernel ([`direct`]) and every other layer as Winograd
//! ([`winograd`]: F(2×2) in block 1, F(4×4) in blocks 2–5) on the packed GEMM
//! kernel ([`kernel`]), with per-layer weights prepared once at load. Bias, ReLU
//! and the 2×2 max-pool are fused into the conv that precedes them.
//!
//! The plain reference every fast path is tested against is [`CpuAlgo::Im2col`]:
//! tiled im2col + `matrixmultiply` sgemm ([`conv`], [`reference`]). Its memory is
//! bounded by tiling: a tile's im2col buffer never exceeds
//! [`conv::PATCH_BUDGET_BYTES`], whatever the image size, and the full-resolution
//! output of a conv followed by a pool is never stored.
pub mod buffers;
pub mod conv;
pub mod direct;
pub mod kernel;
pub mod packed;
pub mod reference;
pub mod winograd;

use super::{Backend, BackendError};
use crate::tensor::Tensor3;
use crate::vgg16::spec::{ConvSpec, FEATURE_DIM};
use crate::vgg16::weights::Vgg16Weights;
use buffers::Buffers;
use direct::DirectLayer;
use kernel::Isa;
use packed::PackedLayer;
use rayon::prelude::*;
use std::sync::Arc;
use winograd::{Tile, WinogradLayer};

/// How the CPU backend convolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CpuAlgo {
    /// The reference: tiled im2col + `matrixmultiply` sgemm, every layer.
    Im2col,
    /// im2col + the packed AVX-512/AVX2 kernel, every layer.
    Packed,
    /// Winograd F(2×2, 3×3) (conv1_1, with 3 input channels, direct).
    Winograd2,
    /// Winograd F(4×4, 3×3) (conv1_1 direct).
    Winograd4,
    /// The fastest mix whose accuracy was measured to stay well inside the
    /// contract's bound (docs/contract.md#tolerance; see [`CpuAlgo::auto_plan`]).
    #[default]
    Auto,
}

impl CpuAlgo {
    pub const ALL: [CpuAlgo; 5] = [
        CpuAlgo::Auto,
        CpuAlgo::Winograd4,
        CpuAlgo::Winograd2,
        CpuAlgo::Packed,
        CpuAlgo::Im2col,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CpuAlgo::Im2col => "im2col",
            CpuAlgo::Packed => "packed",
            CpuAlgo::Winograd2 => "winograd2",
            CpuAlgo::Winograd4 => "winograd4",
            CpuAlgo::Auto => "auto",
        }
    }

    pub fn parse(name: &str) -> Option<CpuAlgo> {
        CpuAlgo::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The kind of each layer under this algorithm.
    fn kind(self, spec: &ConvSpec) -> LayerKind {
        let small_cin = spec.cin < 16;
        match self {
            CpuAlgo::Im2col => LayerKind::Im2col,
            CpuAlgo::Packed => LayerKind::Packed,
            _ if small_cin => LayerKind::Direct,
            CpuAlgo::Winograd2 => LayerKind::Winograd(Tile::F2),
            CpuAlgo::Winograd4 => LayerKind::Winograd(Tile::F4),
            CpuAlgo::Auto => Self::auto_plan(spec),
        }
    }

    /// `Auto`: conv1_1 (3 input channels) direct ([`direct`]); the other
    /// layers Winograd.
    fn auto_plan(spec: &ConvSpec) -> LayerKind {
        if spec.cin < 16 {
            LayerKind::Direct
        } else if spec.block == 1 {
            LayerKind::Winograd(Tile::F2)
        } else {
            LayerKind::Winograd(Tile::F4)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LayerKind {
    Im2col,
    Packed,
    /// Direct convolution (few input channels; see [`direct`]).
    Direct,
    Winograd(Tile),
}

/// One layer's weights as its algorithm wants them (prepared once, at load).
enum Prepared {
    Im2col,
    Packed(PackedLayer),
    Direct(DirectLayer),
    Winograd(WinogradLayer),
}

/// The CPU backend: the weights (shared, loaded once), the per-layer prepared
/// weights of the chosen algorithm, and a thread pool.
pub struct CpuBackend {
    weights: Arc<Vgg16Weights>,
    prepared: Vec<Prepared>,
    algo: CpuAlgo,
    isa: Isa,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Layer outputs reused between layers and images (see [`buffers`]).
    buffers: Buffers,
}

impl CpuBackend {
    /// The default algorithm ([`CpuAlgo::Auto`]); `threads == 0` means all
    /// available cores. Another algorithm is [`Self::with_algo`].
    pub fn new(weights: Arc<Vgg16Weights>, threads: usize) -> Result<Self, BackendError> {
        Self::with_algo(weights, threads, CpuAlgo::Auto)
    }

    /// A backend running `algo`; `threads == 0` means all available cores.
    pub fn with_algo(
        weights: Arc<Vgg16Weights>,
        threads: usize,
        algo: CpuAlgo,
    ) -> Result<Self, BackendError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rmac-cpu-{i}"))
            .build()
            .map_err(|e| {
                BackendError::Device(format!("cannot start {threads} CPU threads: {e}"))
            })?;
        let prepared: Vec<Prepared> = pool.install(|| {
            weights
                .layers
                .par_iter()
                .map(|layer| match algo.kind(&layer.spec) {
                    LayerKind::Im2col => Prepared::Im2col,
                    LayerKind::Packed => Prepared::Packed(PackedLayer::new(layer)),
                    LayerKind::Direct if DirectLayer::supports(layer) => {
                        Prepared::Direct(DirectLayer::new(layer))
                    }
                    LayerKind::Direct => Prepared::Packed(PackedLayer::new(layer)),
                    LayerKind::Winograd(tile) => {
                        Prepared::Winograd(WinogradLayer::new(layer, tile))
                    }
                })
                .collect()
        });
        let mut weights = weights;
        if !prepared.iter().any(|p| matches!(p, Prepared::Im2col)) {
            // Every layer has its own prepared copy now: free the raw kernels
            // (59 MB for VGG16) when no one else holds them; specs and biases stay.
            if let Some(raw) = Arc::get_mut(&mut weights) {
                raw.layers.iter_mut().for_each(|l| l.kernel = Vec::new());
            }
        }
        Ok(CpuBackend {
            weights,
            prepared,
            algo,
            isa: kernel::detect(),
            pool,
            threads,
            buffers: Buffers::default(),
        })
    }

    pub fn algo(&self) -> CpuAlgo {
        self.algo
    }

    /// Bytes of weights prepared for the fast paths (beyond the shared weights).
    pub fn prepared_bytes(&self) -> usize {
        self.prepared
            .iter()
            .map(|p| match p {
                Prepared::Im2col => 0,
                Prepared::Packed(l) => l.weight_bytes(),
                Prepared::Direct(l) => l.weight_bytes(),
                Prepared::Winograd(l) => l.weight_bytes(),
            })
            .sum()
    }

    /// Layer `i` (in [`crate::vgg16::spec::VGG16_CONVS`] order, its pool
    /// included) on `x`, as this backend runs it; used by benchmarks.
    pub fn forward_layer(&self, x: &Tensor3, i: usize) -> Tensor3 {
        self.layer(x, i)
    }

    /// One layer on the backend's pool, its output in a reused buffer.
    fn layer(&self, x: &Tensor3, i: usize) -> Tensor3 {
        let threads = self.threads;
        let spec = &self.weights.layers[i].spec;
        let (oh, ow) = if spec.pool_after {
            (x.h / 2, x.w / 2)
        } else {
            (x.h, x.w)
        };
        let storage = || self.buffers.take(oh * ow * spec.cout);
        self.pool.install(|| match &self.prepared[i] {
            Prepared::Im2col => conv::conv3x3_relu(x, &self.weights.layers[i], threads),
            Prepared::Packed(l) => l.forward(x, storage(), threads, self.isa),
            Prepared::Direct(l) => l.forward(x, storage(), self.isa),
            Prepared::Winograd(l) => l.forward(x, storage(), threads, self.isa),
        })
    }

    /// The result leaves the backend in an exact-size copy: its pooled
    /// buffer may be far larger (an earlier layer's) and stays here for reuse.
    fn hand_out(&self, x: Tensor3) -> Tensor3 {
        let out = Tensor3::from_vec(x.h, x.w, x.c, x.data.clone());
        self.recycle(x);
        out
    }

    /// `x` is no longer needed: its storage goes back to the pool.
    fn recycle(&self, x: Tensor3) {
        self.buffers.give(x.data);
    }

    /// Fills the reused buffers with `value` (tests: NaN exposes any output
    /// element a layer leaves unwritten).
    pub fn poison_buffers(&self, value: f32) {
        self.buffers.poison(value);
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs the 13 convolutions (with their pools) and returns every stage's
    /// output to `observe` (layer index, output); used by benchmarks.
    pub fn forward_observed(
        &self,
        input: &Tensor3,
        mut observe: impl FnMut(usize, &Tensor3),
    ) -> Result<Tensor3, BackendError> {
        if input.h < 32 || input.w < 32 {
            return Err(BackendError::TooSmall {
                h: input.h,
                w: input.w,
            });
        }
        assert_eq!(input.c, 3, "VGG16 input must have 3 channels");
        let mut x = self.layer(input, 0);
        observe(0, &x);
        for i in 1..self.weights.layers.len() {
            let next = self.layer(&x, i);
            self.recycle(std::mem::replace(&mut x, next));
            observe(i, &x);
        }
        debug_assert_eq!(x.c, FEATURE_DIM);
        Ok(self.hand_out(x))
    }
}

/// Input rows per band when block 1 runs in bands (see [`CpuBackend::forward`]).
pub const BLOCK1_BAND_ROWS: usize = 96;

impl CpuBackend {
    /// conv1_1 … pool5 as [`CpuBackend::forward_observed`] computes it, except
    /// that on the fast paths block 1 (conv1_1, conv1_2, pool1) runs in bands
    /// of [`BLOCK1_BAND_ROWS`] input rows with a 2-row halo on each side, so the
    /// full-resolution 64-channel conv1_1 map (200 MB at 1024×768) never
    /// exists; the halo rows are recomputed (≈4% of block 1). Same values:
    /// each band's interior rows see exactly the inputs the whole image gives them.
    pub fn forward(&self, input: &Tensor3) -> Result<Tensor3, BackendError> {
        if self.algo == CpuAlgo::Im2col || input.h <= BLOCK1_BAND_ROWS + 4 {
            return self.forward_observed(input, |_, _| {});
        }
        if input.h < 32 || input.w < 32 {
            return Err(BackendError::TooSmall {
                h: input.h,
                w: input.w,
            });
        }
        let (h, w, c) = (input.h, input.w, input.c);
        let n = self.weights.layers[1].spec.cout;
        let (ho, wo) = (h / 2, w / 2);
        // Every pooled row is written by exactly one band.
        let mut pool1 = Tensor3::reuse(ho, wo, n, self.buffers.take(ho * wo * n));
        let mut s = 0;
        while s < 2 * ho {
            let e = (s + BLOCK1_BAND_ROWS).min(2 * ho);
            let (bs, be) = (s.saturating_sub(2), (e + 2).min(h));
            let mut band = Tensor3::reuse(be - bs, w, c, self.buffers.take((be - bs) * w * c));
            band.data
                .copy_from_slice(&input.data[bs * w * c..be * w * c]);
            let conv1 = self.layer(&band, 0);
            self.recycle(band);
            let x = self.layer(&conv1, 1);
            self.recycle(conv1);
            // Band pooled row p is global pooled row bs/2 + p (bs is even).
            let (p0, p1) = (s / 2 - bs / 2, e / 2 - bs / 2);
            pool1.data[(s / 2) * wo * n..(e / 2) * wo * n]
                .copy_from_slice(&x.data[p0 * wo * n..p1 * wo * n]);
            self.recycle(x);
            s = e;
        }
        let mut x = pool1;
        for i in 2..self.weights.layers.len() {
            let next = self.layer(&x, i);
            self.recycle(std::mem::replace(&mut x, next));
        }
        Ok(self.hand_out(x))
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!(
            "cpu ({}, {})",
            crate::text::plural(self.threads, "thread"),
            self.algo.name()
        )
    }

    fn pool5(&mut self, input: &Tensor3) -> Result<Tensor3, BackendError> {
        self.forward(input)
    }
}
