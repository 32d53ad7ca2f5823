//! `weights …` and `pca …`: importing and checking weights files.

use crate::cli::resolve::Env;
use crate::cli::{PcaCommand, WeightsCommand};
use anyhow::{Context, Result};
use rmac_native::vgg16::spec::VGG16_CONVS;
use rmac_native::vgg16::weights::Vgg16Weights;

/// `weights …`.
pub fn weights(cmd: &WeightsCommand) -> Result<()> {
    match cmd {
        WeightsCommand::Import {
            file,
            output,
            allow_unverified,
            convention,
        } => {
            // Keras .h5 (by extension or HDF5 signature), else the ONNX wheel/model.
            let is_h5 = file.extension().is_some_and(|e| {
                e.eq_ignore_ascii_case("h5")
                    || e.eq_ignore_ascii_case("hdf5")
                    || e.eq_ignore_ascii_case("keras")
            }) || rmac_native::vgg16::import_h5::is_hdf5(file);
            let (weights, report) = if is_h5 {
                let (w, r) =
                    rmac_native::vgg16::import_h5::import_h5(file, convention.map(Into::into))?;
                (w, r.to_string())
            } else {
                if convention.is_some() {
                    anyhow::bail!(
                        "--convention applies to Keras .h5 files only; {} is not one",
                        file.display()
                    );
                }
                let (w, r) = rmac_native::vgg16::import_onnx::import_onnx(file, *allow_unverified)?;
                (w, r.to_string())
            };
            if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            weights.save(output)?;
            eprintln!("{report}");
            eprintln!("wrote {}", output.display());
            Ok(())
        }
        WeightsCommand::Check { file } => {
            let weights = Vgg16Weights::load(file)?;
            for (layer, spec) in weights.layers.iter().zip(VGG16_CONVS.iter()) {
                let (lo, hi) = layer
                    .kernel
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                println!(
                    "{:<13} kernel [3, 3, {}, {}] in [{lo:.4}, {hi:.4}], bias [{}]",
                    spec.name, spec.cin, spec.cout, spec.cout
                );
            }
            println!("{}: all 13 layers present and valid", file.display());
            Ok(())
        }
        WeightsCommand::Synthetic { seed, output, pca } => {
            // The same generator as the tests and `bench` (mirrored in
            // tests/reference/synthetic.py for the Keras fixtures).
            rmac_native::vgg16::synthetic::vgg16(*seed).save(output)?;
            eprintln!(
                "wrote {} (synthetic, seed {seed}: not a model)",
                output.display()
            );
            if let Some(pca) = pca {
                rmac_native::rmac::pca::synthetic(*seed).save(pca)?;
                eprintln!("wrote {} (synthetic PCA, seed {seed})", pca.display());
            }
            Ok(())
        }
    }
}

/// `pca …`.
pub fn pca(cmd: &PcaCommand, env: &Env) -> Result<()> {
    match cmd {
        PcaCommand::Fit(args) => super::pca_fit::pca_fit(args, env),
        PcaCommand::Import { file, output } => {
            let pca = rmac_native::rmac::import_mat::import_pca_mat(file)?;
            pca.save(output)?;
            eprintln!(
                "wrote {} (512×512 weight, 512 bias) from {}",
                output.display(),
                file.display()
            );
            Ok(())
        }
    }
}
