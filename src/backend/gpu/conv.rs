//! Host side of `shaders/conv3x3.wgsl`: the uniform block, and how one layer is cut
//! into dispatches ("row bands") so that no storage binding exceeds the device's
//! (or the caller's) binding-size limit.
//!
//! A band computes conv output rows `[y0, y1)`. It reads input rows `y0 − 1 … y1`
//! (a one-row halo each side, clipped to the image) and writes rows `[y0, y1)` — or
//! pooled rows `[y0/2, y1/2)` when the 2×2 max-pool is fused. Bindings start at an
//! offset aligned down to `min_storage_buffer_offset_alignment`; the shader subtracts
//! the element offset it is told (`in_off`, `out_off`). Everything here is pure
//! arithmetic so it is unit-tested without a GPU.

/// The shader source, embedded.
pub const SHADER: &str = include_str!("../../../shaders/conv3x3.wgsl");

/// Output tile of one workgroup: `TILE × TILE` pixels × `TILE_N` channels.
pub const TILE: u32 = 8;
pub const TILE_N: u32 = 64;

/// Mirrors `struct Params` in the shader (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub h: u32,
    pub w: u32,
    pub cin: u32,
    pub cout: u32,
    pub y0: u32,
    pub y1: u32,
    pub in_off: u32,
    pub out_off: u32,
    pub pool: u32,
    pub k_total: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// One conv layer applied to an `h × w × cin` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub pool: bool,
}

impl LayerShape {
    pub fn in_bytes(&self) -> u64 {
        (self.h * self.w * self.cin * 4) as u64
    }
    /// Output size (pooled when `pool`).
    pub fn out_hw(&self) -> (usize, usize) {
        if self.pool {
            (self.h / 2, self.w / 2)
        } else {
            (self.h, self.w)
        }
    }
    pub fn out_bytes(&self) -> u64 {
        let (ho, wo) = self.out_hw();
        (ho * wo * self.cout * 4) as u64
    }
    /// Index (f32 elements) where output row `y` (conv rows, pooled: `y` even) starts.
    fn out_elem(&self, y: usize) -> u64 {
        if self.pool {
            ((y / 2) * (self.w / 2) * self.cout) as u64
        } else {
            (y * self.w * self.cout) as u64
        }
    }
}

/// A byte range of a buffer bound to one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub size: u64,
}

/// One dispatch of the conv shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub params: Params,
    pub input: Range,
    pub output: Range,
    pub groups: [u32; 3],
}

/// Rows per band so that both bindings of a band fit `limit` bytes (with `align`
/// bytes of slack for the aligned-down start). `Err` says why it cannot.
pub fn band_rows(s: &LayerShape, limit: u64, align: u64) -> Result<usize, String> {
    if s.in_bytes() <= limit && s.out_bytes() <= limit {
        return Ok(s.h.max(1));
    }
    let room = limit.saturating_sub(align);
    let in_row = (s.w * s.cin * 4) as u64;
    let r_in = (room / in_row).saturating_sub(2);
    let r_out = if s.pool {
        let pooled_row = ((s.w / 2).max(1) * s.cout * 4) as u64;
        2 * (room / pooled_row)
    } else {
        room / (s.w * s.cout * 4) as u64
    };
    let mut r = r_in.min(r_out).min(s.h as u64) as usize;
    if s.pool {
        r -= r % 2;
    }
    if r >= TILE as usize {
        r -= r % TILE as usize;
    }
    if r == 0 {
        return Err(format!(
            "a {}×{}×{} → {} conv layer needs bindings of at least {} bytes for a band of {} rows; \
             the storage-binding limit is {limit} bytes",
            s.h,
            s.w,
            s.cin,
            s.cout,
            (if s.pool { 4 } else { 3 }) * in_row + align,
            if s.pool { 2 } else { 1 }
        ));
    }
    Ok(r)
}

fn range(start_byte: u64, end_byte: u64, align: u64) -> Range {
    let offset = start_byte / align * align;
    Range {
        offset,
        size: end_byte - offset,
    }
}

/// The dispatches of one layer, in order. Empty when the output is empty.
pub fn plan_layer(s: &LayerShape, limit: u64, align: u64) -> Result<Vec<Dispatch>, String> {
    assert!(s.cout.is_multiple_of(4), "cout must be a multiple of 4");
    assert!(align.is_power_of_two(), "odd alignment {align}");
    let align = align.max(16);
    if s.out_bytes() == 0 || s.in_bytes() == 0 {
        return Ok(Vec::new());
    }
    let rows = band_rows(s, limit, align)?;
    let whole = rows >= s.h;
    let mut out = Vec::new();
    let mut y0 = 0;
    while y0 < s.h {
        let y1 = (y0 + rows).min(s.h);
        let (input, output) = if whole {
            (
                Range {
                    offset: 0,
                    size: s.in_bytes(),
                },
                Range {
                    offset: 0,
                    size: s.out_bytes(),
                },
            )
        } else {
            let row = (s.w * s.cin) as u64;
            let i0 = y0.saturating_sub(1) as u64 * row * 4;
            let i1 = (y1 + 1).min(s.h) as u64 * row * 4;
            (
                range(i0, i1, align),
                range(s.out_elem(y0) * 4, s.out_elem(y1) * 4, align),
            )
        };
        if output.size > 0 {
            out.push(Dispatch {
                params: Params {
                    h: s.h as u32,
                    w: s.w as u32,
                    cin: s.cin as u32,
                    cout: s.cout as u32,
                    y0: y0 as u32,
                    y1: y1 as u32,
                    in_off: (input.offset / 4) as u32,
                    out_off: (output.offset / 16) as u32,
                    pool: s.pool as u32,
                    k_total: (9 * s.cin) as u32,
                    _pad0: 0,
                    _pad1: 0,
                },
                input,
                output,
                groups: [
                    (s.w as u32).div_ceil(TILE),
                    ((y1 - y0) as u32).div_ceil(TILE),
                    (s.cout as u32).div_ceil(TILE_N),
                ],
            });
        }
        y0 = y1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(h: usize, w: usize, cin: usize, cout: usize, pool: bool) -> LayerShape {
        LayerShape {
            h,
            w,
            cin,
            cout,
            pool,
        }
    }

    #[test]
    fn whole_layer_is_one_dispatch_when_it_fits() {
        let d = plan_layer(&shape(768, 1024, 3, 64, false), 1 << 30, 256).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].groups, [128, 96, 1]);
        assert_eq!(d[0].output.size, 768 * 1024 * 64 * 4);
    }

    #[test]
    fn big_conv1_is_split_under_128_mib() {
        let s = shape(768, 1024, 3, 64, false);
        let limit = 128 << 20;
        let d = plan_layer(&s, limit, 256).unwrap();
        assert!(d.len() >= 2);
        let mut next = 0;
        for x in &d {
            assert!(x.input.size <= limit && x.output.size <= limit);
            assert_eq!(x.input.offset % 256, 0);
            assert_eq!(x.output.offset % 256, 0);
            assert_eq!(x.params.y0, next);
            next = x.params.y1;
        }
        assert_eq!(next, 768);
    }

    #[test]
    fn bands_cover_odd_pooled_maps_with_even_starts() {
        for limit in [3000u64, 5000, 20_000] {
            let s = shape(13, 9, 8, 16, true);
            let d = plan_layer(&s, limit, 256).unwrap();
            let mut next = 0;
            for x in &d {
                assert_eq!(x.params.y0 % 2, 0);
                assert_eq!(x.params.y0, next);
                assert!(
                    x.input.size <= limit && x.output.size <= limit,
                    "{limit}: {x:?}"
                );
                // the band's input holds rows y0-1 ..= y1 (clipped)
                let row = 9 * 8 * 4;
                let first = x.params.y0.saturating_sub(1) as u64 * row;
                let last = (x.params.y1 + 1).min(13) as u64 * row;
                assert!(x.input.offset <= first && x.input.offset + x.input.size >= last);
                next = x.params.y1;
            }
            assert!(next >= 12, "{limit}: rows up to {next}");
        }
    }

    #[test]
    fn too_small_a_limit_is_an_error_not_a_panic() {
        assert!(plan_layer(&shape(64, 64, 64, 64, false), 1024, 256).is_err());
    }
}
