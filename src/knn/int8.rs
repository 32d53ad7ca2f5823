//! The kNN graph with an 8-bit pre-filter, exact: every pair is first scored
//! from 8-bit copies of the vectors (integer dot products, on AVX-512 VNNI 64
//! multiply-adds per instruction, four times fp32's), and only the pairs that
//! an error bound cannot rule out are scored again with
//! [`crate::search::dot`] and offered to the rows' lists. The graph is bit for
//! bit the fp32 path's ([`super::knn_blocks`]).
//!
//! The copies. Each vector `x` becomes `q = round(x / s)`, `s = max|xᵢ| / 127`
//! (so `q` is in −127..=127), with `x̃ = s·q` and the error `e = x − x̃`. For
//! the per-vector norms `|x|`, `|x̃|` and `|e|` (computed in f64 and rounded
//! up), the inner products satisfy (Cauchy–Schwarz on `x·y = x̃·ỹ + x̃·e_y +
//! e_x·y`)
//!
//! ```text
//! |x·y − x̃·ỹ| ≤ |e_x|·|y| + |x̃|·|e_y|.
//! ```
//!
//! `x̃·ỹ = s_x·s_y·(q_x·q_y)`, and `q_x·q_y` is an exact integer (at most
//! 127²·d < 2²⁴ for d ≤ 1024, so exact in f32 too; beyond, the kernel falls
//! back to fp32). Its f32 evaluation `a = (s_x·s_y)·(q_x·q_y)` adds two
//! roundings, at most `2.0001·u·|x̃||ỹ|` with `u = 2⁻²⁴`; the fp32 score `c` of
//! [`crate::search::dot`] is within `γ_d·|x||y|` of `x·y` (`γ_d = d·u/(1 −
//! d·u)`, Higham §3.1). With `N = max(|x|, |x̃|)` per vector:
//!
//! ```text
//! |c − a| ≤ |e_x|·N_y + N_x·|e_y| + κ·N_x·N_y,   κ = γ_d + 2.0001·u,
//! ```
//!
//! and evaluating `upper = a + bound` in f32 (three fused multiply-adds and an
//! add, the terms at most `2·N_x·N_y`) rounds by at most `10·u·N_x·N_y` more,
//! so κ is taken as `γ_d(2u) + 16·u`. Those are relative bounds; results in
//! the subnormal range round by an absolute ≤ 2⁻¹⁵⁰ instead, and the worst
//! of them (`s_x·s_y` underflowing, then multiplied by `|q_x·q_y| < 2²⁴`)
//! is 2⁻¹²⁶ in all, so `upper` also adds `2⁻¹²⁴`: the computed `upper ≥ c`
//! always (the tests check it on rows scaled down to 10⁻²⁰). A pair is
//! re-scored for row `x` only when `upper ≥` the worst of the k scores the
//! row already holds (an exact k-th best of a subset of its candidates, so at
//! most the final k-th best): any pair below can only be worse than the final
//! k-th and is never in the graph (a tie has `c = k-th ≤ upper` and is kept).
//!
//! Tiles: block J's 8-bit rows are packed per tile into groups of 64 columns
//! (`[d/4][64][4]` bytes, offset by 128 to unsigned, as VNNI's `vpdpbusd`
//! multiplies unsigned by signed bytes: the offset's `128·Σq_x` is taken off
//! per row) that stay in L1 while 6 rows of block I at a time broadcast their
//! bytes against them (6 × 4 accumulators of 16 pairs).

use super::{Lists, Tiling, knn_blocks_with};
use crate::search::dot;
use std::ops::Range;

/// Columns of one packed group (four 16-lane vectors).
const GROUP: usize = 64;
/// Rows per micro-kernel call.
const MR: usize = 6;

/// Asks every cache line of `bytes` into L2 (`prefetcht1`; nothing off
/// x86-64): the 8-bit scans call it on a later group of their layout while
/// they sum the current one, a slice at a time between their loads.
#[inline(always)]
pub fn prefetch_l2(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing and never faults; the address lies in `bytes`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Which integer kernel scores the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit vectors).
    Avx512Vnni,
    /// Plain Rust (any CPU; the reference the fast one is tested against).
    Portable,
}

impl Int8Kernel {
    /// The fastest this CPU runs; `None` when it has no 8-bit dot-product
    /// instructions (then the fp32 kernel is faster than any 8-bit emulation).
    pub fn detect() -> Option<Int8Kernel> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Some(Int8Kernel::Avx512Vnni);
        }
        None
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Avx512Vnni => "avx512-vnni",
            Int8Kernel::Portable => "portable",
        }
    }
}

/// The largest dimension whose integer dot products are exact in f32.
pub const MAX_DIM: usize = 1024;

/// The 8-bit copies of `n` vectors and what the error bound needs of each.
pub struct Quantized {
    /// Dimensions padded to a multiple of 4 (the padding is zero).
    pub dim4: usize,
    /// `n × dim4` signed bytes, row-major.
    pub q: Vec<i8>,
    /// `s`: `x ≈ s·q`.
    pub scale: Vec<f32>,
    /// `128·Σq`, the unsigned offset's share of a row's integer dot products.
    pub offset: Vec<i32>,
    /// `max(|x|, |x̃|)`, rounded up.
    pub norm: Vec<f32>,
    /// `|x − x̃|`, rounded up.
    pub err: Vec<f32>,
    /// κ of the module docs for this dimension.
    pub kappa: f32,
}

/// The absolute term of the bound (see the module docs): results in the
/// subnormal range carry absolute, not relative, rounding errors.
const TINY: f32 = f32::MIN_POSITIVE * 4.0;

/// Why the pre-filter cannot run on `n` vectors of `dim` within `memory`
/// bytes beside `other` bytes (the graph or the tiles), or `None` when it can.
pub fn cannot_run(n: usize, dim: usize, other: u64, memory: u64) -> Option<String> {
    let copies = Quantized::bytes(n, dim);
    if dim > MAX_DIM {
        Some(format!("{dim} dimensions are more than its {MAX_DIM}"))
    } else if copies + other > memory {
        Some(format!(
            "its 8-bit copies ({:.0} MiB) do not fit --memory {:.0} MiB beside the rest ({:.0} MiB)",
            copies as f64 / 1048576.0,
            memory as f64 / 1048576.0,
            other as f64 / 1048576.0
        ))
    } else {
        None
    }
}

/// `v` as f32, never below it.
fn up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v { f.next_up() } else { f }
}

impl Quantized {
    /// Bytes [`Quantized::of`] holds for `n` vectors of `dim`.
    pub fn bytes(n: usize, dim: usize) -> u64 {
        (n * (dim.div_ceil(4) * 4 + 16)) as u64
    }

    /// Quantizes the `data.len() / dim` rows of `data` (in parallel).
    pub fn of(data: &[f32], dim: usize) -> Quantized {
        use rayon::prelude::*;
        assert!(dim > 0 && dim <= MAX_DIM && data.len().is_multiple_of(dim));
        let n = data.len() / dim;
        let dim4 = dim.div_ceil(4) * 4;
        let mut q = vec![0i8; n * dim4];
        let meta: Vec<(f32, i32, f32, f32)> = q
            .par_chunks_mut(dim4.max(1))
            .zip(data.par_chunks(dim))
            .map(|(q, x)| {
                let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = max / 127.0;
                let (mut sum, mut nx, mut nq, mut ne) = (0i32, 0f64, 0f64, 0f64);
                for (o, &v) in q.iter_mut().zip(x) {
                    let qi = if s > 0.0 {
                        (v / s).round().clamp(-127.0, 127.0) as i8
                    } else {
                        0
                    };
                    *o = qi;
                    sum += qi as i32;
                    let approx = s as f64 * qi as f64;
                    nx += v as f64 * v as f64;
                    nq += approx * approx;
                    ne += (v as f64 - approx) * (v as f64 - approx);
                }
                // sqrt in f64 is correctly rounded; the relative slack covers it and the sums.
                let slack = 1.0 + 1e-12;
                (
                    s,
                    128 * sum,
                    up(nx.max(nq).sqrt() * slack),
                    up(ne.sqrt() * slack),
                )
            })
            .collect();
        let u = f64::powi(2.0, -24);
        let gamma = |u: f64| dim as f64 * u / (1.0 - dim as f64 * u);
        Quantized {
            dim4,
            q,
            scale: meta.iter().map(|m| m.0).collect(),
            offset: meta.iter().map(|m| m.1).collect(),
            norm: meta.iter().map(|m| m.2).collect(),
            err: meta.iter().map(|m| m.3).collect(),
            kappa: up(gamma(2.0 * u) + 16.0 * u),
        }
    }

    fn row(&self, i: usize) -> &[i8] {
        &self.q[i * self.dim4..(i + 1) * self.dim4]
    }

    /// Rows `rj` packed for the kernels: groups of [`GROUP`] columns, each
    /// `[dim4/4][GROUP][4]` bytes offset to unsigned; columns past the end are
    /// `q = 0` (their scores are ignored).
    fn pack(&self, rj: Range<usize>) -> Vec<u8> {
        let steps = self.dim4 / 4;
        let groups = rj.len().div_ceil(GROUP);
        let mut out = vec![128u8; groups * steps * GROUP * 4];
        for (c, j) in rj.enumerate() {
            let (g, col) = (c / GROUP, c % GROUP);
            let base = g * steps * GROUP * 4 + col * 4;
            for (t, four) in self.row(j).chunks_exact(4).enumerate() {
                let o = base + t * GROUP * 4;
                for b in 0..4 {
                    out[o + b] = (four[b] as u8) ^ 0x80;
                }
            }
        }
        out
    }
}

/// Counts of a run, for the report.
#[derive(Debug, Default)]
pub struct Int8Stats {
    /// Pairs scored again in fp32 (each both ways counted once).
    pub rescored: std::sync::atomic::AtomicU64,
}

/// What the epilogue needs of one group's columns, padded to [`GROUP`]:
/// scale, norm and error of each, and the score each must reach (+∞ where
/// no candidate is wanted: padding, or no list of theirs in this tile).
struct GroupCols<'a> {
    scale: &'a [f32],
    norm: &'a [f32],
    err: &'a [f32],
    need: &'a [f32],
    /// Bit c: column c is a real column.
    valid: u64,
}

/// For rows `rows` (at most [`MR`]) of `qz` against one packed group: each
/// pair's upper bound of its fp32 score into `upper[u][c]`, and per row a
/// mask of the columns whose bound reaches `min(need_i[u], cols.need[c])`.
/// Every kernel does the same float operations in the same order, so the
/// bounds are bit-identical across kernels.
#[inline(always)]
fn upper_bound(qz: &Quantized, i: usize, sum: i32, sj: f32, nj: f32, ej: f32) -> f32 {
    let v = (sum - qz.offset[i]) as f32;
    let a = (qz.scale[i] * sj) * v;
    let a = (qz.kappa * qz.norm[i]).mul_add(nj, a);
    let a = qz.norm[i].mul_add(ej, a);
    qz.err[i].mul_add(nj, a) + TINY
}

fn group_portable(
    qz: &Quantized,
    rows: Range<usize>,
    group: &[u8],
    cols: &GroupCols<'_>,
    need_i: &[f32],
    upper: &mut [[f32; GROUP]; MR],
) -> [u64; MR] {
    let steps = qz.dim4 / 4;
    let mut masks = [0u64; MR];
    for (u, r) in rows.enumerate() {
        let a = qz.row(r);
        for col in 0..GROUP {
            let mut acc = 0i32;
            for t in 0..steps {
                for b in 0..4 {
                    acc += group[(t * GROUP + col) * 4 + b] as i32 * a[t * 4 + b] as i32;
                }
            }
            let up = upper_bound(qz, r, acc, cols.scale[col], cols.norm[col], cols.err[col]);
            upper[u][col] = up;
            if up >= need_i[u].min(cols.need[col]) {
                masks[u] |= 1 << col;
            }
        }
        masks[u] &= cols.valid;
    }
    masks
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn group_vnni<const R: usize>(
    qz: &Quantized,
    first: usize,
    group: &[u8],
    cols: &GroupCols<'_>,
    need_i: &[f32],
    upper: &mut [[f32; GROUP]; MR],
) -> [u64; MR] {
    use std::arch::x86_64::*;
    let steps = qz.dim4 / 4;
    assert!(group.len() >= steps * GROUP * 4 && (first + R) * qz.dim4 <= qz.q.len());
    assert!(cols.scale.len() >= GROUP && cols.norm.len() >= GROUP);
    assert!(cols.err.len() >= GROUP && cols.need.len() >= GROUP && need_i.len() >= R);
    let a = qz.q[first * qz.dim4..].as_ptr();
    let b = group.as_ptr();
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    for t in 0..steps {
        // SAFETY: t < steps, so the four 64-byte loads lie in `group` (asserted above),
        // and row first + u < first + R lies in `qz.q`, 4·t + 4 ≤ dim4.
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
    // The epilogue of upper_bound, 16 columns at a time (same operations, same order).
    let mut masks = [0u64; MR];
    // SAFETY: every load/store below reads or writes 16 values at v·16 < GROUP of
    // slices of at least GROUP values (asserted above).
    unsafe {
        macro_rules! ld {
            ($s:expr, $v:expr) => {
                _mm512_loadu_ps($s.as_ptr().add($v * 16))
            };
        }
        for u in 0..R {
            let i = first + u;
            let off = _mm512_set1_epi32(qz.offset[i]);
            let si = _mm512_set1_ps(qz.scale[i]);
            let kn = _mm512_set1_ps(qz.kappa * qz.norm[i]);
            let ni = _mm512_set1_ps(qz.norm[i]);
            let ei = _mm512_set1_ps(qz.err[i]);
            let need = _mm512_set1_ps(need_i[u]);
            let tiny = _mm512_set1_ps(TINY);
            for v in 0..4 {
                let x = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[u][v], off));
                let up = _mm512_mul_ps(_mm512_mul_ps(si, ld!(cols.scale, v)), x);
                let up = _mm512_fmadd_ps(kn, ld!(cols.norm, v), up);
                let up = _mm512_fmadd_ps(ni, ld!(cols.err, v), up);
                let up = _mm512_add_ps(_mm512_fmadd_ps(ei, ld!(cols.norm, v), up), tiny);
                _mm512_storeu_ps(upper[u][v * 16..].as_mut_ptr(), up);
                let thr = _mm512_min_ps(need, ld!(cols.need, v));
                let m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(up, thr);
                masks[u] |= (m as u64) << (v * 16);
            }
            masks[u] &= cols.valid;
        }
    }
    masks
}

/// [`group_portable`] on `kernel`.
fn group_candidates(
    kernel: Int8Kernel,
    qz: &Quantized,
    rows: Range<usize>,
    group: &[u8],
    cols: &GroupCols<'_>,
    need_i: &[f32],
    upper: &mut [[f32; GROUP]; MR],
) -> [u64; MR] {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => {
            let (f, c, n) = (rows.start, cols, need_i);
            // SAFETY: Int8Kernel::Avx512Vnni is only chosen (detect) or accepted
            // (knn_blocks_int8, upper_tile assert it) when the CPU has AVX-512F/BW/VNNI.
            unsafe {
                match rows.len() {
                    6 => group_vnni::<6>(qz, f, group, c, n, upper),
                    5 => group_vnni::<5>(qz, f, group, c, n, upper),
                    4 => group_vnni::<4>(qz, f, group, c, n, upper),
                    3 => group_vnni::<3>(qz, f, group, c, n, upper),
                    2 => group_vnni::<2>(qz, f, group, c, n, upper),
                    1 => group_vnni::<1>(qz, f, group, c, n, upper),
                    _ => unreachable!(),
                }
            }
        }
        _ => group_portable(qz, rows, group, cols, need_i, upper),
    }
}

/// One tile's column data, padded to whole groups.
struct TileCols {
    packed: Vec<u8>,
    scale: Vec<f32>,
    norm: Vec<f32>,
    err: Vec<f32>,
}

impl TileCols {
    fn of(qz: &Quantized, rj: Range<usize>) -> TileCols {
        let padded = rj.len().div_ceil(GROUP) * GROUP;
        let pad = |v: &[f32]| {
            let mut o = v[rj.clone()].to_vec();
            o.resize(padded, 0.0);
            o
        };
        TileCols {
            packed: qz.pack(rj.clone()),
            scale: pad(&qz.scale),
            norm: pad(&qz.norm),
            err: pad(&qz.err),
        }
    }

    /// Group g's columns, wanting `need` (padded like the others).
    fn group<'a>(&'a self, g: usize, need: &'a [f32], cols: usize) -> GroupCols<'a> {
        let c = g * GROUP..(g + 1) * GROUP;
        let real = cols.saturating_sub(g * GROUP).min(GROUP);
        GroupCols {
            scale: &self.scale[c.clone()],
            norm: &self.norm[c.clone()],
            err: &self.err[c.clone()],
            need: &need[c],
            valid: if real == GROUP {
                u64::MAX
            } else {
                (1u64 << real) - 1
            },
        }
    }
}

fn check_kernel(kernel: Int8Kernel) {
    if kernel == Int8Kernel::Avx512Vnni {
        assert_eq!(
            Int8Kernel::detect(),
            Some(kernel),
            "this CPU lacks AVX-512 VNNI"
        );
    }
}

/// The upper bounds of the scores of rows `ri` against rows `rj`, row-major
/// (for the tests: the bound holds, and the kernels agree bit for bit).
pub fn upper_tile(
    kernel: Int8Kernel,
    qz: &Quantized,
    ri: Range<usize>,
    rj: Range<usize>,
) -> Vec<f32> {
    check_kernel(kernel);
    let tc = TileCols::of(qz, rj.clone());
    let need = vec![f32::INFINITY; tc.scale.len()];
    let group_bytes = qz.dim4 / 4 * GROUP * 4;
    let mut out = vec![0f32; ri.len() * rj.len()];
    let mut upper = [[0f32; GROUP]; MR];
    for (g, group) in tc.packed.chunks_exact(group_bytes).enumerate() {
        let cols = tc.group(g, &need, rj.len());
        let mut r = ri.start;
        while r < ri.end {
            let re = (r + MR).min(ri.end);
            group_candidates(
                kernel,
                qz,
                r..re,
                group,
                &cols,
                &[f32::INFINITY; MR],
                &mut upper,
            );
            for (u, i) in (r..re).enumerate() {
                for col in 0..GROUP.min(rj.len() - g * GROUP) {
                    out[(i - ri.start) * rj.len() + g * GROUP + col] = upper[u][col];
                }
            }
            r = re;
        }
    }
    out
}

/// [`super::knn_blocks`] with the 8-bit pre-filter: the same graph, bit for
/// bit. `qz` holds `data`'s copies ([`Quantized::of`]).
#[allow(clippy::too_many_arguments)]
pub fn knn_blocks_int8(
    data: &[f32],
    dim: usize,
    qz: &Quantized,
    kernel: Int8Kernel,
    tiling: Tiling,
    graph: &mut super::Graph,
    blocks: &[usize],
    done: &mut dyn FnMut(usize, &super::Graph),
    stats: &Int8Stats,
) {
    assert!(dim > 0 && data.len().is_multiple_of(dim));
    let n = data.len() / dim;
    assert_eq!(qz.scale.len(), n, "8-bit copies of other vectors");
    check_kernel(kernel);
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let task = |ri: Range<usize>,
                rj: Range<usize>,
                mine: &mut Lists<'_>,
                mut theirs: Option<&mut Lists<'_>>,
                floor: &[f32]| {
        let tc = TileCols::of(qz, rj.clone());
        let group_bytes = qz.dim4 / 4 * GROUP * 4;
        // What a candidate must reach: for I's rows the better of the graph's
        // floor and this task's own lists, for J's rows their lists (+∞ on the
        // diagonal tile, where I's lists take both directions, and in the padding).
        let mut need_i: Vec<f32> = floor.to_vec();
        let mut need_j = vec![f32::INFINITY; tc.scale.len()];
        if let Some(t) = &theirs {
            for (c, need) in need_j.iter_mut().take(rj.len()).enumerate() {
                *need = t.worst(c);
            }
        }
        let mut upper = [[0f32; GROUP]; MR];
        let mut rescored = 0u64;
        for (g, group) in tc.packed.chunks_exact(group_bytes).enumerate() {
            let mut r = ri.start;
            while r < ri.end {
                let re = (r + MR).min(ri.end);
                let a0 = r - ri.start;
                let masks = {
                    let cols = tc.group(g, &need_j, rj.len());
                    group_candidates(kernel, qz, r..re, group, &cols, &need_i[a0..], &mut upper)
                };
                for (u, i) in (r..re).enumerate() {
                    let a = a0 + u;
                    let mut m = masks[u];
                    while m != 0 {
                        let col = m.trailing_zeros() as usize;
                        m &= m - 1;
                        let (c, up) = (g * GROUP + col, upper[u][col]);
                        let j = rj.start + c;
                        // The thresholds may have risen since the mask was made.
                        let for_i = up >= need_i[a] && i != j;
                        let for_j = up >= need_j[c];
                        if !(for_i || for_j) {
                            continue;
                        }
                        let s = dot(row(i), row(j));
                        rescored += 1;
                        if for_i {
                            mine.offer(a, s, j as u32);
                            need_i[a] = need_i[a].max(mine.worst(a));
                        }
                        if for_j && let Some(t) = theirs.as_mut() {
                            t.offer(c, s, i as u32);
                            need_j[c] = t.worst(c);
                        }
                    }
                }
                r = re;
            }
        }
        stats
            .rescored
            .fetch_add(rescored, std::sync::atomic::Ordering::Relaxed);
    };
    knn_blocks_with(n, tiling, graph, blocks, done, &task)
}

/// [`super::knn`] with the 8-bit pre-filter on `kernel`: the same graph.
pub fn knn_int8(
    data: &[f32],
    dim: usize,
    k: usize,
    tiling: Tiling,
    kernel: Int8Kernel,
) -> super::Graph {
    let n = data.len() / dim.max(1);
    let mut graph = super::Graph::empty(n, k.min(n.saturating_sub(1)));
    if n == 0 {
        return graph;
    }
    let qz = Quantized::of(data, dim);
    let all: Vec<usize> = (0..tiling.blocks(n)).collect();
    let stats = Int8Stats::default();
    knn_blocks_int8(
        data,
        dim,
        &qz,
        kernel,
        tiling,
        &mut graph,
        &all,
        &mut |_, _| {},
        &stats,
    );
    graph
}

/// [`super::pairs_at_least`] with the 8-bit pre-filter: the same pairs with
/// the same scores (a pair is scored in fp32 only when its bound reaches
/// `threshold`), block by block; within a block the order may differ.
#[allow(clippy::too_many_arguments)]
pub fn pairs_at_least_int8(
    data: &[f32],
    dim: usize,
    qz: &Quantized,
    kernel: Int8Kernel,
    threshold: f32,
    tiling: Tiling,
    found: &mut dyn FnMut(usize, &[super::Pair]),
) {
    use rayon::prelude::*;
    assert!(dim > 0 && data.len().is_multiple_of(dim));
    check_kernel(kernel);
    let n = data.len() / dim;
    assert_eq!(qz.scale.len(), n, "8-bit copies of other vectors");
    let row = |i: usize| &data[i * dim..(i + 1) * dim];
    let blocks = tiling.blocks(n);
    let group_bytes = qz.dim4 / 4 * GROUP * 4;
    for bi in 0..blocks {
        let ri = tiling.block(bi, n);
        let pairs: Vec<super::Pair> = (bi..blocks)
            .into_par_iter()
            .map(|bj| {
                let rj = tiling.block(bj, n);
                let tc = TileCols::of(qz, rj.clone());
                let need_j = vec![f32::INFINITY; tc.scale.len()];
                let need_i = [threshold; MR];
                let mut upper = [[0f32; GROUP]; MR];
                let mut out = Vec::new();
                for (g, group) in tc.packed.chunks_exact(group_bytes).enumerate() {
                    let cols = tc.group(g, &need_j, rj.len());
                    let mut r = ri.start;
                    while r < ri.end {
                        let re = (r + MR).min(ri.end);
                        let masks =
                            group_candidates(kernel, qz, r..re, group, &cols, &need_i, &mut upper);
                        for (u, i) in (r..re).enumerate() {
                            let mut m = masks[u];
                            while m != 0 {
                                let j = rj.start + g * GROUP + m.trailing_zeros() as usize;
                                m &= m - 1;
                                if j > i {
                                    let s = dot(row(i), row(j));
                                    if s >= threshold {
                                        out.push((i as u32, j as u32, s));
                                    }
                                }
                            }
                        }
                        r = re;
                    }
                }
                out
            })
            .flatten()
            .collect();
        found(bi, &pairs);
    }
}
