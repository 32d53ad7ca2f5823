//! Which frames of a video become records (`--fps`, `--every-frame`,
//! `--keyframes`), decided from the frames' presentation times alone.

/// How a video is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// For each k ≥ 0, the first frame whose presentation time is ≥ k/F
    /// seconds from the stream start; F is kept in millionths of a frame per
    /// second so that the comparison is exact integer arithmetic.
    Fps {
        micro_fps: u64,
    },
    EveryFrame,
    /// Key frames only (decoded alone: the fast path for large archives).
    Keyframes,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::Fps {
            micro_fps: 1_000_000,
        }
    }
}

impl Sampling {
    /// `--fps F` (F > 0, at most 1000, resolved to millionths).
    pub fn fps(f: f64) -> Option<Sampling> {
        let micro_fps = (f * 1e6).round();
        (f.is_finite() && f > 0.0 && f <= 1000.0 && micro_fps >= 1.0).then_some(Sampling::Fps {
            micro_fps: micro_fps as u64,
        })
    }

    /// The form recorded in the settings file (`fps=1`, `every-frame`, `keyframes`).
    pub fn name(&self) -> String {
        match self {
            Sampling::Fps { micro_fps } => format!("fps={}", *micro_fps as f64 / 1e6),
            Sampling::EveryFrame => "every-frame".to_owned(),
            Sampling::Keyframes => "keyframes".to_owned(),
        }
    }

    /// The indices of the sampled frames among `frames` (in presentation
    /// order, times from the stream start in units of `time_base` seconds).
    pub fn select(&self, frames: &[FrameTime], time_base: (i64, i64)) -> Vec<usize> {
        match *self {
            Sampling::EveryFrame => (0..frames.len()).collect(),
            Sampling::Keyframes => (0..frames.len()).filter(|&i| frames[i].key).collect(),
            Sampling::Fps { micro_fps } => {
                // t ≥ k/F  ⇔  ticks·num·µfps ≥ k·den·10⁶ (all integers, no rounding).
                let (num, den) = (time_base.0 as i128, time_base.1 as i128);
                let (f, one) = (micro_fps as i128, 1_000_000i128);
                let mut next_k: i128 = 0;
                let mut picked = Vec::new();
                for (i, fr) in frames.iter().enumerate() {
                    let lhs = fr.ticks.max(0) as i128 * num * f;
                    if lhs >= next_k * den * one {
                        picked.push(i);
                        // The smallest k whose k/F lies after this frame.
                        next_k = lhs / (den * one) + 1;
                    }
                }
                picked
            }
        }
    }
}

/// One frame as the container lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTime {
    /// Presentation time from the stream start, in time-base units.
    pub ticks: i64,
    /// The same in milliseconds, rounded to nearest (the record's `t`).
    pub t_ms: u64,
    pub key: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(ticks: &[i64]) -> Vec<FrameTime> {
        ticks
            .iter()
            .enumerate()
            .map(|(i, &t)| FrameTime {
                ticks: t,
                t_ms: 0,
                key: i % 3 == 0,
            })
            .collect()
    }

    /// The definition, read literally: for k = 0, 1, …, the first frame at or
    /// after k/F (in exact rationals), each frame taken once.
    fn naive(ticks: &[i64], tb: (i64, i64), f_num: i64, f_den: i64) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        let last = *ticks.last().unwrap();
        let mut k = 0i64;
        // k/F ≤ last time ⇔ k·f_den·den ≤ last·num·f_num
        while (k * f_den * tb.1) as i128 <= (last * tb.0 * f_num) as i128 {
            // first i with ticks·num/den ≥ k·f_den/f_num
            if let Some(i) = ticks
                .iter()
                .position(|&t| (t * tb.0 * f_num) as i128 >= (k * f_den * tb.1) as i128)
                && out.last() != Some(&i)
            {
                out.push(i);
            }
            k += 1;
        }
        out
    }

    #[test]
    fn fps_picks_the_first_frame_at_or_after_each_multiple_of_one_over_f() {
        // 25 fps in a 1/12800 time base, a variable-rate stretch, a gap of 3 s, a frame on an exact multiple.
        let mut t: Vec<i64> = (0..60).map(|i| i * 512).collect();
        t.extend([31_000, 31_100, 40_000, 70_000, 76_800, 76_801, 128_000]);
        for (f_num, f_den) in [(1, 1), (2, 1), (5, 2), (1, 4), (2, 5), (30, 1)] {
            let s = Sampling::fps(f_num as f64 / f_den as f64).unwrap();
            assert_eq!(
                s.select(&frames(&t), (1, 12_800)),
                naive(&t, (1, 12_800), f_num, f_den),
                "F = {f_num}/{f_den}"
            );
        }
        assert_eq!(
            Sampling::default().select(&frames(&t), (1, 12_800)),
            vec![0, 25, 50, 62, 63, 64, 66]
        );
    }

    #[test]
    fn every_frame_and_keyframes() {
        let f = frames(&[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(
            Sampling::EveryFrame.select(&f, (1, 25)),
            (0..7).collect::<Vec<_>>()
        );
        assert_eq!(Sampling::Keyframes.select(&f, (1, 25)), vec![0, 3, 6]);
        assert_eq!(Sampling::fps(0.0), None);
        assert_eq!(Sampling::default().name(), "fps=1");
        assert_eq!(Sampling::fps(2.5).unwrap().name(), "fps=2.5");
    }
}
