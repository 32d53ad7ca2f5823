//! The server's exact scan: a batch of queries, each with its own `k` and
//! left-out row, answered as [`crate::search::search_many`] answers them (the
//! same rows, scores and order), in one pass over the index.
//!
//! Where the CPU has AVX-512 VNNI (and AMX, used when present) the pass reads the 8-bit copy
//! ([`super::prefilter`]) and re-scores in float32 only what its bound cannot
//! rule out; elsewhere (or for vectors the bound does not cover) it is
//! `search_many` itself, which reads each float32 row once for all the queries.

use super::pages::release_file_pages;
use super::prefilter::{Int8Index, Kernel};
use crate::search::search_many;
use crate::store::VectorSource;

/// How the index is scanned.
pub struct Scanner {
    int8: Option<Int8Index>,
    /// Why there is no 8-bit copy, when there is none.
    why_not: Option<String>,
    /// Bytes of mapped float32 pages given back after the copy was made
    /// (0: the vectors are not a file mapping, nothing to give back). The
    /// rows re-scored after are read from the file, not through the
    /// mapping ([`VectorSource::read_row`]), so they stay given back.
    pub released: usize,
}

impl Scanner {
    /// The scan for `source`: with the 8-bit copy where this CPU runs it
    /// (`prefilter`), float32 alone otherwise.
    pub fn new(source: &dyn VectorSource, prefilter: bool) -> Scanner {
        let kernel = Kernel::detect();
        let (int8, why_not, released) = match kernel.filter(|_| prefilter) {
            None if !prefilter => (None, Some("turned off".to_owned()), 0),
            None => (None, Some("this CPU lacks AVX-512 VNNI".to_owned()), 0),
            Some(_) if source.is_empty() => (None, Some("the index is empty".to_owned()), 0),
            Some(kernel) => {
                let mut released = 0;
                match Int8Index::build(
                    source.data(),
                    source.dim(),
                    kernel,
                    &mut |done: &[f32]| released += release_file_pages(done),
                ) {
                    Ok(ix) => (Some(ix), None, released),
                    Err(e) => (None, Some(e.0), released),
                }
            }
        };
        Scanner {
            int8,
            why_not,
            released,
        }
    }

    /// The scan in words, for the log and `/api/info`.
    pub fn describe(&self) -> String {
        match (&self.int8, &self.why_not) {
            (Some(ix), _) => format!(
                "8-bit pre-filter ({}, {:.0} MiB copy) with exact float32 re-scoring",
                ix.kernel().name(),
                self.copy_bytes() as f64 / 1048576.0
            ),
            (None, Some(why)) => format!("float32 (no 8-bit pre-filter: {why})"),
            (None, None) => "float32".to_owned(),
        }
    }

    /// Rows re-scored in float32 after the 8-bit bound, all passes together.
    pub fn rescored(&self) -> u64 {
        self.int8.as_ref().map_or(0, |ix| ix.rescored())
    }

    /// Bytes the 8-bit copy takes (0 without one).
    pub fn copy_bytes(&self) -> u64 {
        self.int8.as_ref().map_or(0, |ix| ix.bytes_held())
    }

    /// The `ks[i]` best `(row, score)` of each query among `source`'s rows,
    /// never `exclude[i]`: `search_many`'s answer for each, bit for bit.
    pub fn search(
        &self,
        source: &dyn VectorSource,
        queries: &[&[f32]],
        ks: &[usize],
        exclude: &[Option<usize>],
    ) -> Vec<Vec<(usize, f32)>> {
        let (data, dim) = (source.data(), source.dim());
        let mut out = vec![Vec::new(); queries.len()];
        let (fast, slow): (Vec<usize>, Vec<usize>) = (0..queries.len())
            .partition(|&i| self.int8.as_ref().is_some_and(|ix| ix.accepts(queries[i])));
        if let Some(ix) = &self.int8
            && !fast.is_empty()
        {
            let pick = |v: &[usize]| -> (Vec<&[f32]>, Vec<usize>, Vec<Option<usize>>) {
                (
                    v.iter().map(|&i| queries[i]).collect(),
                    v.iter().map(|&i| ks[i]).collect(),
                    v.iter().map(|&i| exclude[i]).collect(),
                )
            };
            let (q, k, e) = pick(&fast);
            for (i, hits) in fast.iter().zip(ix.search(source, &q, &k, &e)) {
                out[*i] = hits;
            }
        }
        if !slow.is_empty() {
            // One float32 pass for all of them at the largest k: a query's
            // best k are the first k of its best K ≥ k (a total order).
            let q: Vec<&[f32]> = slow.iter().map(|&i| queries[i]).collect();
            let e: Vec<Option<usize>> = slow.iter().map(|&i| exclude[i]).collect();
            let kmax = slow.iter().map(|&i| ks[i]).max().unwrap_or(0);
            for (i, mut hits) in slow.iter().zip(search_many(data, dim, &q, kmax, &e)) {
                hits.truncate(ks[*i]);
                out[*i] = hits;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VectorSet;

    #[test]
    fn both_engines_and_mixed_batches_answer_as_search_many() {
        let dim = 48;
        let mut s = 1u64;
        let mut f = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let set = VectorSet {
            paths: (0..500).map(|i| format!("p{i}")).collect(),
            data: (0..500 * dim).map(|_| f()).collect(),
            dim,
        };
        let mut queries: Vec<Vec<f32>> = (0..5).map(|_| (0..dim).map(|_| f()).collect()).collect();
        // Beyond the bound's range: scanned in float32 within the same batch.
        queries.push((0..dim).map(|_| f() * 1e30).collect());
        let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        let ks = [1, 5, 10, 499, 500, 7];
        let ex = [None, Some(3), None, Some(499), None, Some(0)];
        for prefilter in [true, false] {
            let scanner = Scanner::new(&set, prefilter);
            assert_eq!(
                scanner.int8.is_some(),
                prefilter && Kernel::detect().is_some(),
                "{}",
                scanner.describe()
            );
            if prefilter && let Some(k) = Kernel::detect() {
                assert!(
                    scanner.describe().contains(k.name()),
                    "{}",
                    scanner.describe()
                );
            }
            let got = scanner.search(&set, &refs, &ks, &ex);
            for (u, q) in refs.iter().enumerate() {
                let want = search_many(&set.data, dim, &[q], ks[u], &[ex[u]])
                    .pop()
                    .unwrap();
                assert_eq!(got[u], want, "query {u}, prefilter {prefilter}");
            }
        }
    }
}
