//! Every vector against every other, exactly: the k nearest of each row (a
//! kNN graph) and every pair at or above a score (for near-duplicate groups,
//! [`dedup`]).
//!
//! The rows are visited in square tiles of [`Tiling::rows`] rows. The score of a
//! pair is computed by a register-blocked kernel (4×4 pairs on AVX-512, 5×2 on
//! AVX2) that adds in exactly the order of [`crate::search::dot`] (16 lanes,
//! multiply then add, pairwise reduction, then the tail), so every score is
//! bit-identical to what `search` reports for the same two vectors, on every
//! CPU. The problem is symmetric: a tile (I, J) with J > I gives I's rows
//! their candidates from J *and* J's rows theirs from I, so each pair is
//! scored once. Rankings: higher score first,
//! ties by lower row — deterministic whatever the thread count.
//!
//! Memory beyond the vectors: the graph (`n·k` scores and rows) plus one tile
//! of scores per thread; [`Tiling::for_budget`] sizes the tiles to a budget.

pub mod amx;
pub mod checkpoint;
pub mod dedup;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod int8;

use crate::search::{LANES, dot, finish_dot};
use rayon::prelude::*;
use std::cmp::Ordering;

/// `n × k` neighbours, best first: `idx[i * k + r]` is row i's r-th nearest
/// other row, `score[i * k + r]` its inner product. `k` is at most `n − 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub n: usize,
    pub k: usize,
    pub idx: Vec<u32>,
    pub score: Vec<f32>,
}

impl Graph {
    pub fn row(&self, i: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        (0..self.k).map(move |r| {
            (
                self.idx[i * self.k + r] as usize,
                self.score[i * self.k + r],
            )
        })
    }
}

/// How the rows are cut into tiles.
#[derive(Clone, Copy, Debug)]
pub struct Tiling {
    /// Rows per tile side (a multiple of 4).
    pub rows: usize,
}

impl Tiling {
    /// The largest tiles (up to 2048 rows) whose score buffers — one per
    /// thread — and the graph of `n × k` fit in `budget` bytes; at least 64 rows.
    pub fn for_budget(budget: u64, n: usize, k: usize, threads: usize) -> Tiling {
        let graph = (n * k * 8) as u64;
        let left = budget.saturating_sub(graph) / threads.max(1) as u64;
        let side = ((left / 4) as f64).sqrt() as usize;
        Tiling {
            rows: (side.clamp(64, 2048) / 4) * 4,
        }
    }

    /// Bytes the graph and the tiles take (beyond the vectors).
    pub fn bytes(&self, n: usize, k: usize, threads: usize) -> u64 {
        (n * k * 8 + threads * self.rows * self.rows * 4) as u64
    }
}

/// Candidates better first: higher score, then lower row.
#[inline(always)]
fn better(s: f32, r: u32, than_s: f32, than_r: u32) -> bool {
    match s.total_cmp(&than_s) {
        Ordering::Greater => true,
        Ordering::Equal => r < than_r,
        Ordering::Less => false,
    }
}

/// One row's best `k`, kept sorted (best first) in place.
#[inline(always)]
fn offer(scores: &mut [f32], rows: &mut [u32], len: &mut usize, s: f32, r: u32) {
    let k = scores.len();
    if *len == k && !better(s, r, scores[k - 1], rows[k - 1]) {
        return;
    }
    let mut at = if *len < k {
        *len += 1;
        *len - 1
    } else {
        k - 1
    };
    while at > 0 && better(s, r, scores[at - 1], rows[at - 1]) {
        scores[at] = scores[at - 1];
        rows[at] = rows[at - 1];
        at -= 1;
    }
    scores[at] = s;
    rows[at] = r;
}

/// The scores of rows `a` against rows `b`, row-major `a.len() × b.len()`
/// into `out`, each exactly [`dot`]: `R × C` pairs at a time. Each of a dot
/// product's 16 lane sums is independent of the others, so they are computed
/// `W` lanes per pass over the dimension (`W = 8` on AVX2: a 5 × 2 block is 10
/// accumulator registers of AVX2's 16, with 7 loads for 10 multiplies and 10
/// adds — 4 × 3 spills one accumulator for the product's temporary; `W = 16` on
/// AVX-512), each lane adding in [`dot`]'s order. `b` is visited in
/// panels that stay in the L2 cache while all of `a` streams past them.
#[inline(always)]
fn tile_impl<const R: usize, const C: usize, const W: usize>(
    data: &[f32],
    dim: usize,
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(LANES.is_multiple_of(W));
    let nb = b.len();
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let chunks = dim / LANES;
    let tail = chunks * LANES;
    // About 192 KiB of `b` rows per panel (L2 is 512 KiB or more on the CPUs we target).
    let panel = ((192 * 1024 / (dim * 4).max(1)).max(C) / C) * C;
    let mut p = b.start;
    while p < b.end {
        let pe = (p + panel).min(b.end);
        let mut i = a.start;
        while i < a.end {
            let ai = i - a.start;
            if i + R <= a.end {
                let xs: [&[f32]; R] = std::array::from_fn(|u| row(i + u));
                let mut j = p;
                while j + C <= pe {
                    let ys: [&[f32]; C] = std::array::from_fn(|v| row(j + v));
                    let mut sums = [[[0f32; LANES]; C]; R];
                    for h in (0..LANES).step_by(W) {
                        let mut acc = [[[0f32; W]; C]; R];
                        for c in 0..chunks {
                            let o = c * LANES + h;
                            let y: [&[f32; W]; C] =
                                std::array::from_fn(|v| ys[v][o..o + W].try_into().unwrap());
                            for u in 0..R {
                                let x: &[f32; W] = xs[u][o..o + W].try_into().unwrap();
                                for v in 0..C {
                                    for l in 0..W {
                                        acc[u][v][l] += x[l] * y[v][l];
                                    }
                                }
                            }
                        }
                        for u in 0..R {
                            for v in 0..C {
                                sums[u][v][h..h + W].copy_from_slice(&acc[u][v]);
                            }
                        }
                    }
                    for u in 0..R {
                        for v in 0..C {
                            out[(ai + u) * nb + (j - b.start + v)] =
                                finish_dot(sums[u][v], &xs[u][tail..], &ys[v][tail..]);
                        }
                    }
                    j += C;
                }
                for j in j..pe {
                    for u in 0..R {
                        out[(ai + u) * nb + (j - b.start)] = dot(xs[u], row(j));
                    }
                }
                i += R;
            } else {
                for j in p..pe {
                    out[ai * nb + (j - b.start)] = dot(row(i), row(j));
                }
                i += 1;
            }
        }
        p = pe;
    }
}

macro_rules! tile_for {
    ($name:ident, $feature:literal, $r:literal, $c:literal, $w:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(
            data: &[f32],
            dim: usize,
            a: std::ops::Range<usize>,
            b: std::ops::Range<usize>,
            out: &mut [f32],
        ) {
            tile_impl::<$r, $c, $w>(data, dim, a, b, out)
        }
    };
}
tile_for!(tile_avx512, "avx512f", 4, 4, 16);
tile_for!(tile_avx2, "avx2", 5, 2, 8);

/// The scores of rows `a` against rows `b` (see [`tile_impl`]), on the best
/// instruction set of this CPU (the same additions in the same order on each).
pub fn tile_scores(
    data: &[f32],
    dim: usize,
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
    out: &mut [f32],
) {
    assert!(out.len() >= a.len() * b.len() && data.len() >= a.end.max(b.end) * dim);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { tile_avx512(data, dim, a, b, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { tile_avx2(data, dim, a, b, out) };
        }
    }
    tile_impl::<2, 2, 16>(data, dim, a, b, out)
}

/// The exact kNN graph of the `n = data.len() / dim` rows (see the module
/// docs). `progress(rows_done)` is called after each block of rows is final.
pub fn knn(
    data: &[f32],
    dim: usize,
    k: usize,
    tiling: Tiling,
    progress: &(dyn Fn(usize) + Sync),
) -> Graph {
    let n = data.len() / dim.max(1);
    let mut graph = Graph::empty(n, k.min(n.saturating_sub(1)));
    let all: Vec<usize> = (0..tiling.blocks(n)).collect();
    knn_blocks(data, dim, tiling, &mut graph, &all, &mut |b, _| {
        progress(tiling.block(b, n).end)
    });
    graph
}

impl Graph {
    /// No candidates yet: every slot empty (row `u32::MAX`, score −∞).
    pub fn empty(n: usize, k: usize) -> Graph {
        Graph {
            n,
            k,
            idx: vec![u32::MAX; n * k],
            score: vec![f32::NEG_INFINITY; n * k],
        }
    }

    /// The filled slots of each row (they come first: lists are kept sorted).
    fn lens(&self) -> Vec<usize> {
        (0..self.n)
            .map(|i| {
                self.idx[i * self.k..(i + 1) * self.k]
                    .iter()
                    .take_while(|&&r| r != u32::MAX)
                    .count()
            })
            .collect()
    }

    /// Adds `other`'s candidates to each row's list (both partial graphs of
    /// the same rows, e.g. two ranks' or a stopped run's and this run's). A
    /// row's best `k` of the union of two candidate sets is the best `k` of
    /// their two best-`k` lists, and ties are broken by row, so merging is
    /// exact in any order. A candidate in both lists (the same pair scored by
    /// two runs: bit-identical) is kept once.
    pub fn merge(&mut self, other: &Graph) {
        assert_eq!(
            (self.n, self.k),
            (other.n, other.k),
            "graphs of different shapes"
        );
        self.merge_rows(0, &other.idx, &other.score);
    }

    /// [`Graph::merge`] for a run of rows of another graph, from row `first`
    /// (`idx.len() / k` rows).
    pub fn merge_rows(&mut self, first: usize, idx: &[u32], score: &[f32]) {
        let k = self.k;
        if k == 0 {
            return;
        }
        assert!(idx.len() == score.len() && idx.len().is_multiple_of(k));
        let rows = idx.len() / k;
        assert!(first + rows <= self.n, "rows {first}+{rows} of {}", self.n);
        for (a, i) in (first..first + rows).enumerate() {
            let (s, r) = (
                &mut self.score[i * k..(i + 1) * k],
                &mut self.idx[i * k..(i + 1) * k],
            );
            let mut len = r.iter().take_while(|&&j| j != u32::MAX).count();
            for m in 0..k {
                let (j, v) = (idx[a * k + m], score[a * k + m]);
                if j == u32::MAX {
                    break;
                }
                if !r[..len].contains(&j) {
                    offer(s, r, &mut len, v, j);
                }
            }
        }
    }
}

impl Tiling {
    /// How many blocks of [`Tiling::rows`] rows `n` rows make.
    pub fn blocks(&self, n: usize) -> usize {
        n.div_ceil(self.rows.max(4))
    }

    /// The rows of block `b`.
    pub fn block(&self, b: usize, n: usize) -> std::ops::Range<usize> {
        let side = self.rows.max(4);
        (b * side).min(n)..((b + 1) * side).min(n)
    }

    /// The pairs block `b` scores in [`knn_blocks`] (against itself and every
    /// later block): its cost, for sharing blocks out evenly.
    pub fn block_pairs(&self, b: usize, n: usize) -> u64 {
        let r = self.block(b, n);
        r.len() as u64 * (n - r.start) as u64
    }
}

/// The candidate lists of a run of rows, best first: `score`/`idx` hold `k`
/// slots per row, `len` how many are filled. One tile task owns its lists.
pub(crate) struct Lists<'a> {
    pub k: usize,
    pub score: &'a mut [f32],
    pub idx: &'a mut [u32],
    pub len: &'a mut [usize],
}

impl Lists<'_> {
    /// Offers row `j` with score `s` to the list of row `a` (of this run).
    #[inline(always)]
    pub fn offer(&mut self, a: usize, s: f32, j: u32) {
        let k = self.k;
        offer(
            &mut self.score[a * k..(a + 1) * k],
            &mut self.idx[a * k..(a + 1) * k],
            &mut self.len[a],
            s,
            j,
        );
    }

    /// The score a candidate must reach to enter row `a`'s list: its worst
    /// kept score once full, else −∞.
    #[inline(always)]
    pub fn worst(&self, a: usize) -> f32 {
        if self.len[a] == self.k {
            self.score[a * self.k + self.k - 1]
        } else {
            f32::NEG_INFINITY
        }
    }
}

/// What one task does with tile (I, J) of [`knn_blocks_with`]: give I's rows
/// (`ri`) their candidates from J's (`rj`) in `mine` (this task's lists for
/// I's rows, empty at the start) and, when `theirs` is there (J ≠ I), J's rows
/// theirs from I in `theirs` (the graph's lists of J's rows). `floor[a]`: a
/// score row `ri.start + a` of I already holds k candidates at or above
/// (−∞ when not), so a candidate below it can be dropped.
pub(crate) type TileTask<'s> = dyn Fn(
        std::ops::Range<usize>,
        std::ops::Range<usize>,
        &mut Lists<'_>,
        Option<&mut Lists<'_>>,
        &[f32],
    ) + Sync
    + 's;

/// The fp32 tile task: every score of the tile by [`tile_scores`], offered to both sides.
fn fp32_tile(
    data: &[f32],
    dim: usize,
) -> impl Fn(
    std::ops::Range<usize>,
    std::ops::Range<usize>,
    &mut Lists<'_>,
    Option<&mut Lists<'_>>,
    &[f32],
) + Sync
+ '_ {
    move |ri, rj, mine, theirs, _floor| {
        let mut tile = vec![0f32; ri.len() * rj.len()];
        tile_scores(data, dim, ri.clone(), rj.clone(), &mut tile);
        for (a, i) in ri.clone().enumerate() {
            for (c, j) in rj.clone().enumerate() {
                if i != j {
                    mine.offer(a, tile[a * rj.len() + c], j as u32);
                }
            }
        }
        if let Some(theirs) = theirs {
            // Row by row through the tile (it is row-major); each column's worst
            // kept score in one array rejects most candidates without touching
            // that column's list. Offers are order-independent (a total order).
            let mut worst: Vec<f32> = (0..rj.len()).map(|c| theirs.worst(c)).collect();
            for (a, i) in ri.clone().enumerate() {
                let scores = &tile[a * rj.len()..(a + 1) * rj.len()];
                for (c, &v) in scores.iter().enumerate() {
                    if v < worst[c] {
                        continue;
                    }
                    theirs.offer(c, v, i as u32);
                    worst[c] = theirs.worst(c);
                }
            }
        }
    }
}

/// Scores `blocks` (block numbers of `tiling`, see [`Tiling::block`]) into
/// `graph`, a partial graph: block I is scored against itself and against
/// every later block J, and each tile (I, J) gives I's rows their candidates
/// from J and J's rows theirs from I. So every pair belongs to exactly one
/// block (the block of its first row), and the graphs of any split of the
/// blocks — over ranks, or over a stopped run and its resumption — merge
/// ([`Graph::merge`]) into the exact graph. Processing all blocks in order
/// into one graph makes each block's rows final once it is done.
/// `done(block, graph)` is called after each block.
pub fn knn_blocks(
    data: &[f32],
    dim: usize,
    tiling: Tiling,
    graph: &mut Graph,
    blocks: &[usize],
    done: &mut dyn FnMut(usize, &Graph),
) {
    assert!(dim > 0 && data.len().is_multiple_of(dim));
    knn_blocks_with(
        data.len() / dim,
        tiling,
        graph,
        blocks,
        done,
        &fp32_tile(data, dim),
    )
}

/// [`knn_blocks`] over `n` rows with `task` scoring each tile (in parallel:
/// the tiles of block I against itself and every later block; the candidates
/// for I's rows are merged after them).
pub(crate) fn knn_blocks_with(
    n: usize,
    tiling: Tiling,
    graph: &mut Graph,
    blocks: &[usize],
    done: &mut dyn FnMut(usize, &Graph),
    task: &TileTask<'_>,
) {
    assert_eq!(graph.n, n, "a graph of {} rows for {n} vectors", graph.n);
    let k = graph.k;
    let b = tiling.rows.max(4);
    let nblocks = tiling.blocks(n);
    if k == 0 {
        for &bi in blocks {
            done(bi, graph);
        }
        return;
    }
    let range = |t: usize| tiling.block(t, n);
    let mut lens = graph.lens();
    for &bi in blocks {
        assert!(bi < nblocks, "block {bi} of {nblocks}");
        let ri = range(bi);
        let (hi_s, lo_s) = (ri.end * k, ri.start * k);
        // The rows after block I, split by tile: each task owns its tile's rows.
        let (head_s, later_s) = graph.score.split_at_mut(hi_s);
        let (head_i, later_i) = graph.idx.split_at_mut(hi_s);
        let (head_l, later_l) = lens.split_at_mut(ri.end);
        let mut mine = Lists {
            k,
            score: &mut head_s[lo_s..],
            idx: &mut head_i[lo_s..],
            len: &mut head_l[ri.start..],
        };
        let floor: Vec<f32> = (0..ri.len()).map(|a| mine.worst(a)).collect();
        // Block I against itself and against each later tile, in parallel; each
        // task returns its candidates for I's rows, merged below.
        let locals: Vec<(Vec<f32>, Vec<u32>, Vec<usize>)> = std::iter::once((bi, None))
            .chain(
                later_s
                    .chunks_mut(b * k)
                    .zip(later_i.chunks_mut(b * k))
                    .zip(later_l.chunks_mut(b))
                    .enumerate()
                    .map(|(t, ((s, i), l))| (bi + 1 + t, Some((s, i, l)))),
            )
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(bj, theirs)| {
                let mut s = vec![f32::NEG_INFINITY; ri.len() * k];
                let mut r = vec![u32::MAX; ri.len() * k];
                let mut l = vec![0usize; ri.len()];
                let mut local = Lists {
                    k,
                    score: &mut s,
                    idx: &mut r,
                    len: &mut l,
                };
                let mut theirs = theirs.map(|(score, idx, len)| Lists { k, score, idx, len });
                task(ri.clone(), range(bj), &mut local, theirs.as_mut(), &floor);
                (s, r, l)
            })
            .collect();
        for (s, r, l) in locals {
            for a in 0..ri.len() {
                for m in 0..l[a] {
                    mine.offer(a, s[a * k + m], r[a * k + m]);
                }
            }
        }
        done(bi, graph);
    }
}

/// Shares `blocks` out over `ranks` so each scores about as many pairs
/// (longest first, each to the least loaded rank; ties to the lower rank):
/// the same answer on every rank.
pub fn share_blocks(tiling: Tiling, n: usize, blocks: &[usize], ranks: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = blocks.to_vec();
    order.sort_by_key(|&b| (std::cmp::Reverse(tiling.block_pairs(b, n)), b));
    let mut load = vec![0u64; ranks.max(1)];
    let mut mine = vec![Vec::new(); ranks.max(1)];
    for b in order {
        let r = (0..load.len()).min_by_key(|&r| (load[r], r)).unwrap();
        load[r] += tiling.block_pairs(b, n);
        mine[r].push(b);
    }
    for m in &mut mine {
        m.sort_unstable();
    }
    mine
}

/// Two rows `i < j` and their score.
pub type Pair = (u32, u32, f32);

/// Every pair `(i, j)`, `i < j`, whose score is at least `threshold`, by
/// blocks as [`knn_blocks`] (each pair scored once): `found(block, pairs)`
/// receives each block's pairs, blocks in order.
pub fn pairs_at_least(
    data: &[f32],
    dim: usize,
    threshold: f32,
    tiling: Tiling,
    found: &mut dyn FnMut(usize, &[Pair]),
) {
    assert!(dim > 0 && data.len().is_multiple_of(dim));
    let n = data.len() / dim;
    let blocks = tiling.blocks(n);
    let range = |t: usize| tiling.block(t, n);
    for bi in 0..blocks {
        let ri = range(bi);
        let pairs: Vec<Pair> = (bi..blocks)
            .into_par_iter()
            .map(|bj| {
                let rj = range(bj);
                let mut tile = vec![0f32; ri.len() * rj.len()];
                tile_scores(data, dim, ri.clone(), rj.clone(), &mut tile);
                let mut out = Vec::new();
                for (a, i) in ri.clone().enumerate() {
                    for (c, j) in rj.clone().enumerate() {
                        let s = tile[a * rj.len() + c];
                        if j > i && s >= threshold {
                            out.push((i as u32, j as u32, s));
                        }
                    }
                }
                out
            })
            .flatten()
            .collect();
        found(bi, &pairs);
    }
}
