//! The binary under a real `mpiexec` (Open MPI in CI; MPICH works the same):
//! results identical to a plain run whatever the number of ranks, every path
//! exactly once, and resume after a SIGKILL of a rank or of mpiexec itself.
//! Each mpiexec is wrapped in `timeout`, so a hung job fails the test instead
//! of the CI run.
#![cfg(feature = "mpi")]

mod common;

use common::batch::*;
use common::exe;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `timeout 60 mpiexec -np N rmac-native ARGS`, with the settings Open MPI
/// needs as root and on 2 cores (MPICH ignores them).
fn mpiexec(np: usize, args: &[String]) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "-k",
        "5",
        "60",
        "mpiexec",
        "-np",
        &np.to_string(),
        env!("CARGO_BIN_EXE_rmac-native"),
    ])
    .args(args)
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
    .env("OPENBLAS_NUM_THREADS", "1");
    c
}

fn plain(args: &[String]) -> Command {
    let mut c = exe();
    c.args(args);
    c
}

fn with(mut v: Vec<String>, extra: &[&str]) -> Vec<String> {
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn one_two_and_three_ranks_give_bit_identical_results_to_a_plain_run() {
    let b = batch(22);
    let reference_out = b.out("plain.jsonl");
    let o = run(&mut plain(&args(&b, &reference_out)));
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let reference = results(&reference_out);
    assert_complete(&b, &reference);

    for np in [1, 2, 3] {
        let out = b.out(&format!("np{np}.jsonl"));
        let t = Instant::now();
        let o = run(&mut mpiexec(np, &args(&b, &out)));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "np {np}: {stderr}");
        let got = results(&out);
        assert_complete(&b, &got);
        assert_eq!(got, reference, "np {np}: results differ from the plain run");
        // One progress/summary voice: the start line once, not once per rank.
        assert_eq!(
            stderr.matches("rmac-native: ").count(),
            2,
            "np {np}: {stderr}"
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.out(&format!("np{np}.summary.json"))).unwrap())
                .unwrap();
        assert_eq!(summary["ranks_n"], np);
        let ranks = summary["ranks"].as_array().unwrap();
        assert_eq!(ranks.len(), np);
        let images: u64 = ranks.iter().map(|r| r["images"].as_u64().unwrap()).sum();
        let failures: u64 = ranks.iter().map(|r| r["failures"].as_u64().unwrap()).sum();
        assert_eq!(images as usize, b.paths.len());
        assert_eq!(failures as usize, b.bad.len());
        eprintln!(
            "np {np}: {:.1} s, per rank {:?}",
            t.elapsed().as_secs_f64(),
            ranks
                .iter()
                .map(|r| r["images"].clone())
                .collect::<Vec<_>>()
        );
    }
}

/// The rank processes of a running `mpiexec` (its children carrying OMPI_COMM_WORLD_RANK), by rank.
fn ranks_of(mpiexec_pid: u32) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = stat.rsplit(')').next().unwrap_or("");
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid != mpiexec_pid {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|&c| c == 0) {
            if let Some(r) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                found.push((std::str::from_utf8(r).unwrap().parse().unwrap(), pid));
            }
        }
    }
    found.sort();
    found
}

/// The pid of `mpiexec` under `timeout`.
fn mpiexec_pid(timeout: &Child) -> u32 {
    let t = Instant::now();
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                let ppid: u32 = stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap();
                if ppid == timeout.id() {
                    return pid;
                }
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "mpiexec did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
}

/// Starts a 2-rank run, waits until `min_lines` results are on disk, SIGKILLs
/// `victim` (a rank, or mpiexec when None), and checks that no rank survives.
fn kill_mid_run(out: &Path, args: Vec<String>, victim: Option<u32>, min_lines: usize) -> String {
    let log = out.with_extension("killed.log");
    let mut child = mpiexec(2, &with(args, &["--threads", "1"]))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let launcher = mpiexec_pid(&child);
    let t = Instant::now();
    while lines(out) < min_lines {
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "no progress before the kill"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let ranks = ranks_of(launcher);
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    let target = match victim {
        Some(rank) => ranks.iter().find(|(r, _)| *r == rank).unwrap().1,
        None => launcher,
    };
    Command::new("kill")
        .args(["-9", &target.to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let t = Instant::now();
    while ranks.iter().any(|(_, pid)| alive(*pid)) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "ranks outlived the kill: {ranks:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    format!(
        "killed at {} lines; its stderr:\n{}",
        lines(out),
        std::fs::read_to_string(&log).unwrap_or_default()
    )
}

/// `args` with larger images than elsewhere (--max-size 96), so that a kill lands mid-run.
fn big_images(b: &Batch, out: &Path) -> Vec<String> {
    let mut a = args(b, out);
    let i = a.iter().position(|s| s == "--max-size").unwrap();
    a[i + 1] = "96".into();
    a
}

/// The batch's results from one plain process (what every MPI run must equal).
fn plain_reference(b: &Batch) -> Results {
    let out = b.out("plain.jsonl");
    assert_eq!(run(&mut plain(&big_images(b, &out))).status.code(), Some(3));
    results(&out)
}

#[test]
fn a_run_killed_at_a_rank_or_at_mpiexec_resumes_exactly() {
    let b = batch(40);
    let big = |out: &Path| big_images(&b, out);
    let reference = plain_reference(&b);

    for (name, victim) in [("rank0", Some(0)), ("rank1", Some(1)), ("mpiexec", None)] {
        let out = b.out(&format!("{name}.jsonl"));
        let killed = kill_mid_run(&out, big(&out), victim, 4);
        let o = run(&mut mpiexec(2, &with(big(&out), &["--threads", "1"])));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{name}: {stderr}\n{killed}");
        assert!(
            stderr.contains("already done") && !stderr.contains(" 0 to go"),
            "{name}: {stderr}\n{killed}"
        );
        let got = results(&out);
        assert_complete(&b, &got);
        assert_eq!(
            got, reference,
            "{name}: resumed results differ from an uninterrupted run"
        );
    }
}

/// Several SIGKILLs in a row — a rank, mpiexec, the other rank — each at a
/// later point of the same output, then one resume: bit-identical to a plain run.
#[test]
fn a_kill_loop_over_two_ranks_ends_bit_identical() {
    let b = batch(48);
    let big = |out: &Path| big_images(&b, out);
    let reference = plain_reference(&b);
    let out = b.out("looped.jsonl");
    let mut log = String::new();
    for victim in [Some(1), None, Some(0)] {
        let at = lines(&out) + 4;
        log += &kill_mid_run(&out, big(&out), victim, at);
        log.push('\n');
    }
    let o = run(&mut mpiexec(2, &with(big(&out), &["--threads", "1"])));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}\n{log}");
    let got = results(&out);
    assert_complete(&b, &got);
    assert_eq!(got, reference, "after three kills\n{log}");
}

#[test]
fn a_torn_last_line_is_redone_under_mpi() {
    let b = batch(10);
    let out = b.out("v.jsonl");
    // A run of the first half, then a half-written line for an image not yet done.
    let first: Vec<String> = b.paths[..6].to_vec();
    let list = b.dir.path().join("first.txt");
    std::fs::write(&list, first.join("\n")).unwrap();
    let mut a = args(&b, &out);
    let i = a.iter().position(|s| s == "--input").unwrap();
    a[i + 1] = list.to_string_lossy().into_owned();
    run(&mut plain(&a));
    let torn_path = b
        .paths
        .iter()
        .find(|p| !first.contains(p) && !b.bad.contains(p))
        .unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(
        &mut f,
        format!("{{\"path\":{torn_path:?},\"vector\":[0.12,").as_bytes(),
    )
    .unwrap();
    drop(f);

    let o = run(&mut mpiexec(2, &args(&b, &out)));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("torn"), "{stderr}");
    let got = results(&out);
    assert_complete(&b, &got);
    let reference_out = b.out("plain.jsonl");
    run(&mut plain(&args(&b, &reference_out)));
    assert_eq!(got, results(&reference_out));
}

#[test]
fn setup_errors_stop_every_rank_before_work_with_one_clear_message() {
    let b = batch(2);
    // An unreadable list.
    let mut a = args(&b, &b.out("v.jsonl"));
    let i = a.iter().position(|s| s == "--input").unwrap();
    a[i + 1] = "/nonexistent/list.txt".into();
    let o = run(&mut mpiexec(3, &a));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("/nonexistent/list.txt").count(),
        1,
        "{stderr}"
    );
    assert!(!b.out("v.jsonl").exists());
    // An output folder that does not exist.
    let o = run(&mut mpiexec(2, &args(&b, &b.out("no/such/dir/v.jsonl"))));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("no/such/dir") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// `knn` under mpiexec: 2 and 3 ranks write the same graph as one process,
/// bit for bit; a 2-rank run killed at mpiexec after some blocks resumes with 3
/// ranks from the blocks both ranks had saved, and ends with the same files.
#[test]
fn knn_over_ranks_equals_one_process_and_resumes_with_other_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (n, dim) = (12_000, 512);
    let data = common::unit_rows(&mut common::Rng(77), n, dim);
    let paths: Vec<String> = (0..n).map(|i| format!("f/{i}.png")).collect();
    let npy = dir.path().join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, dim).unwrap();
    let knn_args = |out: &Path| -> Vec<String> {
        [
            "knn",
            npy.to_str().unwrap(),
            "-k",
            "5",
            "--memory",
            "2MiB",
            "--threads",
            "1",
            "--checkpoint-every",
            "0",
            "--output",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let files = |stem: &str| -> Vec<Vec<u8>> {
        [".idx.npy", ".score.npy", ".paths.txt"]
            .iter()
            .map(|s| std::fs::read(dir.path().join(format!("{stem}{s}"))).unwrap())
            .collect()
    };
    let o = run(&mut plain(&knn_args(&dir.path().join("one"))));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = files("one");
    for np in [2, 3] {
        let stem = format!("np{np}");
        let o = run(&mut mpiexec(np, &knn_args(&dir.path().join(&stem))));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "np {np}: {stderr}");
        assert!(
            stderr.contains(&format!("{np} × 1 threads")),
            "np {np}: {stderr}"
        );
        assert!(
            files(&stem) == reference,
            "np {np}: the graph differs from one process's"
        );
    }

    let out = dir.path().join("killed");
    let state = |rank: usize| dir.path().join(format!("killed.knn-state.{rank}"));
    let mut child = mpiexec(2, &knn_args(&out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let launcher = mpiexec_pid(&child);
    let t = Instant::now();
    while !(state(0).exists() && state(1).exists()) {
        assert!(t.elapsed() < Duration::from_secs(40), "no state files");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let ranks = ranks_of(launcher);
    Command::new("kill")
        .args(["-9", &launcher.to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let t = Instant::now();
    while ranks.iter().any(|(_, pid)| alive(*pid)) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "ranks outlived the kill: {ranks:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !dir.path().join("killed.idx.npy").exists(),
        "killed before the end"
    );
    let o = run(&mut mpiexec(3, &knn_args(&out)));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("from 2 state files"), "{stderr}");
    assert!(
        files("killed") == reference,
        "resumed over 3 ranks: the graph differs\n{stderr}"
    );
    for r in 0..3 {
        assert!(!state(r).exists(), "state {r} left behind");
    }
}
