//! The job's progress on rank 0: a bar with rate and ETA on a terminal, a
//! plain line every [`PROGRESS_EVERY`] in a batch log; and durations as a
//! person reads them.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Without a terminal, a plain progress line this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// A bar on a terminal; hidden otherwise (a batch log gets plain lines instead).
pub fn progress_bar(pending: usize) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(pending as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} images, {rate}, eta {eta} {msg}",
        )
        .expect("valid template")
        // Not indicatif's `{per_sec}` ("2.6535/s"): a rate a person reads.
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1} images/s", state.per_sec());
            },
        )
        .progress_chars("=> "),
    );
    bar
}

/// The job's one progress display: a bar on a terminal, else a line every
/// [`PROGRESS_EVERY`] (batch logs).
pub struct Progress {
    pub bar: indicatif::ProgressBar,
    plain: bool,
    total: usize,
    done: usize,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
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

    pub fn inc(&mut self) {
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

    pub fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
}

/// Progress through work measured in units of unequal size (pairs of an
/// all-pairs command, counted by blocks): a bar with ETA on a terminal, a
/// plain line every [`PROGRESS_EVERY`] in a batch log.
pub struct WorkProgress {
    bar: indicatif::ProgressBar,
    what: &'static str,
    total: u64,
    done: u64,
    blocks: (usize, usize),
    start: Instant,
    last_line: Instant,
}

impl WorkProgress {
    /// `total` units (e.g. pairs) in `blocks` blocks, for `what` (the command).
    pub fn new(what: &'static str, total: u64, blocks: usize) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {percent}% of the pairs, eta {eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        WorkProgress {
            bar,
            what,
            total,
            done: 0,
            blocks: (0, blocks),
            start: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// One more block done, of `units`.
    pub fn add(&mut self, units: u64) {
        self.done += units;
        self.blocks.0 += 1;
        self.bar.set_position(self.done);
        self.bar
            .set_message(format!("({}/{} blocks)", self.blocks.0, self.blocks.1));
        if self.bar.is_hidden()
            && (self.last_line.elapsed() >= PROGRESS_EVERY || self.blocks.0 == self.blocks.1)
        {
            self.last_line = Instant::now();
            let s = self.start.elapsed().as_secs_f64();
            let part = self.done as f64 / self.total.max(1) as f64;
            let eta = if part > 0.0 { s / part - s } else { 0.0 };
            eprintln!(
                "progress: {}: {:.1}% of the pairs ({}/{} blocks), {}, eta {}",
                self.what,
                100.0 * part,
                self.blocks.0,
                self.blocks.1,
                human_duration(s),
                human_duration(eta)
            );
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn human_duration(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
