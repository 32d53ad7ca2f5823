//! The plain float64 reference the fast paths are tested against: a direct
//! 3×3 convolution loop and a 2×2 max-pool, written for reading, not speed.

use crate::tensor::Tensor3;

/// 3×3 same convolution (cross-correlation, zero padding 1) + bias + ReLU,
/// accumulated in f64. `kernel` is HWIO `[3, 3, cin, cout]`.
pub fn conv3x3_relu_f64(input: &Tensor3, kernel: &[f32], bias: &[f32], cout: usize) -> Vec<f64> {
    let (h, w, cin) = (input.h, input.w, input.c);
    assert_eq!(kernel.len(), 9 * cin * cout);
    let mut out = vec![0.0f64; h * w * cout];
    for y in 0..h {
        for x in 0..w {
            for co in 0..cout {
                let mut acc = f64::from(bias[co]);
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (sy, sx) = (y as isize + ky as isize - 1, x as isize + kx as isize - 1);
                        if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                            continue;
                        }
                        for ci in 0..cin {
                            let wgt = kernel[((ky * 3 + kx) * cin + ci) * cout + co];
                            acc +=
                                f64::from(wgt) * f64::from(input.at(sy as usize, sx as usize, ci));
                        }
                    }
                }
                out[(y * w + x) * cout + co] = acc.max(0.0);
            }
        }
    }
    out
}

/// 2×2 stride-2 max-pool (floor) of an HWC f64 map.
pub fn maxpool2_f64(data: &[f64], h: usize, w: usize, c: usize) -> Vec<f64> {
    let (ho, wo) = (h / 2, w / 2);
    let mut out = vec![0.0f64; ho * wo * c];
    for y in 0..ho {
        for x in 0..wo {
            for ch in 0..c {
                let at = |yy: usize, xx: usize| data[(yy * w + xx) * c + ch];
                out[(y * wo + x) * c + ch] = at(2 * y, 2 * x)
                    .max(at(2 * y, 2 * x + 1))
                    .max(at(2 * y + 1, 2 * x))
                    .max(at(2 * y + 1, 2 * x + 1));
            }
        }
    }
    out
}
