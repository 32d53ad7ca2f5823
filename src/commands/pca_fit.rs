//! `pca fit`: learn PCA-whitening from the region vectors of a set of images.

use crate::backend::select::open_backend;
use crate::cli::PcaFitArgs;
use crate::extractor::{ExtractConfig, Extractor, prepare_path};
use crate::rmac::whiten::{EIGEN_FLOOR_REL, WhiteningAccumulator};
use crate::run::inputs::read_inputs;
use crate::vgg16::spec::FEATURE_DIM;
use crate::vgg16::weights::Vgg16Weights;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;

/// `pca fit …`: images → pool5 → per region max → L2 → streaming statistics →
/// whitening → safetensors. Images that fail are skipped with a message.
pub fn pca_fit(args: &PcaFitArgs) -> Result<()> {
    let inputs = read_inputs(&args.input)?;
    if inputs.paths.is_empty() {
        bail!("{} lists no images", args.input.display());
    }
    let weights = Arc::new(Vgg16Weights::load(&args.weights)?);
    let backend = open_backend(args.backend, weights, args.threads)?;
    let config = ExtractConfig {
        max_size: args.max_size,
        levels: args.levels as usize,
        preprocess: args.preprocess,
        ..ExtractConfig::default()
    };
    let mut extractor = Extractor::new(backend, None, config.clone());
    let mut acc = WhiteningAccumulator::new();
    let (mut used, mut skipped) = (0usize, 0usize);
    let total = inputs.paths.len();
    std::thread::scope(|scope| -> Result<()> {
        // Decoding and resizing run ahead in their own thread (as in `extract`),
        // so a GPU is not kept waiting for the CPU.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let (paths, decode_config) = (&inputs.paths, &config);
        scope.spawn(move || {
            for p in paths {
                if tx
                    .send((p, prepare_path(Path::new(p), decode_config)))
                    .is_err()
                {
                    break;
                }
            }
        });
        for (i, (p, prepared)) in rx.into_iter().enumerate() {
            let result = prepared.and_then(|prep| extractor.describe_prepared_parts(&prep));
            match result {
                Ok((_, parts)) => {
                    // Without PCA, region_vectors are the L2-normalised region maxima.
                    for v in &parts.region_vectors {
                        acc.add(v)
                            .with_context(|| format!("{p}: unusable region vector"))?;
                    }
                    used += 1;
                }
                Err(e) => {
                    skipped += 1;
                    eprintln!("skipped {p}: {e}");
                }
            }
            if (i + 1) % 100 == 0 {
                eprintln!("{}/{total} images, {} region vectors", i + 1, acc.count());
            }
        }
        Ok(())
    })?;
    if used == 0 {
        bail!("none of the {total} images could be used");
    }
    let fit = acc.finish().context("cannot fit the PCA-whitening")?;
    if fit.pca.bias.len() != FEATURE_DIM {
        bail!(
            "region vectors have {} dimensions, the PCA file needs {FEATURE_DIM}",
            fit.pca.bias.len()
        );
    }
    if fit.clamped > 0 {
        eprintln!(
            "note: {} of {} eigenvalues were below {EIGEN_FLOOR_REL:e} × the largest ({:.3e}) and were clamped to it \
             (too few vectors, or channels that are constant); more, varied images avoid this",
            fit.clamped,
            fit.eigenvalues.len(),
            fit.floor
        );
    }
    fit.pca.save(&args.output)?;
    eprintln!(
        "wrote {}: PCA-whitening from {} region vectors of {used} images ({skipped} skipped); eigenvalues {:.3e} … {:.3e}",
        args.output.display(),
        fit.count,
        fit.eigenvalues[0],
        fit.eigenvalues[fit.eigenvalues.len() - 1]
    );
    Ok(())
}
