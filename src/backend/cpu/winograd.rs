//! Winograd F(m×m, 3×3) convolution on NHWC tiles (Lavin & Gray 2015), with
//! the 2×2 max-pool, bias and ReLU fused into the output transform.
//!
//! Per layer, at load: `U[ξ] = G·g·Gᵀ` for each of the α² = (m+2)² tile
//! positions ξ, computed in f64, rounded to f32 and packed for the GEMM kernel
//! ([`super::kernel`]). Per image, one strip of tile rows at a time (one strip
//! per rayon task, so both cores work on one image):
//!
//! 1. input transform `V[ξ][tile][cin] = Bᵀ·d·B` (zero padding at the borders),
//! 2. α² GEMMs `M[ξ] = V[ξ] · U[ξ]` (tiles × cin by cin × cout),
//! 3. output transform `Y = Aᵀ·M·A` + bias, ReLU, and the 2×2 pool when the
//!    layer has one; the strip's output rows are written once.
//!
//! F(2×2) (α = 4) does 2.25× fewer multiplications than direct convolution,
//! F(4×4) (α = 6) 4× fewer, at some cost in float32 accuracy (see
//! `tests/cpu_fast.rs`, which measures it on real activations).

use super::kernel::{self, Isa, MR, NR, round_up};
use crate::tensor::Tensor3;
use crate::vgg16::weights::ConvWeights;
use rayon::prelude::*;

/// Channel lanes per transform step (one AVX-512 vector).
const L: usize = 16;
type Lanes = [f32; L];

/// Output tile size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 GEMMs.
    F2,
    /// F(4×4, 3×3): 6×6 input tiles, 36 GEMMs.
    F4,
}

impl Tile {
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }
    pub fn alpha(self) -> usize {
        self.m() + 2
    }
    /// G (α × 3), the kernel transform.
    fn g(self) -> &'static [[f64; 3]] {
        const G2: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        const G4: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        match self {
            Tile::F2 => &G2,
            Tile::F4 => &G4,
        }
    }
}

/// One layer's transformed weights, packed for the GEMM kernel.
pub struct WinogradLayer {
    pub tile: Tile,
    pub cin: usize,
    pub cout: usize,
    /// cin rounded up to [`L`] (the K of each GEMM).
    cin_pad: usize,
    /// cout rounded up to [`NR`].
    cout_pad: usize,
    /// `[α²][cout_pad / NR][cin_pad][NR]`.
    u: Vec<f32>,
    /// `[cout_pad]`, zero past cout.
    bias: Vec<f32>,
    pool: bool,
}

impl WinogradLayer {
    /// Transforms `layer`'s HWIO kernel (f64 arithmetic, one f32 rounding).
    pub fn new(layer: &ConvWeights, tile: Tile) -> Self {
        let (cin, cout) = (layer.spec.cin, layer.spec.cout);
        let (cin_pad, cout_pad) = (round_up(cin, L), round_up(cout, NR));
        let a = tile.alpha();
        let g = tile.g();
        // Written straight in the packed layout the GEMM reads ([`kernel::pack_b`]
        // of each ξ's [cin_pad × cout_pad] matrix: [ξ][cout_pad / NR][cin_pad][NR]),
        // without an unpacked copy: half the memory traffic and page faults of
        // start-up, which this transform dominates.
        let block = cin_pad * cout_pad;
        let mut u = vec![0.0f32; a * a * block];
        let packed_at = |xi: usize, ci: usize, co: usize| {
            xi * block + (co / NR) * cin_pad * NR + ci * NR + co % NR
        };
        for ci in 0..cin {
            for co in 0..cout {
                let w = |ky: usize, kx: usize| {
                    f64::from(layer.kernel[((ky * 3 + kx) * cin + ci) * cout + co])
                };
                // t = G·w (α × 3), then U = t·Gᵀ (α × α).
                let mut t = [[0.0f64; 3]; 6];
                #[allow(clippy::needless_range_loop)] // matrix products read best with indices
                for i in 0..a {
                    for kx in 0..3 {
                        t[i][kx] = (0..3).map(|ky| g[i][ky] * w(ky, kx)).sum();
                    }
                }
                for i in 0..a {
                    for j in 0..a {
                        let v: f64 = (0..3).map(|kx| t[i][kx] * g[j][kx]).sum();
                        u[packed_at(i * a + j, ci, co)] = v as f32;
                    }
                }
            }
        }
        let mut bias = layer.bias.clone();
        bias.resize(cout_pad, 0.0);
        WinogradLayer {
            tile,
            cin,
            cout,
            cin_pad,
            cout_pad,
            u,
            bias,
            pool: layer.spec.pool_after,
        }
    }

    /// Bytes held by the transformed weights.
    pub fn weight_bytes(&self) -> usize {
        self.u.len() * 4
    }

    /// Runs the layer on `input` on the current rayon pool.
    /// The output goes into `storage` (reused as it is: every element is
    /// written; see [`Tensor3::reuse`]).
    pub fn forward(&self, input: &Tensor3, storage: Vec<f32>, threads: usize, isa: Isa) -> Tensor3 {
        match self.tile {
            Tile::F2 => forward_impl::<F2, 4, 2>(self, input, storage, threads, isa),
            Tile::F4 => forward_impl::<F4, 6, 4>(self, input, storage, threads, isa),
        }
    }
}

/// The 1-D transforms of one Winograd variant, lane-wise over [`L`] channels.
trait Transforms<const A: usize, const M: usize> {
    /// `Bᵀ·x`.
    fn bt(x: &[Lanes; A]) -> [Lanes; A];
    /// `Aᵀ·x`.
    fn at(x: &[Lanes; A]) -> [Lanes; M];
}

struct F2;
struct F4;

impl Transforms<4, 2> for F2 {
    #[inline(always)]
    fn bt(x: &[Lanes; 4]) -> [Lanes; 4] {
        let mut y = [[0.0; L]; 4];
        for l in 0..L {
            y[0][l] = x[0][l] - x[2][l];
            y[1][l] = x[1][l] + x[2][l];
            y[2][l] = x[2][l] - x[1][l];
            y[3][l] = x[1][l] - x[3][l];
        }
        y
    }
    #[inline(always)]
    fn at(x: &[Lanes; 4]) -> [Lanes; 2] {
        let mut y = [[0.0; L]; 2];
        for l in 0..L {
            y[0][l] = x[0][l] + x[1][l] + x[2][l];
            y[1][l] = x[1][l] - x[2][l] - x[3][l];
        }
        y
    }
}

impl Transforms<6, 4> for F4 {
    #[inline(always)]
    fn bt(x: &[Lanes; 6]) -> [Lanes; 6] {
        let mut y = [[0.0; L]; 6];
        for l in 0..L {
            let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
            y[0][l] = 4.0 * x0 - 5.0 * x2 + x4;
            y[1][l] = (x3 + x4) - 4.0 * (x1 + x2);
            y[2][l] = (x4 - x3) + 4.0 * (x1 - x2);
            y[3][l] = (x4 - x2) + 2.0 * (x3 - x1);
            y[4][l] = (x4 - x2) - 2.0 * (x3 - x1);
            y[5][l] = 4.0 * x1 - 5.0 * x3 + x5;
        }
        y
    }
    #[inline(always)]
    fn at(x: &[Lanes; 6]) -> [Lanes; 4] {
        let mut y = [[0.0; L]; 4];
        for l in 0..L {
            let (x0, x1, x2, x3, x4, x5) = (x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]);
            let (s12, d12, s34, d34) = (x1 + x2, x1 - x2, x3 + x4, x3 - x4);
            y[0][l] = x0 + s12 + s34;
            y[1][l] = d12 + 2.0 * d34;
            y[2][l] = s12 + 4.0 * s34;
            y[3][l] = d12 + 8.0 * d34 + x5;
        }
        y
    }
}

/// Per-thread scratch: the transformed inputs and the GEMM products of a strip.
/// Kept per thread across strips, layers and images (bounded by
/// [`STRIP_BUDGET_BYTES`]): a fresh 8 MiB pair per rayon split cost an
/// allocation and a memset each time. Every element a strip reads it first
/// writes (V's padding rows included), so old contents never leak.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

impl Scratch {
    fn reserve(&mut self, v: usize, m: usize) {
        if self.v.len() < v {
            self.v.resize(v, 0.0);
        }
        if self.m.len() < m {
            self.m.resize(m, 0.0);
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Tile rows per strip: enough tiles for the GEMMs to reuse each packed weight
/// panel, few enough that the scratch stays a few MiB and every thread gets work.
fn strip_rows(layer: &WinogradLayer, th: usize, tw: usize, threads: usize) -> usize {
    let a2 = layer.tile.alpha() * layer.tile.alpha();
    let per_tile = a2 * (layer.cin_pad + layer.cout_pad) * 4;
    let by_budget = (STRIP_BUDGET_BYTES / per_tile).max(MR);
    let rows = by_budget.div_ceil(tw).max(1);
    let by_balance = th.div_ceil(2 * threads).max(1);
    rows.min(by_balance)
}

/// Scratch bound per thread (V and M of one strip).
pub const STRIP_BUDGET_BYTES: usize = 8 << 20;

fn forward_impl<T: Transforms<A, M>, const A: usize, const M: usize>(
    layer: &WinogradLayer,
    input: &Tensor3,
    storage: Vec<f32>,
    threads: usize,
    isa: Isa,
) -> Tensor3 {
    assert_eq!(
        input.c, layer.cin,
        "winograd layer expects {} input channels, got {}",
        layer.cin, input.c
    );
    let (h, w, cout) = (input.h, input.w, layer.cout);
    let pool = layer.pool;
    // Output rows/cols the layer must produce at full resolution.
    let (hu, wu) = if pool {
        (2 * (h / 2), 2 * (w / 2))
    } else {
        (h, w)
    };
    let (oh, ow) = if pool { (h / 2, w / 2) } else { (h, w) };
    let mut out = Tensor3::reuse(oh, ow, cout, storage);
    if hu == 0 || wu == 0 {
        return out;
    }
    let (th, tw) = (hu.div_ceil(M), wu.div_ceil(M));
    let rows = strip_rows(layer, th, tw, threads);
    // Output rows per strip (pooled rows when pooling; M is even).
    let out_rows = if pool { rows * M / 2 } else { rows * M };
    let tiles_max = round_up(rows * tw, MR);
    let (a2, kp, np) = (A * A, layer.cin_pad, layer.cout_pad);
    out.data
        .par_chunks_mut(out_rows * ow * cout)
        .enumerate()
        .for_each(|(strip, chunk)| {
            SCRATCH.with_borrow_mut(|s| {
                s.reserve(a2 * tiles_max * kp, a2 * tiles_max * np);
                let ty0 = strip * rows;
                let ty1 = (ty0 + rows).min(th);
                // SAFETY: the ISA was detected on this CPU by the caller.
                unsafe {
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => {
                            strip_avx512::<T, A, M>(layer, input, ty0, ty1, tw, s, chunk, isa)
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            strip_avx2::<T, A, M>(layer, input, ty0, ty1, tw, s, chunk, isa)
                        }
                        _ => strip_body::<T, A, M>(layer, input, ty0, ty1, tw, s, chunk, isa),
                    }
                }
            })
        });
    out
}

/// [`strip_body`] compiled for one instruction set (its vector width is what
/// the transforms' 16-lane arrays become).
macro_rules! strip_for {
    ($name:ident, $feat:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name<T: Transforms<A, M>, const A: usize, const M: usize>(
            layer: &WinogradLayer,
            input: &Tensor3,
            ty0: usize,
            ty1: usize,
            tw: usize,
            s: &mut Scratch,
            chunk: &mut [f32],
            isa: Isa,
        ) {
            strip_body::<T, A, M>(layer, input, ty0, ty1, tw, s, chunk, isa)
        }
    };
}
strip_for!(strip_avx512, "avx512f,fma");
strip_for!(strip_avx2, "avx2,fma");

/// One strip of tile rows `ty0..ty1`: transform, GEMMs, output transform into
/// `chunk` (the strip's output rows).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // transform indices address several arrays at once
fn strip_body<T: Transforms<A, M>, const A: usize, const M: usize>(
    layer: &WinogradLayer,
    input: &Tensor3,
    ty0: usize,
    ty1: usize,
    tw: usize,
    s: &mut Scratch,
    chunk: &mut [f32],
    isa: Isa,
) {
    let (h, w, cin, cout) = (input.h, input.w, input.c, layer.cout);
    let (kp, np) = (layer.cin_pad, layer.cout_pad);
    let ntiles = (ty1 - ty0) * tw;
    let tp = round_up(ntiles, MR);
    let a2 = A * A;
    let v = &mut s.v[..a2 * tp * kp];
    let mm = &mut s.m[..a2 * tp * np];

    // 1. Input transform. Interior tiles of layers whose channels fill whole
    // vectors (every Winograd layer of VGG16) read their 16-lane blocks with
    // fixed-size copies: no bounds checks, no variable-length memcpy calls.
    let full_lanes = cin.is_multiple_of(L);
    for t in 0..ntiles {
        let (ty, tx) = (ty0 + t / tw, t % tw);
        let (y0, x0) = ((ty * M) as isize - 1, (tx * M) as isize - 1);
        let interior =
            full_lanes && y0 >= 0 && x0 >= 0 && y0 as usize + A <= h && x0 as usize + A <= w;
        for c0 in (0..kp).step_by(L) {
            let lanes = L.min(cin.saturating_sub(c0));
            let load = |i: usize, j: usize| -> Lanes {
                let (y, x) = (y0 + i as isize, x0 + j as isize);
                if interior {
                    let at = (y as usize * w + x as usize) * cin + c0;
                    return *<&Lanes>::try_from(&input.data[at..at + L]).unwrap();
                }
                let mut px = [0.0f32; L];
                if y >= 0 && y < h as isize && x >= 0 && x < w as isize && lanes > 0 {
                    let at = (y as usize * w + x as usize) * cin + c0;
                    px[..lanes].copy_from_slice(&input.data[at..at + lanes]);
                }
                px
            };
            // Columns: cols[j] = Bᵀ·d[·][j]; rows: V[i][·] = Bᵀ·(cols[·][i]).
            // (Plain loops: `array::from_fn` is not inlined here and costs 10%.)
            let mut cols = [[[0.0f32; L]; A]; A];
            for j in 0..A {
                let mut col = [[0.0f32; L]; A];
                for i in 0..A {
                    col[i] = load(i, j);
                }
                cols[j] = T::bt(&col);
            }
            for i in 0..A {
                let mut row = [[0.0f32; L]; A];
                for j in 0..A {
                    row[j] = cols[j][i];
                }
                let r = T::bt(&row);
                for (j, lanes_v) in r.iter().enumerate() {
                    let at = ((i * A + j) * tp + t) * kp + c0;
                    *<&mut Lanes>::try_from(&mut v[at..at + L]).unwrap() = *lanes_v;
                }
            }
        }
    }
    // Padding rows of the last MR block: zero (their products are never read).
    for xi in 0..a2 {
        v[(xi * tp + ntiles) * kp..(xi * tp + tp) * kp].fill(0.0);
    }

    // 2. α² GEMMs.
    for xi in 0..a2 {
        kernel::gemm_packed(
            isa,
            tp,
            kp,
            &v[xi * tp * kp..(xi + 1) * tp * kp],
            kp,
            &layer.u[xi * kp * np..(xi + 1) * kp * np],
            np,
            &mut mm[xi * tp * np..(xi + 1) * tp * np],
            np,
        );
    }

    // 3. Output transform + bias + ReLU (+ 2×2 max-pool).
    let pool = layer.pool;
    let (oh, ow) = if pool { (h / 2, w / 2) } else { (h, w) };
    let orow0 = if pool { ty0 * M / 2 } else { ty0 * M };
    for t in 0..ntiles {
        let (ty, tx) = (ty0 + t / tw, t % tw);
        for c0 in (0..np).step_by(L) {
            if c0 >= cout {
                break;
            }
            let lanes = L.min(cout - c0);
            // Columns: cols[j] = Aᵀ·M[·][j]; rows: y[i] = Aᵀ·(cols[·][i]).
            let mut cols = [[[0.0f32; L]; M]; A];
            for j in 0..A {
                let mut col = [[0.0f32; L]; A];
                for i in 0..A {
                    let at = ((i * A + j) * tp + t) * np + c0;
                    col[i] = *<&Lanes>::try_from(&mm[at..at + L]).unwrap();
                }
                cols[j] = T::at(&col);
            }
            let mut y = [[[0.0f32; L]; M]; M];
            for i in 0..M {
                let mut row = [[0.0f32; L]; A];
                for j in 0..A {
                    row[j] = cols[j][i];
                }
                y[i] = T::at(&row);
            }
            let bias: &Lanes = layer.bias[c0..c0 + L].try_into().unwrap();
            if pool {
                for pi in 0..M / 2 {
                    let oy = ty * M / 2 + pi;
                    if oy >= oh {
                        break;
                    }
                    for pj in 0..M / 2 {
                        let ox = tx * M / 2 + pj;
                        if ox >= ow {
                            break;
                        }
                        let mut r = [0.0f32; L];
                        for l in 0..L {
                            let m = y[2 * pi][2 * pj][l]
                                .max(y[2 * pi][2 * pj + 1][l])
                                .max(y[2 * pi + 1][2 * pj][l].max(y[2 * pi + 1][2 * pj + 1][l]));
                            r[l] = (m + bias[l]).max(0.0);
                        }
                        let at = ((oy - orow0) * ow + ox) * cout + c0;
                        store(chunk, at, &r, lanes);
                    }
                }
            } else {
                for (i, yrow) in y.iter().enumerate() {
                    let oy = ty * M + i;
                    if oy >= oh {
                        break;
                    }
                    for (j, yv) in yrow.iter().enumerate() {
                        let ox = tx * M + j;
                        if ox >= ow {
                            break;
                        }
                        let mut r = [0.0f32; L];
                        for l in 0..L {
                            r[l] = (yv[l] + bias[l]).max(0.0);
                        }
                        let at = ((oy - orow0) * ow + ox) * cout + c0;
                        store(chunk, at, &r, lanes);
                    }
                }
            }
        }
    }
}

/// Writes the first `lanes` of `r` at `out[at..]`: one fixed-size copy for a
/// whole vector (the common case), a variable-length one for a channel tail.
#[inline(always)]
fn store(out: &mut [f32], at: usize, r: &Lanes, lanes: usize) {
    if lanes == L {
        *<&mut Lanes>::try_from(&mut out[at..at + L]).unwrap() = *r;
    } else {
        out[at..at + lanes].copy_from_slice(&r[..lanes]);
    }
}
