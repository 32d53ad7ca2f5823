//! Queries that arrive together are scanned together. One worker thread owns
//! the scan: it takes every query waiting (up to [`MAX_BATCH`]) and answers
//! them from one pass over the index ([`Scanner::search`], on all cores), then
//! takes the next batch. A scan's cost is mostly reading the index, so eight
//! clients' queries cost little more than one's; each query's answer is the
//! one it would get alone (`search --json`'s), whatever it was batched with.
//!
//! Query expansion (`qe > 0`) is `search_qe`'s two searches: the first (k =
//! `qe`) in one pass, the expanded query ([`expand_query`]) in the next.

use super::scan::Scanner;
use crate::search::expand_query;
use crate::store::VectorSource;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The most queries one pass answers (a pass's arithmetic grows with them).
pub const MAX_BATCH: usize = 32;
/// The longest a pass waits for more queries after its first (see [`work`]).
const GATHER: Duration = Duration::from_millis(2);

/// One query as the handlers ask it.
pub struct Search {
    pub vector: Vec<f32>,
    pub k: usize,
    /// A row not to return (the query's own, with `exclude_query`).
    pub exclude: Option<usize>,
    /// Query expansion: this many first results (0: none), weighted by `alpha`.
    pub qe: usize,
    pub alpha: f32,
}

type Hits = Vec<(usize, f32)>;

struct Job {
    query: Search,
    /// The expanded query once the first search is done.
    expanded: Option<Vec<f32>>,
    reply: oneshot::Sender<Result<Hits, String>>,
}

impl Job {
    /// The vector and `k` of this job's next search.
    fn next(&self) -> (&[f32], usize) {
        match &self.expanded {
            Some(v) => (v.as_slice(), self.query.k),
            None if self.query.qe > 0 => (&self.query.vector, self.query.qe),
            None => (&self.query.vector, self.query.k),
        }
    }
}

/// The handle the handlers hold.
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    /// The scan, in words.
    pub engine: String,
    /// Passes made and queries answered (for the metrics).
    pub counts: Arc<Counts>,
}

#[derive(Default)]
pub struct Counts {
    pub passes: std::sync::atomic::AtomicU64,
    pub searches: std::sync::atomic::AtomicU64,
    /// Rows re-scored in float32 after the 8-bit bound.
    pub rescored: std::sync::atomic::AtomicU64,
}

impl Batcher {
    /// Starts the worker over `source`, scanned by `scanner`.
    pub fn start(source: Arc<dyn VectorSource>, scanner: Scanner) -> Batcher {
        let (tx, rx) = mpsc::channel::<Job>();
        let engine = scanner.describe();
        let counts = Arc::new(Counts::default());
        let seen = counts.clone();
        std::thread::Builder::new()
            .name("rmac-scan".into())
            .spawn(move || work(rx, source.as_ref(), &scanner, &seen))
            .expect("cannot start the scan thread");
        Batcher {
            jobs: tx,
            engine,
            counts,
        }
    }

    /// The answer to `query`, once a pass has made it.
    pub async fn search(&self, query: Search) -> Result<Hits, String> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            query,
            expanded: None,
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| "the scan worker stopped; restart the server".to_owned())?;
        answer
            .await
            .map_err(|_| "the scan worker stopped; restart the server".to_owned())?
    }
}

/// The worker: a pass for whatever is waiting. When the last pass answered
/// several clients, their next queries are on their way (a loopback round
/// trip, well under a millisecond): waiting for them a little (a tenth of the
/// last pass, at most [`GATHER`]) lets them share this pass instead of
/// forming a second group that alternates with the first, each paying for
/// two passes per answer. The wait ends as soon as as many queries are in as
/// could be expected (those that were already waiting, plus one from each
/// client the last pass answered), so a steady group of clients pays for
/// their round trip, not for the whole allowance.
fn work(rx: mpsc::Receiver<Job>, source: &dyn VectorSource, scanner: &Scanner, counts: &Counts) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut carried: Vec<Job> = Vec::new();
    // Queries the last pass answered (not those it carried to a second
    // search), and how long it took.
    let (mut answered, mut last_pass) = (0usize, Duration::ZERO);
    loop {
        let mut batch = std::mem::take(&mut carried);
        // What arrived during the last pass.
        take_waiting(&rx, &mut batch);
        let waiting = batch.len();
        if batch.is_empty() {
            match rx.recv() {
                Ok(job) => batch.push(job),
                Err(_) => return,
            }
        }
        let (until, expected) = if answered > 1 {
            let expected = (waiting + answered).min(MAX_BATCH);
            (Instant::now() + (last_pass / 10).min(GATHER), expected)
        } else {
            (Instant::now(), 0)
        };
        while batch.len() < expected {
            let wait = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                // The allowance is spent (or the server is stopping: this
                // batch is still answered).
                Err(_) => break,
            }
        }
        take_waiting(&rx, &mut batch);
        // A client that gave up (its deadline passed) has dropped its receiver.
        batch.retain(|j| !j.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let queries: Vec<&[f32]> = batch.iter().map(|j| j.next().0).collect();
        let ks: Vec<usize> = batch.iter().map(|j| j.next().1).collect();
        let exclude: Vec<Option<usize>> = batch.iter().map(|j| j.query.exclude).collect();
        let started = Instant::now();
        let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scanner.search(source, &queries, &ks, &exclude)
        }));
        last_pass = started.elapsed();
        counts.passes.fetch_add(1, Relaxed);
        counts.searches.fetch_add(batch.len() as u64, Relaxed);
        counts.rescored.store(scanner.rescored(), Relaxed);
        let answers = match answers {
            Ok(a) => a,
            Err(_) => {
                for job in batch {
                    let _ = job
                        .reply
                        .send(Err("the scan failed (a bug: please report it)".into()));
                }
                continue;
            }
        };
        answered = 0;
        for (mut job, hits) in batch.into_iter().zip(answers) {
            if job.query.qe > 0 && job.expanded.is_none() {
                let row = |i: usize| source.row_owned(i);
                job.expanded = Some(expand_query(
                    &job.query.vector,
                    &hits,
                    row,
                    job.query.qe,
                    job.query.alpha,
                ));
                carried.push(job);
            } else {
                let _ = job.reply.send(Ok(hits));
                answered += 1;
            }
        }
    }
}

/// Adds the jobs already in the channel to `batch`, up to [`MAX_BATCH`].
fn take_waiting(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}
