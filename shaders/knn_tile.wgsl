// The kNN pre-filter on the GPU: one tile of fp32 scores S = A·Bᵀ (rows of
// block I against rows of block J), then, per row of A and per row of B, the
// candidates that may be among that row's k best (src/knn/gpu.rs proves the
// bound). The CPU re-scores each candidate exactly and keeps the best k, so the
// graph is exactly the CPU's.
//
// Candidates go to `found`: found[0] counts them (atomically; it may exceed
// `capacity`, then the CPU redoes the tile itself), pair m is
// found[1 + 2m] = row (bit 31 set: a row of B, its candidate a row of A),
// found[2 + 2m] = candidate.

struct Params {
    rows_a: u32,
    rows_b: u32,
    dim: u32,
    k: u32,
    // 1 when A and B are the same block: a row is not its own candidate, and
    // the B pass is not run (the A pass covers both directions).
    diagonal: u32,
    capacity: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
// Per row, A's rows then B's: (floor, margin). A candidate is kept when its
// score is at least max(floor, k-th best of the tile row − margin).
@group(0) @binding(4) var<storage, read> limits: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> found: array<atomic<u32>>;

const TS: u32 = 64u; // output tile per workgroup: TS × TS scores
const TK: u32 = 16u; // dimension step
const K_MAX: u32 = 64u; // the tile-local k-th best is used up to this k

var<workgroup> As: array<f32, 1024>; // TS × TK
var<workgroup> Bs: array<f32, 1024>;

// 16 × 16 threads, each 4 × 4 scores.
@compute @workgroup_size(16, 16)
fn scores_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * TS;
    let col0 = wg.x * TS;
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var d0 = 0u; d0 < p.dim; d0 = d0 + TK) {
        // 256 threads load 64 × 16 of A and of B: 4 each.
        for (var q = 0u; q < 4u; q = q + 1u) {
            let e = t + q * 256u;
            let r = e / TK;
            let c = e % TK;
            let d = d0 + c;
            var va = 0.0;
            var vb = 0.0;
            if (row0 + r < p.rows_a && d < p.dim) {
                va = a[(row0 + r) * p.dim + d];
            }
            if (col0 + r < p.rows_b && d < p.dim) {
                vb = b[(col0 + r) * p.dim + d];
            }
            As[r * TK + c] = va;
            Bs[r * TK + c] = vb;
        }
        workgroupBarrier();
        for (var c = 0u; c < TK; c = c + 1u) {
            var x: array<f32, 4>;
            var y: array<f32, 4>;
            for (var u = 0u; u < 4u; u = u + 1u) {
                x[u] = As[(lid.y * 4u + u) * TK + c];
                y[u] = Bs[(lid.x * 4u + u) * TK + c];
            }
            for (var u = 0u; u < 4u; u = u + 1u) {
                for (var v = 0u; v < 4u; v = v + 1u) {
                    acc[u][v] = acc[u][v] + x[u] * y[v];
                }
            }
        }
        workgroupBarrier();
    }
    for (var u = 0u; u < 4u; u = u + 1u) {
        for (var v = 0u; v < 4u; v = v + 1u) {
            let r = row0 + lid.y * 4u + u;
            let c = col0 + lid.x * 4u + v;
            if (r < p.rows_a && c < p.rows_b) {
                scores[r * p.rows_b + c] = acc[u][v];
            }
        }
    }
}

fn emit(row: u32, candidate: u32) {
    let m = atomicAdd(&found[0], 1u);
    if (m < p.capacity) {
        atomicStore(&found[1u + 2u * m], row);
        atomicStore(&found[2u + 2u * m], candidate);
    }
}

// The threshold of one tile row: `count` scores at `first + i * stride`.
fn threshold(first: u32, stride: u32, count: u32, skip: u32, lim: vec2<f32>) -> f32 {
    let neg = -3.4028235e38;
    var t = lim.x;
    if (p.k <= K_MAX && p.k > 0u) {
        // The row's k best of this tile, sorted (best first).
        var top: array<f32, 64>;
        for (var i = 0u; i < K_MAX; i = i + 1u) {
            top[i] = neg;
        }
        var kept = 0u;
        for (var i = 0u; i < count; i = i + 1u) {
            if (i == skip) {
                continue;
            }
            let s = scores[first + i * stride];
            if (kept == p.k && s <= top[p.k - 1u]) {
                continue;
            }
            var at = min(kept, p.k - 1u);
            if (kept < p.k) {
                kept = kept + 1u;
            }
            while (at > 0u && top[at - 1u] < s) {
                top[at] = top[at - 1u];
                at = at - 1u;
            }
            top[at] = s;
        }
        if (kept == p.k) {
            t = max(t, top[p.k - 1u] - lim.y);
        }
    }
    return t;
}

// One thread per row of A: its candidates among B's rows.
@compute @workgroup_size(64)
fn select_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows_a) {
        return;
    }
    var skip = 0xffffffffu;
    if (p.diagonal == 1u) {
        skip = r;
    }
    let t = threshold(r * p.rows_b, 1u, p.rows_b, skip, limits[r]);
    for (var c = 0u; c < p.rows_b; c = c + 1u) {
        if (c != skip && scores[r * p.rows_b + c] >= t) {
            emit(r, c);
        }
    }
}

// One thread per row of B: its candidates among A's rows (not on the diagonal).
@compute @workgroup_size(64)
fn select_cols(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.rows_b || p.diagonal == 1u) {
        return;
    }
    let t = threshold(c, p.rows_b, p.rows_a, 0xffffffffu, limits[p.rows_a + c]);
    for (var r = 0u; r < p.rows_a; r = r + 1u) {
        if (scores[r * p.rows_b + c] >= t) {
            emit(c | 0x80000000u, r);
        }
    }
}
