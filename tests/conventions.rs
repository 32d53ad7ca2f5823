//! One set of conventions for every command (the first part of the newcomer
//! issue): a mistyped subcommand gets a suggestion instead of an `extract`
//! usage error, `neighbors` is `neighbours`, every reader of vectors reads NPY
//! too, and an output name promising an unknown format is refused.

mod common;

use common::batch::{args, batch};
use common::{exe, run_ok};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_mistyped_subcommand_gets_a_suggestion() {
    let o = exe().args(["serach", "v.jsonl"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("'search'"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("--input"),
        "not an extract usage error: {}",
        stderr(&o)
    );
    // The contract's flag-first form still means extract.
    let o = exe().args(["--input"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--input"), "{}", stderr(&o));
}

#[test]
fn neighbours_and_evaluate_read_npy_and_neighbors_is_an_alias() {
    let b = batch(3);
    let jsonl = b.out("v.jsonl");
    let o = exe().args(args(&b, &jsonl)).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let npy = b.out("w.npy");
    run_ok(exe().arg("convert").arg(&jsonl).arg(&npy));
    let from_jsonl = run_ok(exe().arg("neighbours").arg(&jsonl).args(["-k", "2"])).stdout;
    let from_npy = run_ok(exe().arg("neighbors").arg(&npy).args(["-k", "2"])).stdout;
    assert!(!from_jsonl.is_empty());
    assert_eq!(
        from_npy, from_jsonl,
        "the same neighbours from either format"
    );
    // evaluate on the NPY copy equals evaluate on the JSONL.
    let paths: Vec<String> = String::from_utf8(from_jsonl)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(str::to_owned)
        .collect();
    let gnd = b.out("gnd.json");
    std::fs::write(
        &gnd,
        serde_json::json!({ &paths[0]: [&paths[1]], &paths[1]: [&paths[2]] }).to_string(),
    )
    .unwrap();
    let eval = |v: &std::path::Path| {
        run_ok(
            exe()
                .arg("evaluate")
                .arg("--vectors")
                .arg(v)
                .arg("--gnd")
                .arg(&gnd)
                .arg("--json"),
        )
        .stdout
    };
    assert_eq!(eval(&npy), eval(&jsonl));
}

#[test]
fn an_output_promising_an_unknown_format_is_refused() {
    let b = batch(1);
    for name in ["v.parquet", "v.csv", "v.json"] {
        let out = b.out(name);
        let o = exe().args(args(&b, &out)).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(".jsonl, .npy"),
            "{name}: {}",
            stderr(&o)
        );
        assert!(!out.exists(), "{name} was created");
    }
    let jsonl = b.out("v.jsonl");
    let _ = exe().args(args(&b, &jsonl)).output().unwrap();
    let o = exe()
        .arg("convert")
        .arg(&jsonl)
        .arg(b.out("v.csv"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown output format"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_image_or_stdin_as_input_and_a_folder_without_images_says_why() {
    let b = batch(2);
    let (w, p) = common::batch::weights();
    let extract = |input: &str, out: &std::path::Path| {
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
        .arg(p);
        c
    };
    // One image given directly: that image, not a list.
    let one = &b
        .paths
        .iter()
        .find(|p| p.ends_with("img000.png"))
        .unwrap()
        .clone();
    let out = b.out("one.jsonl");
    run_ok(&mut extract(one, &out));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("img000.png"));
    // `-`: the list on standard input.
    let out = b.out("stdin.jsonl");
    let mut child = extract("-", &out)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(std::fs::read(&b.list).unwrap().as_slice())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    common::batch::assert_complete(&b, &common::batch::results(&out));
    // A folder of videos (and notes): no images, and it says what it skipped.
    let videos = b.out("videos");
    std::fs::create_dir(&videos).unwrap();
    for f in ["a.mp4", "b.MP4", "notes.txt"] {
        std::fs::write(videos.join(f), b"x").unwrap();
    }
    let o = extract(videos.to_str().unwrap(), &b.out("none.jsonl"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 .mp4") && stderr(&o).contains("1 .txt"),
        "{}",
        stderr(&o)
    );
}
