//! What a run did: per rank ([`RankStats`], sent to rank 0 at the end) and as
//! a whole ([`RunSummary`], printed and written beside the output).

use crate::run::pipeline::{Done, NoVector};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What a finished batch did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    /// Paths in the input (after removing repeats).
    pub total: usize,
    /// Already in OUT or the error file when the run started.
    pub already_done: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Video frames skipped as static (`--skip-static`): records, not failures.
    pub skipped: usize,
    /// Of `already_done`, how many are in the error file (failed in an earlier run).
    pub failed_before: usize,
    pub seconds: f64,
    /// Per rank (rank 0 first).
    pub ranks: Vec<RankStats>,
    /// CPU seconds of rank 0's communication thread (scheduling, receiving,
    /// writing, polling): the coordinator's cost, taken from the extraction.
    pub coordinator_s: f64,
}

impl RunSummary {
    /// The process exit status (docs/contract.md#exit-status): 0 when every listed image has a
    /// vector, 3 when some failed (in this run or in the run it resumed).
    pub fn exit_code(&self) -> u8 {
        if self.failed + self.failed_before > 0 {
            3
        } else {
            0
        }
    }

    /// Records written per second (skipped frames included: they are done too).
    pub fn images_per_second(&self) -> f64 {
        let n = (self.succeeded + self.failed + self.skipped) as f64;
        if self.seconds > 0.0 {
            n / self.seconds
        } else {
            0.0
        }
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
    /// Video frames it skipped as static (`--skip-static`; not among `images`).
    #[serde(default)]
    pub skipped: usize,
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
    pub fn new(rank: usize, me: &RankInfo) -> Self {
        RankStats {
            rank,
            host: me.host.clone(),
            threads: me.threads,
            ..Default::default()
        }
    }

    pub fn add<T>(&mut self, d: &Done<T>) {
        if matches!(d.result, Err(NoVector::Skipped(_))) {
            self.skipped += 1;
        } else {
            self.images += 1;
            self.failures += d.result.is_err() as usize;
        }
        self.busy_s += d.compute_s;
        self.decode_s += d.decode_s;
    }

    pub fn finish(&mut self, start: Instant) {
        self.wall_s = start.elapsed().as_secs_f64();
        self.images_per_s = if self.wall_s > 0.0 {
            self.images as f64 / self.wall_s
        } else {
            0.0
        };
    }
}

/// CPU seconds the calling thread has run (Linux schedstat; 0 elsewhere).
pub fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
        })
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}
