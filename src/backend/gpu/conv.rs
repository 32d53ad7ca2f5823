//! Host side of `shaders/conv3x3.wgsl`: which shader variant runs a layer (tile and
//! input mode, [`Kernel`]), how its module is assembled, the uniform block, and how one
//! layer is cut into dispatches ("row bands") so that no storage binding exceeds the
//! device's (or the caller's) binding-size limit.
//!
//! A band computes conv output rows `[y0, y1)`. It reads input rows `y0 − 1 … y1`
//! (a one-row halo each side, clipped to the image) and writes rows `[y0, y1)` — or
//! pooled rows `[y0/2, y1/2)` when the 2×2 max-pool is fused. Bindings start at an
//! offset aligned down to `min_storage_buffer_offset_alignment`; the shader subtracts
//! the element offset it is told (`in_off`, `out_off`). Everything here is pure
//! arithmetic so it is unit-tested without a GPU.

/// The GEMM body of the shader (see its header comment).
pub const SHADER: &str = include_str!("../../../shaders/conv3x3.wgsl");
/// A gatherer for `cin % 4 == 0` (vec4 input loads, K walked tap by tap).
pub const SHADER_IN_VEC4: &str = include_str!("../../../shaders/conv3x3_in_vec4.wgsl");
/// A gatherer for any `cin` (K walked flat; conv1_1).
pub const SHADER_IN_F32: &str = include_str!("../../../shaders/conv3x3_in_f32.wgsl");
/// The first shader (64 px × 64 ch, 4×4 per invocation), kept for A/B comparisons.
#[cfg(feature = "dev")]
pub const SHADER_V1: &str = include_str!("../../../shaders/conv3x3_v1.wgsl");

/// Workgroup tile of the tiled shader (see `shaders/conv3x3.wgsl`, "Tiles").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    /// 128 pixels × 128 channels, 8×8 per invocation, 256 invocations.
    T128x128,
    /// 256 pixels × 64 channels, 8×8 per invocation, 256 invocations (cout = 64).
    T256x64,
    /// 64 pixels × 64 channels, 8×4 per invocation, 128 invocations (small maps).
    T64x64,
    /// 128 pixels × 64 channels, 8×8 per invocation, 128 invocations: for A/B
    /// comparisons only (`RMAC_GPU_CONV=128x64`), not chosen by layer size.
    T128x64,
}

/// Tiles taller than this many rows do not exist; bands are cut at multiples of it.
pub const MAX_TILE_ROWS: usize = 16;

/// Enough workgroups of a big tile to fill a big GPU about once (132 SMs × 2 resident on
/// an H100); below that, a layer takes the small tile (4–8 × more workgroups).
pub const MIN_BIG_TILES: u64 = 256;

impl Tile {
    pub const ALL: [Tile; 4] = [Tile::T128x128, Tile::T256x64, Tile::T64x64, Tile::T128x64];
    /// The tiles [`choose_tile`] picks from (built for `ConvChoice::Auto`).
    pub const AUTO: [Tile; 3] = [Tile::T128x128, Tile::T256x64, Tile::T64x64];

    /// (WM, WN, NJ) of the shader prelude.
    fn consts(self) -> (u32, u32, u32) {
        match self {
            Tile::T128x128 => (16, 16, 2),
            Tile::T256x64 => (32, 8, 2),
            Tile::T64x64 => (8, 16, 1),
            Tile::T128x64 => (16, 8, 2),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Tile::T128x128 => "128x128",
            Tile::T256x64 => "256x64",
            Tile::T64x64 => "64x64",
            Tile::T128x64 => "128x64",
        }
    }
    pub fn parse(s: &str) -> Option<Tile> {
        Tile::ALL.into_iter().find(|t| t.name() == s)
    }
    pub fn invocations(self) -> u32 {
        let (wm, wn, _) = self.consts();
        wm * wn
    }
    /// Output pixels per workgroup (16 columns × [`Self::rows`]).
    pub fn pixels(self) -> u32 {
        8 * self.consts().0
    }
    pub fn rows(self) -> u32 {
        self.pixels() / 16
    }
    pub fn channels(self) -> u32 {
        let (_, wn, nj) = self.consts();
        4 * wn * nj
    }
    /// Workgroup memory of the shader with BK = 8 (`k16`: 16): double-buffered As and
    /// Bs; As rows padded by 4 pixels with BK 8, swizzled instead with BK 16.
    pub fn workgroup_bytes(self, k16: bool) -> u32 {
        let (bk, pad) = if k16 { (16, 0) } else { (8, 4) };
        2 * bk * (self.pixels() + pad) * 4 + 2 * bk * self.channels() * 4
    }
    /// Whether BK = 16 is offered on this tile: not on 256x64, whose 40 KiB would exceed
    /// lavapipe's 32 KiB, so that the tests could not run it (and 256x64 layers have
    /// K = 576 only: 36 barriers either way is not what limits them).
    pub fn has_k16(self) -> bool {
        self != Tile::T256x64
    }
    /// Whether a device with these limits can run it (with BK = 8, or 16 for `k16`).
    pub fn fits(self, limits: &wgpu::Limits, k16: bool) -> bool {
        (!k16 || self.has_k16())
            && self.invocations() <= limits.max_compute_invocations_per_workgroup
            && self.invocations() <= limits.max_compute_workgroup_size_x
            && self.workgroup_bytes(k16) <= limits.max_compute_workgroup_storage_size
    }
    /// Workgroups for a whole `s` (all bands together).
    fn workgroups(self, s: &LayerShape) -> u64 {
        (s.w as u64).div_ceil(16)
            * (s.h as u64).div_ceil(u64::from(self.rows()))
            * (s.cout as u64).div_ceil(u64::from(self.channels()))
    }
}

/// Workgroup memory and invocations the v1 shader needs.
#[cfg(feature = "dev")]
const V1_WORKGROUP_BYTES: u32 = (544 + 512) * 16;
#[cfg(feature = "dev")]
const V1_INVOCATIONS: u32 = 256;
/// v1's tile: `V1_TILE × V1_TILE` pixels × `V1_TILE_N` channels.
#[cfg(feature = "dev")]
const V1_TILE: u32 = 8;
#[cfg(feature = "dev")]
const V1_TILE_N: u32 = 64;

/// One compiled variant of the conv shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `shaders/conv3x3.wgsl` on `tile`; `vec4_input` (needs `cin % 4 == 0`) picks
    /// `conv3x3_in_vec4.wgsl` over `conv3x3_in_f32.wgsl`; `k16`: BK = 16 (SUB = 2, one
    /// barrier per 16 k) instead of 8.
    Tiled {
        tile: Tile,
        vec4_input: bool,
        k16: bool,
    },
    /// `shaders/conv3x3_v1.wgsl` (`dev` builds only).
    #[cfg(feature = "dev")]
    V1,
}

impl Kernel {
    /// The tiled kernel for a layer of `cin` input channels on `tile` (BK 16 if `k16`).
    pub fn tiled(tile: Tile, cin: usize, k16: bool) -> Kernel {
        Kernel::Tiled {
            tile,
            vec4_input: cin.is_multiple_of(4),
            k16,
        }
    }

    /// `128x128/vec4`, `256x64/f32`, `64x64/vec4/k16`, `v1`.
    pub fn name(self) -> String {
        match self {
            Kernel::Tiled {
                tile,
                vec4_input,
                k16,
            } => {
                format!(
                    "{}/{}{}",
                    tile.name(),
                    if vec4_input { "vec4" } else { "f32" },
                    if k16 { "/k16" } else { "" }
                )
            }
            #[cfg(feature = "dev")]
            Kernel::V1 => "v1".to_string(),
        }
    }

    /// The WGSL module of this variant.
    pub fn source(self) -> String {
        match self {
            Kernel::Tiled {
                tile,
                vec4_input,
                k16,
            } => {
                let (wm, wn, nj) = tile.consts();
                let sub = if k16 { 2 } else { 1 };
                format!(
                    "// Tile {} (assembled by src/backend/gpu/conv.rs).\n\
                     const WM: u32 = {wm}u;\nconst WN: u32 = {wn}u;\nconst NJ: u32 = {nj}u;\n\
                     const SUB: u32 = {sub}u;\n\n{}\n{}",
                    self.name(),
                    if vec4_input {
                        SHADER_IN_VEC4
                    } else {
                        SHADER_IN_F32
                    },
                    SHADER
                )
            }
            #[cfg(feature = "dev")]
            Kernel::V1 => SHADER_V1.to_string(),
        }
    }

    /// Whether a device with these limits can run it.
    pub fn fits(self, limits: &wgpu::Limits) -> bool {
        match self {
            Kernel::Tiled { tile, k16, .. } => tile.fits(limits, k16),
            #[cfg(feature = "dev")]
            Kernel::V1 => {
                V1_INVOCATIONS <= limits.max_compute_invocations_per_workgroup
                    && 16 <= limits.max_compute_workgroup_size_x
                    && 16 <= limits.max_compute_workgroup_size_y
                    && V1_WORKGROUP_BYTES <= limits.max_compute_workgroup_storage_size
            }
        }
    }

    /// Workgroup grid for `rows` conv rows of a `w`-wide, `cout`-channel output.
    pub fn groups(self, w: usize, rows: usize, cout: usize) -> [u32; 3] {
        let (w, rows, cout) = (w as u32, rows as u32, cout as u32);
        match self {
            Kernel::Tiled { tile, .. } => [
                cout.div_ceil(tile.channels()),
                w.div_ceil(16),
                rows.div_ceil(tile.rows()),
            ],
            #[cfg(feature = "dev")]
            Kernel::V1 => [
                w.div_ceil(V1_TILE),
                rows.div_ceil(V1_TILE),
                cout.div_ceil(V1_TILE_N),
            ],
        }
    }
}

/// The tile for layer `s` among those the device can run (`available`, not empty): the
/// big tile that fits cout (256x64 for cout ≤ 64, else 128x128) when the layer gives it
/// [`MIN_BIG_TILES`] workgroups, else the small 64x64 (block5 at 768×1024: 96 big
/// workgroups would leave a third of an H100's SMs idle and the rest at one workgroup;
/// 64x64 gives 384).
pub fn choose_tile(s: &LayerShape, available: &[Tile]) -> Tile {
    let big = if s.cout <= 64 {
        Tile::T256x64
    } else {
        Tile::T128x128
    };
    if available.contains(&big) && big.workgroups(s) >= MIN_BIG_TILES {
        return big;
    }
    if available.contains(&Tile::T64x64) {
        return Tile::T64x64;
    }
    available[0]
}

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
    // Whole tiles per band where the band is tall enough (only the last band then has
    // partly empty workgroups).
    if r >= MAX_TILE_ROWS {
        r -= r % MAX_TILE_ROWS;
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

/// The dispatches of one layer run by `kernel`, in order. Empty when the output is empty.
pub fn plan_layer(
    s: &LayerShape,
    limit: u64,
    align: u64,
    kernel: Kernel,
) -> Result<Vec<Dispatch>, String> {
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
                groups: kernel.groups(s.w, y1 - y0, s.cout),
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

    const BIG: Kernel = Kernel::Tiled {
        tile: Tile::T128x128,
        vec4_input: true,
        k16: false,
    };

    #[test]
    fn whole_layer_is_one_dispatch_when_it_fits() {
        let s = shape(768, 1024, 3, 64, false);
        let k = Kernel::tiled(Tile::T256x64, 3, false);
        assert_eq!(k.name(), "256x64/f32");
        assert_eq!(
            Kernel::tiled(Tile::T64x64, 8, true).name(),
            "64x64/vec4/k16"
        );
        let d = plan_layer(&s, 1 << 30, 256, k).unwrap();
        assert_eq!(d.len(), 1);
        // channel tiles, 16-px column tiles, 16-row tiles
        assert_eq!(d[0].groups, [1, 64, 48]);
        assert_eq!(d[0].output.size, 768 * 1024 * 64 * 4);
        #[cfg(feature = "dev")]
        {
            let d = plan_layer(&s, 1 << 30, 256, Kernel::V1).unwrap();
            assert_eq!(d[0].groups, [128, 96, 1]);
        }
    }

    #[test]
    fn tile_geometry_matches_the_shader_header() {
        let g = |t: Tile| (t.pixels(), t.rows(), t.channels(), t.invocations());
        assert_eq!(g(Tile::T128x128), (128, 8, 128, 256));
        assert_eq!(g(Tile::T256x64), (256, 16, 64, 256));
        assert_eq!(g(Tile::T64x64), (64, 4, 64, 128));
        assert_eq!(g(Tile::T128x64), (128, 8, 64, 128));
        assert_eq!(Tile::T128x64.workgroup_bytes(false), 12_544);
        assert_eq!(Tile::T128x64.workgroup_bytes(true), 24_576);
        assert_eq!(Tile::T128x128.workgroup_bytes(false), 16_640);
        assert_eq!(Tile::T256x64.workgroup_bytes(false), 20_736);
        assert_eq!(Tile::T64x64.workgroup_bytes(false), 8_448);
        assert_eq!(Tile::T128x128.workgroup_bytes(true), 32_768);
        assert_eq!(Tile::T64x64.workgroup_bytes(true), 16_384);
        assert!(Tile::ALL.iter().all(|t| t.rows() as usize <= MAX_TILE_ROWS));
        // WebGPU's minimum limits run at least the small tile.
        let min = wgpu::Limits::downlevel_defaults();
        assert!(Tile::T64x64.fits(&min, false));
        for t in Tile::ALL {
            assert_eq!(Tile::parse(t.name()), Some(t));
        }
    }

    #[test]
    fn tiles_are_chosen_by_layer_size() {
        let all = &Tile::AUTO;
        // VGG16 at 768×1024: blocks 1–4 on big tiles, block5 (48×64) on the small one.
        let layer = |h, w, cin, cout| choose_tile(&shape(h, w, cin, cout, false), all);
        assert_eq!(layer(768, 1024, 3, 64), Tile::T256x64);
        assert_eq!(layer(768, 1024, 64, 64), Tile::T256x64);
        assert_eq!(layer(384, 512, 64, 128), Tile::T128x128);
        assert_eq!(layer(192, 256, 128, 256), Tile::T128x128);
        assert_eq!(layer(96, 128, 256, 512), Tile::T128x128);
        assert_eq!(layer(48, 64, 512, 512), Tile::T64x64);
        // A device without the big tiles falls back.
        let s = shape(768, 1024, 64, 64, false);
        assert_eq!(choose_tile(&s, &[Tile::T64x64]), Tile::T64x64);
        assert_eq!(choose_tile(&s, &[Tile::T128x128]), Tile::T128x128);
    }

    #[test]
    fn every_kernel_source_assembles() {
        for t in Tile::ALL {
            for (cin, k16) in [(3, false), (64, false), (3, true), (64, true)] {
                let src = Kernel::tiled(t, cin, k16).source();
                assert!(src.contains("const WM: u32"), "{src}");
                let sub = if k16 {
                    "const SUB: u32 = 2u;"
                } else {
                    "const SUB: u32 = 1u;"
                };
                assert!(src.contains(sub), "{src}");
                assert_eq!(src.matches("@binding(1)").count(), 1);
                assert!(src.contains("fn load_a"));
            }
        }
        #[cfg(feature = "dev")]
        assert!(Kernel::V1.source().contains("fn main"));
    }

    #[test]
    fn big_conv1_is_split_under_128_mib() {
        let s = shape(768, 1024, 3, 64, false);
        let limit = 128 << 20;
        let d = plan_layer(&s, limit, 256, BIG).unwrap();
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
            let d = plan_layer(&s, limit, 256, BIG).unwrap();
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
        assert!(plan_layer(&shape(64, 64, 64, 64, false), 1024, 256, BIG).is_err());
    }
}
