//! The compute device behind one trait: the rest of the code never asks which
//! backend it has.
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod select;

pub use cpu::{CpuAlgo, CpuBackend};
pub use select::{BackendChoice, EngineOptions, GpuOptions, open_backend, refuse_software_gpu};

use crate::tensor::Tensor3;

/// A failure of the forward pass for one image (the batch goes on).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "image too small: {h}×{w} px gives an empty pool5 map (each side needs at least 32 px after resizing)"
    )]
    TooSmall { h: usize, w: usize },
    #[error("{0}")]
    Device(String),
}

/// VGG16 conv1_1 … pool5.
pub trait Backend: Send {
    /// Short name for logs (`cpu`, `gpu (NVIDIA H100 …)`).
    fn name(&self) -> String;

    /// Runs the convolution base on a preprocessed image (HWC, BGR, mean
    /// subtracted, `c == 3`) and returns the pool5 map (HWC, `c == 512`).
    fn pool5(&mut self, input: &Tensor3) -> Result<Tensor3, BackendError>;
}
