//! `extract`: the batch run, as one process or as N MPI ranks. Everything that
//! can fail before the first image fails here, on rank 0, before any rank
//! starts work (the other ranks wait for rank 0's go): the input list, the
//! output location and its lock, the weights, and the settings of what the
//! output already holds. Then rank 0 coordinates and every rank extracts
//! ([`super::coordinator`]).

use crate::backend::{BackendChoice, EngineOptions, open_backend, refuse_software_gpu};
use crate::extractor::{ExtractConfig, Extractor};
use crate::files::write_atomically;
use crate::inputs::{InputList, read_inputs};
use crate::rmac::pca::PcaWeights;
use crate::run::coordinator::mpi::{Launcher, default_threads};
use crate::run::coordinator::progress::human_duration;
use crate::run::coordinator::protocol::{TAG_FINISH, TAG_START, decode_code, encode_code};
use crate::run::coordinator::stats::{RankInfo, RunSummary};
use crate::run::coordinator::transport::{Transport, wait_for};
use crate::run::coordinator::{Work, coordinate, work};
use crate::run::ranks::{Place, RankEnd, on_ranks};
use crate::store::companions::{self, summary_path};
use crate::store::lock::{OutputLock, lock_output};
use crate::store::postgres::PgOptions;
use crate::store::settings::RunSettings;
use crate::store::{SinkOptions, Target, VectorSink, failed_before, open_sink};
use crate::text::plural;
use crate::vgg16::weights::Vgg16Weights;
use crate::video::{FrameIndex, FrameInfo, expand, is_video};
use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything an `extract` run needs, resolved by the caller.
#[derive(Clone, Debug)]
pub struct ExtractJob {
    /// A list file (one path per line) or a folder ([`crate::inputs`]).
    pub input: PathBuf,
    pub output: Target,
    /// A database written beside a file output (`--db`).
    pub db: Option<String>,
    /// Record the paths relative to this folder (`--root`), so that an index
    /// moves with its images; every listed path must lie under it.
    pub root: Option<PathBuf>,
    /// VGG16 weights (safetensors).
    pub weights: PathBuf,
    /// PCA-whitening (safetensors), or `None` for no whitening (`--pca none`).
    pub pca: Option<PathBuf>,
    /// The numeric recipe and the decoder's limits.
    pub config: ExtractConfig,
    pub backend: BackendChoice,
    /// `threads == 0`: the cores this rank may use, shared with the other
    /// ranks on its node ([`default_threads`]).
    pub engine: EngineOptions,
    /// Empty the output instead of resuming.
    pub restart: bool,
    pub pg: PgOptions,
    pub launcher: Launcher,
}

/// Loads the PCA file (`None`: no whitening, said once on stderr when `say`).
pub fn load_pca(pca: Option<&Path>, say: bool) -> Result<Option<PcaWeights>> {
    let Some(path) = pca else {
        if say {
            eprintln!(
                "note: --pca none: no PCA-whitening; vectors are sums of L2-normalised region maxima"
            );
        }
        return Ok(None);
    };
    if !path.exists() {
        bail!(
            "no PCA file at {}: import keras_rmac's PCAmatrices.mat with `rmac-native pca import PCAmatrices.mat`, \
             pass --pca FILE, or run without whitening with --pca none",
            path.display()
        );
    }
    Ok(Some(PcaWeights::load(path)?))
}

/// `extract`: as a plain process, an MPI singleton, or rank k of N.
pub fn extract(job: &ExtractJob) -> Result<RunSummary> {
    on_ranks(&job.launcher, |t, place| run(t, job, place))
}

/// Rank 0's checks, before anyone works: the list, the output location, the
/// weights and the settings of what OUT already holds.
struct Ready {
    /// The output with symlinks resolved (see [`Target::canonical`]).
    output: Target,
    paths: Vec<String>,
    /// Folder entries that cannot be jobs (see [`crate::inputs::InputList::rejected`]).
    rejected: Vec<(String, String)>,
    done: HashSet<String>,
    sink: Box<dyn VectorSink>,
    weights: Arc<Vgg16Weights>,
    pca: Option<PcaWeights>,
    settings: RunSettings,
    /// Listed paths already in the error file.
    failed_before: usize,
    /// The video frames among `paths` (what places them in `--skip-static` segments).
    frames: Arc<FrameIndex>,
    /// Keeps other runs off this output until this one ends (files only: a
    /// database serialises writers itself).
    _lock: Option<OutputLock>,
}

/// `path` made absolute without touching the file system, `.` and `..` resolved
/// by name (a symlinked folder is not followed: the paths stay as the user wrote them).
fn lexical_absolute(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `--root`: an existing folder, as an absolute path.
fn absolute_folder(root: &Path) -> Result<PathBuf> {
    if !root.is_dir() {
        bail!(
            "--root {}: not a folder; pass the folder that holds the images",
            root.display()
        );
    }
    lexical_absolute(root)
}

/// The listed paths relative to `root`; refused when one lies outside it.
fn relative_to(root: &Path, paths: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(paths.len());
    let mut outside = Vec::new();
    for p in paths {
        let abs = lexical_absolute(Path::new(p))?;
        match abs.strip_prefix(root) {
            Ok(rel) if !rel.as_os_str().is_empty() => out.push(rel.to_string_lossy().into_owned()),
            _ => outside.push(p.as_str()),
        }
    }
    if let Some(first) = outside.first() {
        bail!(
            "{} of the listed paths are not under --root {} (the first: {first}); pass a folder that holds \
             them all, or leave out --root to record the paths as listed",
            outside.len(),
            root.display()
        );
    }
    Ok(out)
}

/// Replaces the videos of `inputs` by their sampled frames (a video that
/// cannot be read becomes a rejected entry); returns how many videos were
/// listed and the frames' index.
fn expand_videos(inputs: &mut InputList, config: &ExtractConfig) -> (usize, FrameIndex) {
    if !inputs.paths.iter().any(|p| is_video(p)) {
        return (0, FrameIndex::new());
    }
    let t = std::time::Instant::now();
    let listed = std::mem::take(&mut inputs.paths);
    let expanded = expand(listed, config.sampling, &config.limits);
    inputs.paths = expanded.paths;
    inputs.rejected.extend(expanded.rejected);
    let skip = config
        .skip_static
        .map_or(String::new(), |d| format!(", --skip-static {d}"));
    eprintln!(
        "rmac-native: {} sampled ({}{skip}): {} listed in {}",
        plural(expanded.videos, "video"),
        config.sampling.name(),
        plural(expanded.frames.len(), "frame"),
        human_duration(t.elapsed().as_secs_f64()),
    );
    if expanded.same_key > 0 {
        eprintln!(
            "note: {} sampled frames share a millisecond with an earlier frame of their video; the first of each is kept",
            expanded.same_key
        );
    }
    (expanded.videos, expanded.frames)
}

fn preflight(job: &ExtractJob) -> Result<Ready> {
    refuse_software_gpu(job.backend, &job.engine)?;
    let mut inputs = read_inputs(&job.input)?;
    let root = job.root.as_deref().map(absolute_folder).transpose()?;
    let (videos, mut frames) = expand_videos(&mut inputs, &job.config);
    if let Some(root) = &root {
        let listed = std::mem::take(&mut inputs.paths);
        inputs.paths = relative_to(root, &listed)?;
        // The frames' records are keyed by the paths as recorded.
        for (before, after) in listed.iter().zip(&inputs.paths) {
            if let Some(info) = frames.remove(before) {
                let video = relative_to(root, std::slice::from_ref(&info.video))?.remove(0);
                frames.insert(after.clone(), FrameInfo { video, ..info });
            }
        }
        for (path, _) in &mut inputs.rejected {
            if let Ok(mut rel) = relative_to(root, std::slice::from_ref(path)) {
                *path = rel.remove(0);
            }
        }
    }
    if inputs.duplicates > 0 {
        eprintln!(
            "note: {} repeated paths in {} are extracted once",
            inputs.duplicates,
            job.input.display()
        );
    }
    if let Some(out) = job.output.file()
        && let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "cannot write {}: the output folder {} does not exist; create it or pass another --output",
            out.display(),
            dir.display()
        );
    }
    // One file under two names (a symlink) is one output: one lock, one set of companions.
    let output = job
        .output
        .canonical()
        .with_context(|| format!("cannot resolve the output path {}", job.output))?;
    if let Some(out) = output.file() {
        companions::claim(out)?;
        if let Ok(input) = std::fs::canonicalize(&job.input) {
            let written: Vec<PathBuf> = std::iter::once(out.to_path_buf())
                .chain(companions::all(out))
                .collect();
            if written.contains(&input) {
                bail!(
                    "--input {} is a file this run would write (its output {} or a file beside it); \
                     pass a different --output",
                    job.input.display(),
                    job.output
                );
            }
        }
    }
    let pca = load_pca(job.pca.as_deref(), true)?;
    let weights = Arc::new(Vgg16Weights::load(&job.weights)?);
    let mut settings = RunSettings::of(&job.weights, job.pca.as_deref(), &job.config)?;
    if let Some(root) = &root {
        settings.base = Some(root.to_string_lossy().into_owned());
    }
    if videos > 0 {
        settings.video_sampling = Some(job.config.sampling.name());
        settings.skip_static = job.config.skip_static;
    }
    // Before the output is opened: `--restart` must not truncate another run's file.
    let lock = match output.file() {
        Some(out) => lock_output(out)?,
        None => None,
    };
    // A database records the settings itself (table rmac_runs) and refuses to mix them.
    let frames = Arc::new(frames);
    let options = SinkOptions {
        restart: job.restart,
        settings: Some(settings.clone()),
        pg: job.pg.clone(),
        frames: frames.clone(),
        dimension: None,
    };
    let (sink, done) = open_sink(&output, job.db.as_deref(), &options)?;
    let already = inputs.paths.iter().filter(|p| done.contains(*p)).count();
    if done.len() > already {
        eprintln!(
            "note: {} holds {} images that are not in this input list; they are kept",
            job.output,
            done.len() - already
        );
    }
    let failed_before = if done.is_empty() {
        0
    } else {
        let mut listed = inputs.paths.clone();
        listed.extend(inputs.rejected.iter().map(|(p, _)| p.clone()));
        failed_before(&output, &listed, &job.pg)?
    };
    Ok(Ready {
        output,
        paths: inputs.paths,
        rejected: inputs.rejected,
        done,
        sink,
        weights,
        pca,
        settings,
        failed_before,
        frames,
        _lock: lock,
    })
}

fn run(t: &mut dyn Transport, job: &ExtractJob, place: &Place) -> Result<RankEnd<RunSummary>> {
    let threads = if job.engine.threads == 0 {
        default_threads(place.sharing_ranks)
    } else {
        job.engine.threads
    };
    let engine = EngineOptions {
        threads,
        ..job.engine.clone()
    };
    let me = RankInfo {
        host: place.host.clone(),
        threads,
    };
    let size = t.size();

    if t.rank() != 0 {
        let go = decode_code(&wait_for(t, TAG_START)?)?;
        if go != 0 {
            return Ok(RankEnd::Worker(go));
        }
        let weights = Arc::new(Vgg16Weights::load(&job.weights)?);
        let pca = load_pca(job.pca.as_deref(), false)?;
        let backend = open_backend(job.backend, weights, &engine)?;
        let mut extractor = Extractor::new(backend, pca, job.config.clone());
        return Ok(RankEnd::Worker(work(t, &mut extractor, &me)?));
    }

    let ready = match preflight(job) {
        Ok(r) => r,
        Err(e) => {
            for r in 1..size {
                t.send(r, TAG_START, &encode_code(1))?;
            }
            return Ok(RankEnd::Stopped(e));
        }
    };
    for r in 1..size {
        t.send(r, TAG_START, &encode_code(0))?;
    }
    let Ready {
        output,
        paths,
        rejected,
        done,
        mut sink,
        weights,
        pca,
        settings,
        failed_before,
        frames,
        _lock: _held_until_the_run_ends,
    } = ready;
    let backend = open_backend(job.backend, weights, &engine)?;
    let mut extractor = Extractor::new(backend, pca, job.config.clone());
    let already = paths.iter().filter(|p| done.contains(*p)).count();
    let ranks = if size > 1 {
        format!(
            " on {size} ranks ({}, {} on this node; rank 0: {})",
            place.library,
            place.node_ranks,
            extractor.backend_name()
        )
    } else {
        format!(" on {}", extractor.backend_name())
    };
    eprintln!(
        "rmac-native: {}{}{ranks}, max-size {}, levels {}",
        plural(paths.len(), "image"),
        if already > 0 {
            format!(
                " ({already} already done, {} to go; --restart starts over)",
                paths.len() - already
            )
        } else {
            String::new()
        },
        job.config.max_size,
        job.config.levels,
    );
    let backend_name = extractor.backend_name();
    // Folder entries that cannot be jobs get their records first.
    let mut rejected_now = 0;
    for (path, why) in rejected.iter().filter(|(p, _)| !done.contains(p)) {
        eprintln!("error: {path}: {why}");
        sink.write_error(path, why)?;
        rejected_now += 1;
    }
    let work = Work {
        paths: &paths,
        root: job.root.as_deref(),
        done: &done,
        still_frames: job.config.skip_static.map(|_| frames.as_ref()),
    };
    let mut summary = coordinate(t, &mut extractor, work, sink.as_mut(), &me)?;
    summary.total += rejected.len();
    summary.already_done += rejected.len() - rejected_now;
    summary.failed += rejected_now;
    summary.failed_before = failed_before;
    drop(sink);

    if size > 1 {
        eprintln!("rank  host                  threads   images  failed   busy s   images/s");
        for r in &summary.ranks {
            eprintln!(
                "{:>4}  {:<20}  {:>7}  {:>7}  {:>6}  {:>7.1}  {:>9.2}",
                r.rank,
                r.host.chars().take(20).collect::<String>(),
                r.threads,
                r.images,
                r.failures,
                r.busy_s,
                r.images_per_s
            );
        }
    }
    if let Some(out) = output.file() {
        write_summary(
            out,
            &output,
            &summary,
            size,
            place,
            &backend_name,
            &settings,
        )?;
    }
    eprintln!(
        "rmac-native: {}: {} written, {}{} failed, {} already done; {:.2} images/s ({}) → {}{}",
        plural(summary.total, "image"),
        summary.succeeded,
        if job.config.skip_static.is_some() {
            format!("{} skipped as static, ", summary.skipped)
        } else {
            String::new()
        },
        summary.failed,
        summary.already_done,
        summary.images_per_second(),
        human_duration(summary.seconds),
        job.output,
        if summary.exit_code() != 0 {
            format!(" (failures: {})", output.errors().display())
        } else {
            String::new()
        },
    );
    let code = summary.exit_code() as i32;
    for r in 1..size {
        t.send(r, TAG_FINISH, &encode_code(code))?;
    }
    Ok(RankEnd::Coordinator(summary))
}

/// `OUT.summary.json` beside a file output: the run's totals and per-rank stats.
fn write_summary(
    out: &Path,
    target: &Target,
    summary: &RunSummary,
    ranks_n: usize,
    place: &Place,
    backend_rank0: &str,
    settings: &RunSettings,
) -> Result<()> {
    let path = summary_path(out);
    let done_now = (summary.succeeded + summary.failed + summary.skipped).max(1) as f64;
    let report = serde_json::json!({
        "output": out,
        "errors": target.errors(),
        "ranks_n": ranks_n,
        "mpi": place.library,
        "backend_rank0": backend_rank0,
        "settings": settings,
        "total": summary.total,
        "already_done": summary.already_done,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "failed_before": summary.failed_before,
        "seconds": summary.seconds,
        "images_per_second": summary.images_per_second(),
        "coordinator_s": summary.coordinator_s,
        "coordinator_us_per_image": summary.coordinator_s * 1e6 / done_now,
        "ranks": summary.ranks,
    });
    write_atomically(&path, &serde_json::to_vec_pretty(&report)?).with_context(|| {
        format!(
            "the run finished but its summary could not be written to {}",
            path.display()
        )
    })
}
