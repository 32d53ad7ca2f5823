//! Video decoding against the ffmpeg command line, and the end-to-end frame rate.
//! Not a test: a benchmark (issue 13's numbers in the README).
//!
//! Makes a 1080p H.264 clip with the ffmpeg CLI (`testsrc2`, 25 fps, one key
//! frame every 10 s, `RMAC_VIDEO_SECONDS` long, default 40), or takes
//! `RMAC_VIDEO_CLIP`, then, on the same cores:
//!
//! 1. `ffmpeg -benchmark -i clip -f null -` (decode only) and with `-pix_fmt
//!    rgb24` (decode and the conversion to the RGB the network reads), against
//!    our decoder taking every frame to 8-bit RGB (`--every-frame`'s decode
//!    stage: the same libavcodec, then the CLI's own conversion graph);
//! 2. the decode stage at `--keyframes` and `--fps 1` against `--every-frame`;
//! 3. end to end on the CPU backend (synthetic weights; the numbers do not
//!    depend on the weights' values) at `--fps 1`, and for the first
//!    `RMAC_VIDEO_E2E_FRAMES` (default 12) frames at `--every-frame`, with each
//!    frame's decode and compute seconds from the pipeline (decode runs in its
//!    own thread ahead of the network: when compute ≫ decode, the network is
//!    the bottleneck).
//!
//!     cargo bench --bench video
use rmac_native::backend::CpuBackend;
use rmac_native::extractor::{ExtractConfig, Extractor};
use rmac_native::image::decode::DecodeLimits;
use rmac_native::run::pipeline::{Job, run_extractor};
use rmac_native::video::{Cursors, Sampling, expand, parse_frame_key};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc::{channel, sync_channel};
use std::time::Instant;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The clip: 1080p H.264 (High, yuv420p), 25 fps, a key frame every 250 frames.
fn make_clip(dir: &Path, seconds: usize) -> String {
    let clip = dir.join("clip1080.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size=1920x1080:rate=25:duration={seconds}"
        ))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "250",
            "-keyint_min",
            "250",
        ])
        .args(["-sc_threshold", "0", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .expect("the ffmpeg command line (Debian package ffmpeg) is needed to make the clip");
    assert!(status.success(), "ffmpeg could not make the clip");
    clip.to_string_lossy().into_owned()
}

/// `ffmpeg -benchmark … -f null -`: the wall-clock seconds it reports (rtime).
fn ffmpeg_seconds(clip: &str, rgb: bool) -> f64 {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostats", "-benchmark", "-i", clip]);
    if rgb {
        cmd.args(["-pix_fmt", "rgb24"]);
    }
    let out = cmd.args(["-f", "null", "-"]).output().expect("ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    let rtime = err
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rtime="))
        .and_then(|v| v.trim_end_matches('s').parse::<f64>().ok());
    rtime.unwrap_or_else(|| panic!("no rtime in ffmpeg -benchmark's output:\n{err}"))
}

/// The sampled frame keys of `clip`.
fn keys(clip: &str, sampling: Sampling) -> Vec<String> {
    let e = expand(vec![clip.to_owned()], sampling, &DecodeLimits::default());
    assert!(e.rejected.is_empty(), "{:?}", e.rejected);
    e.paths
}

/// Our decode stage alone: every key to 8-bit RGB, in order, one cursor.
fn decode_seconds(keys: &[String], keyframes: bool) -> f64 {
    let limits = DecodeLimits::default();
    let mut cursors = Cursors::default();
    let start = Instant::now();
    for k in keys {
        let key = parse_frame_key(k).expect("a frame key");
        cursors
            .frame(key.video, key, keyframes, &limits)
            .unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    start.elapsed().as_secs_f64()
}

/// End to end through the extraction pipeline: (seconds, Σ decode s, Σ compute s).
fn end_to_end(keys: &[String], sampling: Sampling) -> (f64, f64, f64) {
    let weights = Arc::new(rmac_native::vgg16::synthetic::vgg16(1));
    let backend = CpuBackend::new(weights, 0).expect("CPU backend");
    let config = ExtractConfig {
        sampling,
        ..ExtractConfig::default()
    };
    let mut extractor = Extractor::new(Box::new(backend), None, config);
    let (job_tx, job_rx) = sync_channel(4);
    let (done_tx, done_rx) = channel();
    let start = Instant::now();
    let jobs: Vec<Job> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Job::new(i as u64, k.clone()))
        .collect();
    let (mut decode, mut compute) = (0.0, 0.0);
    std::thread::scope(|s| {
        s.spawn(move || {
            for j in jobs {
                job_tx.send(j).unwrap();
            }
        });
        s.spawn(|| run_extractor(&mut extractor, job_rx, done_tx));
        for d in done_rx {
            assert!(d.result.is_ok(), "{:?}", d.result.err());
            decode += d.decode_s;
            compute += d.compute_s;
        }
    });
    (start.elapsed().as_secs_f64(), decode, compute)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let clip = match std::env::var("RMAC_VIDEO_CLIP") {
        Ok(c) => c,
        Err(_) => make_clip(dir.path(), env_or("RMAC_VIDEO_SECONDS", 40)),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("clip {clip}, {threads} cores");

    let every = keys(&clip, Sampling::EveryFrame);
    let key_frames = keys(&clip, Sampling::Keyframes);
    let fps1 = keys(&clip, Sampling::default());
    let n = every.len() as f64;

    let ff_null = ffmpeg_seconds(&clip, false);
    let ff_rgb = ffmpeg_seconds(&clip, true);
    let ours_every = decode_seconds(&every, false);
    let ours_keys = decode_seconds(&key_frames, true);
    let ours_fps1 = decode_seconds(&fps1, false);
    println!(
        "decode, {} frames: ffmpeg -f null {:.2} s ({:.0} frames/s); ffmpeg -pix_fmt rgb24 -f null {:.2} s ({:.0} frames/s); \
         ours, every frame to RGB {:.2} s ({:.0} frames/s, {:.2}× ffmpeg rgb24)",
        every.len(),
        ff_null,
        n / ff_null,
        ff_rgb,
        n / ff_rgb,
        ours_every,
        n / ours_every,
        ff_rgb / ours_every
    );
    println!(
        "decode stage: --keyframes {} frames in {:.2} s ({:.1}× faster than --every-frame for the whole clip); \
         --fps 1 {} frames in {:.2} s ({:.1} sampled frames/s)",
        key_frames.len(),
        ours_keys,
        ours_every / ours_keys,
        fps1.len(),
        ours_fps1,
        fps1.len() as f64 / ours_fps1
    );

    let (wall, dec, comp) = end_to_end(&fps1, Sampling::default());
    println!(
        "end to end, CPU, --fps 1, --max-size 1024: {} frames in {:.1} s ({:.2} frames/s); per frame decode {:.3} s, network + head {:.3} s",
        fps1.len(),
        wall,
        fps1.len() as f64 / wall,
        dec / fps1.len() as f64,
        comp / fps1.len() as f64
    );
    let first: Vec<String> = every
        .iter()
        .take(env_or("RMAC_VIDEO_E2E_FRAMES", 12))
        .cloned()
        .collect();
    let (wall, dec, comp) = end_to_end(&first, Sampling::EveryFrame);
    println!(
        "end to end, CPU, --every-frame, --max-size 1024: first {} frames in {:.1} s ({:.2} frames/s); per frame decode {:.3} s, network + head {:.3} s",
        first.len(),
        wall,
        first.len() as f64 / wall,
        dec / first.len() as f64,
        comp / first.len() as f64
    );
}
