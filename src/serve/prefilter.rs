//! An exact scan of the whole index for a batch of queries through an 8-bit
//! copy of the vectors: each query's score against every row is first bounded
//! from above with integer dot products (AVX-512 VNNI: 64 multiply-adds per
//! instruction, on a copy a quarter of the float32 size, so a pass reads 512 MB
//! instead of 2 GB at 1M × 512), and only the rows the bound cannot rule out
//! are scored again with [`crate::search::dot`] — the scan of `search`, whose
//! scores and order (higher score first, ties by lower row) come out bit for bit.
//!
//! The bound is the one proven in [`crate::knn::int8`] (the copies are made by
//! [`Quantized::of`], so the same `q`, scale, norm and error per vector), here
//! with a query in place of the tile's row `i` and an index row in place of
//! the column `j`:
//!
//! ```text
//! upper = (s_q·s_j)·(q_q·q_j) + κ·N_q·N_j + N_q·|e_j| + |e_q|·N_j + 2⁻¹²⁴ ≥ dot(x_j, q)
//! ```
//!
//! evaluated in that order (three fused multiply-adds and an add). The same
//! bound for the query `−q`, negated, is a lower bound of the score
//! (`lower_bound`: `−q`'s copy and score are `q`'s with the signs flipped).
//! The k-th largest lower bound a query has met is its floor: k rows score
//! at least that much, so the final k-th best does too. The scan keeps, per
//! query, the rows whose upper bound reaches the floor when they are met
//! (the parts share their floors); once the pass is over, those still at or
//! above the floor of the whole pass are re-scored, highest bound first,
//! until the next bound is below the k-th best exact score found. A row left
//! out is strictly worse than the final k-th and never in the answer; a tie
//! reaches the floor and is re-scored, as is a bound that is not a number.
//! So a pass reads a few float32 rows per query (about k plus the bound's
//! slack), not one per rise of a running k-th best. The proof needs the
//! products not to overflow: [`Int8Index::build`] refuses rows (and
//! [`Int8Index::accepts`] queries) with a norm over 2⁴⁰, and the caller
//! scans those in float32.
//!
//! Layout: the index rows are packed once, in groups of 64 rows as
//! `[d/4][64][4]` bytes offset by 128 (VNNI multiplies unsigned by signed
//! bytes; the offset's `128·Σq_q` is taken off per query), the steps padded
//! to whole chunks of 64 dimensions with zeros (AMX's tiles take 64 at a
//! time), so a group (32 KiB at d = 512) stays in L1 while the queries meet
//! it: up to 6 at a time broadcast against it (VNNI), or 16 at a time as one
//! tile ([`crate::knn::amx`], where the CPU has AMX: a sixteenth of VNNI's
//! instructions for 16 queries, so a pass for many queries costs what
//! reading the copy costs). Every kernel makes the same integer sums, and
//! the bounds from them are the same float operations in the same order.

use crate::knn::amx::{self, Tiles};
use crate::knn::int8::{Int8Kernel, MAX_DIM, Quantized, prefetch_l2};
use crate::search::dot;
use crate::store::VectorSource;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering as Atomic};

/// Index rows per packed group (four 16-lane vectors of scores).
const GROUP: usize = 64;
/// Queries per VNNI kernel call (6 × 4 accumulators + 4 loaded vectors: 28 of 32 registers).
const MR: usize = 6;
/// Queries per call of any kernel (AMX: one tile of 16 rows).
const MAX_RUN: usize = amx::ROWS;
/// Queries from which a pass goes through AMX rather than VNNI (measured
/// at 1M × 512 on 2 cores, k = 10, both prefetching, VNNI against AMX:
/// 2 queries 16.0 and 16.8 ms, 4 queries 17.0 and 17.3, 6 queries 17.7 and
/// 18.1, 8 queries 18.7 and 18.4, 16 queries 24.6 and 20.5).
const AMX_FROM: usize = 8;
/// How many groups ahead of the one being summed the kernels prefetch
/// (into L2, a line at a time, spread over the group's loads). Measured at
/// 1M × 512, 8 queries by AMX: none 19.8 ms, 1 to 8 groups ahead 17.6 to
/// 18.2, 16 ahead 20.3; one query by VNNI: none 16.7, 2 ahead 15.5. Asking
/// for a whole group at once instead (512 prefetches before its loads)
/// costs AMX more than it saves (8 queries: 20.8 ms without, 24.5 with).
const PREFETCH_AHEAD: usize = 2;
/// Dimensions per padded chunk of the layout.
const CHUNK: usize = amx::CHUNK;
/// The absolute term of the bound: results in the subnormal range round by an
/// absolute amount ([`crate::knn::int8`], module docs).
const TINY: f32 = f32::MIN_POSITIVE * 4.0;
/// Norms above this are not pre-filtered: `N_q·N_j`, `s_q·s_j` and `s·s·(q·q)`
/// stay below 2¹⁰⁴, far from float32's overflow, as the bound's proof assumes.
pub const MAX_NORM: f32 = (1u64 << 40) as f32;
/// Rows quantised at a time while building (bounds the scratch memory).
const BUILD_ROWS: usize = GROUP * 256;

/// Which integer kernel makes a pass's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles (`tdpbsud`) for the sums, AVX-512 for the bounds.
    Amx,
    /// AVX-512 VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// Plain Rust: the reference the others are tested against (slow).
    Portable,
}

impl Kernel {
    /// The fastest this CPU runs; `None` without 8-bit dot-product
    /// instructions (then the float32 scan is faster than any emulation).
    pub fn detect() -> Option<Kernel> {
        match Int8Kernel::detect() {
            Some(Int8Kernel::Avx512Vnni) if amx::available() => Some(Kernel::Amx),
            Some(Int8Kernel::Avx512Vnni) => Some(Kernel::Avx512Vnni),
            _ => None,
        }
    }

    /// Every kernel this CPU runs, the reference first.
    pub fn all_here() -> Vec<Kernel> {
        [Kernel::Portable, Kernel::Avx512Vnni, Kernel::Amx]
            .into_iter()
            .filter(|k| k.runs_here())
            .collect()
    }

    pub fn runs_here(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Avx512Vnni => Int8Kernel::detect() == Some(Int8Kernel::Avx512Vnni),
            Kernel::Amx => amx::available(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx-int8",
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::Portable => "portable",
        }
    }

    /// The kernel for a pass of `queries`: AMX computes a whole tile of 16
    /// queries whatever their number, so below [`AMX_FROM`] VNNI is faster
    /// (the same sums, so the same answers).
    fn for_queries(self, queries: usize) -> Kernel {
        if self == Kernel::Amx && queries < AMX_FROM {
            Kernel::Avx512Vnni
        } else {
            self
        }
    }

    /// Queries per kernel call.
    fn run(self) -> usize {
        match self {
            Kernel::Amx => amx::ROWS,
            _ => MR,
        }
    }
}

/// The 8-bit copy of an index, packed for the pass.
pub struct Int8Index {
    dim: usize,
    dim4: usize,
    /// Dimensions of a packed row: `dim4` padded to whole chunks of 64.
    padded_dim: usize,
    rows: usize,
    /// `groups × (dim4/4) × 64 × 4` bytes, `q + 128`; padding rows are `q = 0`.
    packed: Vec<u8>,
    /// Per row (padded to whole groups with zeros): `s`, `max(|x|, |x̃|)`, `|x − x̃|`.
    scale: Vec<f32>,
    norm: Vec<f32>,
    err: Vec<f32>,
    /// κ of the bound for this dimension (the same for the queries' copies).
    kappa: f32,
    kernel: Kernel,
    /// Rows re-scored in float32 so far, all passes together.
    rescored: AtomicU64,
}

/// Why a set of vectors cannot be pre-filtered.
#[derive(Debug, Clone, PartialEq)]
pub struct NotPrefiltered(pub String);

impl Int8Index {
    /// Quantises and packs the rows of `data` (row-major, `dim` wide), a block
    /// of rows at a time; `done(rows)` is called with each block of `data`
    /// once it is copied (the caller may release those pages).
    pub fn build(
        data: &[f32],
        dim: usize,
        kernel: Kernel,
        done: &mut dyn FnMut(&[f32]),
    ) -> Result<Int8Index, NotPrefiltered> {
        if dim == 0 || dim > MAX_DIM {
            return Err(NotPrefiltered(format!(
                "{dim} dimensions (the 8-bit bound holds for 1 to {MAX_DIM})"
            )));
        }
        if !kernel.runs_here() {
            return Err(NotPrefiltered(format!(
                "this CPU does not run the {} kernel",
                kernel.name()
            )));
        }
        assert!(data.len().is_multiple_of(dim), "not whole rows of {dim}");
        let rows = data.len() / dim;
        let dim4 = dim.div_ceil(4) * 4;
        let padded_dim = dim.div_ceil(CHUNK) * CHUNK;
        // Padding steps stay 128: q = 0, nothing added to any sum.
        let steps = padded_dim / 4;
        let groups = rows.div_ceil(GROUP);
        let padded = groups * GROUP;
        // Reserved, not written: pages are committed as the blocks are packed,
        // while the caller releases the float32 pages already copied.
        let mut packed = Vec::with_capacity(groups * steps * GROUP * 4);
        let (mut scale, mut norm, mut err) = (
            Vec::with_capacity(padded),
            Vec::with_capacity(padded),
            Vec::with_capacity(padded),
        );
        let mut kappa = None;
        for (b, block) in data.chunks(BUILD_ROWS * dim).enumerate() {
            let qz = Quantized::of(block, dim);
            if let Some(i) = qz
                .norm
                .iter()
                .zip(&qz.err)
                .position(|(n, e)| !(*n <= MAX_NORM && e.is_finite()))
            {
                return Err(NotPrefiltered(format!(
                    "row {} is not finite or its norm is over 2^40",
                    b * BUILD_ROWS + i
                )));
            }
            kappa = Some(qz.kappa);
            let n = block.len() / dim;
            for g in 0..n.div_ceil(GROUP) {
                let first = g * GROUP;
                let mut bytes = vec![128u8; steps * GROUP * 4];
                for col in 0..GROUP.min(n - first) {
                    let q = &qz.q[(first + col) * dim4..(first + col + 1) * dim4];
                    for (t, four) in q.chunks_exact(4).enumerate() {
                        let o = t * GROUP * 4 + col * 4;
                        for (k, &v) in four.iter().enumerate() {
                            bytes[o + k] = (v as u8) ^ 0x80;
                        }
                    }
                }
                packed.extend_from_slice(&bytes);
            }
            scale.extend_from_slice(&qz.scale);
            norm.extend_from_slice(&qz.norm);
            err.extend_from_slice(&qz.err);
            done(block);
        }
        for v in [&mut scale, &mut norm, &mut err] {
            v.resize(padded, 0.0);
        }
        Ok(Int8Index {
            dim,
            dim4,
            padded_dim,
            rows,
            packed,
            scale,
            norm,
            err,
            kappa: kappa.unwrap_or_else(|| Quantized::of(&vec![0.0; dim], dim).kappa),
            kernel,
            rescored: AtomicU64::new(0),
        })
    }

    /// AMX reads each query's chunk of 64 bytes as a tile row: a copy of
    /// the queries padded with zeros to the layout's width (empty for the
    /// other kernels, which read `qz` itself).
    fn pad_queries(&self, qz: &Quantized, kernel: Kernel) -> Vec<i8> {
        if kernel != Kernel::Amx {
            return Vec::new();
        }
        let mut p = vec![0i8; qz.q.len() / self.dim4 * self.padded_dim];
        for (row, q) in p
            .chunks_exact_mut(self.padded_dim)
            .zip(qz.q.chunks_exact(self.dim4))
        {
            row[..self.dim4].copy_from_slice(q);
        }
        p
    }

    /// Rows re-scored in float32 so far, all passes together.
    pub fn rescored(&self) -> u64 {
        self.rescored.load(Atomic::Relaxed)
    }

    /// Bytes this copy holds.
    pub fn bytes_held(&self) -> u64 {
        (self.packed.len() + 4 * (self.scale.len() + self.norm.len() + self.err.len())) as u64
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Whether `query` can go through the pre-filter: finite, and a norm of
    /// at most 2³⁹ (so that its copy's norm, rounded up, is within 2⁴⁰).
    pub fn accepts(&self, query: &[f32]) -> bool {
        query.len() == self.dim
            && query.iter().all(|x| x.is_finite())
            && query
                .iter()
                .map(|&x| x as f64 * x as f64)
                .sum::<f64>()
                .sqrt()
                <= MAX_NORM as f64 / 2.0
    }

    /// The `ks[i]` best `(row, score)` of each query among the rows of
    /// `source` (the float32 rows this copy was built from), best first, never
    /// `exclude[i]`: exactly [`crate::search::search_many`]'s answer. Every
    /// query must be [`Int8Index::accepts`]'d. The rows re-scored are read
    /// with [`VectorSource::read_row`] (from a mapped file: without mapping
    /// their pages).
    pub fn search(
        &self,
        source: &dyn VectorSource,
        queries: &[&[f32]],
        ks: &[usize],
        exclude: &[Option<usize>],
    ) -> Vec<Vec<(usize, f32)>> {
        let (dim, n, nq) = (self.dim, self.rows, queries.len());
        assert!(
            source.len() == n && source.dim() == dim,
            "other vectors than the copy's"
        );
        assert!(ks.len() == nq && exclude.len() == nq);
        if nq == 0 || n == 0 {
            return vec![Vec::new(); nq];
        }
        let flat: Vec<f32> = queries.iter().flat_map(|q| q.iter().copied()).collect();
        let qz = Quantized::of(&flat, dim);
        assert_eq!(qz.kappa, self.kappa);
        assert!(
            qz.norm.iter().all(|&v| v <= MAX_NORM),
            "a query not accepted"
        );
        let ks: Vec<usize> = ks.iter().map(|&k| k.min(n)).collect();
        let floors: Vec<AtomicU32> = (0..nq)
            .map(|_| AtomicU32::new(key(f32::NEG_INFINITY)))
            .collect();
        let kernel = self.kernel.for_queries(nq);
        let padded = self.pad_queries(&qz, kernel);
        let groups = n.div_ceil(GROUP);
        // More parts than threads, so a core slowed by another process does
        // not hold up the pass; each part keeps its own lists, merged below.
        let parts = (rayon::current_num_threads() * 4).clamp(1, groups);
        let found: Vec<Found> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let pass = Pass {
                    index: self,
                    kernel,
                    queries,
                    qz: &qz,
                    padded: &padded,
                    exclude,
                    floors: &floors,
                };
                pass.groups(p * groups / parts..(p + 1) * groups / parts, &ks)
            })
            .collect();
        let answers: Vec<(Vec<(usize, f32)>, u64)> = (0..nq)
            .into_par_iter()
            .map(|u| {
                // The floor of the whole pass: the k-th largest lower bound
                // of all rows (each part kept its k largest).
                let mut lower = Best::new(ks[u]);
                for f in &found {
                    for (j, lo) in f.lower[u].items() {
                        lower.offer(lo, j);
                    }
                }
                let floor = lower.worst();
                // Not `up < floor`: a bound that is not a number is re-scored.
                let mut cands: Vec<(usize, f32)> = found
                    .iter()
                    .flat_map(|f| f.cands[u].iter().copied())
                    .filter(|&(_, up)| up.partial_cmp(&floor) != Some(Ordering::Less))
                    .collect();
                // Highest bound first (NaN before all): once a bound is below
                // the k-th best exact score, so is every one after it.
                let order = |up: f32| if up.is_nan() { f32::INFINITY } else { up };
                cands
                    .sort_unstable_by(|a, b| order(b.1).total_cmp(&order(a.1)).then(a.0.cmp(&b.0)));
                let mut best = Best::new(ks[u]);
                let mut row = vec![0f32; dim];
                let mut rescored = 0;
                for (j, up) in cands {
                    if up < best.worst() {
                        break;
                    }
                    source.read_row(j, &mut row);
                    best.offer(dot(&row, queries[u]), j);
                    rescored += 1;
                }
                (best.items().collect(), rescored)
            })
            .collect();
        self.rescored
            .fetch_add(answers.iter().map(|a| a.1).sum(), Atomic::Relaxed);
        answers.into_iter().map(|a| a.0).collect()
    }
}

/// What one part of a pass found, per query: the k largest lower bounds of
/// its rows, and the rows whose upper bound reached the floor when they were
/// met (with that bound), to be re-scored once the floor of the whole pass
/// is known.
struct Found {
    lower: Vec<Best>,
    cands: Vec<Vec<(usize, f32)>>,
}

/// `f32` to a `u32` whose order is [`f32::total_cmp`]'s (for a shared floor).
fn key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 { !b } else { b | 1 << 31 }
}

fn unkey(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
}

/// One query's best rows so far, sorted best first (higher score, then lower row).
struct Best {
    k: usize,
    score: Vec<f32>,
    row: Vec<usize>,
}

impl Best {
    fn new(k: usize) -> Best {
        Best {
            k,
            score: Vec::with_capacity(k),
            row: Vec::with_capacity(k),
        }
    }

    /// The score a row must reach to be kept: the k-th best once full.
    fn worst(&self) -> f32 {
        if self.k == 0 {
            f32::INFINITY
        } else if self.score.len() == self.k {
            self.score[self.k - 1]
        } else {
            f32::NEG_INFINITY
        }
    }

    fn offer(&mut self, s: f32, r: usize) {
        let better = |i: usize| match s.total_cmp(&self.score[i]) {
            Ordering::Greater => true,
            Ordering::Equal => r < self.row[i],
            Ordering::Less => false,
        };
        if self.k == 0 || (self.score.len() == self.k && !better(self.k - 1)) {
            return;
        }
        let mut at = self.score.len();
        while at > 0 && better(at - 1) {
            at -= 1;
        }
        if self.score.len() == self.k {
            self.score.pop();
            self.row.pop();
        }
        self.score.insert(at, s);
        self.row.insert(at, r);
    }

    fn items(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.row.iter().copied().zip(self.score.iter().copied())
    }
}

/// What one part of a pass reads.
struct Pass<'a> {
    index: &'a Int8Index,
    /// The index's kernel, or VNNI for a pass of few queries.
    kernel: Kernel,
    queries: &'a [&'a [f32]],
    qz: &'a Quantized,
    /// The queries' bytes padded to the layout's width (AMX only).
    padded: &'a [i8],
    exclude: &'a [Option<usize>],
    /// Per query: the highest floor any part has reached (as [`key`]).
    floors: &'a [AtomicU32],
}

impl Pass<'_> {
    /// The lower-bound lists and candidates of `groups` (see [`Found`]). A
    /// query's floor is the k-th largest lower bound it has met here or any
    /// other part has (the shared `floors`): k rows score at least that
    /// much, so the final k-th best does too, and a row whose upper bound
    /// is below it is never in the answer. No row is read here: the floor
    /// rises on the 8-bit sums alone.
    fn groups(&self, groups: std::ops::Range<usize>, ks: &[usize]) -> Found {
        let ix = self.index;
        let nq = self.queries.len();
        let group_bytes = ix.padded_dim / 4 * GROUP * 4;
        let mut lower: Vec<Best> = ks.iter().map(|&k| Best::new(k)).collect();
        let mut cands: Vec<Vec<(usize, f32)>> = vec![Vec::new(); nq];
        let mut need = vec![f32::NEG_INFINITY; nq];
        let kernel = self.kernel;
        let mut scratch = Scratch::new(ix, kernel, self.padded);
        // Queries in near-equal runs of at most the kernel's (8 → 4 + 4, not 6 + 2).
        let runs = nq.div_ceil(kernel.run());
        let end = groups.end;
        for g in groups {
            for (u, need) in need.iter_mut().enumerate() {
                let floor = unkey(self.floors[u].load(Atomic::Relaxed));
                *need = lower[u].worst().max(floor);
            }
            let group = &ix.packed[g * group_bytes..(g + 1) * group_bytes];
            // The group the kernels ask into L2 while they sum this one
            // (none near the end of this part's range: the next part's
            // thread reads those).
            let ahead = if g + PREFETCH_AHEAD < end {
                &ix.packed
                    [(g + PREFETCH_AHEAD) * group_bytes..(g + PREFETCH_AHEAD + 1) * group_bytes]
            } else {
                &[][..]
            };
            let cols = g * GROUP..(g + 1) * GROUP;
            let real = (ix.rows - g * GROUP).min(GROUP);
            let valid = if real == GROUP {
                u64::MAX
            } else {
                (1u64 << real) - 1
            };
            let side = Side {
                bytes: group,
                ahead,
                scale: &ix.scale[cols.clone()],
                norm: &ix.norm[cols.clone()],
                err: &ix.err[cols],
                valid,
            };
            for r in 0..runs {
                let (u0, u1) = (r * nq / runs, (r + 1) * nq / runs);
                // Prefetched once per group, by its first run.
                let side = Side {
                    ahead: if r == 0 { ahead } else { &[] },
                    ..side
                };
                let masks = bounds(kernel, self.qz, u0..u1, &side, &need, &mut scratch);
                for u in u0..u1 {
                    let mut m = masks[u - u0];
                    while m != 0 {
                        let col = m.trailing_zeros() as usize;
                        m &= m - 1;
                        let j = g * GROUP + col;
                        let up = scratch.upper[u - u0][col];
                        // The floor may have risen since the mask was made.
                        if up < need[u] || self.exclude[u] == Some(j) {
                            continue;
                        }
                        cands[u].push((j, up));
                        let (sum, sj) = (scratch.sums[u - u0][col], side.scale[col]);
                        let lo = lower_bound(self.qz, u, sum, sj, side.norm[col], side.err[col]);
                        // Below the floor (or not a number) it cannot raise it.
                        if lo.partial_cmp(&need[u]) != Some(Ordering::Greater) {
                            continue;
                        }
                        lower[u].offer(lo, j);
                        let w = lower[u].worst();
                        if w > need[u] {
                            need[u] = w;
                            self.floors[u].fetch_max(key(w), Atomic::Relaxed);
                        }
                    }
                }
            }
        }
        Found { lower, cands }
    }
}

/// The index side of one group: its bytes, per row scale, norm, error, and
/// which of the 64 rows are real.
#[derive(Clone, Copy)]
struct Side<'a> {
    /// The group's packed bytes.
    bytes: &'a [u8],
    /// A later group's, asked into L2 while this one is summed (empty: none).
    ahead: &'a [u8],
    scale: &'a [f32],
    norm: &'a [f32],
    err: &'a [f32],
    valid: u64,
}

/// What a part of a pass reuses from group to group.
struct Scratch<'a> {
    /// This thread's tiles (AMX only).
    tiles: Option<Tiles>,
    padded: &'a [i8],
    padded_dim: usize,
    /// Per query of a run, per row of the group: the integer sum.
    sums: [[i32; GROUP]; MAX_RUN],
    /// Per query of a run, per row of the group: the bound.
    upper: [[f32; GROUP]; MAX_RUN],
}

impl<'a> Scratch<'a> {
    fn new(index: &Int8Index, kernel: Kernel, padded: &'a [i8]) -> Scratch<'a> {
        Scratch {
            tiles: match kernel {
                Kernel::Amx => Some(Tiles::new().expect("Int8Index::build checked AMX")),
                _ => None,
            },
            padded,
            padded_dim: index.padded_dim,
            sums: [[0; GROUP]; MAX_RUN],
            upper: [[0f32; GROUP]; MAX_RUN],
        }
    }
}

/// For queries `us` (at most the kernel's run) against one packed group:
/// each pair's upper bound into `scratch.upper[u][c]`, and per query a mask
/// of the rows whose bound is not below `need[u]`. Every kernel makes the
/// same integer sums and the same float operations in the same order from
/// them: the bounds are bit-identical.
fn bounds(
    kernel: Kernel,
    qz: &Quantized,
    us: std::ops::Range<usize>,
    side: &Side<'_>,
    need: &[f32],
    scratch: &mut Scratch<'_>,
) -> [u64; MAX_RUN] {
    let (group, ahead) = (side.bytes, side.ahead);
    assert!(us.len() <= kernel.run());
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => {
            let (f, sums) = (us.start, &mut scratch.sums);
            // SAFETY: Int8Index::build refuses the VNNI kernel on a CPU without
            // AVX-512F/BW/VNNI.
            unsafe {
                match us.len() {
                    6 => sums_vnni::<6>(qz, f, group, ahead, sums),
                    5 => sums_vnni::<5>(qz, f, group, ahead, sums),
                    4 => sums_vnni::<4>(qz, f, group, ahead, sums),
                    3 => sums_vnni::<3>(qz, f, group, ahead, sums),
                    2 => sums_vnni::<2>(qz, f, group, ahead, sums),
                    1 => sums_vnni::<1>(qz, f, group, ahead, sums),
                    _ => unreachable!("runs of 1 to {MR} queries"),
                }
            }
        }
        Kernel::Amx => {
            let w = scratch.padded_dim;
            scratch
                .tiles
                .as_mut()
                .expect("tiles for the AMX kernel")
                .group_sums(
                    &scratch.padded[us.start * w..us.end * w],
                    us.len(),
                    w,
                    w / CHUNK,
                    group,
                    ahead,
                    &mut scratch.sums,
                );
        }
        _ => {
            return bounds_portable(qz, us, side, need, &mut scratch.sums, &mut scratch.upper);
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: both kernels above run only where AVX-512F is (Int8Index::build).
    unsafe {
        bounds_avx512(qz, us, &scratch.sums, side, need, &mut scratch.upper)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("only the portable kernel off x86-64")
}

/// The bound of one pair from its integer dot product (offset included).
#[inline(always)]
fn upper_bound(qz: &Quantized, u: usize, acc: i32, sj: f32, nj: f32, ej: f32) -> f32 {
    bound_of_sum(qz, u, (acc - qz.offset[u]) as f32, sj, nj, ej)
}

/// A lower bound of the pair's score: the upper bound of the query `−q`,
/// negated. `−q`'s copy is `q`'s with every sign flipped ([`Quantized::of`]
/// rounds half away from zero: the same scale, norms and error, the
/// integer sum negated), and [`dot`]`(x, −q) = −dot(x, q)` (products and
/// sums round to nearest, which is symmetric in sign; only a zero's sign
/// may differ), so `upper(−q) ≥ dot(x, −q)` — the proven bound — gives
/// `dot(x, q) ≥ −upper(−q)`.
#[inline(always)]
fn lower_bound(qz: &Quantized, u: usize, acc: i32, sj: f32, nj: f32, ej: f32) -> f32 {
    -bound_of_sum(qz, u, -((acc - qz.offset[u]) as f32), sj, nj, ej)
}

/// [`upper_bound`] from the integer sum `v` (offset taken off), as a float.
#[inline(always)]
fn bound_of_sum(qz: &Quantized, u: usize, v: f32, sj: f32, nj: f32, ej: f32) -> f32 {
    let a = (qz.scale[u] * sj) * v;
    let a = (qz.kappa * qz.norm[u]).mul_add(nj, a);
    let a = qz.norm[u].mul_add(ej, a);
    qz.err[u].mul_add(nj, a) + TINY
}

fn bounds_portable(
    qz: &Quantized,
    us: std::ops::Range<usize>,
    side: &Side<'_>,
    need: &[f32],
    sums: &mut [[i32; GROUP]; MAX_RUN],
    upper: &mut [[f32; GROUP]; MAX_RUN],
) -> [u64; MAX_RUN] {
    let group = side.bytes;
    let steps = qz.dim4 / 4;
    let mut masks = [0u64; MAX_RUN];
    for (r, u) in us.enumerate() {
        let q = &qz.q[u * qz.dim4..(u + 1) * qz.dim4];
        for col in 0..GROUP {
            let mut acc = 0i32;
            for t in 0..steps {
                for b in 0..4 {
                    acc += group[(t * GROUP + col) * 4 + b] as i32 * q[t * 4 + b] as i32;
                }
            }
            let up = upper_bound(qz, u, acc, side.scale[col], side.norm[col], side.err[col]);
            sums[r][col] = acc;
            upper[r][col] = up;
            // Not `up >= need`: a bound that is not a number is re-scored.
            if up.partial_cmp(&need[u]) != Some(Ordering::Less) {
                masks[r] |= 1 << col;
            }
        }
        masks[r] &= side.valid;
    }
    masks
}

/// The integer sums of queries `first..first + R` against one group; each
/// step's 256 bytes of `ahead` (empty, or a later group as long as `group`)
/// are asked into L2 meanwhile, as [`Tiles::group_sums`] does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn sums_vnni<const R: usize>(
    qz: &Quantized,
    first: usize,
    group: &[u8],
    ahead: &[u8],
    sums: &mut [[i32; GROUP]; MAX_RUN],
) {
    use std::arch::x86_64::*;
    let steps = qz.dim4 / 4;
    assert!(group.len() >= steps * GROUP * 4 && (first + R) * qz.dim4 <= qz.q.len());
    assert!(ahead.is_empty() || ahead.len() >= steps * GROUP * 4);
    assert!(R <= MR);
    let a = qz.q[first * qz.dim4..].as_ptr();
    let b = group.as_ptr();
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    for t in 0..steps {
        if !ahead.is_empty() {
            prefetch_l2(&ahead[t * GROUP * 4..(t + 1) * GROUP * 4]);
        }
        // SAFETY: t < steps, so the four 64-byte loads lie in `group`, and query
        // first + u < first + R lies in `qz.q` with 4·t + 4 ≤ dim4 (asserted above).
        unsafe {
            let bt = b.add(t * GROUP * 4);
            let b0 = _mm512_loadu_si512(bt as *const _);
            let b1 = _mm512_loadu_si512(bt.add(64) as *const _);
            let b2 = _mm512_loadu_si512(bt.add(128) as *const _);
            let b3 = _mm512_loadu_si512(bt.add(192) as *const _);
            for (u, acc) in acc.iter_mut().enumerate() {
                let x =
                    _mm512_set1_epi32((a.add(u * qz.dim4 + 4 * t) as *const i32).read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], b0, x);
                acc[1] = _mm512_dpbusd_epi32(acc[1], b1, x);
                acc[2] = _mm512_dpbusd_epi32(acc[2], b2, x);
                acc[3] = _mm512_dpbusd_epi32(acc[3], b3, x);
            }
        }
    }
    for (u, acc) in acc.iter().enumerate() {
        for (v, &acc) in acc.iter().enumerate() {
            // SAFETY: 16 values at v·16 < GROUP of a row of GROUP values.
            unsafe { _mm512_storeu_si512(sums[u][v * 16..].as_mut_ptr() as *mut _, acc) };
        }
    }
}

/// [`upper_bound`] on 16 rows at a time from the integer sums of queries
/// `us` (in `sums[0..]`), and the masks of the rows not below `need`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn bounds_avx512(
    qz: &Quantized,
    us: std::ops::Range<usize>,
    sums: &[[i32; GROUP]; MAX_RUN],
    side: &Side<'_>,
    need: &[f32],
    upper: &mut [[f32; GROUP]; MAX_RUN],
) -> [u64; MAX_RUN] {
    use std::arch::x86_64::*;
    assert!(side.scale.len() >= GROUP && side.norm.len() >= GROUP && side.err.len() >= GROUP);
    assert!(need.len() >= us.end && us.len() <= MAX_RUN);
    let mut masks = [0u64; MAX_RUN];
    // SAFETY: every load and store touches 16 values at v·16 < GROUP of slices
    // of at least GROUP values (asserted above).
    unsafe {
        macro_rules! ld {
            ($s:expr, $v:expr) => {
                _mm512_loadu_ps($s.as_ptr().add($v * 16))
            };
        }
        let tiny = _mm512_set1_ps(TINY);
        for (r, i) in us.enumerate() {
            let off = _mm512_set1_epi32(qz.offset[i]);
            let si = _mm512_set1_ps(qz.scale[i]);
            let kn = _mm512_set1_ps(qz.kappa * qz.norm[i]);
            let ni = _mm512_set1_ps(qz.norm[i]);
            let ei = _mm512_set1_ps(qz.err[i]);
            let thr = _mm512_set1_ps(need[i]);
            for v in 0..4 {
                let acc = _mm512_loadu_si512(sums[r][v * 16..].as_ptr() as *const _);
                let x = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, off));
                let up = _mm512_mul_ps(_mm512_mul_ps(si, ld!(side.scale, v)), x);
                let up = _mm512_fmadd_ps(kn, ld!(side.norm, v), up);
                let up = _mm512_fmadd_ps(ni, ld!(side.err, v), up);
                let up = _mm512_add_ps(_mm512_fmadd_ps(ei, ld!(side.norm, v), up), tiny);
                _mm512_storeu_ps(upper[r][v * 16..].as_mut_ptr(), up);
                // Not less than (unordered true): a NaN bound is re-scored.
                let m = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(up, thr);
                masks[r] |= (m as u64) << (v * 16);
            }
            masks[r] &= side.valid;
        }
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{search_many, top_k_naive};
    use crate::store::VectorSet;

    /// xorshift64* in −1..1.
    struct Rng(u64);
    impl Rng {
        fn f(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        fn unit(&mut self, dim: usize) -> Vec<f32> {
            let v: Vec<f32> = (0..dim).map(|_| self.f()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect()
        }
    }

    fn kernels() -> Vec<Kernel> {
        Kernel::all_here()
    }

    fn index(data: &[f32], dim: usize, kernel: Kernel) -> Int8Index {
        Int8Index::build(data, dim, kernel, &mut |_| {}).unwrap()
    }

    /// Every query's answer equals search_many's and top_k_naive's, bit for bit.
    fn check(data: &[f32], dim: usize, queries: &[Vec<f32>], ks: &[usize], ex: &[Option<usize>]) {
        let set = VectorSet {
            paths: vec![String::new(); data.len() / dim],
            data: data.to_vec(),
            dim,
        };
        let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        for kernel in kernels() {
            let ix = index(data, dim, kernel);
            let got = ix.search(&set, &refs, ks, ex);
            for (u, q) in refs.iter().enumerate() {
                let many = search_many(data, dim, &[q], ks[u], &[ex[u]]).pop().unwrap();
                let naive = top_k_naive(data, dim, q, ks[u], ex[u]);
                assert_eq!(many, naive);
                let bits = |h: &[(usize, f32)]| -> Vec<(usize, u32)> {
                    h.iter().map(|&(r, s)| (r, s.to_bits())).collect()
                };
                assert_eq!(bits(&got[u]), bits(&many), "{kernel:?}, query {u}");
            }
        }
    }

    #[test]
    fn random_unit_vectors_give_search_many_exactly() {
        let mut rng = Rng(3);
        let (n, dim) = (3000, 512);
        let data: Vec<f32> = (0..n).flat_map(|_| rng.unit(dim)).collect();
        let mut queries: Vec<Vec<f32>> = (0..9).map(|_| rng.unit(dim)).collect();
        // Queries near a row (a real neighbour far above the rest), and a row itself.
        for r in [5usize, 2999] {
            queries.push(
                data[r * dim..(r + 1) * dim]
                    .iter()
                    .map(|x| x + 0.001 * rng.f())
                    .collect(),
            );
        }
        queries.push(data[17 * dim..18 * dim].to_vec());
        let ks = [1, 10, 10, 3, 50, 10, 7, 10, 2999, 3000, 10, 5];
        let ex = [
            None,
            Some(0),
            None,
            None,
            Some(17),
            None,
            None,
            None,
            None,
            None,
            Some(2999),
            Some(17),
        ];
        check(&data, dim, &queries, &ks, &ex);
    }

    #[test]
    fn ties_duplicates_and_odd_sizes_are_ranked_as_search_ranks_them() {
        let mut rng = Rng(5);
        // An odd dimension (padding to 4, a tail past 16 lanes) and a partial last group.
        let (dim, n) = (37, 64 * 5 + 13);
        let base = rng.unit(dim);
        let mut data = Vec::new();
        for r in 0..n {
            // Runs of exact duplicates (equal scores: ties by row) and
            // near-duplicates one float32 step apart (near the floor).
            let row: Vec<f32> = if r % 7 < 3 {
                base.clone()
            } else if r % 7 == 3 {
                base.iter().map(|x| x.next_up()).collect()
            } else {
                rng.unit(dim)
            };
            data.extend(row);
        }
        let mut queries = vec![base.clone(), rng.unit(dim)];
        queries.push(base.iter().map(|x| -x).collect());
        queries.push(vec![0.0; dim]);
        // A query whose scores are all zero against an axis-aligned index part.
        let mut axis = vec![0.0; dim];
        axis[36] = 1.0;
        queries.push(axis);
        let ks = [5, 20, 40, 10, 1];
        check(
            &data,
            dim,
            &queries,
            &ks,
            &[Some(0), None, Some(3), None, None],
        );
        // All rows equal: every score ties, the lowest rows win.
        let same: Vec<f32> = (0..n).flat_map(|_| base.clone()).collect();
        check(
            &same,
            dim,
            &[base.clone(), rng.unit(dim)],
            &[10, 64],
            &[Some(2), None],
        );
    }

    #[test]
    fn tiny_and_large_magnitudes_stay_exact() {
        let mut rng = Rng(9);
        let dim = 64;
        let mut data = Vec::new();
        for r in 0..300 {
            let s = match r % 3 {
                0 => 1e-20,
                1 => 1.0,
                _ => 1e9,
            };
            data.extend(rng.unit(dim).iter().map(|x| x * s));
        }
        let queries = vec![
            rng.unit(dim).iter().map(|x| x * 1e-20).collect(),
            rng.unit(dim),
            rng.unit(dim).iter().map(|x| x * 1e9).collect::<Vec<f32>>(),
        ];
        check(&data, dim, &queries, &[10, 10, 10], &[None, None, None]);
    }

    #[test]
    fn the_bounds_hold_the_score_from_both_sides() {
        let mut rng = Rng(13);
        let dim = 512;
        let data: Vec<f32> = (0..GROUP * 2).flat_map(|_| rng.unit(dim)).collect();
        // A full AMX tile of queries: VNNI and the reference take them in runs.
        let queries: Vec<Vec<f32>> = (0..MAX_RUN).map(|_| rng.unit(dim)).collect();
        let flat: Vec<f32> = queries.concat();
        let qz = Quantized::of(&flat, dim);
        // The lower bound's argument: −q's copy mirrors q's exactly.
        let neg: Vec<f32> = flat.iter().map(|x| -x).collect();
        let nz = Quantized::of(&neg, dim);
        assert!(nz.q.iter().zip(&qz.q).all(|(a, b)| *a == -*b));
        assert_eq!(
            (&nz.scale, &nz.norm, &nz.err),
            (&qz.scale, &qz.norm, &qz.err)
        );
        assert!(nz.offset.iter().zip(&qz.offset).all(|(a, b)| *a == -*b));
        let mut per_kernel = Vec::new();
        for kernel in kernels() {
            let ix = index(&data, dim, kernel);
            let padded = ix.pad_queries(&qz, kernel);
            let mut scratch = Scratch::new(&ix, kernel, &padded);
            let group_bytes = ix.padded_dim / 4 * GROUP * 4;
            let mut all = Vec::new();
            for g in 0..2 {
                let side = Side {
                    bytes: &ix.packed[g * group_bytes..(g + 1) * group_bytes],
                    // The first group prefetches the second (it changes nothing).
                    ahead: ix
                        .packed
                        .get((g + 1) * group_bytes..(g + 2) * group_bytes)
                        .unwrap_or(&[]),
                    scale: &ix.scale[g * GROUP..(g + 1) * GROUP],
                    norm: &ix.norm[g * GROUP..(g + 1) * GROUP],
                    err: &ix.err[g * GROUP..(g + 1) * GROUP],
                    valid: u64::MAX,
                };
                let (mut upper, mut sums) = (Vec::new(), Vec::new());
                for run in (0..MAX_RUN).collect::<Vec<_>>().chunks(kernel.run()) {
                    let us = run[0]..run[run.len() - 1] + 1;
                    let masks = bounds(
                        kernel,
                        &qz,
                        us.clone(),
                        &side,
                        &[f32::NEG_INFINITY; MAX_RUN],
                        &mut scratch,
                    );
                    assert!(masks[..us.len()].iter().all(|&m| m == u64::MAX));
                    upper.extend_from_slice(&scratch.upper[..us.len()]);
                    sums.extend_from_slice(&scratch.sums[..us.len()]);
                }
                for (u, q) in queries.iter().enumerate() {
                    let minus_q = &neg[u * dim..(u + 1) * dim];
                    for (c, &up) in upper[u].iter().enumerate() {
                        let j = g * GROUP + c;
                        let x = &data[j * dim..(j + 1) * dim];
                        let s = dot(x, q);
                        assert!(up >= s, "{kernel:?} {u} {j}");
                        // The bound is tight enough to prune: within 0.05 on unit vectors.
                        assert!(up - s < 0.05, "{kernel:?} {u} {j}");
                        let (sj, nj, ej) = (side.scale[c], side.norm[c], side.err[c]);
                        let lo = lower_bound(&qz, u, sums[u][c], sj, nj, ej);
                        assert!(lo <= s && s - lo < 0.05, "{kernel:?} {u} {j}: {lo} {s}");
                        // It is −q's upper bound, negated, and −q's score is −s.
                        let minus = nz.offset[u] - (sums[u][c] - qz.offset[u]);
                        assert_eq!(lo, -upper_bound(&nz, u, minus, sj, nj, ej));
                        assert_eq!(dot(x, minus_q), -s);
                        all.push(up.to_bits());
                        all.push(lo.to_bits());
                    }
                }
            }
            per_kernel.push(all);
        }
        assert!(
            per_kernel.windows(2).all(|w| w[0] == w[1]),
            "kernels differ"
        );
    }

    #[test]
    fn the_shared_floor_key_orders_like_total_cmp() {
        let vals = [
            f32::NEG_INFINITY,
            -1.0,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            1e-40,
            0.5,
            f32::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} {}", w[0], w[1]);
        }
        for v in vals {
            assert_eq!(unkey(key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn rows_that_break_the_bound_are_refused() {
        let mut data = vec![0.5f32; 8 * 4];
        data[9] = f32::NAN;
        let e = Int8Index::build(&data, 4, Kernel::Portable, &mut |_| {});
        assert!(e.err().unwrap().0.contains("row 2"));
        let big = vec![1e30f32; 4];
        assert!(Int8Index::build(&big, 4, Kernel::Portable, &mut |_| {}).is_err());
        let ix = index(&[0.5f32; 8], 4, Kernel::Portable);
        assert!(ix.accepts(&[1.0, 2.0, 3.0, 4.0]));
        assert!(!ix.accepts(&[1e30, 0.0, 0.0, 0.0]));
        assert!(!ix.accepts(&[1.0, 2.0, 3.0]));
    }
}
