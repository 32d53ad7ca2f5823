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

use crate::extractor::Extractor;
use crate::run::local::{Done, RunSummary, progress_bar, run_pipeline};
use crate::run::protocol::*;
use crate::run::schedule::{MAX_PATH_BYTES, Scheduler};
use crate::sink::VectorSink;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

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

/// Without a terminal, a plain progress line this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Point-to-point messages between ranks (MPI, or nothing for one rank).
pub trait Transport {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// A message that has arrived, if any: (source rank, tag, bytes). Never blocks.
    fn poll(&mut self) -> Result<Option<(usize, Tag, Vec<u8>)>>;
    /// Sends without waiting for the receiver to post a receive.
    fn send(&mut self, to: usize, tag: Tag, bytes: &[u8]) -> Result<()>;
}

/// One rank, no one to talk to.
pub struct NoTransport;

impl Transport for NoTransport {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn poll(&mut self) -> Result<Option<(usize, Tag, Vec<u8>)>> {
        Ok(None)
    }
    fn send(&mut self, to: usize, _tag: Tag, _bytes: &[u8]) -> Result<()> {
        bail!("no rank {to} in a one-process run")
    }
}

/// Who a rank is (for the per-rank table).
#[derive(Clone, Debug, Default)]
pub struct RankInfo {
    pub host: String,
    pub threads: usize,
}

/// What one rank did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RankStats {
    pub rank: usize,
    pub host: String,
    pub threads: usize,
    /// Images this rank extracted (vectors + failures).
    pub images: usize,
    pub failures: usize,
    /// Seconds its backend and R-MAC head threads were busy (they overlap, so
    /// this can exceed the wall time).
    pub busy_s: f64,
    /// Seconds its decode thread spent decoding and resizing (overlaps `busy_s`).
    pub decode_s: f64,
    /// Seconds from its first request to its last result.
    pub wall_s: f64,
    pub images_per_s: f64,
}

impl RankStats {
    fn new(rank: usize, me: &RankInfo) -> Self {
        RankStats {
            rank,
            host: me.host.clone(),
            threads: me.threads,
            ..Default::default()
        }
    }

    fn add(&mut self, d: &Done) {
        self.images += 1;
        self.failures += matches!(d.outcome, Outcome::Error(_)) as usize;
        self.busy_s += d.compute_s;
        self.decode_s += d.decode_s;
    }

    fn finish(&mut self, start: Instant) {
        self.wall_s = start.elapsed().as_secs_f64();
        self.images_per_s = if self.wall_s > 0.0 {
            self.images as f64 / self.wall_s
        } else {
            0.0
        };
    }
}

/// The job's one progress display: a bar on a terminal, else a line every
/// [`PROGRESS_EVERY`] (batch logs).
struct Progress {
    bar: indicatif::ProgressBar,
    plain: bool,
    total: usize,
    done: usize,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = progress_bar(total);
        let plain = bar.is_hidden();
        Progress {
            bar,
            plain,
            total,
            done: 0,
            start: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn inc(&mut self) {
        self.done += 1;
        self.bar.inc(1);
        if self.plain && self.last_line.elapsed() >= PROGRESS_EVERY {
            self.last_line = Instant::now();
            let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
            let eta = (self.total - self.done) as f64 / rate.max(1e-9);
            eprintln!(
                "progress: {}/{} images ({:.1}%), {:.2} images/s, eta {}",
                self.done,
                self.total,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                rate,
                human_duration(eta)
            );
        }
    }

    fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
}

/// CPU seconds the calling thread has run (Linux schedstat; 0 elsewhere).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
        })
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

pub fn human_duration(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Rank 0's writing side: every result goes through here, exactly once.
struct Writer<'a> {
    paths: &'a [String],
    pending: &'a [usize],
    recorded: Vec<bool>,
    sink: &'a mut dyn VectorSink,
    progress: Progress,
    summary: RunSummary,
}

impl Writer<'_> {
    fn record(&mut self, id: u64, outcome: &Outcome) -> Result<()> {
        let i = *self
            .pending
            .get(id as usize)
            .with_context(|| format!("a rank sent a result for unknown image #{id}"))?;
        let path = self.paths[i].as_str();
        ensure!(
            !std::mem::replace(&mut self.recorded[id as usize], true),
            "image {path} came back twice"
        );
        match outcome {
            Outcome::Vector(v) => {
                ensure!(v.len() == 512, "a {}-float vector for {path}", v.len());
                self.sink.write_vector(path, v)?;
                self.summary.succeeded += 1;
            }
            Outcome::Error(message) => {
                self.sink.write_error(path, message)?;
                self.summary.failed += 1;
                self.progress.println(&format!("error: {path}: {message}"));
            }
        }
        self.progress.inc();
        Ok(())
    }

    /// The next chunk to hand out; over-long paths fail here and never travel.
    fn next_chunk(&mut self, sched: &mut Scheduler) -> Result<Vec<Job>> {
        let (paths, pending) = (self.paths, self.pending);
        let range = sched.next_chunk(|pos| paths[pending[pos]].len() + 12);
        let mut jobs = Vec::with_capacity(range.len());
        for pos in range {
            let path = &paths[pending[pos]];
            if path.len() > MAX_PATH_BYTES {
                let msg = format!(
                    "the path is {} bytes long; no file system opens a path this long",
                    path.len()
                );
                self.record(pos as u64, &Outcome::Error(msg))?;
            } else {
                jobs.push(Job {
                    id: pos as u64,
                    path: path.clone(),
                });
            }
        }
        Ok(jobs)
    }
}

/// Rank 0: schedules the paths of `paths` not in `done` over every rank,
/// extracts its own share, and writes every result to `sink` as it arrives.
/// Returns after every worker has reported its stats.
pub fn coordinate<T: Transport>(
    t: &mut T,
    extractor: &mut Extractor,
    paths: &[String],
    done: &HashSet<String>,
    sink: &mut dyn VectorSink,
    me: &RankInfo,
) -> Result<RunSummary> {
    let start = Instant::now();
    let pending: Vec<usize> = (0..paths.len())
        .filter(|&i| !done.contains(&paths[i]))
        .collect();
    let summary = RunSummary {
        total: paths.len(),
        already_done: paths.len() - pending.len(),
        ..Default::default()
    };
    let workers = t.size() - 1;
    let mut sched = Scheduler::new(pending.len(), t.size());
    let mut w = Writer {
        paths,
        pending: &pending,
        recorded: vec![false; pending.len()],
        sink,
        progress: Progress::new(pending.len()),
        summary,
    };
    let mut ranks: Vec<Option<RankStats>> = vec![None; t.size()];
    let cpu_at_start = thread_cpu_seconds();

    std::thread::scope(|scope| -> Result<()> {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (results_tx, results_rx) = channel::<Done>();
        std::thread::Builder::new()
            .name("rmac-extract".into())
            .spawn_scoped(scope, move || run_pipeline(extractor, jobs_rx, results_tx))?;
        let mut jobs_tx = Some(jobs_tx);
        let mut local = RankStats::new(0, me);
        let mut local_in_flight = 0usize;
        let mut local_done = false;
        let mut workers_done = 0usize;
        let mut backoff = Backoff::new(t.size());
        let mut busy = true;
        loop {
            // Keep our own pipeline fed.
            while local_in_flight < LOW_WATER && !sched.is_exhausted() {
                for job in w.next_chunk(&mut sched)? {
                    local_in_flight += 1;
                    jobs_tx
                        .as_ref()
                        .expect("open while work is left")
                        .send(job)?;
                }
            }
            if sched.is_exhausted() {
                jobs_tx.take(); // our pipeline finishes what it has, then stops
            }

            // Our own results (waiting briefly: this is the idle point).
            let poll = backoff.next(busy);
            busy = false;
            let first = if local_done {
                std::thread::sleep(poll);
                None
            } else {
                match results_rx.recv_timeout(poll) {
                    Ok(d) => Some(d),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        ensure!(
                            local_in_flight == 0,
                            "rank 0's extraction thread stopped with {local_in_flight} images unfinished"
                        );
                        local_done = true;
                        None
                    }
                }
            };
            for d in first
                .into_iter()
                .chain(std::iter::from_fn(|| results_rx.try_recv().ok()))
            {
                busy = true;
                local_in_flight -= 1;
                local.add(&d);
                w.record(d.id, &d.outcome)?;
            }

            // The other ranks.
            while let Some((from, tag, bytes)) = t.poll()? {
                busy = true;
                match tag {
                    TAG_REQUEST => {
                        let jobs = w.next_chunk(&mut sched)?;
                        t.send(
                            from,
                            TAG_WORK,
                            &encode_work(jobs.iter().map(|j| (j.id, j.path.as_str()))),
                        )?;
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
            if local_done && workers_done == workers {
                break;
            }
        }
        local.finish(start);
        ranks[0] = Some(local);
        Ok(())
    })?;
    let missing = w.recorded.iter().filter(|r| !**r).count();
    ensure!(
        missing == 0,
        "{missing} images were handed out but never came back"
    );
    w.sink.sync()?;
    w.progress.bar.finish_and_clear();
    let mut summary = w.summary;
    summary.seconds = start.elapsed().as_secs_f64();
    summary.ranks = ranks.into_iter().flatten().collect();
    summary.coordinator_s = thread_cpu_seconds() - cpu_at_start;
    Ok(summary)
}

/// A rank other than 0: pulls chunks, extracts them, streams the results to
/// rank 0, then reports its stats. Returns the exit code rank 0 sends at the end.
pub fn work<T: Transport>(t: &mut T, extractor: &mut Extractor, me: &RankInfo) -> Result<i32> {
    let start = Instant::now();
    let mut stats = RankStats::new(t.rank(), me);
    std::thread::scope(|scope| -> Result<()> {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (results_tx, results_rx) = channel::<Done>();
        std::thread::Builder::new()
            .name("rmac-extract".into())
            .spawn_scoped(scope, move || run_pipeline(extractor, jobs_rx, results_tx))?;
        let mut jobs_tx = Some(jobs_tx);
        let (mut requested, mut no_more, mut in_flight) = (false, false, 0usize);
        let mut backoff = Backoff::new(t.size());
        let mut busy = true;
        loop {
            if !no_more && !requested && in_flight < LOW_WATER {
                t.send(0, TAG_REQUEST, &[])?;
                requested = true;
            }
            let poll = backoff.next(busy);
            busy = false;
            let first = match results_rx.recv_timeout(poll) {
                Ok(d) => Some(d),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    ensure!(
                        in_flight == 0 && no_more,
                        "the extraction thread stopped with {in_flight} images unfinished"
                    );
                    break;
                }
            };
            for d in first
                .into_iter()
                .chain(std::iter::from_fn(|| results_rx.try_recv().ok()))
            {
                busy = true;
                in_flight -= 1;
                stats.add(&d);
                t.send(0, TAG_RESULT, &encode_result(d.id, &d.outcome))?;
            }
            while let Some((from, tag, bytes)) = t.poll()? {
                ensure!(
                    from == 0 && tag == TAG_WORK,
                    "unexpected message (tag {tag}) from rank {from}"
                );
                busy = true;
                requested = false;
                let jobs = decode_work(&bytes)?;
                if jobs.is_empty() {
                    no_more = true;
                    jobs_tx.take();
                }
                for job in jobs {
                    in_flight += 1;
                    jobs_tx
                        .as_ref()
                        .context("work after the end of work")?
                        .send(job)?;
                }
            }
        }
        Ok(())
    })?;
    stats.finish(start);
    t.send(0, TAG_STATS, &serde_json::to_vec(&stats)?)?;
    wait_for(t, TAG_FINISH).and_then(|b| decode_code(&b))
}

/// Waits (polling, not spinning) for one message with `tag` from rank 0.
pub fn wait_for<T: Transport>(t: &mut T, tag: Tag) -> Result<Vec<u8>> {
    loop {
        if let Some((from, got, bytes)) = t.poll()? {
            ensure!(
                from == 0 && got == tag,
                "unexpected message (tag {got}) from rank {from} while waiting for tag {tag}"
            );
            return Ok(bytes);
        }
        std::thread::sleep(POLL_MAX);
    }
}
