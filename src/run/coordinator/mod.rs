//! One job over many ranks: rank 0 coordinates (hands out chunks, writes every
//! result through the sink as it arrives, shows the progress) *and* extracts
//! with its own pipeline; the other ranks pull chunks and stream results back.
//! With one rank (no MPI, or an MPI singleton) the same loop runs with no one
//! to talk to.
//!
//! Nobody blocks in MPI: the communication thread (each rank's main thread)
//! waits on its own pipeline's results with a short timeout and polls MPI
//! with non-blocking probes in between, so a waiting rank never spins a core
//! that its extraction threads need.
//!
//! * [`schedule`]: which chunk goes next; [`protocol`]: the messages;
//!   [`transport`]: how they travel ([`mpi`] or no one); [`stats`] and
//!   [`progress`]: what the run reports.
pub mod mpi;
pub mod progress;
pub mod protocol;
pub mod schedule;
pub mod stats;
pub mod transport;

use crate::extractor::Extractor;
use crate::run::pipeline::{Done, Job, NoVector, run_extractor};
use crate::store::VectorSink;
use crate::video::FrameIndex;
use anyhow::{Context, Result, bail, ensure};
use progress::Progress;
use protocol::*;
use schedule::{Item, MAX_PATH_BYTES, Scheduler, plan};
use stats::{RankInfo, RankStats, RunSummary, thread_cpu_seconds};
use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};
use transport::{Transport, wait_for};

/// How long a communication thread waits for its pipeline before polling MPI
/// again: short right after something happened, doubling while nothing does,
/// up to [`POLL_MAX`] (a longer wait costs latency, which the workers' prefetch
/// hides; a shorter one costs CPU taken from the extraction: measured at
/// ~2.5 ms of CPU per 125 ms image with a fixed 0.5 ms).
const POLL_MIN: Duration = Duration::from_micros(100);
const POLL_MAX: Duration = Duration::from_millis(5);

/// The poll interval, backing off while idle.
struct Backoff {
    wait: Duration,
    max: Duration,
}

impl Backoff {
    /// One rank alone has no one to poll for: it only wakes for its own results.
    fn new(ranks: usize) -> Self {
        Backoff {
            wait: POLL_MIN,
            max: if ranks == 1 {
                Duration::from_millis(200)
            } else {
                POLL_MAX
            },
        }
    }

    fn next(&mut self, busy: bool) -> Duration {
        self.wait = if busy {
            POLL_MIN
        } else {
            (self.wait * 2).min(self.max)
        };
        self.wait
    }
}

/// A rank asks for more work when fewer than this many of its images are unfinished
/// (in the head, the backend and the decode thread's prefetch: the answer, a
/// message round trip, arrives long before those few images are done).
const LOW_WATER: usize = 4;

/// This rank's own pipeline, running in a thread of the caller's scope: the
/// communication thread feeds it jobs and collects its results.
struct LocalPipeline {
    jobs: Option<Sender<Job>>,
    results: Receiver<Done<Vec<f32>>>,
    /// Jobs sent whose results have not come back.
    in_flight: usize,
    /// The pipeline has stopped (after its jobs were closed).
    finished: bool,
    /// What this rank's pipeline did.
    stats: RankStats,
    /// How long the next [`Self::collect`] waits.
    backoff: Backoff,
    /// Something happened since the last wait (results, messages): wait briefly.
    busy: bool,
}

impl LocalPipeline {
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        extractor: &'scope mut Extractor,
        stats: RankStats,
        ranks: usize,
    ) -> Result<Self> {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (results_tx, results_rx) = channel();
        std::thread::Builder::new()
            .name("rmac-extract".into())
            .spawn_scoped(scope, move || run_extractor(extractor, jobs_rx, results_tx))?;
        Ok(LocalPipeline {
            jobs: Some(jobs_tx),
            results: results_rx,
            in_flight: 0,
            finished: false,
            stats,
            backoff: Backoff::new(ranks),
            busy: true,
        })
    }

    fn send(&mut self, job: Job) -> Result<()> {
        // A replayed frame gives no result to wait for.
        let counted = !job.is_replay() as usize;
        self.jobs
            .as_ref()
            .context("work after the end of work")?
            .send(job)?;
        self.in_flight += counted;
        Ok(())
    }

    /// No more jobs: the pipeline finishes what it has, then stops.
    fn close(&mut self) {
        self.jobs.take();
    }

    /// Waits for a result (this is the idle point of the loop: briefly after
    /// something happened, longer while nothing does), then takes every one
    /// that is ready, counted in the rank's stats. Once the pipeline has
    /// stopped it only sleeps.
    fn collect(&mut self) -> Result<Vec<(u64, Outcome)>> {
        let poll = self.backoff.next(self.busy);
        self.busy = false;
        if self.finished {
            std::thread::sleep(poll);
            return Ok(Vec::new());
        }
        let first = match self.results.recv_timeout(poll) {
            Ok(d) => Some(d),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                ensure!(
                    self.in_flight == 0,
                    "the extraction thread stopped with {} images unfinished",
                    self.in_flight
                );
                self.finished = true;
                None
            }
        };
        let ready: Vec<_> = first
            .into_iter()
            .chain(std::iter::from_fn(|| self.results.try_recv().ok()))
            .collect();
        self.in_flight -= ready.len();
        self.busy |= !ready.is_empty();
        Ok(ready
            .into_iter()
            .map(|d| {
                self.stats.add(&d);
                outcome(d)
            })
            .collect())
    }
}

/// A pipeline result as it travels between ranks.
fn outcome(d: Done<Vec<f32>>) -> (u64, Outcome) {
    match d.result {
        Ok(v) => (d.id, Outcome::Vector(v)),
        Err(NoVector::Failed(e)) => (d.id, Outcome::Error(e)),
        Err(NoVector::Skipped(why)) => (d.id, Outcome::Skipped(why)),
    }
}

/// Rank 0's writing side: every result goes through here, exactly once.
struct Writer<'a> {
    paths: &'a [String],
    /// Where relative paths are read from (`--root`); `None`: as listed.
    root: Option<&'a Path>,
    /// What is handed out; a job's id is its position here.
    items: &'a [Item],
    recorded: Vec<bool>,
    sink: &'a mut dyn VectorSink,
    progress: Progress,
    summary: RunSummary,
    /// Floats per vector (512, or a reduced PCA's dimension).
    dim: usize,
}

impl Writer<'_> {
    fn record(&mut self, id: u64, outcome: &Outcome) -> Result<()> {
        let item = self
            .items
            .get(id as usize)
            .with_context(|| format!("a rank sent a result for unknown image #{id}"))?;
        let path = self.paths[item.path].as_str();
        ensure!(
            !item.still.is_some_and(|s| s.replay),
            "a rank sent a result for {path}, a frame it was given only to replay"
        );
        ensure!(
            !std::mem::replace(&mut self.recorded[id as usize], true),
            "image {path} came back twice"
        );
        match outcome {
            Outcome::Vector(v) if v.iter().any(|x| !x.is_finite()) => {
                // Broken weights or PCA give NaN for every image: each gets a record saying so.
                let message = "the network gave a vector with NaN or infinite values (are the weights \
                               or the PCA file damaged? `rmac-native weights check` validates them); it was not written";
                self.sink.write_error(path, message)?;
                self.summary.failed += 1;
                self.progress.println(&format!("error: {path}: {message}"));
            }
            Outcome::Vector(v) => {
                ensure!(
                    v.len() == self.dim,
                    "a {}-float vector for {path}, {} expected",
                    v.len(),
                    self.dim
                );
                self.sink.write_vector(path, v)?;
                self.summary.succeeded += 1;
            }
            Outcome::Error(message) => {
                self.sink.write_error(path, message)?;
                self.summary.failed += 1;
                self.progress.println(&format!("error: {path}: {message}"));
            }
            Outcome::Skipped(why) => {
                self.sink.write_skipped(path, why)?;
                self.summary.skipped += 1;
            }
        }
        self.progress.inc();
        Ok(())
    }

    /// The next chunk to hand out; over-long paths fail here and never travel.
    fn next_chunk(&mut self, sched: &mut Scheduler) -> Result<Vec<Job>> {
        let (paths, items) = (self.paths, self.items);
        let range = sched.next_chunk(
            |pos| paths[items[pos].path].len() + 21,
            |pos| items[pos].starts_a_piece(),
        );
        let mut jobs = Vec::with_capacity(range.len());
        for pos in range {
            let item = items[pos];
            let path = match self.root {
                Some(root) if Path::new(&paths[item.path]).is_relative() => {
                    root.join(&paths[item.path]).to_string_lossy().into_owned()
                }
                _ => paths[item.path].clone(),
            };
            if path.len() > MAX_PATH_BYTES {
                if item.still.is_some_and(|s| s.replay) {
                    continue; // already recorded
                }
                let msg = format!(
                    "the path is {} bytes long; no file system opens a path this long",
                    path.len()
                );
                self.record(pos as u64, &Outcome::Error(msg))?;
            } else {
                jobs.push(Job {
                    id: pos as u64,
                    path,
                    still: item.still,
                });
            }
        }
        Ok(jobs)
    }
}

/// What [`coordinate`] runs: the input list and what is already done.
pub struct Work<'a> {
    /// Every path, recorded as listed.
    pub paths: &'a [String],
    /// Where relative paths are read from (`--root`); `None`: as listed.
    pub root: Option<&'a Path>,
    /// Paths already recorded (resume).
    pub done: &'a HashSet<String>,
    /// With `--skip-static` (the threshold is in the extractor's config): the
    /// video frames among `paths`, which places each in its segment.
    pub still_frames: Option<&'a FrameIndex>,
}

/// Rank 0: schedules the paths of `work` not done over every rank, extracts
/// its own share, and writes every result to `sink` as it arrives.
/// Returns after every worker has reported its stats.
pub fn coordinate<T: Transport + ?Sized>(
    t: &mut T,
    extractor: &mut Extractor,
    work: Work<'_>,
    sink: &mut dyn VectorSink,
    me: &RankInfo,
) -> Result<RunSummary> {
    let start = Instant::now();
    let Work {
        paths,
        root,
        done,
        still_frames,
    } = work;
    let items = plan(paths, done, still_frames);
    let pending = items
        .iter()
        .filter(|i| !i.still.is_some_and(|s| s.replay))
        .count();
    let summary = RunSummary {
        total: paths.len(),
        already_done: paths.len() - pending,
        ..Default::default()
    };
    let workers = t.size() - 1;
    let mut sched = Scheduler::new(items.len(), t.size());
    let mut w = Writer {
        paths,
        root,
        items: &items,
        recorded: vec![false; items.len()],
        sink,
        progress: Progress::new(pending),
        summary,
        dim: extractor.dimension(),
    };
    let mut ranks: Vec<Option<RankStats>> = vec![None; t.size()];
    let cpu_at_start = thread_cpu_seconds();

    std::thread::scope(|scope| -> Result<()> {
        let mut local = LocalPipeline::start(scope, extractor, RankStats::new(0, me), t.size())?;
        let mut workers_done = 0usize;
        loop {
            // Keep our own pipeline fed.
            while local.in_flight < LOW_WATER && !sched.is_exhausted() {
                for job in w.next_chunk(&mut sched)? {
                    local.send(job)?;
                }
            }
            if sched.is_exhausted() {
                local.close();
            }

            // Our own results.
            for (id, outcome) in local.collect()? {
                w.record(id, &outcome)?;
            }

            // The other ranks.
            while let Some((from, tag, bytes)) = t.poll()? {
                local.busy = true;
                match tag {
                    TAG_REQUEST => {
                        let jobs = w.next_chunk(&mut sched)?;
                        t.send(from, TAG_WORK, &encode_work(&jobs))?;
                    }
                    TAG_RESULT => {
                        let (id, outcome) = decode_result(&bytes)?;
                        w.record(id, &outcome)?;
                    }
                    TAG_STATS => {
                        let mut s: RankStats =
                            serde_json::from_slice(&bytes).context("a rank's stats message")?;
                        s.rank = from;
                        ranks[from] = Some(s);
                        workers_done += 1;
                    }
                    other => bail!("unexpected message (tag {other}) from rank {from}"),
                }
            }
            if local.finished && workers_done == workers {
                break;
            }
        }
        local.stats.finish(start);
        ranks[0] = Some(local.stats);
        Ok(())
    })?;
    let missing = (w.recorded.iter().zip(&items))
        .filter(|(r, i)| !**r && !i.still.is_some_and(|s| s.replay))
        .count();
    ensure!(
        missing == 0,
        "{missing} images were handed out but never came back"
    );
    w.sink.finish()?;
    w.progress.bar.finish_and_clear();
    let mut summary = w.summary;
    summary.seconds = start.elapsed().as_secs_f64();
    summary.ranks = ranks.into_iter().flatten().collect();
    summary.coordinator_s = thread_cpu_seconds() - cpu_at_start;
    Ok(summary)
}

/// A rank other than 0: pulls chunks, extracts them, streams the results to
/// rank 0, then reports its stats. Returns the exit code rank 0 sends at the end.
pub fn work<T: Transport + ?Sized>(
    t: &mut T,
    extractor: &mut Extractor,
    me: &RankInfo,
) -> Result<i32> {
    let start = Instant::now();
    let mut stats = std::thread::scope(|scope| -> Result<RankStats> {
        let mut local =
            LocalPipeline::start(scope, extractor, RankStats::new(t.rank(), me), t.size())?;
        let (mut requested, mut no_more) = (false, false);
        loop {
            if !no_more && !requested && local.in_flight < LOW_WATER {
                t.send(0, TAG_REQUEST, &[])?;
                requested = true;
            }
            for (id, outcome) in local.collect()? {
                t.send(0, TAG_RESULT, &encode_result(id, &outcome))?;
            }
            if local.finished {
                ensure!(
                    no_more,
                    "the extraction thread stopped before the end of work"
                );
                break;
            }
            while let Some((from, tag, bytes)) = t.poll()? {
                ensure!(
                    from == 0 && tag == TAG_WORK,
                    "unexpected message (tag {tag}) from rank {from}"
                );
                local.busy = true;
                requested = false;
                let jobs = decode_work(&bytes)?;
                if jobs.is_empty() {
                    no_more = true;
                    local.close();
                }
                for job in jobs {
                    local.send(job)?;
                }
            }
        }
        Ok(local.stats)
    })?;
    stats.finish(start);
    t.send(0, TAG_STATS, &serde_json::to_vec(&stats)?)?;
    wait_for(t, TAG_FINISH).and_then(|b| decode_code(&b))
}
