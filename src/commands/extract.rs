//! `extract`: the batch run, as one process or as N MPI ranks. Everything that
//! can fail before the first image fails here, on rank 0, before any rank
//! starts work (the other ranks wait for rank 0's go).

use crate::backend::select::open_backend;
use crate::cli::ExtractArgs;
use crate::extractor::{ExtractConfig, Extractor};
use crate::image::decode::DecodeLimits;
use crate::run::inputs::read_inputs;
use crate::run::job::{RankInfo, Transport, coordinate, human_duration, wait_for, work};
use crate::run::local::RunSummary;
use crate::run::lock::{OutputLock, lock_output};
use crate::run::mpi::default_threads;
use crate::run::protocol::{TAG_FINISH, TAG_START, decode_code, encode_code};
use crate::run::settings::{RunSettings, beside, file_digest, write_atomically};
use crate::sink::{OutputKind, VectorSink, errors_file as errors_path, failed_before, open_sink};
use crate::vgg16::weights::{PcaWeights, Vgg16Weights};
use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Loads `--pca` (`none` → no whitening, said once on stderr when `say`).
fn load_pca(arg: &str, say: bool) -> Result<Option<PcaWeights>> {
    if arg == "none" {
        if say {
            eprintln!(
                "note: --pca none: no PCA-whitening; vectors are sums of L2-normalised region maxima"
            );
        }
        return Ok(None);
    }
    let path = Path::new(arg);
    if !path.exists() {
        bail!(
            "no PCA file at {arg}: import keras_rmac's PCAmatrices.mat with `rmac-native pca import PCAmatrices.mat`, \
             pass --pca FILE, or run without whitening with --pca none"
        );
    }
    Ok(Some(PcaWeights::load(path)?))
}

fn config(args: &ExtractArgs) -> ExtractConfig {
    ExtractConfig {
        max_size: args.max_size,
        levels: args.levels as usize,
        preprocess: args.preprocess,
        limits: DecodeLimits {
            max_pixels: args.max_pixels,
        },
    }
}

/// What this process knows about its place in the job.
struct Place {
    host: String,
    /// Ranks on this node sharing this rank's CPUs (divides the default threads).
    sharing_ranks: usize,
    node_ranks: usize,
    library: String,
}

/// How a rank's part ended.
enum RankEnd {
    /// Rank 0, the job ran.
    Coordinator(RunSummary),
    /// Rank 0, the job could not start (the other ranks were told to stop).
    Stopped(anyhow::Error),
    /// Another rank: done (the code is rank 0's exit status; the rank itself exits 0).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Worker(i32),
}

/// `extract`: as a plain process, an MPI singleton, or rank k of N.
pub fn extract(args: &ExtractArgs) -> Result<RunSummary> {
    #[cfg(feature = "mpi")]
    {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let mut mpi = crate::run::mpi::Mpi::init()?;
        let size = mpi.size();
        let place = Place {
            host: mpi.host(),
            sharing_ranks: mpi.sharing_ranks(),
            node_ranks: mpi.node_ranks(),
            library: mpi.library(),
        };
        let ended = catch_unwind(AssertUnwindSafe(|| run(&mut mpi, args, &place)));
        match ended {
            Ok(Ok(RankEnd::Coordinator(summary))) => Ok(summary),
            Ok(Ok(RankEnd::Stopped(e))) => Err(e),
            Ok(Ok(RankEnd::Worker(code))) => {
                drop(mpi); // MPI_Finalize
                // Rank 0 carries the job's exit status (mpiexec returns the first non-zero one).
                // A worker exiting non-zero first could make the launcher kill rank 0 before
                // it has printed why the job stopped or how it ended.
                let _ = code;
                std::process::exit(0)
            }
            // With other ranks waiting on this one, an error or a panic must end the whole
            // job (toolchain pitfall 1: unwinding into MPI_Finalize would hang it).
            Ok(Err(e)) if size > 1 => {
                eprintln!(
                    "error: rank {} of {size} ({}): {e:#}; stopping the job (rerun the same command to resume)",
                    mpi.rank(),
                    place.host
                );
                mpi.abort(1)
            }
            Err(_) if size > 1 => {
                eprintln!(
                    "error: rank {} of {size} ({}) panicked (message above); stopping the job",
                    mpi.rank(),
                    place.host
                );
                mpi.abort(101)
            }
            Ok(Err(e)) => Err(e),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    #[cfg(not(feature = "mpi"))]
    {
        crate::run::mpi::guard_launcher(1)?;
        let place = Place {
            host: String::new(),
            sharing_ranks: 1,
            node_ranks: 1,
            library: String::new(),
        };
        match run(&mut crate::run::job::NoTransport, args, &place)? {
            RankEnd::Coordinator(summary) => Ok(summary),
            RankEnd::Stopped(e) => Err(e),
            RankEnd::Worker(_) => unreachable!("one process is rank 0"),
        }
    }
}

/// Rank 0's checks, before anyone works: the list, the output location, the
/// weights and the settings of what OUT already holds.
struct Ready {
    paths: Vec<String>,
    done: HashSet<String>,
    sink: Box<dyn VectorSink>,
    weights: Arc<Vgg16Weights>,
    pca: Option<PcaWeights>,
    settings: RunSettings,
    /// Listed paths already in the error file.
    failed_before: usize,
    /// Keeps other runs off this output until this one ends (files only: a
    /// database serialises writers itself).
    _lock: Option<OutputLock>,
}

fn preflight(args: &ExtractArgs) -> Result<Ready> {
    let inputs = read_inputs(&args.input)?;
    if inputs.duplicates > 0 {
        eprintln!(
            "note: {} repeated paths in {} are extracted once",
            inputs.duplicates,
            args.input.display()
        );
    }
    let to_db = OutputKind::of(&args.output.to_string_lossy()) == OutputKind::Postgres;
    if let Some(dir) = args
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !to_db)
        && !dir.is_dir()
    {
        bail!(
            "cannot write {}: the output folder {} does not exist; create it or pass another --output",
            args.output.display(),
            dir.display()
        );
    }
    let pca = load_pca(&args.pca, true)?;
    let weights = Arc::new(Vgg16Weights::load(&args.weights)?);
    let (weights_sha256, weights_bytes) = file_digest(&args.weights)?;
    let pca_sha256 = if args.pca == "none" {
        "none".to_owned()
    } else {
        file_digest(Path::new(&args.pca))?.0
    };
    let settings = RunSettings {
        weights_sha256,
        weights_bytes,
        pca_sha256,
        max_size: args.max_size,
        levels: args.levels,
        preprocess: serde_json::to_value(args.preprocess)?
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    // Before the output is opened: `--restart` must not truncate another run's file.
    let lock = if to_db {
        None
    } else {
        lock_output(&args.output)?
    };
    // A database records the settings itself (table rmac_runs) and refuses to mix them.
    let (sink, done) = open_sink(
        &args.output,
        args.db.as_deref(),
        args.restart,
        Some(&serde_json::to_value(&settings)?),
    )?;
    let already = inputs.paths.iter().filter(|p| done.contains(*p)).count();
    if !to_db {
        settings.check_and_write(&args.output, done.len(), args.restart)?;
    }
    if done.len() > already {
        eprintln!(
            "note: {} holds {} images that are not in this input list; they are kept",
            args.output.display(),
            done.len() - already
        );
    }
    let failed_before = if done.is_empty() {
        0
    } else {
        failed_before(&args.output, &inputs.paths)?
    };
    Ok(Ready {
        paths: inputs.paths,
        done,
        sink,
        weights,
        pca,
        settings,
        failed_before,
        _lock: lock,
    })
}

fn run<T: Transport>(t: &mut T, args: &ExtractArgs, place: &Place) -> Result<RankEnd> {
    let threads = if args.threads == 0 {
        default_threads(place.sharing_ranks)
    } else {
        args.threads
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
        let weights = Arc::new(Vgg16Weights::load(&args.weights)?);
        let pca = load_pca(&args.pca, false)?;
        let backend = open_backend(args.backend, weights, threads)?;
        let mut extractor = Extractor::new(backend, pca, config(args));
        return Ok(RankEnd::Worker(work(t, &mut extractor, &me)?));
    }

    let ready = match preflight(args) {
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
        paths,
        done,
        mut sink,
        weights,
        pca,
        settings,
        failed_before,
        _lock: _held_until_the_run_ends,
    } = ready;
    let backend = open_backend(args.backend, weights, threads)?;
    let mut extractor = Extractor::new(backend, pca, config(args));
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
        "rmac-native: {} images{}{ranks}, max-size {}, levels {}",
        paths.len(),
        if already > 0 {
            format!(
                " ({already} already done, {} to go; --restart starts over)",
                paths.len() - already
            )
        } else {
            String::new()
        },
        args.max_size,
        args.levels,
    );
    let backend_name = extractor.backend_name();
    let mut summary = coordinate(t, &mut extractor, &paths, &done, sink.as_mut(), &me)?;
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
    let summary_path = beside(&args.output, "summary");
    let done_now = (summary.succeeded + summary.failed).max(1) as f64;
    let report = serde_json::json!({
        "output": args.output,
        "errors": errors_path(&args.output),
        "ranks_n": size,
        "mpi": place.library,
        "backend_rank0": backend_name,
        "settings": settings,
        "total": summary.total,
        "already_done": summary.already_done,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "failed_before": summary.failed_before,
        "seconds": summary.seconds,
        "images_per_second": summary.images_per_second(),
        "coordinator_s": summary.coordinator_s,
        "coordinator_us_per_image": summary.coordinator_s * 1e6 / done_now,
        "ranks": summary.ranks,
    });
    if OutputKind::of(&args.output.to_string_lossy()) != OutputKind::Postgres {
        write_atomically(&summary_path, &serde_json::to_vec_pretty(&report)?).with_context(
            || {
                format!(
                    "the run finished but its summary could not be written to {}",
                    summary_path.display()
                )
            },
        )?;
    }
    eprintln!(
        "rmac-native: {} images: {} written, {} failed, {} already done; {:.2} images/s ({}) → {}{}",
        summary.total,
        summary.succeeded,
        summary.failed,
        summary.already_done,
        summary.images_per_second(),
        human_duration(summary.seconds),
        args.output.display(),
        if summary.exit_code() != 0 {
            format!(" (failures: {})", errors_path(&args.output).display())
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
