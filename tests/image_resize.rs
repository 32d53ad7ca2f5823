//! Resizing matches Pillow 13.0.0's `img.resize((w, h), Image.Resampling.BICUBIC)` byte for byte,
//! and `target_size` is the contract's step 2. Fixtures: tests/reference/make_image_fixtures.py.

mod common;

use std::path::PathBuf;

use image::RgbImage;
use rmac_native::image::resize::{resize_bicubic, target_size};

fn fixture_dir() -> PathBuf {
    common::fixtures().join("image")
}

fn index() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture_dir().join("index.json")).unwrap()).unwrap()
}

fn load_png(rel: &str) -> RgbImage {
    image::open(fixture_dir().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .to_rgb8()
}

fn dim(c: &serde_json::Value, k: &str) -> u32 {
    c[k].as_u64().unwrap() as u32
}

/// Runs every case of `kind`; returns the mismatches.
fn check_cases(kind: &str, via_target_size: bool) -> (usize, Vec<String>) {
    let idx = index();
    let cases = idx[kind].as_array().unwrap();
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let src = load_png(c["src"].as_str().unwrap());
        let want = load_png(c["out"].as_str().unwrap());
        assert_eq!(
            src.dimensions(),
            (dim(c, "src_w"), dim(c, "src_h")),
            "{name}"
        );
        let (w, h) = if via_target_size {
            target_size(src.width(), src.height(), dim(c, "max_size"))
        } else {
            (dim(c, "w"), dim(c, "h"))
        };
        assert_eq!((w, h), (dim(c, "w"), dim(c, "h")), "{name}: target size");
        let got = resize_bicubic(&src, w, h);
        if got.dimensions() != want.dimensions() {
            failures.push(format!(
                "{name}: {:?} instead of {:?}",
                got.dimensions(),
                want.dimensions()
            ));
            continue;
        }
        let diff: Vec<u8> = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let n = diff.iter().filter(|d| **d > 0).count();
        if n > 0 {
            failures.push(format!(
                "{name}: {n} bytes differ, max abs diff {}",
                diff.iter().max().unwrap()
            ));
        }
    }
    (cases.len(), failures)
}

#[test]
fn resize_matches_pillow_byte_for_byte() {
    let (n, failures) = check_cases("resize", false);
    assert!(n >= 15);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pipeline_sizing_then_resize_matches_pillow() {
    let (n, failures) = check_cases("pipeline", true);
    assert!(n >= 4);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn target_size_table_matches_python() {
    let idx = index();
    let rows = idx["target_size"].as_array().unwrap();
    assert!(rows.len() >= 20);
    for r in rows {
        let v: Vec<u32> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(target_size(v[0], v[1], v[2]), (v[3], v[4]), "{v:?}");
    }
    assert_eq!(target_size(600, 525, 512), (512, 449));
}

#[test]
fn same_size_is_a_copy() {
    let src = load_png("resize/shrink_123x77_41x29.png");
    assert_eq!(resize_bicubic(&src, 123, 77), src);
}
