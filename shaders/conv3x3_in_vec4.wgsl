// A gatherer for shaders/conv3x3.wgsl when cin % 4 == 0 (every VGG16 layer but conv1_1):
// the input is read as vec4 (4 consecutive ci of one pixel). K is walked tap by tap
// (9 taps × cin), so a K step of 8 (ci c0 … c0 + 7) never straddles a tap: the tap's
// (dy, dx) is uniform across the workgroup and the bounds check is once per vec4.
// `in_off` is a multiple of 4: bindings start at ≥ 16-byte aligned offsets.

@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;

fn k_taps() -> u32 {
    return 9u;
}

fn k_per_tap() -> u32 {
    return p.cin;
}

// ci c … c + 3 of input pixel (y + dy, x + dx) of tap `tap`; 0 outside the image, past
// cin, or below the band's input window (rows from y1 + 1 on, needed by no valid output).
fn load_a(y: i32, x: i32, tap: u32, c: u32) -> vec4<f32> {
    let yy = y + i32(tap / 3u) - 1;
    let xx = x + i32(tap % 3u) - 1;
    if (c >= p.cin || yy < 0 || xx < 0 || u32(yy) >= min(p.h, p.y1 + 1u) || u32(xx) >= p.w) {
        return vec4<f32>(0.0);
    }
    return inp[((u32(yy) * p.w + u32(xx)) * p.cin + c - p.in_off) / 4u];
}
