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
    for name in ["v.csv", "v.json", "v.parket"] {
        let out = b.out(name);
        let o = exe().args(args(&b, &out)).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(".jsonl, .npy, .parquet"),
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
    // A folder of videos (and notes). Without the `video` feature: no images, and it says
    // what it skipped; with it, each unreadable video is one error record naming it.
    let videos = b.out("videos");
    std::fs::create_dir(&videos).unwrap();
    for f in ["a.mp4", "b.MP4", "notes.txt"] {
        std::fs::write(videos.join(f), b"x").unwrap();
    }
    let out = b.out("none.jsonl");
    let o = extract(videos.to_str().unwrap(), &out).output().unwrap();
    if cfg!(feature = "video") {
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let errors = common::batch::results(&out).errors;
        let want: std::collections::BTreeSet<String> = ["a.mp4", "b.MP4"]
            .iter()
            .map(|f| videos.join(f).to_string_lossy().into_owned())
            .collect();
        assert_eq!(errors, want);
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("2 .mp4") && stderr(&o).contains("1 .txt"),
            "{}",
            stderr(&o)
        );
        // One video given as the input: said to be a video that needs the feature, not read as a list.
        let o = extract(videos.join("a.mp4").to_str().unwrap(), &b.out("none.jsonl"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("is a video") && stderr(&o).contains("`video`"),
            "{}",
            stderr(&o)
        );
    }
}

fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The settings that made an index travel with it (`convert`), and a query by
/// image takes them: no model flags needed, the same image scores 1, and a
/// flag that contradicts the index is refused with the differences.
#[test]
fn an_index_describes_how_its_queries_are_made() {
    let b = batch(3);
    let jsonl = b.out("v.jsonl");
    let o = exe().args(args(&b, &jsonl)).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out("v.settings.json")).unwrap()).unwrap();
    assert_eq!(settings["max_size"], 64);
    assert_eq!(settings["dimension"], 512);
    let npy = b.out("copy.npy");
    run_ok(exe().arg("convert").arg(&jsonl).arg(&npy));
    let copied: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out("copy.settings.json")).unwrap()).unwrap();
    assert_eq!(copied, settings, "convert carries the settings");
    let image = b.paths.iter().find(|p| p.ends_with("img001.png")).unwrap();
    for index in [&jsonl, &npy] {
        // Only the index and the image: weights, PCA and --max-size 64 come from the index.
        let (path, score) = common::best_hit_for_image(index.as_os_str(), image);
        assert_eq!(&path, image);
        assert!((score - 1.0).abs() < 1e-5, "{}: {score}", index.display());
    }
    let refused = |extra: &[&str], want: &[&str]| {
        let o = exe()
            .args(["search", "--backend", "cpu", "--image", image])
            .arg(&jsonl)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        for w in want {
            assert!(stderr(&o).contains(w), "{extra:?}: {}", stderr(&o));
        }
    };
    refused(
        &["--max-size", "96"],
        &["--max-size: the index 64, this query 96"],
    );
    refused(
        &["--pca", "none", "--levels", "2"],
        &[
            "pca (sha256)",
            "this query none",
            "--levels: the index 3, this query 2",
        ],
    );
    let other = b.out("other.safetensors");
    rmac_native::vgg16::synthetic::vgg16(2)
        .save(&other)
        .unwrap();
    refused(
        &["--weights", other.to_str().unwrap()],
        &["weights (sha256)"],
    );
}

/// Without --weights and --pca, the files are found by the documented order:
/// nothing here names them → the error lists where it looked and the command
/// that works from any folder; in the user cache → found.
#[test]
fn weights_are_found_in_the_user_cache_from_any_folder() {
    let b = batch(2);
    let home = b.out("home");
    let elsewhere = b.out("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = || {
        exe()
            .current_dir(&elsewhere)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("RMAC_WEIGHTS")
            .env_remove("RMAC_PCA")
            .args(["--backend", "cpu", "--max-size", "64", "--input"])
            .arg(&b.list)
            .args(["--output", "v.jsonl"])
            .output()
            .unwrap()
    };
    let o = run();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let cache = home.join(".cache/rmac-native");
    for want in [
        "rmac-native weights fetch",
        "$RMAC_WEIGHTS (unset)",
        "./weights/vgg16.safetensors",
        cache.join("vgg16.safetensors").to_str().unwrap(),
    ] {
        assert!(stderr(&o).contains(want), "{want}: {}", stderr(&o));
    }
    assert!(!elsewhere.join("v.jsonl").exists());
    let (w, p) = common::batch::weights();
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::copy(w, cache.join("vgg16.safetensors")).unwrap();
    std::fs::copy(p, cache.join("pca.safetensors")).unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    common::batch::assert_complete(&b, &common::batch::results(&elsewhere.join("v.jsonl")));
}

/// `--output -`: JSONL records on standard output, vectors and errors, and no
/// file named `-` or companion beside it.
#[test]
fn output_dash_is_jsonl_on_stdout() {
    let b = batch(3);
    let cwd = b.out("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut a = args(&b, std::path::Path::new("-"));
    a.push("--threads".into());
    a.push("1".into());
    let o = exe().current_dir(&cwd).args(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let records = json_lines(&o.stdout);
    assert_eq!(records.len(), b.paths.len(), "one record per listed path");
    let vectors = records.iter().filter(|r| r["vector"].is_array()).count();
    let errors = records.iter().filter(|r| r["error"].is_string()).count();
    assert_eq!((vectors, errors), (3, b.bad.len()));
    assert_eq!(
        std::fs::read_dir(&cwd).unwrap().count(),
        0,
        "no files written"
    );
    // Counts read as words: one thread, not "1 threads".
    assert!(stderr(&o).contains("(1 thread, "), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("rmac-native: 7 images"),
        "{}",
        stderr(&o)
    );
}

/// A database output that cannot be reached fails at once with the cause,
/// before any image is read (no five-minute retry on a wrong URL).
#[test]
fn an_unreachable_database_output_fails_at_once() {
    let b = batch(1);
    let mut a = args(
        &b,
        std::path::Path::new("postgresql://rmac@127.0.0.1:1/nowhere"),
    );
    a.retain(|x| x != "extract");
    let start = std::time::Instant::now();
    let o = exe()
        .arg("extract")
        .args(&a)
        .env_remove("RMAC_PG_RETRY_SECONDS")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    let err = stderr(&o);
    assert!(
        err.contains("cannot connect") && err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("images on"), "no image was touched: {err}");
}

/// The contact sheet finds the index's images from any folder, links each
/// tile to its original, says what was searched, and counts what it could
/// not show with a non-zero exit.
#[test]
fn the_contact_sheet_works_from_another_folder_and_counts_missing_images() {
    let b = batch(3);
    let (w, p) = common::batch::weights();
    // An index with relative paths, made from its own folder.
    let imgs = b.out("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for i in 0..3 {
        std::fs::copy(
            b.out(&format!("img{i:03}.png")),
            imgs.join(format!("{i}.png")),
        )
        .unwrap();
    }
    run_ok(
        exe()
            .current_dir(b.dir.path())
            .args([
                "--backend",
                "cpu",
                "--max-size",
                "64",
                "--input",
                "imgs",
                "--output",
                "v.jsonl",
            ])
            .arg("--weights")
            .arg(w)
            .arg("--pca")
            .arg(p),
    );
    let sheet = b.out("sheet.html");
    let search = || {
        exe()
            .current_dir("/")
            .args(["search", "-k", "3", "--path", "imgs/0.png", "--html"])
            .arg(&sheet)
            .arg(b.out("v.jsonl"))
            .output()
            .unwrap()
    };
    let o = search();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let html = std::fs::read_to_string(&sheet).unwrap();
    assert_eq!(
        html.matches("data:image/jpeg;base64,").count(),
        4,
        "query + 3 results"
    );
    assert!(!html.contains("missing:"), "every image found");
    let url = format!("href=\"file://{}", imgs.join("1.png").display());
    assert!(html.contains(&url), "tiles link to the originals");
    for fact in [
        "<dt>k</dt><dd>3</dd>",
        "max-size 64",
        "<dt>query expansion</dt><dd>off</dd>",
    ] {
        assert!(html.contains(fact), "header: {fact}");
    }
    std::fs::remove_file(imgs.join("2.png")).unwrap();
    let o = search();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("could not show 1 of its 4 images"),
        "{}",
        stderr(&o)
    );
    let html = std::fs::read_to_string(&sheet).unwrap();
    assert_eq!(html.matches("missing: not found").count(), 1);
}

#[test]
fn neighbours_prints_json_on_request() {
    let b = batch(3);
    let jsonl = b.out("v.jsonl");
    exe().args(args(&b, &jsonl)).output().unwrap();
    let o = run_ok(
        exe()
            .arg("neighbours")
            .arg(&jsonl)
            .args(["-k", "2", "--json"]),
    );
    let rows = json_lines(&o.stdout);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let n = r["neighbours"].as_array().unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0]["rank"], 1);
        assert_ne!(n[0]["path"], r["path"], "an image is not its own neighbour");
        assert!(n[0]["score"].as_f64().unwrap() >= n[1]["score"].as_f64().unwrap());
    }
}

/// `--root DIR`: paths are recorded relative to DIR (the index moves with its
/// images), read from under it, and a listed path outside it is refused.
#[test]
fn root_records_paths_relative_to_a_folder() {
    let b = batch(3);
    let out = b.out("v.jsonl");
    let mut a = args(&b, &out);
    a.extend(["--root".into(), b.dir.path().to_string_lossy().into_owned()]);
    let o = exe().current_dir("/").args(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let records = json_lines(&std::fs::read(&out).unwrap());
    let mut stored: Vec<&str> = records
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    stored.sort();
    assert_eq!(stored, ["img000.png", "img001.png", "img002.png"]);
    let errors = json_lines(&std::fs::read(b.out("v.errors.jsonl")).unwrap());
    assert!(
        errors.iter().any(|e| e["path"] == "missing.png"),
        "{errors:?}"
    );
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out("v.settings.json")).unwrap()).unwrap();
    assert_eq!(settings["base"], b.dir.path().to_string_lossy().as_ref());
    // The contact sheet finds them under the recorded root, from anywhere.
    let sheet = b.out("s.html");
    let o = exe()
        .current_dir("/")
        .args(["search", "-k", "2", "--path", "img001.png", "--html"])
        .arg(&sheet)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A root that does not hold every listed image is refused before anything is written.
    let sub = b.out("sub");
    std::fs::create_dir(&sub).unwrap();
    let other = b.out("other.jsonl");
    let mut a = args(&b, &other);
    a.extend(["--root".into(), sub.to_string_lossy().into_owned()]);
    let o = exe().args(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("7 of the listed paths are not under --root"),
        "{}",
        stderr(&o)
    );
    assert!(!other.exists());
}

#[test]
fn bench_prints_json_on_request() {
    let o = run_ok(exe().args([
        "bench",
        "--width",
        "64",
        "--height",
        "48",
        "--repeat",
        "1",
        "--threads",
        "1",
        "--algo",
        "im2col,auto",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(64), Some(48))
    );
    let algos = v["algos"].as_array().unwrap();
    assert_eq!(algos.len(), 2);
    assert_eq!(algos[0]["algo"], "im2col");
    let layers = algos[1]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 13);
    assert_eq!(layers[0]["input"], serde_json::json!([48, 64, 3]));
    assert!(algos[1]["images_per_s"].as_f64().unwrap() > 0.0);
}
