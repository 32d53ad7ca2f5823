// VGG16 3×3 convolution (stride 1, zero padding 1) + bias + ReLU, with an optional
// fused 2×2/2 max-pool, as a register-blocked implicit GEMM (the classic SGEMM design:
// shared-memory tiles of A and B, BK = 8 or 16, double-buffered, 8 × TN outputs per
// invocation). Assembled and loaded by src/backend/gpu/conv.rs.
//
// GEMM view:  out[m][n] = Σ_k A[m][k] · B[k][n]
//   m: output pixel (y, x)          M = H·W   (of the row band [y0, y1))
//   n: output channel               N = cout
//   k: (ky, kx, ci), ci innermost   K = 9·cin (the HWIO kernel is B, row-major [K][N])
//   A[m][k] = input[y + ky − 1][x + kx − 1][ci]   (0 outside the image): never stored,
//   gathered straight into workgroup memory (no im2col buffer).
//
// ASSEMBLY. conv.rs builds one module per (tile, input mode) from three pieces:
//   1. a prelude of constants: WM, WN (invocations along m and n), NJ (vec4 channel
//      groups per invocation, 1 or 2) and SUB (sub-steps of 8 k per barrier, 1 or 2);
//   2. the A gatherer, which declares binding 1 (the input), `struct APix` (what it
//      keeps per gathered pixel), `a_pix` (computes it, once) and `load_a`:
//      conv3x3_in_vec4.wgsl (cin % 4 == 0: one vec4 load gives 4 consecutive ci, and
//      a K step of 8 never straddles a tap, so the tap's (dy, dx) and the bounds check
//      are per pixel, not per element) or conv3x3_in_f32.wgsl (any cin, e.g. conv1_1's
//      cin = 3: K is walked flat, element by element);
//   3. this file.
// Tiles (conv.rs `Tile`; each a workgroup of WM·WN invocations, 8 pixels each):
//   128x128: WM 16, WN 16, NJ 2: 128 px × 128 ch, 8×8 = 64 accumulators, 256 inv.
//   256x64:  WM 32, WN  8, NJ 2: 256 px ×  64 ch, 8×8, 256 invocations (cout = 64).
//   64x64:   WM  8, WN 16, NJ 1:  64 px ×  64 ch, 8×4 = 32 accumulators, 128 inv.
//            (small maps, e.g. block5 at 48×64: enough workgroups to fill the GPU).
//   128x64:  WM 16, WN  8, NJ 2: 128 px ×  64 ch, 8×8, 128 invocations (A/B only:
//            the 8×8 register block in half-size workgroups, for occupancy).
// The host picks the tile per layer from its size (conv.rs `choose_tile`), and SUB
// (BK = 8·SUB) per variant: SUB = 1 ("k8") by default, 2 ("k16") on request.
//
// PIXELS. A tile's BM pixels are BM/4 2×2 "quads" laid out QW = 8 quads (16 px) wide,
// BM/32 quads high. Invocation (tm, tn) owns quads tm and tm + WM (8 pixels) × the
// channel vec4 groups tn (and tn + WN when NJ = 2). Owning whole quads lets the 2×2
// max-pool run in the epilogue: a pooled layer never writes its full-resolution output.
//
// INNER LOOP. Per k, an invocation reads 2 vec4 of A (its 2 quads) and NJ vec4 of B and
// does 8·4·NJ FMAs (64 for 8×8: 16 FMAs per workgroup load, against 8 in v1). A warp is
// 4 (m) × 8 (n) invocations, so its A reads are 4 distinct vec4 (64 B, broadcast) and
// its B reads 8 distinct consecutive vec4 (128 B): no bank conflicts.
//
// WORKGROUP MEMORY, double-buffered (one barrier per K step of BK = 8·SUB):
//   As[buf][k][m] (m: pixel; vec4 = the 4 pixels of a quad). A warp's transposing
//     scalar stores write 16 pixels (4 quads) × rows k and k + 4 at once; to hit 32
//     distinct banks, SUB = 1 pads each row by one vec4 (2·BK·(BM + 4)·4 bytes), and
//     SUB = 2, to stay within 32 KiB (lavapipe's limit, so that the tests run it),
//     instead XORs the quad index with 4 in rows 4…7 of each sub-step (ASWZ;
//     2·BK·BM·4 bytes). Reads (4 distinct quads per warp, broadcast) swizzle alike.
//   Bs[buf][k][n] (vec4 = 4 channels), 2·BK·BN·4 bytes.
//   SUB = 1: 128x128 16 640 B, 256x64 20 736 B, 64x64 8 448 B, 128x64 12 544 B;
//   SUB = 2: 128x128 32 768 B, 64x64 16 384 B, 128x64 24 576 B (256x64 would need
//   40 960: not offered).
// A step is SUB sub-steps of 8 k. During sub-step j of step s, the global loads of
// sub-step j of step s + 1 (A: 2·BM/NT vec4, B: at most one vec4 per invocation) are
// issued into registers before its FMAs and stored into the other buffer after them,
// so their latency hides behind 8·64 FMAs, and the registers they need are those of
// one sub-step whatever SUB is. SUB = 2 halves the barriers per FMA (one per 16 k, so
// warps of a workgroup wait on each other half as often) at ~twice the workgroup memory.
// K is padded to whole steps with zeros (A and B both 0: the extra FMAs add 0).
//
// Layouts (all HWC, like the CPU side): input f32 [H][W][cin]; kernel vec4 [K][cout/4];
// bias vec4 [cout/4]; output vec4 [H][W][cout/4] or, pooled, [H/2][W/2][cout/4].
// cout must be a multiple of 4 (VGG16: 64…512). Any H, W, cin.
//
// Row tiling: a dispatch computes conv rows [y0, y1) only. The input binding may be a
// window of the activation buffer that starts at element `in_off` (it holds at least
// rows y0−1 … y1 clipped to the image); the output binding starts at vec4 `out_off`.
//
// Dispatch grid: x = channel tiles (fastest, so that the workgroups that share an input
// tile run together and it is read from DRAM once), y = 16-px column tiles, z = row tiles.

struct Params {
    h: u32,        // image rows (of this layer's input = its conv output)
    w: u32,        // image cols
    cin: u32,
    cout: u32,
    y0: u32,       // first conv output row of this dispatch
    y1: u32,       // one past the last (even when pooled, or == h)
    in_off: u32,   // element index (f32) of the input binding's first element
    out_off: u32,  // vec4 index of the output binding's first element
    pool: u32,     // 1: write the 2×2 max-pool of the ReLU output
    k_total: u32,  // 9·cin
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1, the input, is declared by the A gatherer (vec4 or f32 elements).
@group(0) @binding(2) var<storage, read> wgt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> outp: array<vec4<f32>>;

const BK: u32 = 8u * SUB;           // K rows per buffer of workgroup memory
const NT: u32 = WM * WN;            // invocations
const BM: u32 = 8u * WM;            // pixels per tile (2 quads per invocation)
const BN4: u32 = NJ * WN;           // vec4 channel groups per tile
const QW: u32 = 8u;                 // quads per tile row (16 px)
const TH: u32 = BM / (2u * QW);     // tile height in pixel rows
const ASR: u32 = BM / 4u + 2u - SUB; // As row (one k) in vec4: padded by one if SUB = 1
const ASWZ: u32 = 4u * (SUB - 1u);   // quad swizzle of As rows 4…7 of a sub-step, SUB = 2
const A_LOADS: u32 = 2u * BM / NT;  // A vec4 per invocation per step: 1 or 2

var<workgroup> As: array<vec4<f32>, 2u * BK * ASR>;
var<workgroup> Bs: array<vec4<f32>, 2u * BK * BN4>;

// Pixel (y, x) of the tile's pixel m (quad m / 4, corner m % 4: (0,0) (0,1) (1,0) (1,1)).
fn pixel_of(m: u32, tx0: u32, ty0: u32) -> vec2<i32> {
    let q = m / 4u;
    let c = m % 4u;
    return vec2<i32>(i32(ty0 + 2u * (q / QW) + c / 2u), i32(tx0 + 2u * (q % QW) + c % 2u));
}

// B rows k0 + kr (kr < 8) of tap `tap` at chunk offset c0, channel vec4 n4; 0 past the
// tap's K length (the A side is 0 there too) or past cout.
fn load_b(e: u32, tap: u32, c0: u32, n4_0: u32) -> vec4<f32> {
    let kr = e / BN4;
    let n4 = n4_0 + e % BN4;
    let cout4 = p.cout / 4u;
    let kpt = k_per_tap();
    if (c0 + kr >= kpt || n4 >= cout4) {
        return vec4<f32>(0.0);
    }
    return wgt[(tap * kpt + c0 + kr) * cout4 + n4];
}

// Transposing store of A element vec4 e (pixel e / 2, k rows 4·(e % 2) … +3) into buffer
// `buf`: As[k][m] is component m % 4 of vec4 k·ASR + m / 4.
fn store_a(buf: u32, j: u32, e: u32, v: vec4<f32>) {
    let m = e / 2u;
    let base = (buf * SUB + j) * 8u * ASR + 4u * (e % 2u) * ASR + ((m / 4u) ^ (ASWZ * (e % 2u)));
    let c = m % 4u;
    As[base][c] = v.x;
    As[base + ASR][c] = v.y;
    As[base + 2u * ASR][c] = v.z;
    As[base + 3u * ASR][c] = v.w;
}

// ReLU(acc + bias) of quad q (corners a b c d), or its 2×2 max, into the output.
fn store_quad(q: u32, tx0: u32, ty0: u32, n4: u32, a: vec4<f32>, b: vec4<f32>,
              c: vec4<f32>, d: vec4<f32>, bv: vec4<f32>) {
    let y = ty0 + 2u * (q / QW);
    let x = tx0 + 2u * (q % QW);
    let cout4 = p.cout / 4u;
    let zero = vec4<f32>(0.0);
    if (p.pool == 1u) {
        // The pooled cell (y/2, x/2) exists iff its whole 2×2 window is in the band.
        if (y + 1u < p.y1 && x + 1u < p.w) {
            let mx = max(max(a, b), max(c, d));
            outp[((y / 2u) * (p.w / 2u) + x / 2u) * cout4 + n4 - p.out_off] = max(mx + bv, zero);
        }
        return;
    }
    if (y < p.y1) {
        if (x < p.w) {
            outp[(y * p.w + x) * cout4 + n4 - p.out_off] = max(a + bv, zero);
        }
        if (x + 1u < p.w) {
            outp[(y * p.w + x + 1u) * cout4 + n4 - p.out_off] = max(b + bv, zero);
        }
    }
    if (y + 1u < p.y1) {
        if (x < p.w) {
            outp[((y + 1u) * p.w + x) * cout4 + n4 - p.out_off] = max(c + bv, zero);
        }
        if (x + 1u < p.w) {
            outp[((y + 1u) * p.w + x + 1u) * cout4 + n4 - p.out_off] = max(d + bv, zero);
        }
    }
}

@compute @workgroup_size(NT, 1, 1)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    // A warp (32) is 4 (m) × 8 (n) invocations: see INNER LOOP above.
    let lane = t % 32u;
    let warp = t / 32u;
    let tm = (warp / (WN / 8u)) * 4u + lane / 8u;
    let tn = (warp % (WN / 8u)) * 8u + lane % 8u;
    let n4_0 = wid.x * BN4;
    let tx0 = wid.y * 2u * QW;
    let ty0 = p.y0 + wid.z * TH;

    // The pixels this invocation gathers (fixed for the whole K loop).
    let e0 = t;
    let e1 = t + NT;
    let px0 = a_pix(pixel_of(e0 / 2u, tx0, ty0));
    let px1 = a_pix(pixel_of(e1 / 2u, tx0, ty0));
    let h0 = 4u * (e0 % 2u);
    let h1 = 4u * (e1 % 2u);
    let loads_b = t < 8u * BN4;

    // 8 pixels × NJ vec4 of channels: c{j}{i}, pixel i (0–3: quad tm, 4–7: quad tm + WM).
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c02 = vec4<f32>(0.0); var c03 = vec4<f32>(0.0);
    var c04 = vec4<f32>(0.0); var c05 = vec4<f32>(0.0); var c06 = vec4<f32>(0.0); var c07 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0); var c12 = vec4<f32>(0.0); var c13 = vec4<f32>(0.0);
    var c14 = vec4<f32>(0.0); var c15 = vec4<f32>(0.0); var c16 = vec4<f32>(0.0); var c17 = vec4<f32>(0.0);

    // K is walked as k_taps() taps × k_per_tap() values in sub-steps of 8; a step is SUB
    // sub-steps (BK = 8·SUB rows of workgroup memory per buffer).
    let kpt = k_per_tap();
    let sub_per_tap = (kpt + 7u) / 8u;
    let nsub = k_taps() * sub_per_tap;
    let nsteps = (nsub + SUB - 1u) / SUB;

    // Prologue: step 0 (sub-steps 0 … SUB − 1) into buffer 0. Sub-steps past nsub (the
    // last step of a K whose sub-step count is odd, SUB = 2) are stored as zeros.
    var tap = 0u;
    var c0 = 0u;
    for (var j = 0u; j < SUB; j = j + 1u) {
        var ra0 = vec4<f32>(0.0);
        var ra1 = vec4<f32>(0.0);
        var rb = vec4<f32>(0.0);
        if (j < nsub) {
            ra0 = load_a(px0, tap, c0 + h0);
            if (A_LOADS > 1u) {
                ra1 = load_a(px1, tap, c0 + h1);
            }
            if (loads_b) {
                rb = load_b(t, tap, c0, n4_0);
            }
        }
        store_a(0u, j, e0, ra0);
        if (A_LOADS > 1u) {
            store_a(0u, j, e1, ra1);
        }
        if (loads_b) {
            Bs[j * 8u * BN4 + t] = rb;
        }
        c0 = c0 + 8u;
        if (c0 >= kpt) {
            c0 = 0u;
            tap = tap + 1u;
        }
    }
    workgroupBarrier();

    // (tap, c0) is now sub-step SUB: the first one of step 1, loaded during step 0.
    for (var s = 0u; s < nsteps; s = s + 1u) {
        let cur = s % 2u;
        let nxt = 1u - cur;
        for (var j = 0u; j < SUB; j = j + 1u) {
            // Sub-step j of the next step: its global loads are in flight during this
            // sub-step's FMAs (SUB = 2 keeps one sub-step of loads in registers, not two).
            var ra0 = vec4<f32>(0.0);
            var ra1 = vec4<f32>(0.0);
            var rb = vec4<f32>(0.0);
            if ((s + 1u) * SUB + j < nsub) {
                ra0 = load_a(px0, tap, c0 + h0);
                if (A_LOADS > 1u) {
                    ra1 = load_a(px1, tap, c0 + h1);
                }
                if (loads_b) {
                    rb = load_b(t, tap, c0, n4_0);
                }
            }

            let ab = (cur * SUB + j) * 8u * ASR;
            let bb = (cur * SUB + j) * 8u * BN4;
            for (var k = 0u; k < 8u; k = k + 1u) {
                let sw = ASWZ * ((k / 4u) % 2u);
                let a0 = As[ab + k * ASR + (tm ^ sw)];
                let a1 = As[ab + k * ASR + ((tm + WM) ^ sw)];
                let b0 = Bs[bb + k * BN4 + tn];
                c00 = fma(vec4<f32>(a0.x), b0, c00);
                c01 = fma(vec4<f32>(a0.y), b0, c01);
                c02 = fma(vec4<f32>(a0.z), b0, c02);
                c03 = fma(vec4<f32>(a0.w), b0, c03);
                c04 = fma(vec4<f32>(a1.x), b0, c04);
                c05 = fma(vec4<f32>(a1.y), b0, c05);
                c06 = fma(vec4<f32>(a1.z), b0, c06);
                c07 = fma(vec4<f32>(a1.w), b0, c07);
                if (NJ > 1u) {
                    let b1 = Bs[bb + k * BN4 + tn + WN];
                    c10 = fma(vec4<f32>(a0.x), b1, c10);
                    c11 = fma(vec4<f32>(a0.y), b1, c11);
                    c12 = fma(vec4<f32>(a0.z), b1, c12);
                    c13 = fma(vec4<f32>(a0.w), b1, c13);
                    c14 = fma(vec4<f32>(a1.x), b1, c14);
                    c15 = fma(vec4<f32>(a1.y), b1, c15);
                    c16 = fma(vec4<f32>(a1.z), b1, c16);
                    c17 = fma(vec4<f32>(a1.w), b1, c17);
                }
            }

            // Buffer nxt was last read in step s − 1, before the barrier that ended it.
            // Zeros past nsub overwrite what an earlier step left there. (The last step
            // stores into a buffer that is never read again: harmless.)
            store_a(nxt, j, e0, ra0);
            if (A_LOADS > 1u) {
                store_a(nxt, j, e1, ra1);
            }
            if (loads_b) {
                Bs[(nxt * SUB + j) * 8u * BN4 + t] = rb;
            }
            c0 = c0 + 8u;
            if (c0 >= kpt) {
                c0 = 0u;
                tap = tap + 1u;
            }
        }
        workgroupBarrier();
    }

    let cout4 = p.cout / 4u;
    let n4a = n4_0 + tn;
    if (n4a < cout4) {
        let bv = bias[n4a];
        store_quad(tm, tx0, ty0, n4a, c00, c01, c02, c03, bv);
        store_quad(tm + WM, tx0, ty0, n4a, c04, c05, c06, c07, bv);
    }
    let n4b = n4_0 + tn + WN;
    if (NJ > 1u && n4b < cout4) {
        let bv = bias[n4b];
        store_quad(tm, tx0, ty0, n4b, c10, c11, c12, c13, bv);
        store_quad(tm + WM, tx0, ty0, n4b, c14, c15, c16, c17, bv);
    }
}
