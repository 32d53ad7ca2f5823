//! The GEMM microkernel behind the fast paths: `C = A · B` with `B` packed once
//! (at load) into panels of [`NR`] columns, `A` row-major, `C` row-major.
//!
//! The AVX-512 kernel (8 rows × 32 columns, 16 zmm accumulators) is picked at
//! run time with `is_x86_feature_detected!`; elsewhere a portable kernel with
//! the same tile sizes runs (compiled with AVX2+FMA when the CPU has them).

/// Columns per packed panel of `B` (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows of `A` per microkernel call; callers pad `m` to a multiple of it.
pub const MR: usize = 8;

/// Which kernel this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

/// The best kernel this CPU supports (detected once, cached by std).
pub fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Rounds `x` up to a multiple of `to`.
pub fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Packs row-major `b[k × n]` (row stride `ldb`) into `[n_pad / NR][k][NR]`,
/// zero-filling the columns past `n`. Returns `n_pad`.
pub fn pack_b(b: &[f32], k: usize, n: usize, ldb: usize, out: &mut Vec<f32>) -> usize {
    let n_pad = round_up(n, NR);
    out.clear();
    out.resize(n_pad * k, 0.0);
    for j in (0..n).step_by(NR) {
        let cols = NR.min(n - j);
        let panel = &mut out[(j / NR) * k * NR..(j / NR + 1) * k * NR];
        for p in 0..k {
            panel[p * NR..p * NR + cols].copy_from_slice(&b[p * ldb + j..p * ldb + j + cols]);
        }
    }
    n_pad
}

/// `c[m × n_pad] = a[m × k] · bp` (`bp` from [`pack_b`]); `m % MR == 0`.
/// `a` has row stride `lda`, `c` row stride `ldc` (both ≥ the row length).
#[allow(clippy::too_many_arguments)] // a BLAS-style signature: sizes, pointers and strides
pub fn gemm_packed(
    isa: Isa,
    m: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    bp: &[f32],
    n_pad: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(m.is_multiple_of(MR) && n_pad.is_multiple_of(NR) && lda >= k && ldc >= n_pad);
    assert!(m == 0 || (a.len() >= (m - 1) * lda + k && c.len() >= (m - 1) * ldc + n_pad));
    assert!(bp.len() >= n_pad * k);
    let drive: Driver = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => drive_avx512,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => drive_avx2,
        _ => drive_portable,
    };
    // SAFETY: the bounds are checked above; the kernels read A rows
    // `i..i+MR` × `k`, panel `j` of `bp`, and write C rows `i..i+MR` × `NR`;
    // `isa` was detected on this CPU.
    unsafe {
        drive(
            m,
            k,
            a.as_ptr(),
            lda,
            bp.as_ptr(),
            n_pad,
            c.as_mut_ptr(),
            ldc,
        )
    }
}

/// The signature every driver below shares (sizes, pointers and strides).
type Driver = unsafe fn(usize, usize, *const f32, usize, *const f32, usize, *mut f32, usize);

/// Panel-outer loop: one packed panel of B (≤ 64 KiB for k = 512) stays in L2
/// while every row block of A streams past it.
macro_rules! driver {
    ($name:ident, $micro:ident $(, $feat:literal)?) => {
        $(#[target_feature(enable = $feat)])?
        #[allow(clippy::too_many_arguments)] // BLAS-style: sizes, pointers and strides
        unsafe fn $name(m: usize, k: usize, a: *const f32, lda: usize, bp: *const f32, n_pad: usize, c: *mut f32, ldc: usize) {
            for j in 0..n_pad / NR {
                let b = unsafe { bp.add(j * k * NR) };
                for i in (0..m).step_by(MR) {
                    unsafe { $micro(k, a.add(i * lda), lda, b, c.add(i * ldc + j * NR), ldc) };
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
driver!(drive_avx512, micro_avx512, "avx512f");
#[cfg(target_arch = "x86_64")]
driver!(drive_avx2, micro_avx2, "avx2,fma");
driver!(drive_portable, micro_portable);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn micro_avx512(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    macro_rules! kernel {
        ($(($i:literal, $lo:ident, $hi:ident))*) => {{
            $(let mut $lo = _mm512_setzero_ps(); let mut $hi = _mm512_setzero_ps();)*
            for p in 0..k {
                // SAFETY: p < k, rows < MR, panel holds k·NR floats.
                unsafe {
                    let b0 = _mm512_loadu_ps(b.add(p * NR));
                    let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
                    $(
                        let av = _mm512_set1_ps(*a.add($i * lda + p));
                        $lo = _mm512_fmadd_ps(av, b0, $lo);
                        $hi = _mm512_fmadd_ps(av, b1, $hi);
                    )*
                }
            }
            $(unsafe {
                _mm512_storeu_ps(c.add($i * ldc), $lo);
                _mm512_storeu_ps(c.add($i * ldc + 16), $hi);
            })*
        }};
    }
    kernel!((0, l0, h0)(1, l1, h1)(2, l2, h2)(3, l3, h3)(4, l4, h4)(
        5, l5, h5
    )(6, l6, h6)(7, l7, h7));
}

/// The portable kernel body: an MR×NR accumulator array the compiler keeps in
/// vector registers (ymm with AVX2, xmm otherwise).
macro_rules! micro_generic {
    ($name:ident, $fma:expr $(, $feat:literal)?) => {
        $(#[target_feature(enable = $feat)])?
        #[inline]
        unsafe fn $name(k: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize) {
            let mut acc = [[0.0f32; NR]; MR];
            for p in 0..k {
                // SAFETY: as in the AVX-512 kernel.
                let bv: &[f32; NR] = unsafe { &*(b.add(p * NR) as *const [f32; NR]) };
                for i in 0..MR {
                    let av = unsafe { *a.add(i * lda + p) };
                    for j in 0..NR {
                        acc[i][j] = $fma(av, bv[j], acc[i][j]);
                    }
                }
            }
            for i in 0..MR {
                for j in 0..NR {
                    unsafe { *c.add(i * ldc + j) = acc[i][j] };
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
micro_generic!(
    micro_avx2,
    |a: f32, b: f32, c: f32| a.mul_add(b, c),
    "avx2,fma"
);
micro_generic!(micro_portable, |a: f32, b: f32, c: f32| a * b + c);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_matches_a_plain_loop() {
        let (m, k, n) = (16, 37, 45);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let mut bp = Vec::new();
        let n_pad = pack_b(&b, k, n, n, &mut bp);
        let mut isas = vec![Isa::Portable];
        if detect() != Isa::Portable {
            isas.push(Isa::Avx2);
        }
        if detect() == Isa::Avx512 {
            isas.push(Isa::Avx512);
        }
        for isa in isas {
            let mut c = vec![f32::NAN; m * n_pad];
            gemm_packed(isa, m, k, &a, k, &bp, n_pad, &mut c, n_pad);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                    assert!((c[i * n_pad + j] - want).abs() < 1e-4, "{isa:?} ({i},{j})");
                }
            }
        }
    }
}
