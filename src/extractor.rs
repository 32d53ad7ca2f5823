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
use crate::rmac::{Pooling, RmacParts, rmac_multiscale, rmac_pooled};
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
    /// Images smaller than `max_size` keep their size (`--no-enlarge`; keras_rmac enlarges them).
    pub no_enlarge: bool,
    /// How each region is pooled (`--pool`, `--gem-p`; keras_rmac: max).
    pub pooling: Pooling,
    /// The image sizes described, as fractions of the longest side (`--scales`;
    /// keras_rmac: `[1.0]`). See [`scale_sizes`].
    pub scales: Vec<f64>,
    /// Decompression-bomb guard.
    #[serde(skip)]
    pub limits: DecodeLimits,
    /// Which frames of a video become records (`--fps`, `--every-frame`, `--keyframes`).
    #[serde(skip)]
    pub sampling: Sampling,
    /// `--skip-static D` (0 < D ≤ 255): a sampled video frame whose thumbnail
    /// differs from the last kept frame of its segment by a mean absolute
    /// difference below D is skipped before the network
    /// ([`crate::video::still`]). `None`: every sampled frame is described.
    #[serde(skip)]
    pub skip_static: Option<f64>,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            max_size: 1024,
            levels: 3,
            preprocess: Preprocess::Keras,
            no_enlarge: false,
            pooling: Pooling::Max,
            scales: vec![1.0],
            limits: DecodeLimits::default(),
            sampling: Sampling::default(),
            skip_static: None,
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
        "{resized_by} shrinks this {w}×{h} image to {nw}×{nh} px; each side needs at least 32 px for VGG16's five poolings ({advice})"
    )]
    TooSmallAfterResize {
        w: u32,
        h: u32,
        nw: u32,
        nh: u32,
        /// What set the size: `--max-size 512`, or `--scales 0.5 of 512 px`.
        resized_by: String,
        advice: &'static str,
    },
    #[error(
        "the image is {w}×{h} px; each side needs at least 32 px after resizing for VGG16's five poolings ({advice})"
    )]
    TooSmall {
        w: u32,
        h: u32,
        advice: &'static str,
    },
}

impl ExtractError {
    /// A `w × h` image that `config` would leave (or make) smaller than 32 px
    /// on a side at `scale`, resized to `nw × nh`: the message names what set
    /// that size and what would change it (not --max-size when --no-enlarge
    /// or a small scale is the cause).
    fn too_small(w: u32, h: u32, (nw, nh): (u32, u32), scale: f64, config: &ExtractConfig) -> Self {
        let kept = (nw, nh) == (w, h);
        if kept {
            let advice = if config.no_enlarge {
                "--no-enlarge keeps a small image at its size; without it, --max-size enlarges it"
            } else {
                "a larger --max-size enlarges small images"
            };
            return ExtractError::TooSmall { w, h, advice };
        }
        let base = if config.no_enlarge {
            config.max_size.min(w.max(h))
        } else {
            config.max_size
        };
        let (resized_by, advice) = if scale == 1.0 {
            (
                format!("--max-size {}", config.max_size),
                "use a larger --max-size, or drop the image",
            )
        } else {
            (
                format!("--scales {scale} of {base} px"),
                "use larger --scales, or drop the image",
            )
        };
        ExtractError::TooSmallAfterResize {
            w,
            h,
            nw,
            nh,
            resized_by,
            advice,
        }
    }
}

/// An image decoded, resized and preprocessed: what a backend eats.
pub struct Prepared {
    /// The image at the first scale (the only one without `--scales`).
    pub tensor: Tensor3,
    /// The image at the other scales, in `--scales` order (each resized from
    /// the decoded image, not from the one before).
    pub more_scales: Vec<Tensor3>,
    /// Size before resizing.
    pub original: (u32, u32),
}

impl Prepared {
    /// Every scale's tensor, the first one first.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor3> {
        std::iter::once(&self.tensor).chain(&self.more_scales)
    }
}

/// The size a `w × h` image is resized to at each of `config.scales`
/// (docs/contract.md#pipeline, step 2, and the opt-in recipe):
///
/// * the base side is L = `max_size`, or with `no_enlarge` the smaller of
///   `max_size` and the image's longest side (an image never grows);
/// * scale s describes the image at longest side S = round(s · L) (f64,
///   halves away from zero), with the default path's rule, [`target_size`]`(w, h, S)`.
///
/// With the defaults (one scale 1.0, enlarging) this is `target_size(w, h, max_size)`.
pub fn scale_sizes(w: u32, h: u32, config: &ExtractConfig) -> Vec<(u32, u32)> {
    let base = if config.no_enlarge {
        config.max_size.min(w.max(h))
    } else {
        config.max_size
    };
    scales_of(config)
        .iter()
        .map(|&s| {
            let side = (s * f64::from(base)).round().max(1.0) as u32;
            target_size(w, h, side)
        })
        .collect()
}

/// The scales to describe an image at: an empty list is the default, one
/// scale 1.0 (a library caller's `scales: vec![]` must not mean "no pass").
fn scales_of(config: &ExtractConfig) -> &[f64] {
    if config.scales.is_empty() {
        &[1.0]
    } else {
        &config.scales
    }
}

/// Decode → resize → preprocess (the CPU-side stage; runs ahead of the backend).
pub fn prepare_path(path: &Path, config: &ExtractConfig) -> Result<Prepared, ExtractError> {
    let img = load_rgb(path, &config.limits)?;
    prepare_image(&img, config)
}

/// Resize → preprocess of an already decoded image (once per scale). A scale
/// at which a side would fall under 32 px is left out; the image is an error
/// only when every scale is (the first scale's error).
pub fn prepare_image(
    img: &image::RgbImage,
    config: &ExtractConfig,
) -> Result<Prepared, ExtractError> {
    let (w, h) = img.dimensions();
    let sizes = scale_sizes(w, h, config);
    let mut tensors = Vec::with_capacity(sizes.len());
    let mut first_error = None;
    for (&(nw, nh), &scale) in sizes.iter().zip(scales_of(config)) {
        if nw < 32 || nh < 32 {
            first_error
                .get_or_insert_with(|| ExtractError::too_small(w, h, (nw, nh), scale, config));
            continue;
        }
        tensors.push(if (nw, nh) == (w, h) {
            to_bgr_tensor(img, config.preprocess)
        } else {
            to_bgr_tensor(&resize_bicubic(img, nw, nh), config.preprocess)
        });
    }
    let mut tensors = tensors.into_iter();
    let Some(tensor) = tensors.next() else {
        // At least one scale (scales_of), and a scale is left out only with its error.
        return Err(first_error.expect("a left-out scale records its error"));
    };
    Ok(Prepared {
        tensor,
        more_scales: tensors.collect(),
        original: (w, h),
    })
}

/// The R-MAC head (regions, pooling, L2, PCA, sum, L2) of an [`Extractor`],
/// borrowed apart from its backend (see [`Extractor::stages`]).
#[derive(Clone, Copy)]
pub struct Head<'a> {
    levels: usize,
    pooling: Pooling,
    pca: Option<&'a PcaWeights>,
}

impl Head<'_> {
    /// The R-MAC vector of an image's pool5 maps, one per scale (512-d, or
    /// the PCA's dimension).
    pub fn vector(&self, pool5s: &[Tensor3]) -> Vec<f32> {
        match pool5s {
            [one] => rmac_pooled(one, self.levels, self.pooling, self.pca).vector,
            all => rmac_multiscale(all, self.levels, self.pooling, self.pca).1,
        }
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

    /// Floats per vector: 512, or the PCA's dimension (`pca fit --dim`).
    pub fn dimension(&self) -> usize {
        self.pca
            .as_ref()
            .map_or(crate::vgg16::spec::FEATURE_DIM, PcaWeights::dim)
    }

    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The R-MAC head with all intermediates, from a prepared image's first
    /// scale.
    pub fn describe_prepared_parts(
        &mut self,
        prepared: &Prepared,
    ) -> Result<(Tensor3, RmacParts), ExtractError> {
        let pool5 = self.backend.pool5(&prepared.tensor)?;
        let parts = rmac_pooled(
            &pool5,
            self.config.levels,
            self.config.pooling,
            self.pca.as_ref(),
        );
        Ok((pool5, parts))
    }

    /// pool5 of every scale of a prepared image, through the one backend.
    pub fn pool5s(&mut self, prepared: &Prepared) -> Result<Vec<Tensor3>, ExtractError> {
        prepared
            .tensors()
            .map(|t| Ok(self.backend.pool5(t)?))
            .collect()
    }

    /// The two stages apart, so a pipeline can run the R-MAC head of one
    /// image while the backend works on the next: the backend, and the head.
    pub fn stages(&mut self) -> (&mut dyn Backend, Head<'_>) {
        (
            self.backend.as_mut(),
            Head {
                levels: self.config.levels,
                pooling: self.config.pooling,
                pca: self.pca.as_ref(),
            },
        )
    }

    /// The R-MAC vector of a prepared image (every scale).
    pub fn describe_prepared(&mut self, prepared: &Prepared) -> Result<Vec<f32>, ExtractError> {
        let pool5s = self.pool5s(prepared)?;
        Ok(self.stages().1.vector(&pool5s))
    }

    /// The R-MAC vector of a decoded 8-bit RGB image.
    pub fn describe(&mut self, img: &image::RgbImage) -> Result<Vec<f32>, ExtractError> {
        let prepared = prepare_image(img, &self.config)?;
        self.describe_prepared(&prepared)
    }

    /// The R-MAC vector of an image file.
    pub fn describe_path(&mut self, path: &Path) -> Result<Vec<f32>, ExtractError> {
        let prepared = prepare_path(path, &self.config)?;
        self.describe_prepared(&prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(w: u32, h: u32, config: &ExtractConfig) -> String {
        match prepare_image(&image::RgbImage::new(w, h), config) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    /// The too-small errors name what set the size, so the advice fits.
    #[test]
    fn too_small_messages_name_their_cause() {
        let base = ExtractConfig {
            max_size: 512,
            ..ExtractConfig::default()
        };
        let m = message(1000, 40, &base);
        assert!(
            m.starts_with("--max-size 512 shrinks this 1000×40 image to 512×21 px"),
            "{m}"
        );
        assert!(m.contains("use a larger --max-size"), "{m}");

        let small_scale = ExtractConfig {
            scales: vec![0.25],
            ..base.clone()
        };
        let m = message(1000, 200, &small_scale);
        assert!(
            m.starts_with("--scales 0.25 of 512 px shrinks this 1000×200 image to 128×26 px"),
            "{m}"
        );
        assert!(m.contains("use larger --scales"), "{m}");

        let kept = ExtractConfig {
            no_enlarge: true,
            ..base.clone()
        };
        let m = message(40, 20, &kept);
        assert!(m.starts_with("the image is 40×20 px"), "{m}");
        assert!(
            m.contains("--no-enlarge keeps a small image at its size"),
            "{m}"
        );
        // Without --no-enlarge the same image is enlarged to 512×256 and described.
        assert_eq!(message(40, 20, &base), "ok");
        // An empty scale list is one scale 1.0, not "no pass at all".
        let none = ExtractConfig {
            scales: vec![],
            ..base.clone()
        };
        assert_eq!(scale_sizes(40, 20, &none), scale_sizes(40, 20, &base));
        assert_eq!(message(1000, 40, &none), message(1000, 40, &base));
    }
}
