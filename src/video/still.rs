//! `--skip-static D` (docs/contract.md#videos): a sampled frame whose small
//! grayscale thumbnail differs from the last kept frame of its video by a mean
//! absolute difference below D (0–255) is skipped before the network runs, so
//! a static shot costs one vector, not one per sampled frame.
//!
//! What "the last kept frame" is must not depend on how the frames were cut
//! into chunks for the ranks, nor on where an earlier run was killed. So a
//! video's sampled frames are split into fixed *segments* of [`SEGMENT`]
//! consecutive sampled frames; the first frame of a segment (its anchor) is
//! always kept, and a frame is compared only with the last kept frame of its
//! own segment. The scheduler never cuts a segment (one rank judges all of
//! it, in order), and a resumed run decodes a partly done segment's finished
//! frames again ([`StillStep::replay`]) to find its last kept frame, without
//! running the network on them. Every decision is a pure function of the
//! decoded pixels of the segment's frames, so any run makes the same ones.

use crate::video::keys::frame_key;

/// Sampled frames per segment. Every segment's first frame is kept, so a
/// static stretch still costs one vector per [`SEGMENT`] sampled frames
/// (4 min 16 s at `--fps 1`); in exchange a segment bounds what one rank must
/// judge in one piece (the scheduler hands out whole segments, so the chunks
/// under MPI are at most this long) and what a resumed run decodes again
/// (thumbnails only) to pick up a segment in the middle.
pub const SEGMENT: u64 = 256;

/// Thumbnail side in cells (a `THUMB × THUMB` grid over the frame, whatever
/// its aspect: both frames of a comparison come from one video). At 1080p a
/// cell averages 60 × 34 pixels, which evens out compression noise and film
/// grain while a moving object still changes the cells it crosses.
pub const THUMB: usize = 32;

/// The frame as a `THUMB × THUMB` grid of mean BT.601 luma values (0–255).
///
/// Definition (exact, so every run and every machine gets the same numbers):
/// a pixel's luma is (299 R + 587 G + 114 B) / 1000; cell (i, j) (row i,
/// column j) averages the pixels of rows ⌊i·H/32⌋ .. max(⌊(i+1)·H/32⌋,
/// ⌊i·H/32⌋ + 1) and the columns alike (a frame under 32 px shares pixels
/// between neighbouring cells). The sums are integers; each cell's mean is
/// one correctly rounded f64 division.
#[derive(Clone, Debug, PartialEq)]
pub struct Thumbnail {
    cells: Vec<f64>,
}

/// The pixel range `[start, end)` of cell `i` along a side of `len` pixels.
fn span(i: usize, len: usize) -> (usize, usize) {
    let start = i * len / THUMB;
    let end = ((i + 1) * len / THUMB).max(start + 1);
    (start, end)
}

impl Thumbnail {
    /// The thumbnail of an 8-bit RGB frame (at least 1 × 1 pixel).
    pub fn of(rgb: &image::RgbImage) -> Thumbnail {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        assert!(w > 0 && h > 0, "a frame of {w}×{h} pixels has no thumbnail");
        let raw = rgb.as_raw();
        let mut cells = Vec::with_capacity(THUMB * THUMB);
        for i in 0..THUMB {
            let (y0, y1) = span(i, h);
            for j in 0..THUMB {
                let (x0, x1) = span(j, w);
                let mut sum: u64 = 0;
                for y in y0..y1 {
                    let row = &raw[(y * w + x0) * 3..(y * w + x1) * 3];
                    for p in row.chunks_exact(3) {
                        sum += 299 * p[0] as u64 + 587 * p[1] as u64 + 114 * p[2] as u64;
                    }
                }
                let count = ((y1 - y0) * (x1 - x0)) as u64;
                cells.push(sum as f64 / (1000 * count) as f64);
            }
        }
        Thumbnail { cells }
    }

    /// The mean over the cells of |a − b| (0–255), summed in row-major order.
    pub fn mean_abs_diff(&self, other: &Thumbnail) -> f64 {
        let sum: f64 = self
            .cells
            .iter()
            .zip(&other.cells)
            .map(|(a, b)| (a - b).abs())
            .sum();
        sum / self.cells.len() as f64
    }
}

/// Where a frame job stands in its segment (set by the coordinator, which
/// knows every sampled frame; travels with the job to the rank that decodes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillStep {
    /// Names the segment, unique within a run (the coordinator uses the list
    /// position of the segment's first frame).
    pub segment: u64,
    /// The segment's first frame: always kept; it starts the comparisons.
    pub anchor: bool,
    /// A frame an earlier run already recorded: decoded and judged again only
    /// so that the frames after it are compared with the right kept frame; it
    /// gets no new record and never reaches the network.
    pub replay: bool,
}

/// What becomes of a decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Through the network (and now the frame the next ones are compared with).
    Keep,
    /// Skipped as static; the reason is the record's `skipped` text.
    Skip(String),
}

/// The comparisons of one decode thread: the last kept frame of the segment
/// it is in. Frames must come segment by segment, in order, each segment
/// starting at its anchor (as the scheduler hands them out).
#[derive(Debug)]
pub struct StillFilter {
    threshold: f64,
    segment: Option<u64>,
    /// The last kept frame of `segment` and its time in milliseconds (`None`
    /// until one is kept: the anchor may fail to decode).
    kept: Option<(Thumbnail, u64)>,
}

impl StillFilter {
    /// `threshold`: `--skip-static D`.
    pub fn new(threshold: f64) -> StillFilter {
        StillFilter {
            threshold,
            segment: None,
            kept: None,
        }
    }

    /// A frame of `step`'s segment is about to be judged: an anchor starts
    /// the segment afresh; any other frame must continue the segment of the
    /// frame before it (else the scheduler cut a segment, a bug: the frame
    /// gets an error record rather than a decision that depends on chunking).
    pub fn enter(&mut self, step: StillStep) -> Result<(), String> {
        if step.anchor {
            self.segment = Some(step.segment);
            self.kept = None;
            return Ok(());
        }
        if self.segment != Some(step.segment) {
            return Err(format!(
                "internal error: a frame of --skip-static segment #{} arrived without the frames before it \
                 (please report this to the rmac-native developers); rerun the same command to redo it",
                step.segment
            ));
        }
        Ok(())
    }

    /// Judges the decoded frame at `t_ms` of the segment entered last: kept
    /// when no frame of the segment is kept yet or when it differs from the
    /// last kept one by at least the threshold.
    pub fn judge(&mut self, thumb: Thumbnail, t_ms: u64) -> Verdict {
        if let Some((kept, kept_ms)) = &self.kept {
            let diff = kept.mean_abs_diff(&thumb);
            if diff < self.threshold {
                // Rounded down, so the text never shows the threshold itself.
                let shown = (diff * 1000.0).floor() / 1000.0;
                return Verdict::Skip(format!(
                    "static: mean abs diff {shown:.3} < {} to the kept frame at t={}",
                    self.threshold,
                    frame_key("", *kept_ms).trim_start_matches("#t=")
                ));
            }
        }
        self.kept = Some((thumb, t_ms));
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition read literally, in f64: per-pixel luma, cell means,
    /// the mean of the absolute differences.
    fn naive_thumbnail(img: &image::RgbImage) -> Vec<f64> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut out = Vec::new();
        for i in 0..THUMB {
            let y0 = i * h / THUMB;
            let y1 = ((i + 1) * h / THUMB).max(y0 + 1);
            for j in 0..THUMB {
                let x0 = j * w / THUMB;
                let x1 = ((j + 1) * w / THUMB).max(x0 + 1);
                let (mut sum, mut n) = (0.0f64, 0.0f64);
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = img.get_pixel(x as u32, y as u32).0;
                        sum += 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
                        n += 1.0;
                    }
                }
                out.push(sum / n);
            }
        }
        out
    }

    fn naive_diff(a: &[f64], b: &[f64]) -> f64 {
        let mut s = 0.0;
        for k in 0..a.len() {
            s += (a[k] - b[k]).abs();
        }
        s / a.len() as f64
    }

    fn noise(w: u32, h: u32, seed: u64) -> image::RgbImage {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        image::RgbImage::from_fn(w, h, |_, _| {
            let mut byte = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            };
            image::Rgb([byte(), byte(), byte()])
        })
    }

    #[test]
    fn the_thumbnail_and_its_difference_match_a_naive_f64_reading_of_the_definition() {
        // Sides that divide by 32, that do not, and under 32 (cells share pixels).
        for (k, (w, h)) in [(64, 64), (97, 65), (1920, 1080), (33, 17), (7, 40), (1, 1)]
            .into_iter()
            .enumerate()
        {
            let (a, b) = (noise(w, h, k as u64), noise(w, h, 100 + k as u64));
            let (ta, tb) = (Thumbnail::of(&a), Thumbnail::of(&b));
            let (na, nb) = (naive_thumbnail(&a), naive_thumbnail(&b));
            assert_eq!(ta.cells.len(), THUMB * THUMB);
            for (got, want) in ta.cells.iter().zip(&na) {
                assert!((got - want).abs() <= 1e-9, "{w}×{h}: {got} vs {want}");
            }
            let (got, want) = (ta.mean_abs_diff(&tb), naive_diff(&na, &nb));
            assert!((got - want).abs() <= 1e-9, "{w}×{h}: {got} vs {want}");
            assert_eq!(ta.mean_abs_diff(&ta), 0.0);
        }
        // Luma weights: pure red, green, blue and white.
        for (rgb, y) in [
            ([255, 0, 0], 76.245),
            ([0, 255, 0], 149.685),
            ([0, 0, 255], 29.07),
            ([255, 255, 255], 255.0),
        ] {
            let t = Thumbnail::of(&image::RgbImage::from_pixel(40, 30, image::Rgb(rgb)));
            assert!(t.cells.iter().all(|&c| c == y), "{rgb:?}: {:?}", t.cells[0]);
        }
    }

    fn gray(level: u8) -> Thumbnail {
        Thumbnail::of(&image::RgbImage::from_pixel(64, 36, image::Rgb([level; 3])))
    }

    fn step(segment: u64, anchor: bool) -> StillStep {
        StillStep {
            segment,
            anchor,
            replay: false,
        }
    }

    #[test]
    fn frames_are_compared_with_the_last_kept_frame_of_their_segment() {
        let mut f = StillFilter::new(2.0);
        f.enter(step(0, true)).unwrap();
        assert_eq!(f.judge(gray(100), 0), Verdict::Keep);
        f.enter(step(0, false)).unwrap();
        // 1 level from the kept frame: skipped, and it does not become the reference.
        let Verdict::Skip(why) = f.judge(gray(101), 1000) else {
            panic!("not skipped")
        };
        assert_eq!(
            why,
            "static: mean abs diff 1.000 < 2 to the kept frame at t=0.000"
        );
        f.enter(step(0, false)).unwrap();
        // 1 level from the skipped one but 2 from the kept one: kept (not below D).
        assert_eq!(f.judge(gray(102), 2000), Verdict::Keep);
        f.enter(step(0, false)).unwrap();
        let Verdict::Skip(why) = f.judge(gray(103), 3000) else {
            panic!("not skipped")
        };
        assert!(why.ends_with("t=2.000"), "{why}");
        // A new segment keeps its anchor whatever it looks like.
        f.enter(step(9, true)).unwrap();
        assert_eq!(f.judge(gray(103), 4000), Verdict::Keep);
        // A frame of a segment whose start this filter never saw is refused.
        assert!(
            f.enter(step(4, false))
                .unwrap_err()
                .contains("internal error")
        );
        // D = 0 skips nothing: no difference is below 0.
        let mut zero = StillFilter::new(0.0);
        zero.enter(step(0, true)).unwrap();
        assert_eq!(zero.judge(gray(7), 0), Verdict::Keep);
        zero.enter(step(0, false)).unwrap();
        assert_eq!(zero.judge(gray(7), 1), Verdict::Keep);
    }
}
