//! `pca fit`: learn PCA-whitening from the region vectors of a set of images.

use crate::cli::PcaFitArgs;
use crate::cli::resolve::{Env, config};
use anyhow::{Context, Result, bail};
use rmac_native::backend::open_backend;
use rmac_native::image::decode::DecodeLimits;
use rmac_native::inputs::read_inputs;
use rmac_native::rmac::rmac;
use rmac_native::rmac::whiten::{EIGEN_FLOOR_REL, WhiteningAccumulator};
use rmac_native::run::pipeline::{Job, run_pipeline};
use rmac_native::vgg16::spec::FEATURE_DIM;
use rmac_native::vgg16::weights::Vgg16Weights;
use rmac_native::video::{Sampling, expand};
use std::sync::Arc;

/// `pca fit …`: images → pool5 → per region max → L2 → streaming statistics →
/// whitening → safetensors. Images that fail are skipped with a message.
pub fn pca_fit(args: &PcaFitArgs, env: &Env) -> Result<()> {
    let mut inputs = read_inputs(&args.input)?;
    // Videos give their frames at the default sampling (one per second), as `extract`'s.
    let expanded = expand(
        std::mem::take(&mut inputs.paths),
        Sampling::default(),
        &DecodeLimits::default(),
    );
    inputs.paths = expanded.paths;
    inputs.rejected.extend(expanded.rejected);
    for (path, why) in &inputs.rejected {
        eprintln!("skipped {path}: {why}");
    }
    if inputs.paths.is_empty() {
        bail!("{} lists no images", args.input.display());
    }
    let weights = Arc::new(Vgg16Weights::load(
        &env.weights(args.model.weights.as_deref())?,
    )?);
    let (choice, engine) = env.engine(&args.engine)?;
    let mut backend = open_backend(choice, weights, &engine)?;
    let config = config(&args.model, DecodeLimits::default());
    let levels = config.levels;
    let mut acc = WhiteningAccumulator::new();
    let (mut used, mut skipped) = (0usize, 0usize);
    let total = inputs.paths.len();
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    for (id, path) in inputs.paths.iter().enumerate() {
        let path = path.clone();
        jobs_tx.send(Job {
            id: id as u64,
            path,
        })?;
    }
    drop(jobs_tx);
    std::thread::scope(|scope| -> Result<()> {
        // The same decode-ahead pipeline as `extract`, so a GPU is not kept
        // waiting for the CPU; the head keeps the region vectors (without PCA:
        // the L2-normalised region maxima) instead of the final vector.
        let (results_tx, results_rx) = std::sync::mpsc::channel();
        let backend = backend.as_mut();
        let config = &config;
        scope.spawn(move || {
            run_pipeline(
                backend,
                config,
                |pool5| rmac(pool5, levels, None).region_vectors,
                jobs_rx,
                results_tx,
            )
        });
        for (i, done) in results_rx.into_iter().enumerate() {
            let p = &inputs.paths[done.id as usize];
            match done.result {
                Ok(region_vectors) => {
                    for v in &region_vectors {
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
