//! The region grid against keras_rmac's `rmac_regions` as printed by
//! tests/reference/make_keras_fixtures.py for many (W, H, L).
mod common;

use rmac_native::rmac::{Region, rmac_regions};

#[derive(serde::Deserialize)]
struct Entry {
    w: usize,
    h: usize,
    levels: usize,
    regions: Vec<[usize; 4]>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Entry>,
}

#[test]
fn region_grid_matches_keras_rmac_for_every_printed_size() {
    let path = common::fixtures().join("keras/regions.json");
    let fixture: Fixture = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(fixture.cases.len() > 400);
    let mut shapes_seen = (false, false, false, false);
    for e in &fixture.cases {
        let want: Vec<Region> = e
            .regions
            .iter()
            .map(|r| Region {
                x: r[0],
                y: r[1],
                w: r[2],
                h: r[3],
            })
            .collect();
        assert_eq!(
            rmac_regions(e.w, e.h, e.levels),
            want,
            "W={} H={} L={}",
            e.w,
            e.h,
            e.levels
        );
        shapes_seen.0 |= e.w == e.h;
        shapes_seen.1 |= e.w == 1 && e.h > 1;
        shapes_seen.2 |= e.h == 1 && e.w > 1;
        shapes_seen.3 |= (e.w, e.h) == (16, 2);
    }
    assert_eq!(
        shapes_seen,
        (true, true, true, true),
        "fixture lacks W==H, 1×N, N×1 or 16×2"
    );
}

#[test]
fn regions_stay_inside_the_map() {
    for w in 1..40 {
        for h in 1..40 {
            for r in rmac_regions(w, h, 3) {
                assert!(
                    r.w > 0 && r.x + r.w <= w && r.y + r.h <= h,
                    "{w}×{h}: {r:?}"
                );
            }
        }
    }
}
