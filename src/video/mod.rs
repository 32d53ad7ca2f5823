//! Videos as inputs (docs/contract.md#videos): a video listed in `--input`
//! becomes one job per sampled frame, keyed `VIDEO#t=SECONDS` (W3C media
//! fragment, milliseconds), so that resuming, error records and MPI
//! scheduling work on frames exactly as on images.
//!
//! Two passes over a video: [`expand`] (rank 0, before the run) reads the
//! container's packets without decoding to list the frames' presentation
//! times and pick the sampled ones ([`sampling`]); the decode stage then
//! decodes forward through each video and converts the picked frames to 8-bit
//! RGB exactly as the ffmpeg command line does ([`Cursor`]).

pub mod keys;
pub mod sampling;
pub mod still;

#[cfg(feature = "video")]
mod ffmpeg;

pub use keys::{FrameKey, frame_key, parse_frame_key};
pub use sampling::Sampling;

use crate::image::decode::DecodeLimits;
use std::collections::HashMap;

/// What the records of a frame say beside its path (`video`, `t`, `frame`
/// in JSONL), by record path.
pub type FrameIndex = HashMap<String, FrameInfo>;

/// One sampled frame: its video (as listed), time and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub video: String,
    /// Milliseconds from the stream start (the `t` of the path).
    pub t_ms: u64,
    /// Index in presentation order among all the video's frames.
    pub frame: u64,
    /// Index among the video's records (its sampled frames, in order): what
    /// places the frame in a `--skip-static` segment ([`still::SEGMENT`]).
    pub sample: u64,
}

/// The input list with its videos replaced by their sampled frames.
#[derive(Debug, Default)]
pub struct Expanded {
    /// Images as listed, and each video's frame keys in presentation order.
    pub paths: Vec<String>,
    /// Videos that cannot be read at all: (video, why), one error record each.
    pub rejected: Vec<(String, String)>,
    /// The frames among `paths`.
    pub frames: FrameIndex,
    /// How many of the listed paths were videos.
    pub videos: usize,
    /// Sampled frames dropped because an earlier frame of the same video has
    /// the same millisecond key (frame rates above 1000/s).
    pub same_key: usize,
}

/// Whether `path` names a video by its extension (docs/contract.md#inputs).
pub fn is_video(path: &str) -> bool {
    crate::inputs::has_video_extension(std::path::Path::new(path))
}

/// Replaces each video of `paths` by the keys of its sampled frames; a video
/// that cannot be read becomes a rejected entry naming it. Images pass through.
pub fn expand(paths: Vec<String>, sampling: Sampling, limits: &DecodeLimits) -> Expanded {
    let mut out = Expanded::default();
    for path in paths {
        if !is_video(&path) {
            out.paths.push(path);
            continue;
        }
        out.videos += 1;
        match frame_times(&path, sampling, limits) {
            Err(why) => out.rejected.push((path, why)),
            Ok(frames) => {
                let mut last_key = None;
                let mut sample = 0;
                for (t_ms, frame) in frames {
                    if last_key == Some(t_ms) {
                        out.same_key += 1;
                        continue;
                    }
                    last_key = Some(t_ms);
                    let key = frame_key(&path, t_ms);
                    out.frames.insert(
                        key.clone(),
                        FrameInfo {
                            video: path.clone(),
                            t_ms,
                            frame,
                            sample,
                        },
                    );
                    sample += 1;
                    out.paths.push(key);
                }
            }
        }
    }
    out
}

/// The sampled frames of one video as (milliseconds, index in presentation order).
#[cfg(feature = "video")]
fn frame_times(
    path: &str,
    sampling: Sampling,
    limits: &DecodeLimits,
) -> Result<Vec<(u64, u64)>, String> {
    let index = ffmpeg::probe(path, limits)?;
    Ok(sampling
        .select(&index.frames, index.time_base)
        .into_iter()
        .map(|i| (index.frames[i].t_ms, i as u64))
        .collect())
}

#[cfg(not(feature = "video"))]
fn frame_times(
    _path: &str,
    _sampling: Sampling,
    _limits: &DecodeLimits,
) -> Result<Vec<(u64, u64)>, String> {
    Err(NO_VIDEO.to_owned())
}

/// Why a build without the `video` feature refuses videos.
pub const NO_VIDEO: &str = "this is a video, and this rmac-native was built without video support; \
     rebuild it with the cargo feature `video` (on by default; needs FFmpeg's -dev packages: \
     libavcodec-dev libavformat-dev libavfilter-dev libavutil-dev libswscale-dev), or cut frames \
     first (`ffmpeg -i VIDEO -vf fps=1 frames/%06d.png`) and pass the folder";

/// The decoders a decode thread keeps open between frame jobs, so that the
/// frames of one video are decoded in one forward pass.
#[derive(Default)]
pub struct Cursors {
    #[cfg(feature = "video")]
    open: Option<ffmpeg::Cursor>,
}

impl Cursors {
    /// The frame `key` as 8-bit RGB, from the video at `file` (the key's
    /// video, with `--root` prefixed); `keyframes`: only key frames are decoded.
    #[cfg(feature = "video")]
    pub fn frame(
        &mut self,
        file: &str,
        key: FrameKey,
        keyframes: bool,
        limits: &DecodeLimits,
    ) -> Result<image::RgbImage, String> {
        let reuse = self
            .open
            .take()
            .filter(|c| c.video() == file && c.keyframes() == keyframes);
        let mut cursor = match reuse {
            Some(c) => c,
            None => ffmpeg::Cursor::open(file, keyframes)?,
        };
        let r = cursor.frame_at(key.t_ms, limits);
        self.open = Some(cursor);
        r
    }

    #[cfg(not(feature = "video"))]
    pub fn frame(
        &mut self,
        _file: &str,
        _key: FrameKey,
        _keyframes: bool,
        _limits: &DecodeLimits,
    ) -> Result<image::RgbImage, String> {
        Err(NO_VIDEO.to_owned())
    }
}
