//! Videos as inputs (docs/contract.md#videos), against the ffmpeg command line:
//! the clips are made here with `ffmpeg` from `testsrc2`, frames extracted with
//! `ffmpeg … -pix_fmt rgb24 f%04d.png` are the pixel reference, and `ffprobe`'s
//! frame list (decoded, not the packet scan `extract` uses) is the time
//! reference. Synthetic weights and `--max-size 64` keep each frame cheap.
#![cfg(feature = "video")]

mod common;

use common::batch::{Results, results, weights};
use common::exe;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// Runs the ffmpeg command line (quiet, overwriting).
#[track_caller]
fn ffmpeg(args: &[&str]) {
    let o = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg (Debian package `ffmpeg`, see ci/setup-deps.sh)");
    assert!(
        o.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A `testsrc2` clip: `size`, `rate`, `frames` frames, then the encoder options.
fn clip(dir: &Path, name: &str, size: &str, rate: u32, frames: u32, encode: &[&str]) -> String {
    let path = dir.join(name);
    let src = format!("testsrc2=size={size}:rate={rate}");
    let n = frames.to_string();
    let mut args = vec!["-f", "lavfi", "-i", &src, "-frames:v", &n];
    args.extend_from_slice(encode);
    args.push(path.to_str().unwrap());
    ffmpeg(&args);
    path.to_string_lossy().into_owned()
}

/// One decoded frame as ffprobe lists it: seconds from the stream start, key frame or not.
#[derive(Debug, Clone, Copy)]
struct ProbedFrame {
    t: f64,
    key: bool,
}

/// ffprobe's decoded frames of the first video stream, in presentation order.
fn probe(video: &str) -> Vec<ProbedFrame> {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-of", "json"])
        .args([
            "-show_entries",
            "stream=start_time:frame=best_effort_timestamp_time,key_frame",
        ])
        .arg(video)
        .output()
        .expect("ffprobe");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let start: f64 = v["streams"][0]["start_time"]
        .as_str()
        .map_or(0.0, |s| s.parse().unwrap());
    let mut frames: Vec<ProbedFrame> = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| ProbedFrame {
            t: f["best_effort_timestamp_time"]
                .as_str()
                .unwrap_or_else(|| panic!("{video}: a frame without a time: {f}"))
                .parse::<f64>()
                .unwrap()
                - start,
            key: f["key_frame"].as_i64() == Some(1),
        })
        .collect();
    frames.sort_by(|a, b| a.t.total_cmp(&b.t));
    frames
}

fn extract(input: &str, out: &Path, extra: &[&str]) -> Command {
    let (w, p) = weights();
    let mut c = exe();
    c.args([
        "extract",
        "--backend",
        "cpu",
        "--max-size",
        "64",
        "--input",
        input,
    ])
    .arg("--output")
    .arg(out)
    .arg("--weights")
    .arg(w)
    .arg("--pca")
    .arg(p)
    .args(extra);
    c
}

#[track_caller]
fn run(c: &mut Command, code: i32) -> Output {
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The JSONL records of `out`, in file order.
fn records(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn bits(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| (x.as_f64().unwrap() as f32).to_bits())
        .collect()
}

/// The record's `t`, as ffprobe's time of the same frame rounded to milliseconds.
#[track_caller]
fn assert_time(record: &serde_json::Value, probed: &ProbedFrame) {
    let t = record["t"].as_f64().unwrap();
    assert!(
        (t - probed.t).abs() <= 0.0005 + 1e-6,
        "{}: t {t} vs ffprobe {}",
        record["path"],
        probed.t
    );
    assert_eq!(
        record["path"].as_str().unwrap(),
        format!("{}#t={t:.3}", record["video"].as_str().unwrap())
    );
}

/// A clip of the pixel test: (file, size, rate, frames, encoder options, extra
/// options of the reference command).
type Case = (
    &'static str,
    &'static str,
    u32,
    u32,
    Vec<&'static str>,
    Vec<&'static str>,
);

#[test]
fn every_frame_gives_the_vectors_of_the_ffmpeg_cli_frames_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<Case> = vec![
        // B-frames (presentation order ≠ decode order), MP4 edit list.
        (
            "h264.mp4",
            "96x64",
            25,
            14,
            vec!["-c:v", "libx264", "-pix_fmt", "yuv420p"],
            vec![],
        ),
        // Odd frame size, VP9 in WebM.
        (
            "odd.webm",
            "97x65",
            10,
            8,
            vec![
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
            ],
            vec![],
        ),
        // Full-range JPEG YUV (yuvj) in AVI.
        (
            "mjpeg.AVI",
            "66x50",
            10,
            8,
            vec!["-c:v", "mjpeg", "-q:v", "3"],
            vec![],
        ),
        // 10-bit, tagged BT.709 (another colour matrix than the BT.601 default).
        (
            "ten_bit_709.mkv",
            "80x48",
            10,
            8,
            vec![
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p10le",
                "-colorspace",
                "bt709",
                "-color_primaries",
                "bt709",
                "-color_trc",
                "bt709",
            ],
            vec![],
        ),
        // Interlaced MPEG-2 (not deinterlaced, as by the command line).
        (
            "interlaced.mkv",
            "96x64",
            25,
            8,
            vec!["-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1"],
            vec![],
        ),
        // Rotation metadata is ignored (the command line's autorotate is turned off to compare).
        (
            "rotated.mov",
            "64x48",
            10,
            6,
            vec!["-c:v", "libx264", "-metadata:s:v:0", "rotate=90"],
            vec!["-noautorotate"],
        ),
    ];
    for (name, size, rate, frames, encode, reference) in &cases {
        let video = clip(d, name, size, *rate, *frames, encode);
        let pngs = d.join(format!("{name}.frames"));
        std::fs::create_dir(&pngs).unwrap();
        let mut args: Vec<&str> = reference.clone();
        let pattern = pngs.join("f%04d.png");
        args.extend([
            "-i",
            &video,
            "-fps_mode",
            "passthrough",
            "-pix_fmt",
            "rgb24",
        ]);
        args.push(pattern.to_str().unwrap());
        ffmpeg(&args);

        let from_video = d.join(format!("{name}.jsonl"));
        run(&mut extract(&video, &from_video, &["--every-frame"]), 0);
        let from_pngs = d.join(format!("{name}.png.jsonl"));
        run(&mut extract(pngs.to_str().unwrap(), &from_pngs, &[]), 0);

        let probed = probe(&video);
        let mut got = records(&from_video);
        got.sort_by_key(|r| r["frame"].as_u64().unwrap());
        let mut want = records(&from_pngs);
        want.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        assert_eq!(got.len(), *frames as usize, "{name}: one record per frame");
        assert_eq!(
            want.len(),
            got.len(),
            "{name}: the command line wrote as many frames"
        );
        assert_eq!(
            probed.len(),
            got.len(),
            "{name}: ffprobe lists as many frames"
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g["frame"].as_u64(), Some(i as u64), "{name}");
            assert_eq!(g["video"].as_str(), Some(video.as_str()));
            assert_time(g, &probed[i]);
            assert!(
                bits(&g["vector"]) == bits(&w["vector"]),
                "{name}: frame {i} ({}) differs from the command line's {}",
                g["path"],
                w["path"]
            );
        }
    }
}

/// `--fps F` read literally: for each k, the first frame at or after k/F s.
fn naive_fps(frames: &[ProbedFrame], f: f64) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::new();
    let last = frames.last().unwrap().t;
    let mut k = 0.0f64;
    while k / f <= last + 1e-9 {
        if let Some(i) = frames.iter().position(|fr| fr.t >= k / f - 1e-9)
            && picked.last() != Some(&i)
        {
            picked.push(i);
        }
        k += 1.0;
    }
    picked
}

#[test]
fn fps_and_keyframes_pick_the_frames_ffprobe_lists_on_a_variable_frame_rate_clip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Variable frame rate: 3 frames out of every 10 of a 30 fps source keep their times
    // (bursts and gaps), GOPs of 5 frames, millisecond time base (Matroska).
    let video = clip(
        d,
        "vfr.mkv",
        "64x48",
        30,
        40,
        &[
            "-vf",
            "select='lt(mod(n\\,10)\\,3)'",
            "-fps_mode",
            "passthrough",
            "-c:v",
            "libx264",
            "-g",
            "5",
            "-bf",
            "0",
        ],
    );
    let probed = probe(&video);
    assert_eq!(probed.len(), 40);
    let frames_of = |out: &Path| -> Vec<u64> {
        let mut f: Vec<u64> = records(out)
            .iter()
            .map(|r| {
                let i = r["frame"].as_u64().unwrap();
                assert_time(r, &probed[i as usize]);
                i
            })
            .collect();
        f.sort();
        f
    };

    for (f, flag) in [(1.0, None), (2.0, Some("2")), (0.4, Some("0.4"))] {
        let out = d.join(format!("fps{f}.jsonl"));
        let extra: Vec<&str> = flag.map_or(vec![], |v| vec!["--fps", v]);
        run(&mut extract(&video, &out, &extra), 0);
        let want: Vec<u64> = naive_fps(&probed, f).iter().map(|&i| i as u64).collect();
        assert_eq!(frames_of(&out), want, "--fps {f}");
    }

    let out = d.join("keys.jsonl");
    run(&mut extract(&video, &out, &["--keyframes"]), 0);
    let want: Vec<u64> = (0..probed.len() as u64)
        .filter(|&i| probed[i as usize].key)
        .collect();
    assert!(want.len() >= 6, "{want:?}");
    assert_eq!(frames_of(&out), want, "--keyframes");
    // A key frame alone gives the same vector as the same frame of a full decode.
    let all = d.join("all.jsonl");
    run(&mut extract(&video, &all, &["--every-frame"]), 0);
    let full: BTreeMap<String, Vec<u32>> = records(&all)
        .iter()
        .map(|r| (r["path"].as_str().unwrap().to_owned(), bits(&r["vector"])))
        .collect();
    for r in records(&out) {
        assert_eq!(
            Some(&bits(&r["vector"])),
            full.get(r["path"].as_str().unwrap())
        );
    }

    // The sampling is part of the settings: a resume with another one is refused.
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("keys.settings.json")).unwrap()).unwrap();
    assert_eq!(settings["video_sampling"], "keyframes");
    let o = run(&mut extract(&video, &out, &["--fps", "2"]), 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("video sampling: keyframes before, fps=2 now"),
        "{err}"
    );
}

#[test]
fn a_killed_run_resumes_mid_video_and_every_output_keys_frames_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("media")).unwrap();
    clip(d, "media/Clip.MP4", "96x64", 25, 12, &["-c:v", "libx264"]);
    let image = d.join("media/still.png");
    image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 77])
    })
    .save(&image)
    .unwrap();
    let media = d.join("media");
    let root = ["--root", d.to_str().unwrap(), "--every-frame"];

    let full = d.join("full.jsonl");
    run(&mut extract(media.to_str().unwrap(), &full, &root), 0);
    let complete = results(&full);
    assert_eq!(complete.vectors.len(), 13);
    assert!(complete.vectors.contains_key("media/Clip.MP4#t=0.000"));
    assert!(complete.vectors.contains_key("media/still.png"));
    assert_eq!(
        records(&full)[0]["video"],
        "media/Clip.MP4",
        "videos recorded as paths are"
    );

    // A run killed after 5 frames: its first 5 records, nothing else.
    let part = d.join("part.jsonl");
    run(&mut extract(media.to_str().unwrap(), &part, &root), 0);
    let text = std::fs::read_to_string(&part).unwrap();
    let first5: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
    assert!(first5.contains("#t="), "the cut falls inside the video");
    std::fs::write(&part, &first5).unwrap();
    let o = run(&mut extract(media.to_str().unwrap(), &part, &root), 0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("5 already done, 8 to go"), "{err}");
    assert!(std::fs::read_to_string(&part).unwrap().starts_with(&first5));
    assert_eq!(
        results(&part),
        complete,
        "every frame exactly once, same vectors"
    );

    // The contact sheet shows frames (decoded from their video) and links to the video at their time.
    let sheet = d.join("sheet.html");
    let o = run(
        exe()
            .current_dir("/")
            .args([
                "search",
                "-k",
                "3",
                "--path",
                "media/Clip.MP4#t=0.080",
                "--html",
            ])
            .arg(&sheet)
            .arg(&full),
        0,
    );
    let html = std::fs::read_to_string(&sheet).unwrap();
    assert_eq!(
        html.matches("data:image/jpeg;base64,").count(),
        4,
        "query + 3 results: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!html.contains("missing:"), "every frame shown");
    let link = format!(
        "href=\"file://{}#t=0.080\"",
        d.join("media/Clip.MP4").display()
    );
    assert!(
        html.contains(&link),
        "a tile links to its video at its time"
    );

    // NPY: the same keys beside the matrix.
    let npy = d.join("v.npy");
    run(&mut extract(media.to_str().unwrap(), &npy, &root), 0);
    let paths = std::fs::read_to_string(d.join("v.paths.txt")).unwrap();
    let mut npy_keys: Vec<&str> = paths.lines().collect();
    npy_keys.sort();
    let jsonl_keys: Vec<&str> = complete.vectors.keys().map(String::as_str).collect();
    assert_eq!(npy_keys, jsonl_keys);
}

#[test]
fn unreadable_videos_and_damaged_frames_are_error_records_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = clip(d, "good.mp4", "64x48", 10, 5, &["-c:v", "libx264"]);
    // Too large for --max-pixels 4000 (96×64 = 6144), refused from the stream header.
    let big = clip(d, "big.MOV", "96x64", 10, 3, &["-c:v", "libx264"]);
    let empty = d.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    // An MP4 cut in half: the moov atom (written at the end) is gone.
    let cut = d.join("cut.mp4");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = d.join("garbage.mkv");
    std::fs::write(&garbage, b"this is not a video at all\n".repeat(50)).unwrap();
    let audio = d.join("audio.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.5",
        "-c:a",
        "aac",
        audio.to_str().unwrap(),
    ]);
    // MJPEG in AVI with the 4th frame's JPEG data zeroed: that frame fails, the others decode.
    let mj = clip(
        d,
        "damaged.avi",
        "64x48",
        10,
        8,
        &["-c:v", "mjpeg", "-q:v", "3"],
    );
    let mut data = std::fs::read(&mj).unwrap();
    let soi: Vec<usize> = (0..data.len() - 1)
        .filter(|&i| data[i] == 0xFF && data[i + 1] == 0xD8)
        .collect();
    assert_eq!(soi.len(), 8);
    data[soi[3]..soi[4] - 8].fill(0);
    std::fs::write(&mj, &data).unwrap();
    let image = d.join("still.png");
    image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 9]))
        .save(&image)
        .unwrap();

    let list = d.join("list.txt");
    let listed = [
        &good,
        &big,
        &empty.to_string_lossy().into_owned(),
        &cut.to_string_lossy().into_owned(),
        &garbage.to_string_lossy().into_owned(),
        &audio.to_string_lossy().into_owned(),
        &mj,
        &image.to_string_lossy().into_owned(),
    ]
    .map(|s| s.as_str())
    .join("\n");
    std::fs::write(&list, listed).unwrap();
    let out = d.join("out.jsonl");
    let o = run(
        &mut extract(
            list.to_str().unwrap(),
            &out,
            &["--every-frame", "--max-pixels", "4000"],
        ),
        3,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);

    let Results {
        vectors, errors, ..
    } = results(&out);
    let damaged = format!("{mj}#t=0.300");
    let want_errors: std::collections::BTreeSet<String> = [
        big.clone(),
        empty.to_string_lossy().into_owned(),
        cut.to_string_lossy().into_owned(),
        garbage.to_string_lossy().into_owned(),
        audio.to_string_lossy().into_owned(),
        damaged.clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(errors, want_errors, "{stderr}");
    assert_eq!(
        vectors.len(),
        5 + 7 + 1,
        "the good clip, 7 of 8 damaged frames, the image"
    );
    assert!(
        vectors.contains_key(&format!("{mj}#t=0.700")),
        "frames after the damage go on"
    );
    let error_records: BTreeMap<String, serde_json::Value> =
        records(&rmac_native::store::jsonl::errors_path(&out))
            .into_iter()
            .map(|r| (r["path"].as_str().unwrap().to_owned(), r))
            .collect();
    let why = |p: &str| error_records[p]["error"].as_str().unwrap().to_owned();
    assert!(
        why(&big).contains("--max-pixels 4000") && why(&big).contains("96×64"),
        "{}",
        why(&big)
    );
    assert!(why(&empty.to_string_lossy()).contains("empty"));
    assert!(why(&cut.to_string_lossy()).contains("moov"));
    assert!(why(&audio.to_string_lossy()).contains("no video stream"));
    assert!(why(&damaged).contains("t=0.300") && why(&damaged).contains("could not be decoded"));
    assert_eq!(error_records[&damaged]["video"].as_str(), Some(mj.as_str()));
    assert_eq!(error_records[&damaged]["frame"].as_u64(), Some(3));
}

/// Frames spread over MPI ranks (each rank decoding its chunks, seeking into a
/// video it meets mid-way) give the records of one process.
#[cfg(feature = "mpi")]
#[test]
fn ranks_write_the_same_frame_records_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("v")).unwrap();
    // 6 s at 25 fps, GOPs of 1 s, B-frames: at --fps 4 a rank meeting it mid-way seeks.
    clip(
        d,
        "v/long.mp4",
        "64x48",
        25,
        150,
        &["-c:v", "libx264", "-g", "25"],
    );
    clip(
        d,
        "v/short.webm",
        "66x50",
        10,
        12,
        &[
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
        ],
    );
    let folder = d.join("v");
    let one = d.join("one.jsonl");
    run(
        &mut extract(folder.to_str().unwrap(), &one, &["--fps", "4"]),
        0,
    );
    let want = results(&one);
    assert_eq!(want.vectors.len(), 24 + 5);

    let (w, p) = weights();
    let ranks = d.join("ranks.jsonl");
    let o = Command::new("timeout")
        .args([
            "-k",
            "5",
            "120",
            "mpiexec",
            "-np",
            "3",
            env!("CARGO_BIN_EXE_rmac-native"),
        ])
        .args([
            "extract",
            "--backend",
            "cpu",
            "--max-size",
            "64",
            "--fps",
            "4",
            "--input",
        ])
        .arg(&folder)
        .arg("--output")
        .arg(&ranks)
        .arg("--weights")
        .arg(w)
        .arg("--pca")
        .arg(p)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(results(&ranks), want);
}

/// `pca fit` over a folder with a video learns from its frames at one per
/// second: the same file as from the command line's PNGs of those frames.
#[test]
fn pca_fit_learns_from_the_frames_of_videos() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["v", "png", "all"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    let video = clip(d, "v/clip.mp4", "96x64", 25, 75, &["-c:v", "libx264"]);
    let all = d.join("all/f%04d.png");
    ffmpeg(&[
        "-i",
        &video,
        "-fps_mode",
        "passthrough",
        "-pix_fmt",
        "rgb24",
        all.to_str().unwrap(),
    ]);
    // t = 0, 1, 2 s: frames 0, 25, 50 (files numbered from 1).
    for (k, n) in [1, 26, 51].iter().enumerate() {
        std::fs::copy(
            d.join(format!("all/f{n:04}.png")),
            d.join(format!("png/f{k}.png")),
        )
        .unwrap();
    }
    let (w, _) = weights();
    let fit = |input: &str, out: &str| {
        run(
            exe()
                .args([
                    "pca",
                    "fit",
                    "--backend",
                    "cpu",
                    "--max-size",
                    "64",
                    "--weights",
                ])
                .arg(w)
                .arg("--input")
                .arg(d.join(input))
                .arg("--output")
                .arg(d.join(out)),
            0,
        );
        std::fs::read(d.join(out)).unwrap()
    };
    assert_eq!(
        fit("v", "from_video.safetensors"),
        fit("png", "from_pngs.safetensors")
    );
}
