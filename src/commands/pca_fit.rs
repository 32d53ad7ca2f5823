//! `pca fit`: learn PCA-whitening from the region vectors of a set of images.

use crate::cli::PcaFitArgs;
use crate::cli::resolve::{Env, config};
use anyhow::{Context, Result, bail};
use rmac_native::backend::open_backend;
use rmac_native::image::decode::DecodeLimits;
use rmac_native::inputs::read_inputs;
use rmac_native::rmac::rmac_pooled;
use rmac_native::rmac::whiten::{EIGEN_FLOOR_REL, FitOptions, WhiteningAccumulator};
use rmac_native::run::coordinator::progress::Progress;
use rmac_native::run::pipeline::{Job, run_pipeline};
use rmac_native::vgg16::spec::FEATURE_DIM;
use rmac_native::vgg16::weights::Vgg16Weights;
use rmac_native::video::{Sampling, expand};
use std::sync::Arc;

/// `pca fit …`: images → pool5 → per region max → L2 → streaming statistics →
/// whitening → safetensors. Images that fail are skipped with a message.
pub fn pca_fit(args: &PcaFitArgs, env: &Env) -> Result<()> {
    if !(args.shrink.is_finite() && args.shrink >= 0.0) {
        bail!(
            "--shrink {}: give a number ≥ 0 (0: plain whitening; 0.1 to 1 bounds the noise of small training sets)",
            args.shrink
        );
    }
    let mut inputs = read_inputs(&args.input)?;
    if let Some(n) = args.sample {
        let listed = inputs.paths.len();
        if (n as usize) < listed {
            let keep = sample_indices(listed, n as usize, args.seed);
            let mut all = std::mem::take(&mut inputs.paths).into_iter().enumerate();
            inputs.paths = keep
                .into_iter()
                .map(|i| all.find(|(j, _)| *j == i).expect("indices increase").1)
                .collect();
            eprintln!(
                "learning from {n} of the {listed} listed images (--sample {n} --seed {})",
                args.seed
            );
        }
    }
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
    let config = config(&args.model, DecodeLimits::default())?;
    let (levels, pooling) = (config.levels, config.pooling);
    let mut acc = WhiteningAccumulator::new();
    let (mut used, mut skipped) = (0usize, 0usize);
    let total = inputs.paths.len();
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    for (id, path) in inputs.paths.iter().enumerate() {
        jobs_tx.send(Job::new(id as u64, path.clone()))?;
    }
    drop(jobs_tx);
    // A bar with ETA on a terminal, a plain line every 30 s in a batch log
    // (the network pass is the slow part: ~1 s an image on a CPU at 1024 px).
    let mut progress = Progress::new(total);
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
                |pool5s: &[_]| {
                    pool5s
                        .iter()
                        .flat_map(|p| rmac_pooled(p, levels, pooling, None).region_vectors)
                        .collect::<Vec<_>>()
                },
                jobs_rx,
                results_tx,
            )
        });
        for done in results_rx {
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
                    progress.println(&format!("skipped {p}: {e}"));
                }
            }
            progress.inc();
            progress
                .bar
                .set_message(format!("{} region vectors", acc.count()));
        }
        progress.bar.finish_and_clear();
        Ok(())
    })?;
    if used == 0 {
        bail!("none of the {total} images could be used");
    }
    let options = FitOptions {
        shrink: args.shrink,
        dim: args.dim.map(|d| d as usize),
    };
    let fit = acc
        .finish_with(options)
        .context("cannot fit the PCA-whitening")?;
    if fit.mean.len() != FEATURE_DIM {
        bail!(
            "region vectors have {} dimensions, the PCA file needs {FEATURE_DIM}",
            fit.mean.len()
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
        "wrote {}: PCA-whitening to {} dimensions from {} region vectors of {used} images ({skipped} skipped); \
         eigenvalues {:.3e} … {:.3e}{}",
        args.output.display(),
        fit.pca.dim(),
        fit.count,
        fit.eigenvalues[0],
        fit.eigenvalues[fit.eigenvalues.len() - 1],
        if args.shrink > 0.0 {
            format!(
                ", each shrunk by +{:.3e} (--shrink {})",
                fit.shrinkage, args.shrink
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `n` of the indices `0..len`, drawn without replacement, increasing, the same
/// for the same `(len, n, seed)`: selection sampling (Knuth's Algorithm S: index
/// i is taken with probability still-needed / still-left), one splitmix64
/// number per index, so the draw needs no memory beyond its result.
fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // The top 53 bits: a uniform f64 in [0, 1).
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(n.min(len));
    for i in 0..len {
        let (needed, left) = (n - out.len(), len - i);
        if needed == 0 {
            break;
        }
        if (left as f64) * next() < needed as f64 {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sample_indices;

    #[test]
    fn samples_are_exact_in_size_reproducible_and_spread() {
        for (len, n) in [(10, 10), (10, 3), (1000, 17), (5, 1)] {
            let a = sample_indices(len, n, 7);
            assert_eq!(a.len(), n);
            assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|&i| i < len));
            assert_eq!(a, sample_indices(len, n, 7));
        }
        assert_ne!(sample_indices(1000, 17, 7), sample_indices(1000, 17, 8));
        // Every index about equally likely: 2000 draws of 100 from 1000, per-tenth counts.
        let mut tenths = [0usize; 10];
        for seed in 0..2000 {
            for i in sample_indices(1000, 100, seed) {
                tenths[i / 100] += 1;
            }
        }
        for c in tenths {
            assert!((19_000..21_000).contains(&c), "{tenths:?}");
        }
    }
}
