//! The tiled im2col + sgemm convolution (and its fused pool) against the plain
//! float64 loop, on random shapes: odd sizes, 1-pixel images, every tile
//! boundary case, with and without the fused pool.

mod common;

use common::{random, random_layer};
use rmac_native::backend::cpu::conv::conv3x3_relu;
use rmac_native::backend::cpu::reference::{conv3x3_relu_f64, maxpool2_f64};
use rmac_native::tensor::Tensor3;

fn check(h: usize, w: usize, cin: usize, cout: usize, pool: bool, threads: usize, seed: u8) {
    let layer = random_layer(cin, cout, pool, seed);
    let input = Tensor3::from_vec(h, w, cin, random(seed, 3, h * w * cin, 1.0));
    let pool_rt = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let got = pool_rt.install(|| conv3x3_relu(&input, &layer, threads));
    let mut want = conv3x3_relu_f64(&input, &layer.kernel, &layer.bias, cout);
    let (mut wh, mut ww) = (h, w);
    if pool {
        want = maxpool2_f64(&want, h, w, cout);
        (wh, ww) = (h / 2, w / 2);
    }
    assert_eq!(
        (got.h, got.w, got.c),
        (wh, ww, cout),
        "shape for {h}×{w}×{cin}→{cout} pool={pool}"
    );
    // f32 accumulation of 9·cin products of O(1) values: error ~ sqrt(9·cin)·2⁻²⁴·|terms|.
    let tol = 1e-5 * (9.0 * cin as f64).sqrt();
    for (i, (&g, &r)) in got.data.iter().zip(&want).enumerate() {
        assert!(
            (f64::from(g) - r).abs() <= tol * (1.0 + r.abs()),
            "{h}×{w}×{cin}→{cout} pool={pool} threads={threads}: element {i}: {g} vs {r}"
        );
    }
}

#[test]
fn conv_matches_f64_loop_on_random_shapes() {
    let shapes = [
        (1, 1, 3, 4),
        (1, 7, 3, 8),
        (7, 1, 5, 3),
        (5, 7, 3, 16),
        (9, 13, 8, 5),
        (16, 16, 64, 64),
        (13, 31, 17, 33),
        (33, 45, 3, 64),
        (40, 3, 128, 16),
    ];
    for (k, &(h, w, cin, cout)) in shapes.iter().enumerate() {
        for threads in [1, 3] {
            check(h, w, cin, cout, false, threads, k as u8 + 1);
        }
    }
}

#[test]
fn fused_pool_matches_f64_loop_including_odd_sizes() {
    let shapes = [
        (2, 2, 3, 4),
        (3, 3, 3, 4),
        (1, 9, 4, 4),
        (7, 9, 8, 16),
        (16, 10, 32, 8),
        (35, 21, 16, 24),
    ];
    for (k, &(h, w, cin, cout)) in shapes.iter().enumerate() {
        for threads in [1, 2, 5] {
            check(h, w, cin, cout, true, threads, 50 + k as u8);
        }
    }
}

#[test]
fn wide_rows_force_single_row_tiles() {
    // 1 row of 1200×512 inputs is over the patch budget: tiles of one row (or two with a pool).
    check(3, 1200, 512, 8, false, 2, 90);
    check(4, 1200, 512, 8, true, 2, 91);
}
