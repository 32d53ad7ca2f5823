// A gatherer for shaders/conv3x3.wgsl for any cin (used when cin % 4 != 0: conv1_1,
// cin = 3): K = 9·cin is walked flat as one "tap" and every element finds its own tap
// and ci. Dearer per element than conv3x3_in_vec4.wgsl, but such a layer has a tiny K
// (27 for conv1_1: 4 steps of 8), so the gather is a small part of its time either way.

@group(0) @binding(1) var<storage, read> inp: array<f32>;

fn k_taps() -> u32 {
    return 1u;
}

fn k_per_tap() -> u32 {
    return p.k_total;
}

// One gathered pixel (y, x) (nothing to precompute: each element finds its own tap).
struct APix {
    y: i32,
    x: i32,
}

// The pixel (y, x) = (yx.x, yx.y).
fn a_pix(yx: vec2<i32>) -> APix {
    return APix(yx.x, yx.y);
}

// A[pixel px][k … k + 3] (the tap argument is always 0 here); 0 past K, outside
// the image, or below the band's input window (rows from y1 + 1 on, needed by no
// valid output).
fn load_a(px: APix, _tap: u32, k: u32) -> vec4<f32> {
    let y = px.y;
    let x = px.x;
    var v = vec4<f32>(0.0);
    // One division per call; the next 3 elements step (tap, ci) on.
    var tap = k / p.cin;
    var ci = k - tap * p.cin;
    let ylim = min(p.h, p.y1 + 1u);
    for (var j = 0u; j < 4u; j = j + 1u) {
        let yy = y + i32(tap / 3u) - 1;
        let xx = x + i32(tap % 3u) - 1;
        if (k + j < p.k_total && yy >= 0 && xx >= 0 && u32(yy) < ylim && u32(xx) < p.w) {
            v[j] = inp[(u32(yy) * p.w + u32(xx)) * p.cin + ci - p.in_off];
        }
        ci = ci + 1u;
        if (ci == p.cin) {
            ci = 0u;
            tap = tap + 1u;
        }
    }
    return v;
}
