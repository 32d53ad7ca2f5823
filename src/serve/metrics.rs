//! Counters and a latency histogram, written in the Prometheus text format
//! (version 0.0.4) by `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Per bucket of [`BUCKETS`], not cumulative (made so when written).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counts {
    /// (route, status) → requests answered.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// Query kind (`image`, `path`, `vector`) → queries answered.
    queries: BTreeMap<&'static str, u64>,
    /// Route → latency of its answers.
    latency: BTreeMap<&'static str, Histogram>,
}

/// What the server counts. One lock, held for a few map updates per request.
#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

/// Facts read when `/metrics` is asked for.
pub struct Gauges {
    pub vectors: usize,
    pub dimension: usize,
    pub queue_waiting: usize,
    pub thumb_cache_bytes: usize,
    pub thumb_cache_entries: usize,
    /// Passes over the index, and the searches they answered (several per
    /// pass when queries arrive together).
    pub scan_passes: u64,
    pub scan_searches: u64,
    /// Rows re-scored in float32 after the 8-bit pre-filter.
    pub scan_rescored: u64,
}

impl Metrics {
    /// One answered request on `route` (a route pattern, not the raw URL).
    pub fn answered(&self, route: &'static str, status: u16, took: Duration) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.requests.entry((route, status)).or_default() += 1;
        let h = c.latency.entry(route).or_default();
        let s = took.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|&le| s <= le) {
            h.counts[b] += 1;
        }
        h.count += 1;
        h.sum += s;
    }

    /// One query answered, by the kind of query.
    pub fn query(&self, kind: &'static str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.queries.entry(kind).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP rmac_requests_total HTTP requests answered, by route and status.\n\
             # TYPE rmac_requests_total counter\n",
        );
        for ((route, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "rmac_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP rmac_request_errors_total Requests answered with a 4xx or 5xx status, by route.\n\
             # TYPE rmac_request_errors_total counter\n",
        );
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for ((route, status), n) in &c.requests {
            if *status >= 400 {
                *errors.entry(route).or_default() += n;
            }
        }
        for (route, n) in errors {
            let _ = writeln!(out, "rmac_request_errors_total{{route=\"{route}\"}} {n}");
        }
        out.push_str(
            "# HELP rmac_queries_total Similarity queries answered, by what the query was.\n\
             # TYPE rmac_queries_total counter\n",
        );
        for kind in ["image", "path", "vector"] {
            let n = c.queries.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "rmac_queries_total{{kind=\"{kind}\"}} {n}");
        }
        out.push_str(
            "# HELP rmac_request_duration_seconds Time from a request's arrival to its answer, by route.\n\
             # TYPE rmac_request_duration_seconds histogram\n",
        );
        for (route, h) in &c.latency {
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "rmac_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "rmac_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 rmac_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 rmac_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = write!(
            out,
            "# HELP rmac_index_vectors Vectors in the index.\n# TYPE rmac_index_vectors gauge\nrmac_index_vectors {}\n\
             # HELP rmac_index_dimension Floats per vector.\n# TYPE rmac_index_dimension gauge\nrmac_index_dimension {}\n\
             # HELP rmac_model_queue_waiting Image queries waiting for the model.\n# TYPE rmac_model_queue_waiting gauge\nrmac_model_queue_waiting {}\n\
             # HELP rmac_thumb_cache_bytes Bytes of JPEG thumbnails cached.\n# TYPE rmac_thumb_cache_bytes gauge\nrmac_thumb_cache_bytes {}\n\
             # HELP rmac_thumb_cache_entries Thumbnails cached.\n# TYPE rmac_thumb_cache_entries gauge\nrmac_thumb_cache_entries {}\n\
             # HELP rmac_scan_passes_total Passes over the index.\n# TYPE rmac_scan_passes_total counter\nrmac_scan_passes_total {}\n\
             # HELP rmac_scan_searches_total Searches answered by those passes.\n# TYPE rmac_scan_searches_total counter\nrmac_scan_searches_total {}\n\
             # HELP rmac_scan_rescored_total Rows scored again in float32 after the 8-bit pre-filter.\n# TYPE rmac_scan_rescored_total counter\nrmac_scan_rescored_total {}\n",
            g.vectors,
            g.dimension,
            g.queue_waiting,
            g.thumb_cache_bytes,
            g.thumb_cache_entries,
            g.scan_passes,
            g.scan_searches,
            g.scan_rescored
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_every_request() {
        let m = Metrics::default();
        for ms in [0.5, 3.0, 3.0, 40.0, 100_000.0] {
            m.answered("search", 200, Duration::from_secs_f64(ms / 1e3));
        }
        m.answered("search", 404, Duration::from_millis(1));
        let text = m.render(&Gauges {
            vectors: 7,
            dimension: 512,
            queue_waiting: 0,
            thumb_cache_bytes: 0,
            thumb_cache_entries: 0,
            scan_passes: 3,
            scan_searches: 5,
            scan_rescored: 11,
        });
        let value = |line: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(line))
                .unwrap_or_else(|| panic!("no {line} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(
            value("rmac_request_duration_seconds_bucket{route=\"search\",le=\"0.001\"}"),
            2.0
        );
        assert_eq!(
            value("rmac_request_duration_seconds_bucket{route=\"search\",le=\"0.005\"}"),
            4.0
        );
        assert_eq!(
            value("rmac_request_duration_seconds_bucket{route=\"search\",le=\"30\"}"),
            5.0
        );
        assert_eq!(
            value("rmac_request_duration_seconds_bucket{route=\"search\",le=\"+Inf\"}"),
            6.0
        );
        assert_eq!(value("rmac_request_errors_total{route=\"search\"}"), 1.0);
        assert_eq!(value("rmac_index_vectors"), 7.0);
        assert_eq!(value("rmac_scan_passes_total"), 3.0);
        assert_eq!(value("rmac_scan_searches_total"), 5.0);
        assert_eq!(value("rmac_scan_rescored_total"), 11.0);
    }
}
