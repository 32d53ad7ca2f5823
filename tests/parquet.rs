//! Parquet output (`--output x.parquet`): the same records as JSONL, bit for
//! bit; settings in the file's metadata; a resume that loses nothing; and a
//! file pyarrow (the library under pandas, Polars and DuckDB's Python API)
//! reads as `path: string, vector: fixed_size_list<float>[512]`.

mod common;

use common::batch::{args, batch};
use common::{exe, run_ok};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// path → vector of a JSONL file.
fn jsonl_map(file: &Path) -> BTreeMap<String, Vec<f32>> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_owned(),
                serde_json::from_value(v["vector"].clone()).unwrap(),
            )
        })
        .collect()
}

/// Parquet → JSONL through `convert` (the reader every command uses).
fn parquet_map(file: &Path) -> BTreeMap<String, Vec<f32>> {
    let out = file.with_file_name(format!(
        "back-{}.jsonl",
        file.file_stem().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&out);
    run_ok(exe().arg("convert").arg(file).arg(&out).arg("--restart"));
    jsonl_map(&out)
}

#[test]
fn parquet_holds_the_jsonl_records_and_its_settings_and_resumes() {
    let b = batch(5);
    let jsonl = b.out("v.jsonl");
    let o = exe().args(args(&b, &jsonl)).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let want = jsonl_map(&jsonl);

    // First 3 listed paths only, then the whole list: a resume.
    let parquet = b.out("p.parquet");
    let full_list = std::fs::read_to_string(&b.list).unwrap();
    let first: Vec<&str> = full_list.lines().take(3).collect();
    let part_list = b.out("part.txt");
    std::fs::write(&part_list, first.join("\n") + "\n").unwrap();
    let mut a = args(&b, &parquet);
    let input = a.iter().position(|x| x == "--input").unwrap() + 1;
    a[input] = part_list.to_string_lossy().into_owned();
    exe().args(&a).output().unwrap();
    let o = exe().args(args(&b, &parquet)).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 already done"), "{}", stderr(&o));
    assert_eq!(parquet_map(&parquet), want, "the JSONL's floats, exactly");
    assert_eq!(
        std::fs::read(b.out("p.errors.jsonl")).unwrap().len(),
        std::fs::read(b.out("v.errors.jsonl")).unwrap().len(),
        "the same error records beside it"
    );
    let journal = b.out("p.journal.jsonl");
    assert_eq!(
        std::fs::metadata(&journal).map_or(0, |m| m.len()),
        0,
        "journal folded in"
    );

    // A run killed before it could rewrite the file leaves its vectors in the
    // journal: the next run counts them as done and folds them in.
    let lines: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let restarted = b.out("k.parquet");
    std::fs::write(b.out("k.journal.jsonl"), lines[..2].join("\n") + "\n").unwrap();
    std::fs::copy(b.out("v.settings.json"), b.out("k.settings.json")).unwrap();
    let o = exe().args(args(&b, &restarted)).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 already done"), "{}", stderr(&o));
    assert_eq!(parquet_map(&restarted), want);

    // The settings travel inside the file: with the companion gone, a query by
    // image still needs no model flags.
    std::fs::remove_file(b.out("p.settings.json")).unwrap();
    let image = b.paths.iter().find(|p| p.ends_with("img002.png")).unwrap();
    let (path, score) = common::best_hit_for_image(parquet.as_os_str(), image);
    assert_eq!(&path, image);
    assert!((score - 1.0).abs() < 1e-5, "{score}");
    // Every reader reads it: neighbours as from the JSONL.
    let n = |f: &Path| run_ok(exe().arg("neighbours").arg(f).args(["-k", "2"])).stdout;
    assert_eq!(n(&parquet), n(&jsonl));
}

/// pyarrow 18.1.0, pinned by sha256 per Python version, fetched from PyPI into
/// `target/test-downloads/` once and unpacked there (a wheel is a zip; nothing
/// is installed).
fn pyarrow() -> PathBuf {
    const PINNED: [(&str, &str); 3] = [
        (
            "cp311",
            "f266a2c0fc31995a06ebd30bcfdb7f615d7278035ec5b1cd71c48d56daaf30b0",
        ),
        (
            "cp312",
            "c52f81aa6f6575058d8e2c782bf79d4f9fdc89887f16825ec3a66607a5dd8e30",
        ),
        (
            "cp313",
            "36ac22d7782554754a3b50201b607d553a8d71b78cdf03b33c1125be4b52397c",
        ),
    ];
    let version = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')",
        ])
        .output()
        .expect("python3 is needed to read the Parquet file back with pyarrow");
    let tag = String::from_utf8(version.stdout).unwrap().trim().to_owned();
    let sha = PINNED
        .iter()
        .find(|(t, _)| *t == tag)
        .unwrap_or_else(|| panic!("no pinned pyarrow wheel for {tag}; add its sha256 here"))
        .1;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-downloads/pyarrow-18.1.0");
    let wheel = dir.join(format!(
        "pyarrow-18.1.0-{tag}-{tag}-manylinux_2_28_x86_64.whl"
    ));
    let unpacked = dir.join(&tag);
    if unpacked.join("pyarrow/__init__.py").exists() {
        return unpacked;
    }
    if !wheel.exists() {
        common::pip_download(
            "pyarrow==18.1.0",
            &["--platform", "manylinux_2_28_x86_64"],
            &dir,
        );
    }
    let digest = rmac_native::files::sha256_hex(&std::fs::read(&wheel).unwrap());
    assert_eq!(digest, sha, "{} is not the pinned wheel", wheel.display());
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    unpacked
}

#[test]
fn pyarrow_reads_the_parquet_file() {
    let b = batch(3);
    let parquet = b.out("v.parquet");
    let jsonl = b.out("a.jsonl");
    exe().args(args(&b, &parquet)).output().unwrap();
    exe().args(args(&b, &jsonl)).output().unwrap();
    let script = r#"
import json, sys
import pyarrow.parquet as pq
f = pq.ParquetFile(sys.argv[1])
t = f.read()
meta = f.schema_arrow.metadata or {}
print(json.dumps({
    "schema": str(t.schema.remove_metadata()),
    "rows": [{"path": p, "vector": v} for p, v in zip(t.column("path").to_pylist(), t.column("vector").to_pylist())],
    "settings": json.loads(f.metadata.metadata[b"rmac_native.settings"]),
}))
"#;
    let o = std::process::Command::new("python3")
        .env("PYTHONPATH", pyarrow())
        .args(["-c", script])
        .arg(&parquet)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["schema"],
        "path: string not null\nvector: fixed_size_list<item: float not null>[512] not null\n  child 0, item: float not null"
    );
    let got: BTreeMap<String, Vec<f32>> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                serde_json::from_value(r["vector"].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(got, jsonl_map(&jsonl));
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out("v.settings.json")).unwrap()).unwrap();
    assert_eq!(v["settings"]["weights_sha256"], settings["weights_sha256"]);
    assert_eq!(v["settings"]["max_size"], 64);
}
