//! The public API: one loaded model that turns images into R-MAC vectors.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use rmac_native::{Extractor, ExtractConfig, backend::CpuBackend, vgg16::weights::Vgg16Weights};
//! let weights = Arc::new(Vgg16Weights::load("weights/vgg16.safetensors".as_ref()).unwrap());
//! let backend = CpuBackend::new(weights, 0).unwrap();
//! let mut ex = Extractor::new(Box::new(backend), None, ExtractConfig::default());
//! let vector = ex.describe_path("photo.jpg".as_ref()).unwrap();
//! ```

use crate::backend::{Backend, BackendError};
use crate::image::decode::{DecodeError, DecodeLimits, load_rgb};
use crate::image::preprocess::{Preprocess, to_bgr_tensor};
use crate::image::resize::{resize_bicubic, target_size};
use crate::rmac::pca::PcaWeights;
use crate::rmac::{RmacParts, rmac};
use crate::tensor::Tensor3;
use crate::video::Sampling;
use std::path::Path;

/// The knobs of the numeric recipe (docs/contract.md#pipeline).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExtractConfig {
    /// Longest side after resizing (`--max-size`).
    pub max_size: u32,
    /// Region scales (`--levels`).
    pub levels: usize,
    pub preprocess: Preprocess,
    /// Decompression-bomb guard.
    #[serde(skip)]
    pub limits: DecodeLimits,
    /// Which frames of a video become records (`--fps`, `--every-frame`, `--keyframes`).
    #[serde(skip)]
    pub sampling: Sampling,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            max_size: 1024,
            levels: 3,
            preprocess: Preprocess::Keras,
            limits: DecodeLimits::default(),
            sampling: Sampling::default(),
        }
    }
}

/// Why one image got no vector. The Display text is what goes into the error file.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// A video frame that cannot be decoded or converted (docs/contract.md#videos).
    #[error("{0}")]
    Video(String),
    #[error(
        "--max-size {max_size} shrinks this {w}×{h} image to {nw}×{nh} px; each side needs at least 32 px for VGG16's five poolings (use a larger --max-size, or drop the image)"
    )]
    TooSmallAfterResize {
        w: u32,
        h: u32,
        nw: u32,
        nh: u32,
        max_size: u32,
    },
    #[error(
        "the image is {w}×{h} px; each side needs at least 32 px after resizing for VGG16's five poolings (a larger --max-size enlarges small images)"
    )]
    TooSmall { w: u32, h: u32 },
}

/// An image decoded, resized and preprocessed: what a backend eats.
pub struct Prepared {
    pub tensor: Tensor3,
    /// Size before resizing.
    pub original: (u32, u32),
}

/// Decode → resize → preprocess (the CPU-side stage; runs ahead of the backend).
pub fn prepare_path(path: &Path, config: &ExtractConfig) -> Result<Prepared, ExtractError> {
    let img = load_rgb(path, &config.limits)?;
    prepare_image(&img, config)
}

/// Resize → preprocess of an already decoded image.
pub fn prepare_image(
    img: &image::RgbImage,
    config: &ExtractConfig,
) -> Result<Prepared, ExtractError> {
    let (w, h) = img.dimensions();
    let (nw, nh) = target_size(w, h, config.max_size);
    if nw < 32 || nh < 32 {
        return Err(if (nw, nh) == (w, h) {
            ExtractError::TooSmall { w, h }
        } else {
            ExtractError::TooSmallAfterResize {
                w,
                h,
                nw,
                nh,
                max_size: config.max_size,
            }
        });
    }
    let tensor = if (nw, nh) == (w, h) {
        to_bgr_tensor(img, config.preprocess)
    } else {
        to_bgr_tensor(&resize_bicubic(img, nw, nh), config.preprocess)
    };
    Ok(Prepared {
        tensor,
        original: (w, h),
    })
}

/// The R-MAC head (regions, pooling, L2, PCA, sum, L2) of an [`Extractor`],
/// borrowed apart from its backend (see [`Extractor::stages`]).
#[derive(Clone, Copy)]
pub struct Head<'a> {
    levels: usize,
    pca: Option<&'a PcaWeights>,
}

impl Head<'_> {
    /// The 512-d R-MAC vector of a pool5 map.
    pub fn vector(&self, pool5: &Tensor3) -> Vec<f32> {
        rmac(pool5, self.levels, self.pca).vector
    }
}

/// A loaded model: backend (VGG16 weights live there), optional PCA, recipe.
pub struct Extractor {
    backend: Box<dyn Backend>,
    pca: Option<PcaWeights>,
    config: ExtractConfig,
}

impl Extractor {
    pub fn new(backend: Box<dyn Backend>, pca: Option<PcaWeights>, config: ExtractConfig) -> Self {
        Extractor {
            backend,
            pca,
            config,
        }
    }

    pub fn config(&self) -> &ExtractConfig {
        &self.config
    }

    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The R-MAC head with all intermediates, from a prepared image.
    pub fn describe_prepared_parts(
        &mut self,
        prepared: &Prepared,
    ) -> Result<(Tensor3, RmacParts), ExtractError> {
        let pool5 = self.backend.pool5(&prepared.tensor)?;
        let parts = rmac(&pool5, self.config.levels, self.pca.as_ref());
        Ok((pool5, parts))
    }

    /// The two stages apart, so a pipeline can run the R-MAC head of one
    /// image while the backend works on the next: the backend, and the head.
    pub fn stages(&mut self) -> (&mut dyn Backend, Head<'_>) {
        (
            self.backend.as_mut(),
            Head {
                levels: self.config.levels,
                pca: self.pca.as_ref(),
            },
        )
    }

    /// The 512-d R-MAC vector of a prepared image.
    pub fn describe_prepared(&mut self, prepared: &Prepared) -> Result<Vec<f32>, ExtractError> {
        Ok(self.describe_prepared_parts(prepared)?.1.vector)
    }

    /// The 512-d R-MAC vector of a decoded 8-bit RGB image.
    pub fn describe(&mut self, img: &image::RgbImage) -> Result<Vec<f32>, ExtractError> {
        let prepared = prepare_image(img, &self.config)?;
        self.describe_prepared(&prepared)
    }

    /// The 512-d R-MAC vector of an image file.
    pub fn describe_path(&mut self, path: &Path) -> Result<Vec<f32>, ExtractError> {
        let prepared = prepare_path(path, &self.config)?;
        self.describe_prepared(&prepared)
    }
}
