// The FIRST version of the conv shader, kept for A/B comparisons only
// (RMAC_GPU_CONV=v1; see shaders/conv3x3.wgsl for the one in use). Same bindings and
// Params as conv3x3.wgsl.
//
// VGG16 3×3 convolution (stride 1, zero padding 1) + bias + ReLU, with an
// optional fused 2×2/2 max-pool, as a tiled implicit GEMM. Loaded by
// src/backend/gpu/conv.rs.
//
// GEMM view:  out[m][n] = Σ_k A[m][k] · B[k][n]
//   m: output pixel (y, x)          M = H·W   (of the row band [y0, y1))
//   n: output channel               N = cout
//   k: (ky, kx, ci), ci innermost   K = 9·cin (the HWIO kernel is B, row-major [K][N])
//   A[m][k] = input[y + ky − 1][x + kx − 1][ci]   (0 outside the image): never stored,
//   gathered straight into workgroup memory (no im2col buffer).
//
// One workgroup (16×16 invocations) computes a 64-pixel × 64-channel tile. The 64
// pixels are an 8×8 spatial block; invocation (tx, ty) owns the 2×2 pixel quad ty
// (quads in a 4×4 grid) × the 4 channels 4·tx..4·tx+3, i.e. 16 accumulators (4×4
// register blocking). Owning a whole 2×2 quad lets the max-pool run in the epilogue:
// a pooled layer never writes its full-resolution output.
//
// Layouts (all HWC, like the CPU side): input f32 [H][W][cin]; kernel vec4 [K][cout/4];
// bias vec4 [cout/4]; output vec4 [H][W][cout/4] or, pooled, [H/2][W/2][cout/4].
// cout must be a multiple of 4 (VGG16: 64…512). Any H, W, cin.
//
// Row tiling: a dispatch computes conv rows [y0, y1) only. The input binding may be a
// window of the activation buffer that starts at element `in_off` (it holds at least
// rows y0−1 … y1 clipped to the image); the output binding starts at vec4 `out_off`.

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
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> wgt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> outp: array<vec4<f32>>;

const BK: u32 = 32u;           // K step held in workgroup memory
const TILE: u32 = 8u;          // spatial tile: 8×8 pixels = 16 quads
// As[k][q]: the 4 pixels of quad q (order (0,0) (0,1) (1,0) (1,1)) at k. Rows are
// padded to 17 vec4 so that a warp's stores (consecutive k, same q) spread over banks.
const AS_ROW: u32 = 17u;
var<workgroup> As: array<vec4<f32>, 544>;   // BK × AS_ROW
// Bs[k][c4]: 4 consecutive output channels at k.
var<workgroup> Bs: array<vec4<f32>, 512>;   // BK × 16

// Input value at (y, x, ci), 0 outside the image or outside this dispatch's band.
fn load_in(y: i32, x: i32, ci: u32, kvalid: bool) -> f32 {
    let ylim = min(p.h, p.y1 + 1u);
    if (!kvalid || y < 0 || x < 0 || u32(y) >= ylim || u32(x) >= p.w) {
        return 0.0;
    }
    return inp[(u32(y) * p.w + u32(x)) * p.cin + ci - p.in_off];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let t = ty * 16u + tx;
    let ox = wid.x * TILE;
    let oy = p.y0 + wid.y * TILE;
    let cout4 = p.cout / 4u;
    let n4 = wid.z * 16u + tx;          // this invocation's output vec4 channel group

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    // A gather: invocation t loads k = t % BK for quads t / BK and t / BK + 8.
    let ka = t % BK;
    let qa = t / BK;
    // B load: rows t / 16 and t / 16 + 16, vec4 column t % 16.
    let kb = t / 16u;
    let nb = wid.z * 16u + (t % 16u);

    for (var k0 = 0u; k0 < p.k_total; k0 = k0 + BK) {
        let kk = k0 + ka;
        let kvalid = kk < p.k_total;
        let tap = kk / p.cin;
        let ci = kk - tap * p.cin;
        let dy = i32(tap / 3u) - 1;
        let dx = i32(tap % 3u) - 1;
        for (var j = 0u; j < 2u; j = j + 1u) {
            let q = qa + 8u * j;
            let y = i32(oy + 2u * (q / 4u)) + dy;
            let x = i32(ox + 2u * (q % 4u)) + dx;
            As[ka * AS_ROW + q] = vec4<f32>(
                load_in(y, x, ci, kvalid),
                load_in(y, x + 1, ci, kvalid),
                load_in(y + 1, x, ci, kvalid),
                load_in(y + 1, x + 1, ci, kvalid));
        }
        for (var j = 0u; j < 2u; j = j + 1u) {
            let kr = kb + 16u * j;
            var v = vec4<f32>(0.0);
            if (k0 + kr < p.k_total && nb < cout4) {
                v = wgt[(k0 + kr) * cout4 + nb];
            }
            Bs[kr * 16u + (t % 16u)] = v;
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k = k + 1u) {
            let a = As[k * AS_ROW + ty];
            let b = Bs[k * 16u + tx];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }

    if (n4 >= cout4) {
        return;
    }
    let bv = bias[n4];
    let y = oy + 2u * (ty / 4u);        // top-left pixel of this invocation's quad
    let x = ox + 2u * (ty % 4u);
    if (p.pool == 1u) {
        // The pooled cell (y/2, x/2) exists iff its whole 2×2 window is in the band.
        if (y + 1u < p.y1 && x + 1u < p.w) {
            let m = max(max(acc0, acc1), max(acc2, acc3));
            let wo = p.w / 2u;
            outp[((y / 2u) * wo + x / 2u) * cout4 + n4 - p.out_off] = max(m + bv, vec4<f32>(0.0));
        }
        return;
    }
    let zero = vec4<f32>(0.0);
    if (y < p.y1) {
        if (x < p.w) {
            outp[(y * p.w + x) * cout4 + n4 - p.out_off] = max(acc0 + bv, zero);
        }
        if (x + 1u < p.w) {
            outp[(y * p.w + x + 1u) * cout4 + n4 - p.out_off] = max(acc1 + bv, zero);
        }
    }
    if (y + 1u < p.y1) {
        if (x < p.w) {
            outp[((y + 1u) * p.w + x) * cout4 + n4 - p.out_off] = max(acc2 + bv, zero);
        }
        if (x + 1u < p.w) {
            outp[((y + 1u) * p.w + x + 1u) * cout4 + n4 - p.out_off] = max(acc3 + bv, zero);
        }
    }
}
