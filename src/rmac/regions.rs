//! keras_rmac's region grid (`get_regions.rmac_regions`), ported operation for
//! operation in f64 so the same floors fall the same way.

/// A square region of the pool5 map, in cells: columns `x .. x + w`, rows `y .. y + h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Desired overlap of neighbouring regions.
const OVERLAP: f64 = 0.4;
/// Candidate numbers of regions along the long side.
const STEPS: [f64; 6] = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0];

/// Region centres along one side: `floor(wl2 + k·b) − wl2` for `k < count`,
/// with `b = (side − wl) / (count − 1)` and numpy's `0/0 = NaN → b = 0`.
fn starts(side: f64, wl: f64, wl2: f64, count: usize) -> impl Iterator<Item = f64> {
    let b = (side - wl) / (count as f64 - 1.0);
    // keras_rmac: `if np.isnan(b): b = 0` (the first level of the short side, 0/0).
    // A non-NaN infinity cannot occur: count − 1 = 0 only where side == wl.
    let b = if b.is_nan() { 0.0 } else { b };
    (0..count).map(move |k| (wl2 + k as f64 * b).floor() - wl2)
}

/// The regions for a `w5 × h5` map and `levels` scales, in keras_rmac's order
/// (level by level, rows outer, columns inner); duplicates kept, zero-size dropped.
pub fn rmac_regions(w5: usize, h5: usize, levels: usize) -> Vec<Region> {
    let (wf, hf) = (w5 as f64, h5 as f64);
    let w = wf.min(hf);
    // idx = argmin |(w² − w·b)/w² − ovr| over the steps (first minimum wins).
    let mut idx = 0;
    let mut best = f64::INFINITY;
    for (i, step) in STEPS.iter().enumerate() {
        let b = (wf.max(hf) - w) / (step - 1.0);
        let err = (((w * w - w * b) / (w * w)) - OVERLAP).abs();
        // `<` keeps the first of equal values, like np.argmin; NaN (w = 0) never wins.
        if err < best {
            best = err;
            idx = i;
        }
    }
    let (wd, hd) = match h5.cmp(&w5) {
        std::cmp::Ordering::Less => (idx + 1, 0),
        std::cmp::Ordering::Greater => (0, idx + 1),
        std::cmp::Ordering::Equal => (0, 0),
    };

    let mut regions = Vec::new();
    for l in 1..=levels {
        let wl = (2.0 * w / (l as f64 + 1.0)).floor();
        let wl2 = (wl / 2.0 - 1.0).floor();
        let cen_w: Vec<f64> = starts(wf, wl, wl2, l + wd).collect();
        let cen_h: Vec<f64> = starts(hf, wl, wl2, l + hd).collect();
        if wl < 1.0 {
            continue; // `if not min(R[2:])`: zero-size regions are dropped.
        }
        for &y in &cen_h {
            for &x in &cen_w {
                // np.array(..., dtype=int) truncates; the values are already integral.
                regions.push(Region {
                    x: x as usize,
                    y: y as usize,
                    w: wl as usize,
                    h: wl as usize,
                });
            }
        }
    }
    regions
}
