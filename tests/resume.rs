//! Resume as a user meets it, in one process (no MPI needed): a run killed
//! with SIGKILL mid-way, or one that left half a line, is finished by the same
//! command and ends exactly like an uninterrupted run; other settings are
//! refused unless --restart; setup errors fail fast with exit 1.

mod common;

use common::batch::*;
use common::exe;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn plain(args: &[String]) -> std::process::Command {
    let mut c = exe();
    c.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

#[test]
fn a_killed_run_is_finished_by_the_same_command_exactly() {
    let b = batch(30);
    let reference_out = b.out("reference.jsonl");
    assert_eq!(
        run(&mut plain(&args(&b, &reference_out))).status.code(),
        Some(3)
    );
    let reference = results(&reference_out);
    assert_complete(&b, &reference);

    let out = b.out("v.jsonl");
    let mut a = args(&b, &out);
    a.extend(["--threads".into(), "1".into()]);
    let mut child = plain(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while lines(&out) < 5 {
        assert!(t.elapsed() < Duration::from_secs(60), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = lines(&out) + lines(&rmac_native::store::jsonl::errors_path(&out));
    assert!(partial < b.paths.len());

    let o = run(&mut plain(&a));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("already done"), "{stderr}");
    assert_eq!(results(&out), reference);

    // A complete run resumed does nothing, and says so.
    let o = run(&mut plain(&a));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!("({} already done, 0 to go", b.paths.len())),
        "{stderr}"
    );
    assert_eq!(results(&out), reference);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out("v.summary.json")).unwrap()).unwrap();
    assert_eq!(summary["already_done"], b.paths.len());
    assert_eq!(summary["succeeded"], 0);
}

#[test]
fn half_a_line_is_cut_and_that_image_redone() {
    let b = batch(6);
    let reference_out = b.out("reference.jsonl");
    run(&mut plain(&args(&b, &reference_out)));
    let reference = results(&reference_out);

    let out = b.out("v.jsonl");
    // A killed writer: the first three lines of the reference, then half of the fourth.
    let text = std::fs::read_to_string(&reference_out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let torn = &lines[3][..lines[3].len() / 2];
    std::fs::write(
        &out,
        format!("{}\n{}\n{}\n{torn}", lines[0], lines[1], lines[2]),
    )
    .unwrap();
    // A killed run had written its settings file before its first image.
    std::fs::copy(b.out("reference.settings.json"), b.out("v.settings.json")).unwrap();
    let o = run(&mut plain(&args(&b, &out)));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("torn"), "{stderr}");
    assert!(stderr.contains("3 already done"), "{stderr}");
    assert_eq!(results(&out), reference);
}

#[test]
fn resuming_with_other_settings_is_refused_unless_restart() {
    let b = batch(3);
    let out = b.out("v.jsonl");
    assert_eq!(run(&mut plain(&args(&b, &out))).status.code(), Some(3));
    let mut other = args(&b, &out);
    let i = other.iter().position(|s| s == "--max-size").unwrap();
    other[i + 1] = "48".into();
    let o = run(&mut plain(&other));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--max-size: 64 before, 48 now") && stderr.contains("--restart"),
        "{stderr}"
    );
    // The refused run changed nothing.
    assert_complete(&b, &results(&out));

    other.push("--restart".into());
    let o = run(&mut plain(&other));
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out("v.settings.json")).unwrap()).unwrap();
    assert_eq!(settings["max_size"], 48);
    assert_complete(&b, &results(&out));
}

#[test]
fn unreadable_list_or_output_location_fail_fast_with_exit_1() {
    let b = batch(1);
    let mut a = args(&b, &b.out("v.jsonl"));
    let i = a.iter().position(|s| s == "--input").unwrap();
    a[i + 1] = b.dir.path().join("nope.txt").to_string_lossy().into_owned();
    let o = run(&mut plain(&a));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.txt"));
    assert!(!b.out("v.jsonl").exists());

    let o = run(&mut plain(&args(&b, &b.out("missing/v.jsonl"))));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}
