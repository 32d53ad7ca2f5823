//! Intel AMX 8-bit tile products: the integer sums of up to 16 signed query
//! rows against a packed group of 64 unsigned index rows, in 32 tile
//! instructions per 512 dimensions (`tdpbsud`: 16 × 16 × 64 multiply-adds
//! each) instead of VNNI's 512 vector ones for 16 queries. The sums are the
//! same integers VNNI's `vpdpbusd` makes (exact: at most 1024 products of
//! magnitude 127·255 per sum), so whatever is computed from them after is
//! bit for bit the VNNI kernel's.
//!
//! The group layout is [`crate::knn::int8`]'s `[d/4][64][4]` bytes: the 64
//! bytes of one 4-dimension step for 16 consecutive rows are one row of an
//! AMX "B" tile (16 columns × 4 bytes), so a 64-dimension chunk of a column
//! block is 16 such rows at a stride of 256 bytes, read in place. The queries
//! are the "A" tile: 16 rows of 64 signed bytes. Steps must come in whole
//! chunks of 16 (the caller pads rows and queries to a multiple of 64
//! dimensions with zeros, which add nothing to the sums).
//!
//! Linux hands out the tile registers' 8 KiB of state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, once per process):
//! [`available`] makes it, and says no where the CPU or the kernel lacks AMX.

#[cfg(target_arch = "x86_64")]
use super::int8::prefetch_l2;

/// Index rows per packed group.
pub const GROUP: usize = 64;
/// Query rows per tile.
pub const ROWS: usize = 16;
/// Dimensions per tile product.
pub const CHUNK: usize = 64;

/// Whether this process can run [`Tiles`]: the CPU has AMX-TILE, AMX-INT8
/// and AVX-512 (F, BW, VNNI: the bound after the sums is the VNNI kernel's
/// code), and Linux granted the tile state.
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(request)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request() -> bool {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512vnni")) {
        return false;
    }
    // CPUID.(EAX=7,ECX=0):EDX bit 24 is AMX-TILE, bit 25 AMX-INT8.
    #[allow(unused_unsafe)] // safe to call in newer toolchains
    // SAFETY: CPUID leaf 7 exists on every CPU with AVX-512 (checked above).
    let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
    if edx >> 24 & 3 != 3 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request only changes which state the
    // kernel lets this process use; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request() -> bool {
    false
}

/// The tile registers of the current thread, configured for a number of
/// query rows; released (`tilerelease`) when dropped, so a thread that
/// scanned does not carry 8 KiB of tile state through every context switch.
pub struct Tiles {
    /// Query rows of the loaded configuration (0: none loaded yet).
    rows: usize,
    /// Not `Send`: the configuration belongs to the thread that loaded it.
    _thread: std::marker::PhantomData<*const ()>,
}

/// `ldtilecfg`'s 64-byte operand (palette 1).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl Tiles {
    /// Tiles for this thread. `None` where [`available`] says no.
    pub fn new() -> Option<Tiles> {
        available().then_some(Tiles {
            rows: 0,
            _thread: std::marker::PhantomData,
        })
    }

    /// `sums[u][c] = Σ_k a[u·stride + k] · group[k/4][c][k%4]` for the `m`
    /// queries `u` and the 64 columns `c`, over `chunks` chunks of 64
    /// dimensions; `group` is `chunks · 16` steps of `[64][4]` bytes and each
    /// query row `stride ≥ 64·chunks` bytes (both zero-padded by the caller).
    ///
    /// `ahead` (empty, or as long as `group`) is a later group of the scan:
    /// while each chunk is summed, that chunk of `ahead` is asked into L2
    /// (`prefetcht1`, one per cache line), so its loads find it there. A
    /// tile load stalls until its 16 lines arrive and the tiles are not
    /// renamed, so without this the loads and the products take turns.
    #[allow(clippy::too_many_arguments)] // the tile product's operands, each a plain value
    pub fn group_sums(
        &mut self,
        a: &[i8],
        m: usize,
        stride: usize,
        chunks: usize,
        group: &[u8],
        ahead: &[u8],
        sums: &mut [[i32; GROUP]; ROWS],
    ) {
        assert!((1..=ROWS).contains(&m) && stride >= CHUNK * chunks);
        assert!(a.len() >= (m - 1) * stride + CHUNK * chunks);
        assert!(group.len() >= chunks * 16 * GROUP * 4);
        assert!(ahead.is_empty() || ahead.len() >= chunks * 16 * GROUP * 4);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no AMX off x86-64 ({m} {stride} {chunks} {} {})",
            a.len(),
            group.len() + sums.len()
        );
        // `Tiles` exists only where `available()` said yes; the asserts above
        // keep every tile load inside `a` and `group`, and the stores write
        // `m ≤ 16` rows of 256 bytes into `sums`.
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::asm;
            if self.rows != m {
                // tmm0: the queries' chunk (m × 64 bytes); tmm1, tmm2: a column
                // block's chunk (16 × 64 bytes), alternating so a load overlaps
                // the product before it; tmm4..tmm7: the sums of the four
                // column blocks (m × 16 i32).
                let mut cfg = Config {
                    palette: 1,
                    start_row: 0,
                    reserved: [0; 14],
                    colsb: [0; 16],
                    rows: [0; 16],
                };
                for (t, rows) in [(0, m), (1, 16), (2, 16), (4, m), (5, m), (6, m), (7, m)] {
                    cfg.colsb[t] = 64;
                    cfg.rows[t] = rows as u8;
                }
                // SAFETY: a valid palette-1 configuration (rows ≤ 16, 64 bytes per row).
                unsafe { asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly)) };
                self.rows = m;
            }
            let (a, b) = (a.as_ptr(), group.as_ptr());
            let chunk_bytes = 16 * GROUP * 4;
            // SAFETY: see group_sums; the tiles are configured above.
            unsafe {
                asm!(
                    "tilezero tmm4",
                    "tilezero tmm5",
                    "tilezero tmm6",
                    "tilezero tmm7",
                    options(nostack, nomem)
                );
                for c in 0..chunks {
                    if !ahead.is_empty() {
                        // The chunk's 4 KiB of the later group.
                        prefetch_l2(&ahead[c * chunk_bytes..(c + 1) * chunk_bytes]);
                    }
                    asm!(
                        "tileloadd tmm0, [{a} + {sa}*1]",
                        "tileloadd tmm1, [{b} + {sb}*1]",
                        "tdpbsud tmm4, tmm0, tmm1",
                        "tileloadd tmm2, [{b} + {sb}*1 + 64]",
                        "tdpbsud tmm5, tmm0, tmm2",
                        "tileloadd tmm1, [{b} + {sb}*1 + 128]",
                        "tdpbsud tmm6, tmm0, tmm1",
                        "tileloadd tmm2, [{b} + {sb}*1 + 192]",
                        "tdpbsud tmm7, tmm0, tmm2",
                        a = in(reg) a.add(c * CHUNK),
                        sa = in(reg) stride,
                        b = in(reg) b.add(c * 16 * GROUP * 4),
                        sb = in(reg) GROUP * 4,
                        options(nostack, readonly)
                    );
                }
                let s = sums.as_mut_ptr() as *mut u8;
                asm!(
                    "tilestored [{s} + {ss}*1], tmm4",
                    "tilestored [{s} + {ss}*1 + 64], tmm5",
                    "tilestored [{s} + {ss}*1 + 128], tmm6",
                    "tilestored [{s} + {ss}*1 + 192], tmm7",
                    s = in(reg) s,
                    ss = in(reg) GROUP * 4,
                    options(nostack)
                );
            }
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if self.rows != 0 {
            // SAFETY: this thread loaded a configuration; releasing it only
            // returns the tile state to its initial (unused) form.
            unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain integer loop: every query count, one to three chunks,
    /// the extreme byte values (−128·255 per product).
    #[test]
    fn sums_equal_a_plain_loop() {
        let Some(mut tiles) = Tiles::new() else {
            eprintln!("no AMX on this machine: nothing of this module runs here");
            return;
        };
        let mut s = 0x9E3779B97F4A7C15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for chunks in 1..=3 {
            let stride = CHUNK * chunks + 8;
            let group: Vec<u8> = (0..chunks * 16 * GROUP * 4)
                .map(|i| if i % 97 == 0 { 255 } else { next() as u8 })
                .collect();
            let a: Vec<i8> = (0..ROWS * stride)
                .map(|i| if i % 89 == 0 { -128 } else { next() as i8 })
                .collect();
            // The prefetched group changes nothing in the sums.
            let later = group.iter().rev().copied().collect::<Vec<u8>>();
            for m in 1..=ROWS {
                let ahead: &[u8] = if m % 2 == 0 { &later } else { &[] };
                let mut sums = [[i32::MIN; GROUP]; ROWS];
                tiles.group_sums(&a, m, stride, chunks, &group, ahead, &mut sums);
                for (u, row) in sums.iter().enumerate().take(m) {
                    for (c, &got) in row.iter().enumerate() {
                        let mut want = 0i32;
                        for k in 0..CHUNK * chunks {
                            let byte = group[(k / 4 * GROUP + c) * 4 + k % 4];
                            want += a[u * stride + k] as i32 * byte as i32;
                        }
                        assert_eq!(got, want, "m {m}, chunks {chunks}, query {u}, column {c}");
                    }
                }
                // Rows past m are not written.
                assert!(sums[m..].iter().all(|r| r.iter().all(|&v| v == i32::MIN)));
            }
        }
    }
}
