//! Per-region pooling of the pool5 map: keras_rmac's RoiPooling (pool_list [1],
//! a max), or the generalised mean (GeM, `--pool gem --gem-p P`) of the
//! retrieval toolboxes.

use super::regions::Region;
use crate::tensor::Tensor3;

/// How each region of the pool5 map becomes one value per channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub enum Pooling {
    /// The per-channel maximum (keras_rmac; the default).
    #[default]
    Max,
    /// The generalised mean `((1/|R|) Σ x^p)^(1/p)` per channel: p = 1 is the
    /// average, p → ∞ the maximum. Retrieval work finds p ≈ 3 better than max.
    Gem { p: f64 },
}

/// The range `--gem-p` accepts: below 1 the mean favours the weak responses,
/// and far above 64 it is the maximum to within float precision.
pub const GEM_P_RANGE: std::ops::RangeInclusive<f64> = 1.0..=64.0;

impl Pooling {
    /// The name recorded in the settings: `max`, or `gem:P` (P as Rust prints
    /// an f64: the shortest text that reads back to the same value).
    pub fn name(&self) -> String {
        match self {
            Pooling::Max => "max".to_owned(),
            Pooling::Gem { p } => format!("gem:{p}"),
        }
    }

    /// The inverse of [`Self::name`].
    pub fn parse(s: &str) -> Option<Pooling> {
        if s == "max" {
            return Some(Pooling::Max);
        }
        let p: f64 = s.strip_prefix("gem:")?.parse().ok()?;
        GEM_P_RANGE.contains(&p).then_some(Pooling::Gem { p })
    }

    /// This pooling over region `r` of `map`.
    pub fn region(&self, map: &Tensor3, r: &Region) -> Vec<f32> {
        match *self {
            Pooling::Max => region_max(map, r),
            Pooling::Gem { p } => region_gem(map, r, p),
        }
    }
}

/// The cells of `r` inside the map: rows `y1..y2`, columns `x1..x2` (slicing clips in the reference).
fn clipped(map: &Tensor3, r: &Region) -> (usize, usize, usize, usize) {
    let (y1, x1) = (r.y.min(map.h), r.x.min(map.w));
    let (y2, x2) = ((r.y + r.h).min(map.h), (r.x + r.w).min(map.w));
    (y1, y2, x1, x2)
}

/// Per-channel max over rows `y .. y + h` and columns `x .. x + w`, clipped to
/// the map (as slicing clips in the reference). pool5 values are ReLU outputs
/// (≥ 0), so an empty region would give zeros.
pub fn region_max(map: &Tensor3, r: &Region) -> Vec<f32> {
    let (y1, y2, x1, x2) = clipped(map, r);
    let mut out = vec![0.0f32; map.c];
    for y in y1..y2 {
        for x in x1..x2 {
            for (o, &v) in out.iter_mut().zip(map.pixel(y, x)) {
                *o = o.max(v);
            }
        }
    }
    out
}

/// Per-channel generalised mean `((1/|R|) Σ x^p)^(1/p)` over the region's
/// cells (clipped as [`region_max`]), in f64. pool5 values are ≥ 0 (ReLU), so
/// `x^p` is defined for every p; it is computed as `m · ((1/|R|) Σ (x/m)^p)^(1/p)`
/// with m the channel's maximum, which is the same number but cannot overflow
/// for large p. A channel that is zero everywhere (and an empty region) gives 0.
pub fn region_gem(map: &Tensor3, r: &Region, p: f64) -> Vec<f32> {
    let (y1, y2, x1, x2) = clipped(map, r);
    let cells = (y2 - y1) * (x2 - x1);
    let peak = region_max(map, r);
    let mut sums = vec![0.0f64; map.c];
    for y in y1..y2 {
        for x in x1..x2 {
            for ((s, &v), &m) in sums.iter_mut().zip(map.pixel(y, x)).zip(&peak) {
                if m > 0.0 {
                    *s += (f64::from(v) / f64::from(m)).powf(p);
                }
            }
        }
    }
    sums.iter()
        .zip(&peak)
        .map(|(&s, &m)| {
            if m > 0.0 && cells > 0 {
                (f64::from(m) * (s / cells as f64).powf(1.0 / p)) as f32
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for p in [
            Pooling::Max,
            Pooling::Gem { p: 3.0 },
            Pooling::Gem { p: 2.5 },
        ] {
            assert_eq!(Pooling::parse(&p.name()), Some(p));
        }
        assert_eq!(Pooling::Gem { p: 3.0 }.name(), "gem:3");
        assert_eq!(Pooling::parse("gem:0.5"), None);
        assert_eq!(Pooling::parse("mean"), None);
    }

    #[test]
    fn gem_of_one_is_the_mean_and_large_p_nears_the_max() {
        let map = Tensor3::from_vec(1, 2, 1, vec![1.0, 3.0]);
        let r = Region {
            x: 0,
            y: 0,
            w: 2,
            h: 1,
        };
        assert!((region_gem(&map, &r, 1.0)[0] - 2.0).abs() < 1e-6);
        assert!((region_gem(&map, &r, 64.0)[0] - 3.0).abs() < 0.05);
        let zero = Tensor3::from_vec(1, 2, 1, vec![0.0, 0.0]);
        assert_eq!(region_gem(&zero, &r, 3.0), vec![0.0]);
    }
}
