// A gatherer for shaders/conv3x3.wgsl when cin % 4 == 0 (every VGG16 layer but conv1_1):
// the input is read as vec4 (4 consecutive ci of one pixel). K is walked tap by tap
// (9 taps × cin), so a K step of 8 (ci c0 … c0 + 7) never straddles a tap: the tap's
// (dy, dx) is uniform across the workgroup and the bounds check is once per vec4.
// `in_off` is a multiple of 4: bindings start at ≥ 16-byte aligned offsets.
//
// The bounds check is hoisted out of the K loop: `a_pix` computes, once per pixel,
// which of the 9 taps read a pixel inside the image and the band's input window (a
// 9-bit mask) and the element index of tap 0's pixel, so that a load in the K loop is a
// mask test and an add instead of four compares and the index arithmetic.

@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;

fn k_taps() -> u32 {
    return 9u;
}

fn k_per_tap() -> u32 {
    return p.cin;
}

// One gathered pixel: `base` is the element index, relative to the binding, of ci 0 of
// pixel (y − 1, x − 1) (tap 0), in wrapping u32 arithmetic: it may be "negative" (row
// or column −1, or above the band's window), but base + a valid tap's offset is the
// true index. Bit `tap` of `mask` is set iff that tap's pixel (y + dy, x + dx) is in
// the image and not below the band's input window (rows from y1 + 1 on, needed by no
// valid output).
struct APix {
    base: u32,
    mask: u32,
}

// The pixel (y, x) = (yx.x, yx.y).
fn a_pix(yx: vec2<i32>) -> APix {
    let ylim = i32(min(p.h, p.y1 + 1u));
    var mask = 0u;
    for (var tap = 0u; tap < 9u; tap = tap + 1u) {
        let yy = yx.x + i32(tap / 3u) - 1;
        let xx = yx.y + i32(tap % 3u) - 1;
        if (yy >= 0 && xx >= 0 && yy < ylim && xx < i32(p.w)) {
            mask = mask | (1u << tap);
        }
    }
    let base = (u32(yx.x - 1) * p.w + u32(yx.y - 1)) * p.cin - p.in_off;
    return APix(base, mask);
}

// ci c … c + 3 of the pixel of tap `tap`; 0 outside the image or window, or past cin.
fn load_a(px: APix, tap: u32, c: u32) -> vec4<f32> {
    if (c >= p.cin || (px.mask & (1u << tap)) == 0u) {
        return vec4<f32>(0.0);
    }
    let dy = tap / 3u;
    return inp[(px.base + (dy * p.w + tap - 3u * dy) * p.cin + c) / 4u];
}
