//! Exact nearest neighbours by inner product (the vectors are unit length, so
//! this is cosine similarity) over a row-major matrix (a vectors file held in
//! memory or mapped: [`crate::store::VectorSource`]), and query expansion.
//! Reading the vectors is the store's job; this module only ranks.
//!
//! The scan reads each row once for all queries, in SIMD (the dot product is
//! written as 16 independent lanes, compiled for AVX-512/AVX2/baseline and
//! picked at run time; every version adds in the same order, so scores are
//! bit-identical on every CPU), on all cores (rayon, one bounded heap per
//! chunk and query, merged). Ranking: higher score first, ties by lower row.

pub mod html;

use crate::store::VectorSet;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

// ---------------------------------------------------------------- the scan

/// Lanes of [`dot`]'s accumulator (shared by the kNN kernel, which must add alike).
pub const LANES: usize = 16;

/// Inner product with a fixed summation order: 16 lanes, then a pairwise
/// reduction, then the tail. Every compiled version gives the same bits.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    finish_dot(acc, ra, rb)
}

/// The end of [`dot`]: the lane sums reduced pairwise, then the tail's
/// products added in order. The kNN kernel ends its dot products here too, so
/// that both give the same bits.
#[inline(always)]
pub fn finish_dot(mut acc: [f32; LANES], a_tail: &[f32], b_tail: &[f32]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    let mut tail = 0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    acc[0] + tail
}

/// A candidate; `Ord` puts the *worse* one greater, so a max-heap's top is the
/// one to drop.
#[derive(Clone, Copy, Debug)]
struct Cand {
    score: f32,
    row: usize,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        o.score.total_cmp(&self.score).then(self.row.cmp(&o.row))
    }
}

/// The `k` best of one query seen so far.
#[derive(Clone)]
struct TopK {
    k: usize,
    heap: BinaryHeap<Cand>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    /// Rows arrive in increasing order within a chunk, so an equal score is never better.
    #[inline(always)]
    fn offer_in_order(&mut self, score: f32, row: usize) {
        if self.heap.len() < self.k {
            self.heap.push(Cand { score, row });
        } else if let Some(worst) = self.heap.peek()
            && score.total_cmp(&worst.score) == Ordering::Greater
        {
            self.heap.pop();
            self.heap.push(Cand { score, row });
        }
    }
    fn merge(mut self, other: TopK) -> TopK {
        for c in other.heap {
            if self.heap.len() < self.k {
                self.heap.push(c);
            } else if self.heap.peek().is_some_and(|w| c < *w) {
                self.heap.pop();
                self.heap.push(c);
            }
        }
        self
    }
    fn into_sorted(self) -> Vec<(usize, f32)> {
        let mut v = self.heap.into_sorted_vec(); // ascending = best first
        v.truncate(self.k);
        v.into_iter().map(|c| (c.row, c.score)).collect()
    }
}

#[inline(always)]
fn scan_rows_impl(
    data: &[f32],
    dim: usize,
    first: usize,
    queries: &[&[f32]],
    exclude: &[Option<usize>],
    tops: &mut [TopK],
) {
    let mut scores = vec![0f32; queries.len()];
    for (r, row) in data.chunks_exact(dim).enumerate() {
        let row_id = first + r;
        for (s, q) in scores.iter_mut().zip(queries) {
            *s = dot(row, q);
        }
        for (qi, top) in tops.iter_mut().enumerate() {
            if exclude[qi] != Some(row_id) {
                top.offer_in_order(scores[qi], row_id);
            }
        }
    }
}

/// [`scan_rows_impl`] compiled for one instruction set (the same source, so
/// the same summation order and the same bits).
macro_rules! scan_rows_for {
    ($name:ident, $feature:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(
            data: &[f32],
            dim: usize,
            first: usize,
            q: &[&[f32]],
            ex: &[Option<usize>],
            t: &mut [TopK],
        ) {
            scan_rows_impl(data, dim, first, q, ex, t)
        }
    };
}

scan_rows_for!(scan_rows_avx512, "avx512f");
scan_rows_for!(scan_rows_avx2, "avx2");

fn scan_rows(
    data: &[f32],
    dim: usize,
    first: usize,
    q: &[&[f32]],
    ex: &[Option<usize>],
    t: &mut [TopK],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { scan_rows_avx512(data, dim, first, q, ex, t) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { scan_rows_avx2(data, dim, first, q, ex, t) };
        }
    }
    scan_rows_impl(data, dim, first, q, ex, t)
}

/// Rows per parallel task (≈4 MB of 512-d vectors).
const CHUNK_ROWS: usize = 2048;

/// The `k` best `(row, score)` of each query among the rows of `data`
/// (row-major, `dim` wide), best first; `exclude[q]` is a row query `q` must
/// not return (itself). Exact; all cores; bit-identical to [`top_k_naive`].
pub fn search_many(
    data: &[f32],
    dim: usize,
    queries: &[&[f32]],
    k: usize,
    exclude: &[Option<usize>],
) -> Vec<Vec<(usize, f32)>> {
    assert!(
        dim > 0 && data.len().is_multiple_of(dim),
        "data is not a whole number of {dim}-float rows"
    );
    assert_eq!(queries.len(), exclude.len());
    assert!(
        queries.iter().all(|q| q.len() == dim),
        "query dimension differs from the vectors' {dim}"
    );
    let rows = data.len() / dim;
    // No more results than rows: a huge `k` (a user's -k 1000000000000) must not size a heap.
    let k = k.min(rows);
    let empty = || vec![TopK::new(k); queries.len()];
    if k == 0 || rows == 0 || queries.is_empty() {
        return vec![Vec::new(); queries.len()];
    }
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let tops = (0..chunks)
        .into_par_iter()
        .fold(empty, |mut tops, c| {
            let lo = c * CHUNK_ROWS;
            let hi = (lo + CHUNK_ROWS).min(rows);
            scan_rows(
                &data[lo * dim..hi * dim],
                dim,
                lo,
                queries,
                exclude,
                &mut tops,
            );
            tops
        })
        .reduce(empty, |a, b| {
            a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect()
        });
    tops.into_iter().map(TopK::into_sorted).collect()
}

/// The plain reference: score every row, sort, cut (ties by lower row).
pub fn top_k_naive(
    data: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    exclude: Option<usize>,
) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = data
        .chunks_exact(dim)
        .enumerate()
        .filter(|(i, _)| Some(*i) != exclude)
        .map(|(i, row)| (i, dot(row, query)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// The `k` best (index, score) for `query` among `set`, skipping index `skip`.
pub fn top_k(set: &VectorSet, query: &[f32], k: usize, skip: Option<usize>) -> Vec<(usize, f32)> {
    search_many(&set.data, set.dim, &[query], k, &[skip])
        .pop()
        .unwrap_or_default()
}

// ------------------------------------------------------- query expansion

/// Query expansion (Chum et al. 2007; αQE of Radenović et al. 2018): the new
/// query is `normalize(q + Σ_{i<n} w_i x_i)` over the first `n` results `x_i`
/// with scores `s_i`, `w_i = max(s_i, 0)^α`. `α = 0` is average QE (every
/// `w_i = 1`). The L2 normalisation is the contract's `x / sqrt(max(Σx², 1e-12))` (docs/contract.md#pipeline).
pub fn expand_query(
    query: &[f32],
    hits: &[(usize, f32)],
    row: impl Fn(usize) -> Vec<f32>,
    n: usize,
    alpha: f32,
) -> Vec<f32> {
    let mut q: Vec<f64> = query.iter().map(|&x| x as f64).collect();
    for &(i, s) in hits.iter().take(n) {
        let w = if alpha == 0.0 {
            1.0
        } else {
            (s.max(0.0) as f64).powf(alpha as f64)
        };
        for (a, b) in q.iter_mut().zip(row(i)) {
            *a += w * b as f64;
        }
    }
    let norm = q.iter().map(|x| x * x).sum::<f64>().max(1e-12).sqrt();
    q.iter().map(|x| (x / norm) as f32).collect()
}

/// Top-k hits per query, and the (possibly expanded) query vectors used.
pub type HitsAndQueries = (Vec<Vec<(usize, f32)>>, Vec<Vec<f32>>);

/// Search with optional query expansion: with `qe > 0`, search once, expand
/// each query with its first `qe` results ([`expand_query`]), search again.
pub fn search_qe(
    data: &[f32],
    dim: usize,
    queries: &[&[f32]],
    k: usize,
    exclude: &[Option<usize>],
    qe: usize,
    alpha: f32,
) -> HitsAndQueries {
    if qe == 0 {
        return (
            search_many(data, dim, queries, k, exclude),
            queries.iter().map(|q| q.to_vec()).collect(),
        );
    }
    let first = search_many(data, dim, queries, qe, exclude);
    let row = |i: usize| data[i * dim..(i + 1) * dim].to_vec();
    let expanded: Vec<Vec<f32>> = queries
        .iter()
        .zip(&first)
        .map(|(q, h)| expand_query(q, h, row, qe, alpha))
        .collect();
    let refs: Vec<&[f32]> = expanded.iter().map(Vec::as_slice).collect();
    (search_many(data, dim, &refs, k, exclude), expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_ranks_by_inner_product_and_skips_self() {
        let set = VectorSet {
            paths: vec!["a".into(), "b".into(), "c".into()],
            data: vec![1.0, 0.0, 0.6, 0.8, 0.0, 1.0],
            dim: 2,
        };
        let hits = top_k(&set, set.row(0), 2, Some(0));
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((hits[0].1 - 0.6).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_lower_row_across_chunks() {
        let dim = 4;
        let rows = CHUNK_ROWS * 3 + 5;
        let mut data = vec![0f32; rows * dim];
        for &r in &[7, CHUNK_ROWS + 1, 2 * CHUNK_ROWS + 3, rows - 1] {
            data[r * dim] = 1.0;
        }
        let q = [1.0, 0.0, 0.0, 0.0];
        let hits = search_many(&data, dim, &[&q], 3, &[None]);
        assert_eq!(
            hits[0].iter().map(|h| h.0).collect::<Vec<_>>(),
            vec![7, CHUNK_ROWS + 1, 2 * CHUNK_ROWS + 3]
        );
    }
}
