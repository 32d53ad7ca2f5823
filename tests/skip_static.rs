//! `--skip-static D` (docs/contract.md#videos) on clips made here with the
//! ffmpeg command line: a still picture held for seconds, then `testsrc2`
//! motion. Static frames become `skipped` records in the error file, every
//! sampled frame is recorded exactly once, and the records are the same
//! whatever the number of ranks and wherever a run was interrupted
//! (segments of 256 sampled frames: the clips here have more). Synthetic
//! weights and `--max-size 64` keep each kept frame cheap.
#![cfg(feature = "video")]

mod common;

use common::batch::{Results, lines, results, weights};
use common::exe;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// `still` seconds of one picture, then `moving` seconds of `testsrc2`
/// (160×120, 25 fps, H.264): the picture is not a `testsrc2` frame, and
/// `testsrc2` frames a second apart differ by more than 4 gray levels on
/// average at this size.
fn still_then_motion(dir: &Path, name: &str, still: u32, moving: u32) -> String {
    let picture = dir.join(format!("{name}.png"));
    image::RgbImage::from_fn(160, 120, |x, y| {
        image::Rgb([(x * 3 / 2) as u8, (y * 2) as u8, ((x + y) % 256) as u8])
    })
    .save(&picture)
    .unwrap();
    let video = dir.join(name);
    let (still, moving) = (still.to_string(), moving.to_string());
    ffmpeg(&[
        "-loop",
        "1",
        "-framerate",
        "25",
        "-t",
        &still,
        "-i",
        picture.to_str().unwrap(),
        "-f",
        "lavfi",
        "-t",
        &moving,
        "-i",
        "testsrc2=size=160x120:rate=25",
        "-filter_complex",
        "[0:v]format=yuv420p,setsar=1[a];[1:v]format=yuv420p,setsar=1[b];[a][b]concat=n=2:v=1[out]",
        "-map",
        "[out]",
        "-c:v",
        "libx264",
        video.to_str().unwrap(),
    ]);
    video.to_string_lossy().into_owned()
}

fn extract_args(input: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let (w, p) = weights();
    let mut a: Vec<String> = [
        "extract",
        "--backend",
        "cpu",
        "--max-size",
        "64",
        "--input",
        input,
        "--output",
        out.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--pca",
        p.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
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

/// The JSON lines of a file, in file order.
fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn errors_file(out: &Path) -> PathBuf {
    rmac_native::store::jsonl::errors_path(out)
}

/// Every frame key of `video` sampled at one per second for `seconds` s.
fn keys_per_second(video: &str, seconds: u64) -> BTreeSet<String> {
    (0..seconds).map(|s| format!("{video}#t={s}.000")).collect()
}

#[test]
fn static_frames_are_skipped_records_and_moving_frames_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let video = still_then_motion(d, "clip.mp4", 8, 8);
    let out = d.join("v.jsonl");
    let o = run(
        exe().args(extract_args(&video, &out, &["--skip-static", "2"])),
        0,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--skip-static 2") && stderr.contains("9 written, 7 skipped as static"),
        "{stderr}"
    );
    let r = results(&out);
    // Every sampled frame (one a second, 16 s) exactly once across both files.
    let all: BTreeSet<String> = r
        .vectors
        .keys()
        .chain(&r.errors)
        .chain(r.skipped.keys())
        .cloned()
        .collect();
    assert_eq!(all, keys_per_second(&video, 16));
    assert_eq!(r.vectors.len() + r.errors.len() + r.skipped.len(), 16);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // The first frame of the still is kept, its other 7 skipped; every moving frame kept.
    let kept: BTreeSet<String> = r.vectors.keys().cloned().collect();
    let want: BTreeSet<String> = std::iter::once(0)
        .chain(8..16)
        .map(|s| format!("{video}#t={s}.000"))
        .collect();
    assert_eq!(kept, want);
    for (path, why) in &r.skipped {
        assert!(
            why.starts_with("static: mean abs diff ")
                && why.ends_with(" < 2 to the kept frame at t=0.000"),
            "{path}: {why}"
        );
    }
    // Skipped lines carry the frame's fields, as error lines do.
    let line = records(&errors_file(&out))
        .into_iter()
        .find(|l| l["path"] == format!("{video}#t=3.000").as_str())
        .unwrap();
    assert_eq!(
        (
            line["video"].as_str(),
            line["t"].as_f64(),
            line["frame"].as_u64()
        ),
        (Some(video.as_str()), Some(3.0), Some(75))
    );
    // Skipped frames are no failures: the summary counts them apart.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("v.summary.json")).unwrap()).unwrap();
    assert_eq!(
        (
            &summary["succeeded"],
            &summary["skipped"],
            &summary["failed"]
        ),
        (&9.into(), &7.into(), &0.into())
    );
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("v.settings.json")).unwrap()).unwrap();
    assert_eq!(settings["skip_static"], 2.0);

    // A rerun has nothing left to do: skipped frames count as done.
    let o = run(
        exe().args(extract_args(&video, &out, &["--skip-static", "2"])),
        0,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("(16 already done, 0 to go"), "{stderr}");
    assert_eq!(results(&out), r);

    // `convert` carries the skipped records along (here into an NPY's error file).
    let npy = d.join("frames.npy");
    let o = run(exe().arg("convert").arg(&out).arg(&npy), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("7 frames skipped as static (7 written)"));
    let skipped_in_npy: BTreeSet<String> = records(&d.join("frames.errors.jsonl"))
        .iter()
        .filter(|l| l.get("skipped").is_some())
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(skipped_in_npy, r.skipped.keys().cloned().collect());

    // Without the flag (or with 0) every frame is described.
    for (name, extra) in [
        ("plain.jsonl", vec![]),
        ("zero.jsonl", vec!["--skip-static", "0"]),
    ] {
        let o = run(exe().args(extract_args(&video, &d.join(name), &extra)), 0);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("skipped as static"), "{stderr}");
        let plain = results(&d.join(name));
        assert_eq!(plain.vectors.len(), 16);
        for (path, bits) in &r.vectors {
            assert_eq!(
                plain.vectors.get(path),
                Some(bits),
                "{path}: the kept frames' vectors are the same"
            );
        }
    }
    // The range is checked where the flag is read.
    let o = run(
        exe().args(extract_args(
            &video,
            &d.join("bad.jsonl"),
            &["--skip-static", "300"],
        )),
        2,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("from 0 to 255"), "{stderr}");
}

/// 12 s still + 12 s motion at every frame: 600 sampled frames, three
/// segments, kept and skipped frames in each of the first two.
fn long_clip(d: &Path) -> (String, Vec<String>) {
    let video = still_then_motion(d, "long.mp4", 12, 12);
    (
        video,
        vec!["--every-frame".into(), "--skip-static".into(), "0.5".into()],
    )
}

/// The mix a long clip's run must show for the tests below to mean something.
#[track_caller]
fn assert_mixed(r: &Results) {
    assert_eq!(r.vectors.len() + r.skipped.len() + r.errors.len(), 600);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let segment =
        |p: &String| p.rsplit_once("#t=").unwrap().1.parse::<f64>().unwrap() as usize * 25 / 256;
    for s in 0..2 {
        assert!(
            r.vectors.keys().filter(|p| segment(p) == s).count() > 1,
            "segment {s}"
        );
        assert!(
            r.skipped.keys().filter(|p| segment(p) == s).count() > 10,
            "segment {s}"
        );
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_records_and_settings_cannot_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (video, flags) = long_clip(d);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let reference = d.join("reference.jsonl");
    run(exe().args(extract_args(&video, &reference, &flags)), 0);
    let want = results(&reference);
    assert_mixed(&want);

    // An interrupted run as a resume finds it: some records of the first two
    // segments (kept and skipped, with holes), nothing after.
    let part = d.join("part.jsonl");
    let keep = |l: &serde_json::Value| {
        let frame = l["frame"].as_u64().unwrap();
        frame < 400 && frame % 9 != 4 && !(300..340).contains(&frame)
    };
    let keep_lines = |from: &Path, to: &Path| -> usize {
        let text = std::fs::read_to_string(from).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| keep(&serde_json::from_str(l).unwrap()))
            .collect();
        std::fs::write(
            to,
            kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        kept.len()
    };
    let done =
        keep_lines(&reference, &part) + keep_lines(&errors_file(&reference), &errors_file(&part));
    std::fs::copy(
        d.join("reference.settings.json"),
        d.join("part.settings.json"),
    )
    .unwrap();
    let o = run(exe().args(extract_args(&video, &part, &flags)), 0);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("({done} already done, {} to go", 600 - done)),
        "{stderr}"
    );
    assert_eq!(
        results(&part),
        want,
        "the same records as one uninterrupted run"
    );

    // A run killed (SIGKILL) in the middle of the second segment, resumed.
    let killed = d.join("killed.jsonl");
    let mut a = extract_args(&video, &killed, &flags);
    a.extend(["--threads".into(), "1".into()]);
    let mut child = exe()
        .args(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while lines(&killed) + lines(&errors_file(&killed)) < 330 {
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lines(&killed) + lines(&errors_file(&killed)) < 600);
    let o = run(exe().args(&a), 0);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("already done"), "{stderr}");
    assert_eq!(results(&killed), want, "killed and resumed");

    // A resume with another --skip-static, or none, is refused and says why.
    for (extra, said) in [
        (
            vec!["--every-frame", "--skip-static", "1"],
            "--skip-static: 0.5 before, 1 now",
        ),
        (vec!["--every-frame"], "--skip-static: 0.5 before, off now"),
    ] {
        let o = run(exe().args(extract_args(&video, &part, &extra)), 1);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(said) && stderr.contains("--restart"),
            "{stderr}"
        );
    }
    assert_eq!(results(&part), want, "a refused resume writes nothing");
}

/// The long clip over 1, 2 and 3 MPI ranks (chunks of whole segments handed
/// out dynamically): the records of one process, reasons included.
#[cfg(feature = "mpi")]
#[test]
fn ranks_write_the_same_records_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (video, flags) = long_clip(d);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let one = d.join("one.jsonl");
    run(exe().args(extract_args(&video, &one, &flags)), 0);
    let want = results(&one);
    assert_mixed(&want);
    let reasons: BTreeMap<&String, &String> = want.skipped.iter().collect();
    for np in [2, 3] {
        let out = d.join(format!("ranks{np}.jsonl"));
        let o = Command::new("timeout")
            .args(["-k", "5", "180", "mpiexec", "-np", &np.to_string()])
            .arg(env!("CARGO_BIN_EXE_rmac-native"))
            .args(extract_args(&video, &out, &flags))
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
        let got = results(&out);
        assert_eq!(
            got.skipped.iter().collect::<BTreeMap<_, _>>(),
            reasons,
            "{np} ranks"
        );
        assert_eq!(got, want, "{np} ranks");
    }
}
