//! FFmpeg's libraries (through `ffmpeg-next`): the packet scan that lists a
//! video's frames ([`probe`]), and the forward decoder that hands out the
//! sampled frames as 8-bit RGB ([`Cursor`]).
//!
//! Pixels: a decoded frame goes through the filter graph the ffmpeg command
//! line builds for `ffmpeg -i VIDEO -pix_fmt rgb24 frame.png` — a buffer
//! source, `format=pix_fmts=rgb24` and the `scale` filter libavfilter inserts
//! before it with the command line's default swscale flags (`bicubic`) — so
//! the colour matrix and range are taken from the frame's own tags exactly as
//! the command line takes them (docs/contract.md#videos).

use super::sampling::FrameTime;
use crate::image::decode::DecodeLimits;
use ff::codec::packet::Ref as _;
use ff::codec::threading;
use ff::format::context::Input;
use ff::util::frame;
use ff::{Error, Packet, Rational, media};
use ffmpeg_next as ff;

/// The swscale flags of the ffmpeg command line (fftools sets `flags=bicubic`
/// for every automatically inserted scale filter).
const SWS_FLAGS: &std::ffi::CStr = c"flags=bicubic";

/// AV_PKT_FLAG_DISCARD: a packet the demuxer marks as not to be shown (an MP4
/// edit list's pre-roll); the decoder drops its frame, so it is no frame.
const PKT_DISCARD: i32 = 0x0004;

/// A fresh cursor seeks (to the key frame at or before the frame) rather than
/// decoding from the start when the frame lies this far in.
const SEEK_AFTER_MS: u64 = 2_000;

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ff::init();
        // Errors are returned and become records; libav's own log would only repeat them.
        ff::util::log::set_level(ff::util::log::Level::Quiet);
    });
}

/// A video's frames in presentation order, from its packets (no decoding).
pub struct VideoIndex {
    pub frames: Vec<FrameTime>,
    /// (numerator, denominator) of the stream's time base.
    pub time_base: (i64, i64),
}

/// The video stream and what a frame time is counted from.
struct StreamInfo {
    index: usize,
    time_base: Rational,
    /// The stream's start time (0 when the container gives none).
    start: i64,
    parameters: ff::codec::Parameters,
}

fn open_input(path: &str) -> Result<(Input, StreamInfo), String> {
    init();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the video: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file; pass the video file itself".to_owned());
    }
    if meta.len() == 0 {
        return Err("the video file is empty (0 bytes)".to_owned());
    }
    let input = ff::format::input(&path).map_err(|e| {
        format!(
            "cannot open the video ({e}): not a container FFmpeg reads, or a truncated file \
             (an MP4 cut short has no moov atom); check that it plays, e.g. with `ffprobe`"
        )
    })?;
    let stream = input
        .streams()
        .best(media::Type::Video)
        .ok_or("the file holds no video stream (audio only?)")?;
    let start = match stream.start_time() {
        ff::ffi::AV_NOPTS_VALUE => 0,
        s => s,
    };
    let info = StreamInfo {
        index: stream.index(),
        time_base: stream.time_base(),
        start,
        parameters: stream.parameters(),
    };
    Ok((input, info))
}

/// The frame size the stream's header declares.
fn header_size(p: &ff::codec::Parameters) -> (u32, u32) {
    // SAFETY: `p` owns a valid AVCodecParameters.
    let raw = unsafe { &*p.as_ptr() };
    (raw.width.max(0) as u32, raw.height.max(0) as u32)
}

fn check_pixels(w: u32, h: u32, limits: &DecodeLimits) -> Result<(), String> {
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(format!(
            "the video's frames are {w}×{h} = {pixels} px, more than --max-pixels {}; raise --max-pixels to read it",
            limits.max_pixels
        ));
    }
    Ok(())
}

/// Milliseconds of `ticks` time-base units, rounded to nearest.
fn ticks_to_ms(ticks: i64, tb: Rational) -> u64 {
    let (num, den) = (tb.numerator() as i128, tb.denominator().max(1) as i128);
    ((ticks.max(0) as i128 * num * 2000 + den) / (2 * den)) as u64
}

/// Lists the frames of the video at `path` from its packets: presentation
/// times and key-frame flags, in presentation order. Refuses files FFmpeg
/// cannot open, files without a video stream or a decoder for it, and frame
/// sizes over `--max-pixels` (from the stream header).
pub fn probe(path: &str, limits: &DecodeLimits) -> Result<VideoIndex, String> {
    let (mut input, info) = open_input(path)?;
    let codec = info.parameters.id();
    if ff::decoder::find(codec).is_none() {
        return Err(format!(
            "no decoder for this video's codec ({codec:?}) in the FFmpeg libraries rmac-native is linked with"
        ));
    }
    let (w, h) = header_size(&info.parameters);
    if w == 0 || h == 0 {
        return Err(
            "the video stream's header gives no frame size (a damaged or unsupported file)"
                .to_owned(),
        );
    }
    check_pixels(w, h, limits)?;
    let mut times: Vec<(i64, bool)> = Vec::new();
    let mut packet = Packet::empty();
    let mut errors = 0;
    loop {
        match packet.read(&mut input) {
            Ok(()) => errors = 0,
            Err(Error::Eof) => break,
            // A damaged stretch: the demuxer resynchronises; give up after many in a row.
            Err(_) if errors < 64 => {
                errors += 1;
                continue;
            }
            Err(_) => break,
        }
        if packet.stream() != info.index {
            continue;
        }
        // SAFETY: `packet` holds a valid AVPacket.
        let discard = unsafe { (*packet.as_ptr()).flags } & PKT_DISCARD != 0;
        if discard {
            continue;
        }
        if let Some(ts) = packet.pts().or(packet.dts())
            && ts >= info.start
        {
            times.push((ts, packet.is_key()));
        }
    }
    if times.is_empty() {
        return Err("the video stream holds no frames with a time (empty or damaged)".to_owned());
    }
    times.sort_by_key(|&(ts, _)| ts);
    times.dedup_by_key(|&mut (ts, _)| ts);
    let frames = times
        .into_iter()
        .map(|(ts, key)| FrameTime {
            ticks: ts - info.start,
            t_ms: ticks_to_ms(ts - info.start, info.time_base),
            key,
        })
        .collect();
    Ok(VideoIndex {
        frames,
        time_base: (
            info.time_base.numerator() as i64,
            info.time_base.denominator() as i64,
        ),
    })
}

/// The graph that turns frames of one size and format into RGB24.
struct Converter {
    shape: (u32, u32, ff::format::Pixel),
    graph: ff::filter::Graph,
}

/// One open video, decoded forward: [`Cursor::frame_at`] returns the frame at
/// a time, decoding (and dropping) the frames before it.
pub struct Cursor {
    video: String,
    keyframes: bool,
    input: Input,
    info: StreamInfo,
    decoder: ff::decoder::Video,
    /// The time of the last frame handed out or passed over.
    last_ms: Option<u64>,
    /// A frame decoded past the one asked for: the next call starts with it.
    pending: Option<(u64, frame::Video)>,
    sent_eof: bool,
    /// The last decoding error since the last frame (named in the error
    /// record of a frame it swallowed).
    error: Option<String>,
    converter: Option<Converter>,
}

impl Cursor {
    /// Opens the video at `path` (with `keyframes`, the decoder skips every
    /// frame that is not a key frame).
    pub fn open(path: &str, keyframes: bool) -> Result<Cursor, String> {
        let (input, info) = open_input(path)?;
        let mut ctx = ff::codec::context::Context::from_parameters(info.parameters.clone())
            .map_err(|e| format!("cannot set up the video decoder: {e}"))?;
        // Frame threads as the command line uses them: the output does not depend on them.
        ctx.set_threading(threading::Config {
            kind: threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        // SAFETY: a valid, not yet opened codec context.
        unsafe { (*ctx.as_mut_ptr()).pkt_timebase = info.time_base.into() };
        let mut decoder = ctx.decoder();
        if keyframes {
            decoder.skip_frame(ff::codec::discard::Discard::NonKey);
        }
        let decoder = decoder
            .video()
            .map_err(|e| format!("cannot open the video decoder: {e}"))?;
        Ok(Cursor {
            video: path.to_owned(),
            keyframes,
            input,
            info,
            decoder,
            last_ms: None,
            pending: None,
            sent_eof: false,
            error: None,
            converter: None,
        })
    }

    pub fn keyframes(&self) -> bool {
        self.keyframes
    }

    /// The video this cursor reads (as opened).
    pub fn video(&self) -> &str {
        &self.video
    }

    /// The next decoded frame with its time, `None` at the end.
    fn next_frame(&mut self) -> Result<Option<(u64, frame::Video)>, String> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        let mut frame = frame::Video::empty();
        let mut read_errors = 0;
        loop {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    let Some(ts) = frame.timestamp() else {
                        continue;
                    };
                    if ts < self.info.start {
                        continue;
                    }
                    let ms = ticks_to_ms(ts - self.info.start, self.info.time_base);
                    return Ok(Some((ms, frame)));
                }
                Err(Error::Eof) => return Ok(None),
                Err(Error::Other { errno }) if errno == ff::util::error::EAGAIN => {}
                // A damaged frame: remembered, and the next packet goes in (never the
                // same call again, which could return the same error forever).
                Err(e) => self.error = Some(e.to_string()),
            }
            if self.sent_eof {
                return Ok(None);
            }
            let mut packet = Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {
                    read_errors = 0;
                    if packet.stream() != self.info.index {
                        continue;
                    }
                    if let Err(e) = self.decoder.send_packet(&packet) {
                        // The frame of this packet is lost; later ones go on.
                        self.error = Some(e.to_string());
                    }
                }
                Err(Error::Eof) => {
                    let _ = self.decoder.send_eof();
                    self.sent_eof = true;
                }
                Err(e) if read_errors < 64 => {
                    read_errors += 1;
                    self.error = Some(format!("reading the file: {e}"));
                }
                Err(_) => {
                    let _ = self.decoder.send_eof();
                    self.sent_eof = true;
                }
            }
        }
    }

    /// Moves to the key frame at or before `t_ms`.
    fn seek(&mut self, t_ms: u64) -> Result<(), String> {
        let tb = self.info.time_base;
        let start_us = self.info.start as i128 * tb.numerator() as i128 * 1_000_000
            / tb.denominator().max(1) as i128;
        let target = (start_us + t_ms as i128 * 1000) as i64;
        self.input
            .seek(target, ..target.saturating_add(1))
            .map_err(|e| format!("cannot seek in the video: {e}"))?;
        self.decoder.flush();
        self.pending = None;
        self.sent_eof = false;
        Ok(())
    }

    /// The frame at `t_ms` (as listed by [`probe`]) as 8-bit RGB.
    pub fn frame_at(
        &mut self,
        t_ms: u64,
        limits: &DecodeLimits,
    ) -> Result<image::RgbImage, String> {
        if self.last_ms.is_some_and(|l| l >= t_ms) {
            *self = Cursor::open(&self.video, self.keyframes)?;
        }
        let mut seeked = false;
        if self.last_ms.is_none() && t_ms > SEEK_AFTER_MS && self.seek(t_ms).is_ok() {
            seeked = true;
        }
        let mut first = true;
        loop {
            let Some((ms, frame)) = self.next_frame()? else {
                return Err(format!(
                    "the video ends before t={}: the frame could not be decoded{} (or the file changed since the run listed its frames)",
                    super::keys::frame_key("", t_ms).trim_start_matches("#t="),
                    self.error
                        .take()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            };
            if ms < t_ms {
                self.last_ms = Some(ms);
                first = false;
                continue;
            }
            if ms > t_ms {
                if seeked && first {
                    // The seek landed after the frame: decode from the start instead.
                    *self = Cursor::open(&self.video, self.keyframes)?;
                    seeked = false;
                    continue;
                }
                self.pending = Some((ms, frame));
                return Err(format!(
                    "the frame at t={}.{:03} could not be decoded{}; the rest of the video goes on",
                    t_ms / 1000,
                    t_ms % 1000,
                    self.error
                        .take()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
            self.last_ms = Some(ms);
            self.error = None;
            return self.rgb_of(&frame, limits);
        }
    }

    /// The frame as 8-bit RGB, through the command line's conversion graph.
    fn rgb_of(
        &mut self,
        frame: &frame::Video,
        limits: &DecodeLimits,
    ) -> Result<image::RgbImage, String> {
        let (w, h, fmt) = (frame.width(), frame.height(), frame.format());
        check_pixels(w, h, limits)?;
        if self
            .converter
            .as_ref()
            .is_none_or(|c| c.shape != (w, h, fmt))
        {
            self.converter = Some(Converter {
                shape: (w, h, fmt),
                graph: rgb_graph(frame, self.info.time_base).map_err(|e| {
                    format!("cannot set up the RGB conversion of a {w}×{h} {fmt:?} frame: {e}")
                })?,
            });
        }
        let graph = &mut self.converter.as_mut().expect("set above").graph;
        let mut out = frame::Video::empty();
        graph
            .get("in")
            .expect("the graph has its source")
            .source()
            .add(frame)
            .map_err(|e| format!("cannot convert the frame to RGB: {e}"))?;
        graph
            .get("out")
            .expect("the graph has its sink")
            .sink()
            .frame(&mut out)
            .map_err(|e| format!("cannot convert the frame to RGB: {e}"))?;
        let (ow, oh) = (out.width() as usize, out.height() as usize);
        let stride = out.stride(0);
        let data = out.data(0);
        let mut rgb = Vec::with_capacity(ow * oh * 3);
        for row in 0..oh {
            rgb.extend_from_slice(&data[row * stride..row * stride + ow * 3]);
        }
        Ok(image::RgbImage::from_raw(ow as u32, oh as u32, rgb).expect("w × h × 3 bytes"))
    }
}

/// buffer → format=pix_fmts=rgb24 → buffersink, with the command line's
/// swscale options for the scale filter libavfilter inserts.
fn rgb_graph(frame: &frame::Video, tb: Rational) -> Result<ff::filter::Graph, Error> {
    let mut graph = ff::filter::Graph::new();
    let sar = frame.aspect_ratio();
    let pix: ff::ffi::AVPixelFormat = frame.format().into();
    let args = format!(
        "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
        frame.width(),
        frame.height(),
        pix as i32,
        tb.numerator(),
        tb.denominator().max(1),
        sar.numerator().max(0),
        sar.denominator().max(1),
    );
    let buffer = ff::filter::find("buffer").ok_or(Error::FilterNotFound)?;
    let sink = ff::filter::find("buffersink").ok_or(Error::FilterNotFound)?;
    graph.add(&buffer, "in", &args)?;
    graph.add(&sink, "out", "")?;
    // SAFETY: the graph is valid; libavfilter frees this string with the graph.
    unsafe {
        (*graph.as_mut_ptr()).scale_sws_opts = ff::ffi::av_strdup(SWS_FLAGS.as_ptr());
    }
    graph
        .output("in", 0)?
        .input("out", 0)?
        .parse("format=pix_fmts=rgb24")?;
    graph.validate()?;
    Ok(graph)
}
