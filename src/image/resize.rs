//! docs/contract.md#pipeline, step 2: the target size, and a bit-exact port of Pillow 13.0.0's
//! `ImagingResample` with the BICUBIC filter for 8-bit RGB
//! (`src/libImaging/Resample.c`: `precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `_ImagingResampleHorizontal_8bpc`, `_ImagingResampleVertical_8bpc`,
//! `ImagingResampleInner`).
//!
//! Equivalent to Pillow's `img.resize((w, h), Image.Resampling.BICUBIC)` on an
//! RGB image (box = the whole image, no `reducing_gap`).

use image::RgbImage;
use rayon::prelude::*;

/// `PRECISION_BITS = 32 - 8 - 2` in Resample.c.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Pillow's bicubic filter support (a = -0.5).
const BICUBIC_SUPPORT: f64 = 2.0;

/// docs/contract.md#pipeline, step 2: `scale = S / max(w, h)` in f64, `new = (ceil(scale*w), ceil(scale*h))`,
/// exactly in that order (600×525 at 512 → 512×449: the overshoot is kept).
pub fn target_size(w: u32, h: u32, max_size: u32) -> (u32, u32) {
    let scale = f64::from(max_size) / f64::from(w.max(h));
    (
        (scale * f64::from(w)).ceil() as u32,
        (scale * f64::from(h)).ceil() as u32,
    )
}

/// `bicubic_filter` of Resample.c, a = -0.5.
#[inline]
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights for one axis: for output index `i`, taps
/// `k[i*ksize .. i*ksize + len[i]]` apply to input `start[i] ..`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
}

/// `precompute_coeffs` (with box = (0, in_size)) followed by `normalize_coeffs_8bpc`.
fn precompute_coeffs(in_size: u32, out_size: u32) -> Coeffs {
    // box coordinates are C floats: in1 - in0 is computed in float, then widened.
    let in0: f32 = 0.0;
    let in1: f32 = in_size as f32;
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = (support.ceil() as i32 * 2 + 1) as usize;
    let n = out_size as usize;
    let mut start = Vec::with_capacity(n);
    let mut len = Vec::with_capacity(n);
    let mut k = vec![0i32; n * ksize];
    let mut w = vec![0f64; ksize];
    let inv_filterscale = 1.0 / filterscale;
    for xx in 0..n {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let mut ww = 0.0;
        // C's (int) truncates toward zero, as does `as i32`.
        let mut xmin = (center - support + 0.5) as i32;
        if xmin < 0 {
            xmin = 0;
        }
        let mut xmax = (center + support + 0.5) as i32;
        if xmax > in_size as i32 {
            xmax = in_size as i32;
        }
        xmax -= xmin;
        let cnt = xmax.max(0) as usize;
        for (x, wx) in w.iter_mut().enumerate().take(cnt) {
            let v = bicubic_filter(((x as i32 + xmin) as f64 - center + 0.5) * inv_filterscale);
            *wx = v;
            ww += v;
        }
        if ww != 0.0 {
            for wx in w.iter_mut().take(cnt) {
                *wx /= ww;
            }
        }
        let kr = &mut k[xx * ksize..xx * ksize + ksize];
        for (kx, &wx) in kr.iter_mut().zip(w.iter()).take(cnt) {
            let f = wx * f64::from(1u32 << PRECISION_BITS);
            *kx = if wx < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        start.push(xmin as usize);
        len.push(cnt);
    }
    Coeffs {
        ksize,
        start,
        len,
        k,
    }
}

/// `clip8`: `_clip8_lookups[640 + (v >> PRECISION_BITS)]`, i.e. a clamp to 0..=255 of the
/// arithmetic shift (the table covers every reachable value).
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over rows `row0..row0 + out_h` of `src` (width `in_w`), 3 bytes per pixel.
fn horizontal(src: &[u8], in_w: usize, row0: usize, out_h: usize, c: &Coeffs) -> Vec<u8> {
    let out_w = c.start.len();
    let mut out = vec![0u8; out_w * out_h * 3];
    if out_w == 0 {
        return out;
    }
    out.par_chunks_mut(out_w * 3)
        .enumerate()
        .for_each(|(y, line_out)| {
            let line_in = &src[(row0 + y) * in_w * 3..(row0 + y + 1) * in_w * 3];
            for (xx, px) in line_out.chunks_exact_mut(3).enumerate() {
                let xmin = c.start[xx];
                let n = c.len[xx];
                let k = &c.k[xx * c.ksize..xx * c.ksize + n];
                let inp = &line_in[xmin * 3..(xmin + n) * 3];
                let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
                for (&kx, p) in k.iter().zip(inp.chunks_exact(3)) {
                    s0 += i32::from(p[0]) * kx;
                    s1 += i32::from(p[1]) * kx;
                    s2 += i32::from(p[2]) * kx;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        });
    out
}

/// Vertical pass: output row `yy` uses input rows `start[yy] - row0 ..` of `src` (width `w`).
fn vertical(src: &[u8], w: usize, row0: usize, c: &Coeffs) -> Vec<u8> {
    let out_h = c.start.len();
    let stride = w * 3;
    let mut out = vec![0u8; stride * out_h];
    if stride == 0 {
        return out;
    }
    out.par_chunks_mut(stride).enumerate().for_each_init(
        || vec![0i32; stride],
        |acc, (yy, line_out)| {
            let ymin = c.start[yy] - row0;
            let n = c.len[yy];
            let k = &c.k[yy * c.ksize..yy * c.ksize + n];
            acc.fill(HALF);
            for (y, &ky) in k.iter().enumerate() {
                let line_in = &src[(ymin + y) * stride..(ymin + y + 1) * stride];
                for (a, &p) in acc.iter_mut().zip(line_in) {
                    *a += i32::from(p) * ky;
                }
            }
            for (o, &a) in line_out.iter_mut().zip(acc.iter()) {
                *o = clip8(a);
            }
        },
    );
    out
}

/// Pillow 13.0.0 `img.resize((new_w, new_h), Image.Resampling.BICUBIC)` for an 8-bit RGB image,
/// bit for bit. Zero-sized targets give an empty image.
///
/// As in `ImagingResampleInner`: the horizontal pass runs first unless the height shrinks by
/// more than twice as many pixels as the width (then the vertical pass runs first); a pass
/// runs only where its size changes; the image between the passes is 8-bit (rounded, clipped).
pub fn resize_bicubic(src: &RgbImage, new_w: u32, new_h: u32) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    if (new_w, new_h) == (in_w, in_h) {
        return src.clone();
    }
    if new_w == 0 || new_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(new_w, new_h);
    }
    let need_h = new_w != in_w;
    let need_v = new_h != in_h;
    let (iw, ih, ow, oh) = (
        i64::from(in_w),
        i64::from(in_h),
        i64::from(new_w),
        i64::from(new_h),
    );
    let horizontal_first = !((ih - oh) > 0 && (ih - oh) > (iw - ow) * 2);
    let data = src.as_raw();
    let out = if horizontal_first {
        let vc = precompute_coeffs(in_h, new_h);
        if need_h {
            let hc = precompute_coeffs(in_w, new_w);
            // Only the source rows the vertical pass will read.
            let (first, last) = if need_v {
                let n = vc.start.len();
                (vc.start[0], vc.start[n - 1] + vc.len[n - 1])
            } else {
                (0, in_h as usize)
            };
            let tmp = horizontal(data, in_w as usize, first, last - first, &hc);
            if need_v {
                vertical(&tmp, new_w as usize, first, &vc)
            } else {
                tmp
            }
        } else {
            vertical(data, in_w as usize, 0, &vc)
        }
    } else {
        let vc = precompute_coeffs(in_h, new_h);
        let tmp = vertical(data, in_w as usize, 0, &vc);
        if need_h {
            let hc = precompute_coeffs(in_w, new_w);
            horizontal(&tmp, in_w as usize, 0, new_h as usize, &hc)
        } else {
            tmp
        }
    };
    RgbImage::from_raw(new_w, new_h, out).expect("buffer size matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_size_examples() {
        assert_eq!(target_size(600, 525, 512), (512, 449));
        assert_eq!(target_size(1024, 768, 1024), (1024, 768));
        assert_eq!(target_size(20, 15, 64), (64, 48));
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = RgbImage::from_pixel(13, 7, image::Rgb([10, 200, 255]));
        for (w, h) in [(5, 3), (40, 21), (13, 2), (1, 1)] {
            let out = resize_bicubic(&src, w, h);
            assert!(out.pixels().all(|p| p.0 == [10, 200, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(4000, 1024), (20, 64), (7, 3), (1, 5)] {
            let c = precompute_coeffs(i, o);
            for x in 0..o as usize {
                let s: i32 = c.k[x * c.ksize..x * c.ksize + c.len[x]].iter().sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.len[x] as i32,
                    "{i}->{o} @{x}: {s}"
                );
            }
        }
    }
}
