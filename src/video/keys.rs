//! Record keys of video frames: `VIDEO#t=SECONDS`, the W3C media-fragment
//! form, with exactly three decimals (milliseconds).

/// A frame key taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameKey<'a> {
    /// The video, exactly as listed.
    pub video: &'a str,
    pub t_ms: u64,
}

/// `VIDEO#t=S.mmm`.
pub fn frame_key(video: &str, t_ms: u64) -> String {
    format!("{video}#t={}.{:03}", t_ms / 1000, t_ms % 1000)
}

/// The video and time of a frame key; `None` for any other path. Never
/// ambiguous with an image: a key ends in `.mmm` digits, which is no image
/// extension, and its video part has a video extension.
pub fn parse_frame_key(path: &str) -> Option<FrameKey<'_>> {
    let (video, t) = path.rsplit_once("#t=")?;
    let (s, ms) = t.split_once('.')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(s) || ms.len() != 3 || !digits(ms) || !super::is_video(video) {
        return None;
    }
    Some(FrameKey {
        video,
        t_ms: s.parse::<u64>().ok()? * 1000 + ms.parse::<u64>().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_other_paths_are_not_keys() {
        for (video, ms) in [
            ("a.mp4", 0),
            ("dir/b c.MKV", 1_234_567),
            ("x#t=1.000.webm", 40),
        ] {
            let key = frame_key(video, ms);
            assert_eq!(
                parse_frame_key(&key),
                Some(FrameKey { video, t_ms: ms }),
                "{key}"
            );
        }
        assert_eq!(frame_key("a.mp4", 61_005), "a.mp4#t=61.005");
        for other in [
            "a.jpg",
            "a.jpg#t=1.000",
            "a.mp4#t=1.00",
            "a.mp4#t=1",
            "a.mp4#t=-1.000",
            "a.mp4",
        ] {
            assert_eq!(parse_frame_key(other), None, "{other}");
        }
    }
}
