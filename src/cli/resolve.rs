//! Flags and environment → the library's settings. This is the only place the
//! process environment is read (docs/contract.md#environment):
//!
//! | variable | what it sets |
//! |---|---|
//! | `RMAC_CPU_ALGO` | the CPU backend's algorithm ([`CpuAlgo`]; default `auto`, `im2col` is the reference) |
//! | `RMAC_GPU_CONV` | the GPU conv shader variant, for A/B runs |
//! | `RMAC_PG_BATCH` | rows per PostgreSQL COPY batch (default 2000) |
//! | `RMAC_PG_RETRY_SECONDS` | how long a lost database connection is retried (default 300) |
//! | launcher variables | how many processes an MPI launcher started, and this one's rank on its node |

use super::args::*;
use anyhow::{Result, anyhow};
use rmac_native::backend::{BackendChoice, CpuAlgo, EngineOptions, GpuOptions};
use rmac_native::extractor::ExtractConfig;
use rmac_native::image::decode::DecodeLimits;
use rmac_native::image::preprocess::Preprocess;
use rmac_native::run::coordinator::mpi::{LAUNCHER_SIZE_VARS, LOCAL_RANK_VARS, Launcher};
use rmac_native::run::extract::ExtractJob;
use rmac_native::store::Target;
use rmac_native::store::postgres::{IndexKind, PgOptions};
use rmac_native::vgg16::import_h5::Convention;
use std::path::PathBuf;
use std::time::Duration;

/// The `RMAC_*` and launcher variables, read once.
#[derive(Clone, Debug, Default)]
pub struct Env {
    cpu_algo: Option<String>,
    gpu_conv: Option<String>,
    pg_batch: Option<String>,
    pg_retry_seconds: Option<String>,
    launcher: Launcher,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Env {
    pub fn read() -> Env {
        let size = LAUNCHER_SIZE_VARS.iter().find_map(|v| {
            var(v)
                .and_then(|s| s.trim().parse::<usize>().ok())
                .filter(|&n| n > 1)
                .map(|n| (*v, n))
        });
        let local_rank = LOCAL_RANK_VARS.iter().find_map(|v| var(v)?.parse().ok());
        Env {
            cpu_algo: var("RMAC_CPU_ALGO"),
            gpu_conv: var("RMAC_GPU_CONV"),
            pg_batch: var("RMAC_PG_BATCH"),
            pg_retry_seconds: var("RMAC_PG_RETRY_SECONDS"),
            launcher: Launcher { size, local_rank },
        }
    }

    /// `RMAC_CPU_ALGO` (e.g. `im2col` to run the reference path in production),
    /// or the default when unset or empty.
    fn cpu_algo(&self) -> Result<CpuAlgo> {
        match self.cpu_algo.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => CpuAlgo::parse(name).ok_or_else(|| {
                let names: Vec<&str> = CpuAlgo::ALL.iter().map(|a| a.name()).collect();
                anyhow!(
                    "RMAC_CPU_ALGO={:?} is not a CPU algorithm; use one of: {}",
                    self.cpu_algo.as_deref().unwrap_or_default(),
                    names.join(", ")
                )
            }),
            _ => Ok(CpuAlgo::default()),
        }
    }

    /// The PostgreSQL batch size and retry budget (a value that does not parse
    /// keeps the default).
    pub fn pg(&self) -> PgOptions {
        let default = PgOptions::default();
        PgOptions {
            batch: self
                .pg_batch
                .as_deref()
                .and_then(|s| s.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(default.batch),
            retry: self
                .pg_retry_seconds
                .as_deref()
                .and_then(|s| s.parse::<f64>().ok())
                .map_or(default.retry, |s| Duration::from_secs_f64(s.max(0.0))),
        }
    }

    #[cfg(feature = "gpu")]
    fn gpu_options(&self, args: &EngineArgs) -> Result<GpuOptions> {
        use rmac_native::backend::gpu::ConvChoice;
        let conv = match self.gpu_conv.as_deref() {
            None => ConvChoice::Auto,
            Some(v) => ConvChoice::parse(v).ok_or_else(|| {
                let more = if cfg!(feature = "dev") {
                    ""
                } else {
                    " (the slower A/B variants k16 and v1 need a build with `--features dev`)"
                };
                anyhow!(
                    "RMAC_GPU_CONV={v}: expected one of {}{more}",
                    ConvChoice::NAMES.join(", ")
                )
            })?,
        };
        Ok(GpuOptions {
            adapter_index: args.gpu,
            local_rank: self.launcher.local_rank,
            conv,
            ..GpuOptions::default()
        })
    }

    #[cfg(not(feature = "gpu"))]
    fn gpu_options(&self, args: &EngineArgs) -> Result<GpuOptions> {
        let _ = &self.gpu_conv;
        Ok(GpuOptions {
            adapter_index: args.gpu,
            local_rank: self.launcher.local_rank,
        })
    }

    /// The backend to open and the options to open it with.
    pub fn engine(&self, args: &EngineArgs) -> Result<(BackendChoice, EngineOptions)> {
        let choice = match args.backend {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Gpu => BackendChoice::Gpu,
        };
        let options = EngineOptions {
            threads: args.threads,
            cpu_algo: self.cpu_algo()?,
            gpu: self.gpu_options(args)?,
        };
        Ok((choice, options))
    }
}

impl From<PreprocessArg> for Preprocess {
    fn from(p: PreprocessArg) -> Self {
        match p {
            PreprocessArg::Keras => Preprocess::Keras,
            PreprocessArg::Caffe => Preprocess::Caffe,
        }
    }
}

impl From<ConventionArg> for Convention {
    fn from(c: ConventionArg) -> Self {
        match c {
            ConventionArg::Tf => Convention::Tf,
            ConventionArg::Th => Convention::Th,
        }
    }
}

impl From<IndexKindArg> for IndexKind {
    fn from(k: IndexKindArg) -> Self {
        match k {
            IndexKindArg::Hnsw => IndexKind::Hnsw,
            IndexKindArg::Ivfflat => IndexKind::Ivfflat,
        }
    }
}

/// The recipe of `model`, with the decoder's limits.
pub fn config(model: &ModelArgs, limits: DecodeLimits) -> ExtractConfig {
    ExtractConfig {
        max_size: model.max_size,
        levels: model.levels as usize,
        preprocess: model.preprocess.into(),
        limits,
    }
}

/// `--pca FILE` → `Some(FILE)`; `--pca none` → `None` (no whitening).
pub fn pca_path(args: &PcaArgs) -> Option<PathBuf> {
    (args.pca != "none").then(|| PathBuf::from(&args.pca))
}

/// `extract`'s flags → the job the library runs.
pub fn extract_job(args: &ExtractArgs, env: &Env) -> Result<ExtractJob> {
    let (backend, engine) = env.engine(&args.engine)?;
    Ok(ExtractJob {
        input: args.input.clone(),
        output: Target::for_output(args.output.clone())?,
        db: args.db.clone(),
        weights: args.model.weights.clone(),
        pca: pca_path(&args.pca),
        config: config(
            &args.model,
            DecodeLimits {
                max_pixels: args.max_pixels,
                max_file_bytes: args.max_file_bytes,
                max_time: Duration::from_secs_f64(args.decode_timeout),
            },
        ),
        backend,
        engine,
        restart: args.restart,
        pg: env.pg(),
        launcher: env.launcher.clone(),
    })
}
