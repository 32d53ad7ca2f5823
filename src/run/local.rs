//! One rank's extraction pipeline: a decode thread runs ahead of the backend
//! (so the next image is decoded and resized while this one is on the device),
//! and one bad image is a record, never the end of the batch. The scheduling
//! and writing around it live in [`crate::run::job`].

use crate::extractor::{ExtractConfig, ExtractError, Extractor, Prepared, prepare_path};
use crate::run::protocol::{Job, Outcome};
use crate::sink::VectorSink;
use anyhow::Result;
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, sync_channel};
use std::time::Instant;

/// Images decoded ahead of the backend.
const PREFETCH: usize = 2;

/// What a finished batch did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    /// Paths in the input (after removing repeats).
    pub total: usize,
    /// Already in OUT or the error file when the run started.
    pub already_done: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Of `already_done`, how many are in the error file (failed in an earlier run).
    pub failed_before: usize,
    pub seconds: f64,
    /// Per rank (rank 0 first).
    pub ranks: Vec<crate::run::job::RankStats>,
    /// CPU seconds of rank 0's communication thread (scheduling, receiving,
    /// writing, polling): the coordinator's cost, taken from the extraction.
    pub coordinator_s: f64,
}

impl RunSummary {
    /// The process exit status (contract): 0 when every listed image has a
    /// vector, 3 when some failed (in this run or in the run it resumed).
    pub fn exit_code(&self) -> u8 {
        if self.failed + self.failed_before > 0 {
            3
        } else {
            0
        }
    }

    pub fn images_per_second(&self) -> f64 {
        let n = (self.succeeded + self.failed) as f64;
        if self.seconds > 0.0 {
            n / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs `f`, turning a panic into an error message for that image (a bug in a
/// decoder must not take the other images down with it).
fn guarded<T>(
    what: &str,
    path: &str,
    f: impl FnOnce() -> Result<T, ExtractError>,
) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(format!(
                "internal error while {what} {path}: {msg} (please report this image to the rmac-native developers)"
            ))
        }
    }
}

pub(crate) fn progress_bar(pending: usize) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(pending as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// One image done by a rank's pipeline.
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    pub outcome: Outcome,
    /// Seconds this image spent in decode + resize (decode thread).
    pub decode_s: f64,
    /// Seconds this image spent in the backend + R-MAC head (compute thread).
    pub compute_s: f64,
}

/// A rank's extraction pipeline: a decode thread runs [`PREFETCH`] images
/// ahead of the backend. Reads jobs until `jobs` is closed, sends one [`Done`]
/// per job (in job order). Returns when every job is done or `results` is gone.
pub fn run_pipeline(extractor: &mut Extractor, jobs: Receiver<Job>, results: Sender<Done>) {
    let config: ExtractConfig = extractor.config().clone();
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<(Job, Result<Prepared, String>, f64)>(PREFETCH);
        std::thread::Builder::new()
            .name("rmac-decode".into())
            .spawn_scoped(scope, move || {
                for job in jobs {
                    let t = Instant::now();
                    let prepared = guarded("decoding", &job.path, || {
                        prepare_path(Path::new(&job.path), &config)
                    });
                    if tx.send((job, prepared, t.elapsed().as_secs_f64())).is_err() {
                        break; // the compute side stopped
                    }
                }
            })
            .expect("cannot start the decode thread");
        for (job, prepared, decode_s) in rx {
            let t = Instant::now();
            let outcome = match prepared
                .and_then(|p| guarded("computing", &job.path, || extractor.describe_prepared(&p)))
            {
                Ok(v) => Outcome::Vector(v),
                Err(e) => Outcome::Error(e),
            };
            let done = Done {
                id: job.id,
                outcome,
                decode_s,
                compute_s: t.elapsed().as_secs_f64(),
            };
            if results.send(done).is_err() {
                break;
            }
        }
    });
}

/// Extracts every path in `paths` not in `done` in this process, writing to
/// `sink` (the one-rank case of [`crate::run::job`]).
pub fn run_batch(
    extractor: &mut Extractor,
    paths: &[String],
    done: &std::collections::HashSet<String>,
    sink: &mut dyn VectorSink,
) -> Result<RunSummary> {
    let me = crate::run::job::RankInfo {
        host: String::new(),
        threads: 0,
    };
    crate::run::job::coordinate(
        &mut crate::run::job::NoTransport,
        extractor,
        paths,
        done,
        sink,
        &me,
    )
}
