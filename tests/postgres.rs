//! PostgreSQL + pgvector, over a real connection. `RMAC_PG` names the server
//! (`.ci/run` starts one with ci/start-pg.sh); without it the tests start the
//! same throwaway cluster themselves (PostgreSQL 15 and pgvector must be
//! installed: ci/setup-deps.sh), and fail with what to do if they cannot.
//! Each test works in a database of its own.

mod common;

use common::{exe, run_ok};
use postgres::{Client, NoTls};
use rmac_native::store::VectorSink;
use rmac_native::store::postgres::{Db, PgOptions, PgSink};
use rmac_native::store::settings::RunSettings;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn server() -> String {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("RMAC_PG") {
                return url;
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ci/start-pg.sh");
            let out = Command::new("bash").arg(script).stderr(Stdio::inherit()).output().expect("cannot run bash");
            assert!(
                out.status.success(),
                "RMAC_PG is not set and ci/start-pg.sh could not start PostgreSQL with pgvector: install them with \
                 ci/setup-deps.sh (as root), or point RMAC_PG at a server with the `vector` extension"
            );
            String::from_utf8(out.stdout).unwrap().lines().last().unwrap_or_default().to_owned()
        })
        .clone()
}

/// A fresh, empty database; returns its connection string.
fn fresh_db(name: &str) -> String {
    let base = server();
    let mut c = Client::connect(&base, NoTls)
        .expect("cannot reach RMAC_PG; is ci/start-pg.sh's server running?");
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    format!("{base} dbname={name}")
}

fn client(db: &str) -> Client {
    Client::connect(db, NoTls).unwrap()
}

fn count(db: &str) -> i64 {
    client(db)
        .query_one("SELECT count(*) FROM rmac_vectors", &[])
        .unwrap()
        .get(0)
}

fn vec512(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v: Vec<f32> = (0..512)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

/// stdout of a command that must succeed.
fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).unwrap()
}

fn write_npy(dir: &std::path::Path, n: usize) -> (std::path::PathBuf, Vec<String>, Vec<f32>) {
    let paths: Vec<String> = (0..n).map(|i| format!("photos/{i:06}.jpg")).collect();
    let data: Vec<f32> = (0..n as u64).flat_map(vec512).collect();
    let npy = dir.join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, 512).unwrap();
    (npy, paths, data)
}

#[test]
fn load_rerun_and_restart_never_duplicate() {
    let db = fresh_db("rmac_t_load");
    let settings = RunSettings {
        weights_sha256: "ab".into(),
        weights_bytes: 10,
        pca_sha256: "none".into(),
        max_size: 1024,
        levels: 3,
        preprocess: "keras".into(),
        dimension: 512,
        no_enlarge: false,
        pool: "max".into(),
        scales: "1".into(),
        weights_file: Some("/somewhere/w.safetensors".into()),
        pca_file: None,
        base: None,
        video_sampling: None,
        skip_static: None,
        dba: None,
    };
    {
        let (mut sink, done) =
            PgSink::open(&db, false, "test", Some(&settings), &PgOptions::default()).unwrap();
        assert!(done.is_empty());
        for i in 0..10 {
            sink.write_vector(&format!("p{i}"), &vec512(i)).unwrap();
        }
        sink.write_error("bad", "cannot decode").unwrap();
        sink.write_skipped("v.mp4#t=1.000", "static").unwrap();
        sink.sync().unwrap();
    }
    // Skipped frames (--skip-static) are kept apart from the failures.
    let mut read = Db::connect(&db, &PgOptions::default()).unwrap();
    assert_eq!(
        read.read_skipped().unwrap(),
        vec![("v.mp4#t=1.000".to_owned(), "static".to_owned())]
    );
    assert_eq!(
        read.read_errors().unwrap(),
        vec![("bad".to_owned(), "cannot decode".to_owned())]
    );
    drop(read);
    // Resume: the done set is what is there; writing a path again updates it in place.
    let (mut sink, done) =
        PgSink::open(&db, false, "test", Some(&settings), &PgOptions::default()).unwrap();
    assert_eq!(done.len(), 12);
    sink.write_vector("p3", &vec512(3)).unwrap();
    sink.write_vector("p10", &vec512(10)).unwrap();
    drop(sink);
    assert_eq!(count(&db), 11);
    let stored: Vec<f32> = Db::connect(&db, &PgOptions::default())
        .unwrap()
        .vector_of("p10")
        .unwrap()
        .unwrap();
    assert_eq!(stored, vec512(10), "binary COPY stores the floats exactly");

    // Other settings are refused (they would mix models in one table), unless --restart.
    // (Where the files were is not a setting: moved weights resume fine.)
    let moved = RunSettings {
        weights_file: Some("/elsewhere/w.safetensors".into()),
        ..settings.clone()
    };
    drop(PgSink::open(&db, false, "test", Some(&moved), &PgOptions::default()).unwrap());
    let other = RunSettings {
        weights_sha256: "cd".into(),
        ..settings.clone()
    };
    let err = PgSink::open(&db, false, "test", Some(&other), &PgOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("weights (sha256): ab before, cd now") && err.contains("--restart"),
        "{err}"
    );
    let (sink, done) =
        PgSink::open(&db, true, "test", Some(&other), &PgOptions::default()).unwrap();
    assert!(done.is_empty());
    drop(sink);
    assert_eq!(count(&db), 0);
}

#[test]
fn a_lost_connection_is_retried_and_loses_nothing() {
    let db = fresh_db("rmac_t_lost");
    let (mut sink, _) = PgSink::open(&db, false, "test", None, &PgOptions::default()).unwrap();
    for i in 0..50 {
        sink.write_vector(&format!("a{i}"), &vec512(i)).unwrap();
    }
    sink.sync().unwrap();
    for i in 50..120 {
        sink.write_vector(&format!("a{i}"), &vec512(i)).unwrap();
    }
    // Kill the sink's backend while rows are buffered.
    let killed: i64 = client(&server())
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'rmac-native' AND datname = 'rmac_t_lost'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    sink.sync().unwrap();
    for i in 120..130 {
        sink.write_vector(&format!("a{i}"), &vec512(i)).unwrap();
    }
    drop(sink);
    assert_eq!(count(&db), 130);
    let (paths, data) = Db::connect(&db, &PgOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(
        paths,
        (0..130).map(|i| format!("a{i}")).collect::<Vec<_>>(),
        "insertion order kept"
    );
    assert_eq!(data, (0..130).flat_map(vec512).collect::<Vec<_>>());
}

#[test]
fn killed_mid_load_then_resumed_holds_every_row_once() {
    let db = fresh_db("rmac_t_kill");
    let dir = tempfile::tempdir().unwrap();
    let n = 40_000;
    let (npy, paths, data) = write_npy(dir.path(), n);
    let mut child = exe()
        .args(["convert", npy.to_str().unwrap(), &db])
        .env("RMAC_PG_BATCH", "50")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
        let has_table: bool = client(&db)
            .query_one("SELECT to_regclass('rmac_vectors') IS NOT NULL", &[])
            .unwrap()
            .get(0);
        if has_table {
            seen = count(&db);
            if seen >= 1000 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill = count(&db);
    assert!(
        seen >= 1000 && after_kill < n as i64,
        "the load was killed part way ({after_kill} of {n} rows)"
    );
    let err = run_stdout(
        exe()
            .args(["convert", npy.to_str().unwrap(), &db])
            .env("RMAC_PG_BATCH", "5000"),
    );
    let _ = err;
    assert_eq!(count(&db), n as i64);
    let (got_paths, got) = Db::connect(&db, &PgOptions::default())
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(got_paths, paths, "every path once, in order");
    assert_eq!(got, data, "exact floats");
    let dups: i64 = client(&db)
        .query_one(
            "SELECT count(*) - count(DISTINCT path) FROM rmac_vectors",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dups, 0);
}

#[test]
fn convert_jsonl_npy_postgres_jsonl_is_exact() {
    let db = fresh_db("rmac_t_convert");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.jsonl");
    let mut text = String::new();
    for i in 0..300u64 {
        text.push_str(&format!(
            "{{\"path\":\"d/é {i}.jpg\",\"vector\":{}}}",
            serde_json::to_string(&vec512(i)).unwrap()
        ));
        text.push('\n');
    }
    std::fs::write(&src, &text).unwrap();
    let errors = "{\"path\":\"bad.jpg\",\"error\":\"truncated\"}\n";
    std::fs::write(dir.path().join("a.errors.jsonl"), errors).unwrap();
    let (npy, back) = (dir.path().join("b.npy"), dir.path().join("c.jsonl"));
    run_stdout(exe().arg("convert").arg(&src).arg(&npy));
    run_stdout(exe().arg("convert").arg(&npy).arg(&db));
    run_stdout(exe().arg("convert").arg(&npy).arg(&db)); // a rerun adds nothing
    assert_eq!(count(&db), 300);
    run_stdout(exe().arg("convert").arg(&db).arg(&back));
    assert!(
        std::fs::read_to_string(&back).unwrap() == text,
        "the round trip changed the JSONL"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c.errors.jsonl")).unwrap(),
        errors
    );
}

fn results(json: &str) -> Vec<(String, f32)> {
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_owned(),
                h["score"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

fn same(a: &[(String, f32)], b: &[(String, f32)]) {
    assert_eq!(
        a.iter().map(|h| &h.0).collect::<Vec<_>>(),
        b.iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    for (x, y) in a.iter().zip(b) {
        assert!((x.1 - y.1).abs() < 1e-5, "{x:?} vs {y:?}");
    }
}

#[test]
fn database_search_equals_the_file_search() {
    let db = fresh_db("rmac_t_search");
    let dir = tempfile::tempdir().unwrap();
    let (npy, paths, _) = write_npy(dir.path(), 3000);
    run_stdout(exe().arg("convert").arg(&npy).arg(&db));
    let search = |index: &str, extra: &[&str]| {
        run_stdout(
            exe()
                .args(["search", index, "--json", "-k", "10"])
                .args(extra),
        )
    };
    for q in [&paths[0], &paths[1234], &paths[2999]] {
        for extra in [
            &["--path", q.as_str()][..],
            &["--path", q, "--exclude-query", "--qe", "3"],
            &["--path", q, "--qe", "5", "--alpha", "3"],
        ] {
            same(
                &results(&search(npy.to_str().unwrap(), extra)),
                &results(&search(&db, extra)),
            );
        }
    }
    // With an HNSW index: --exact still equals the file search; the index answers the top hit right.
    run_stdout(exe().args(["index", "--db", &db, "--kind", "hnsw"]));
    run_stdout(exe().args(["index", "--db", &db, "--kind", "ivfflat", "--lists", "10"]));
    let q = ["--path", paths[77].as_str()];
    same(
        &results(&search(npy.to_str().unwrap(), &q)),
        &results(&search(&db, &[&q[..], &["--exact"]].concat())),
    );
    let approx = results(&search(&db, &[&q[..], &["--ef-search", "100"]].concat()));
    assert_eq!(approx[0].0, paths[77]);
    let idx: i64 = client(&db).query_one("SELECT count(*) FROM pg_indexes WHERE tablename = 'rmac_vectors' AND indexdef LIKE '%vector_ip_ops%'", &[]).unwrap().get(0);
    assert_eq!(idx, 2);
}

/// `extract --output DB` and `extract --output x.jsonl --db DB` end to end:
/// real images (one corrupt) through the CPU backend into pgvector, the same
/// vectors as the JSONL, failures in `rmac_errors`, and a rerun adds nothing.
#[test]
fn extract_writes_straight_into_the_database_and_beside_a_file() {
    let (only_db, beside) = (fresh_db("rmac_t_extract"), fresh_db("rmac_t_extract_db"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (weights, pca) = (root.join("w.safetensors"), root.join("p.safetensors"));
    rmac_native::vgg16::synthetic::vgg16(1)
        .save(&weights)
        .unwrap();
    rmac_native::rmac::pca::synthetic(1).save(&pca).unwrap();
    let mut paths = Vec::new();
    for (i, (w, h)) in [(50u32, 40u32), (40, 70), (64, 64)].into_iter().enumerate() {
        let p = root.join(format!("img{i}.png"));
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 5 + i as u32 * 40) as u8,
                (y * 3) as u8,
                ((x ^ y) * 2) as u8,
            ])
        })
        .save(&p)
        .unwrap();
        paths.push(p.to_string_lossy().into_owned());
    }
    let bad = root.join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    paths.push(bad.to_string_lossy().into_owned());
    let list = root.join("list.txt");
    std::fs::write(&list, paths.join("\n") + "\n").unwrap();
    let extract = |output: &str, extra: &[&str]| {
        let out = exe()
            .args([
                "extract",
                "--input",
                list.to_str().unwrap(),
                "--output",
                output,
            ])
            .args(["--backend", "cpu", "--max-size", "64", "--threads", "2"])
            .args([
                "--weights",
                weights.to_str().unwrap(),
                "--pca",
                pca.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(3),
            "one image is corrupt: exit 3\n{err}"
        );
        err
    };

    extract(&only_db, &[]);
    let jsonl = root.join("v.jsonl");
    extract(jsonl.to_str().unwrap(), &["--db", &beside]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for db in [&only_db, &beside] {
        assert_eq!(count(db), 3, "{db}");
        let mut conn = Db::connect(db, &PgOptions::default()).unwrap();
        for line in &lines {
            let want: Vec<f32> = serde_json::from_value(line["vector"].clone()).unwrap();
            let got = conn
                .vector_of(line["path"].as_str().unwrap())
                .unwrap()
                .unwrap();
            assert_eq!(
                got, want,
                "{db}: the database holds the JSONL's floats exactly"
            );
        }
        let failed: Vec<String> = client(db)
            .query("SELECT path FROM rmac_errors", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(failed, vec![bad.to_string_lossy().into_owned()], "{db}");
    }
    // A rerun finds everything done (the corrupt image included) and adds nothing.
    let again = extract(&only_db, &[]);
    assert!(again.contains("4 already done"), "{again}");
    assert_eq!(count(&only_db), 3);
    // The table records its settings: a query by image needs no model flags,
    // its copy (convert) carries them, and a contradicting flag is refused.
    let copy = fresh_db("rmac_t_extract_copy");
    run_ok(exe().args(["convert", jsonl.to_str().unwrap(), &copy]));
    for db in [&only_db, &copy] {
        let (path, score) = common::best_hit_for_image(db.as_ref(), &paths[1]);
        assert_eq!(path, paths[1], "{db}");
        assert!((score - 1.0).abs() < 1e-5, "{db}: {score}");
    }
    let o = exe()
        .args([
            "search",
            &copy,
            "--backend",
            "cpu",
            "--image",
            &paths[1],
            "--max-size",
            "80",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--max-size: the index 64, this query 80"),
        "{err}"
    );
}

/// One writer per table: a second run — or a `--restart` — while a run is
/// writing is refused, and empties nothing.
#[test]
fn a_second_writer_or_a_restart_during_a_run_is_refused() {
    let db = fresh_db("rmac_t_lock");
    let (mut first, _) = PgSink::open(&db, false, "test", None, &PgOptions::default()).unwrap();
    first.write_vector("a", &vec512(1)).unwrap();
    first.sync().unwrap();
    for restart in [false, true] {
        let err = PgSink::open(&db, restart, "test", None, &PgOptions::default())
            .err()
            .expect("a second writer must be refused")
            .to_string();
        assert!(err.contains("another rmac-native run"), "{err}");
    }
    first.write_vector("b", &vec512(2)).unwrap();
    drop(first);
    assert_eq!(count(&db), 2, "the refused --restart emptied nothing");
    // Free again once the first run has ended.
    let (second, done) = PgSink::open(&db, false, "test", None, &PgOptions::default()).unwrap();
    assert_eq!(done.len(), 2);
    drop(second);
}

fn stdout_and_stderr(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// No form of a password libpq accepts reaches stdout or stderr, on success or failure.
#[test]
fn passwords_never_reach_the_output() {
    let db = fresh_db("rmac_t_secret");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("v.jsonl");
    let lines: Vec<String> = (0..3)
        .map(|i| serde_json::json!({"path": format!("p{i}"), "vector": vec512(i)}).to_string())
        .collect();
    std::fs::write(&src, lines.join("\n") + "\n").unwrap();
    // The test server trusts every password: these succeed.
    for secret_db in [
        format!("{db} password=SECRETPW"),
        format!("{db} password='SECRET PW'"),
    ] {
        let out = exe()
            .args(["convert", src.to_str().unwrap(), &secret_db])
            .output()
            .unwrap();
        let all = stdout_and_stderr(&out);
        assert!(out.status.success(), "{all}");
        assert!(!all.contains("SECRET") && !all.contains(" PW"), "{all}");
    }
    // Unreachable: the errors name the server without the password.
    for url in [
        "postgresql://u:SECRETPW@127.0.0.1:1/db",
        "postgresql://127.0.0.1:1/db?user=u&password=SECRETPW",
        "host=127.0.0.1 port=1 password = 'SECRET PW' dbname=d",
    ] {
        let out = exe()
            .args(["convert", src.to_str().unwrap(), url])
            .env("RMAC_PG_RETRY_SECONDS", "0")
            .output()
            .unwrap();
        let all = stdout_and_stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains("127.0.0.1"), "{all}");
        assert!(
            !all.contains("SECRET") && !all.contains(" PW"),
            "{url}: {all}"
        );
    }
}
