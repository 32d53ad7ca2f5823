//! `serve`: the real binary on a loopback port, spoken to over raw HTTP/1.1
//! (so that a path is sent exactly as written, `..` and `%2e` included):
//! answers equal to `search --json` / `neighbours --json`, every bad input a
//! 4xx with a JSON message while the server keeps answering, thumbnails of
//! indexed paths only, the token, CORS, a concurrent load, the metrics, and
//! the page rendered by a real headless Chromium.
mod common;

use common::batch::weights;
use common::{exe, run_ok};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Six small real PNGs, their vectors (JSONL and NPY, synthetic weights,
/// --max-size 64), shared by the tests of this file.
struct Fixture {
    dir: tempfile::TempDir,
    images: Vec<PathBuf>,
    jsonl: PathBuf,
    npy: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let imgs = dir.path().join("imgs");
        std::fs::create_dir(&imgs).unwrap();
        let mut images = Vec::new();
        for i in 0..6u32 {
            let (w, h) = (40 + i * 9, 64 - i * 4);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let v = (x * (7 + i) + y * 3 + i * 31) % 256;
                image::Rgb([
                    v as u8,
                    ((x * y + i) % 256) as u8,
                    ((255 - v) ^ (y * 5)) as u8,
                ])
            });
            let p = imgs.join(format!("img{i}.png"));
            img.save(&p).unwrap();
            images.push(p);
        }
        let (w, p) = weights();
        let jsonl = dir.path().join("v.jsonl");
        run_ok(
            exe()
                .arg("--input")
                .arg(&imgs)
                .arg("--output")
                .arg(&jsonl)
                .arg("--weights")
                .arg(w)
                .arg("--pca")
                .arg(p)
                .args(["--max-size", "64", "--backend", "cpu"]),
        );
        let npy = dir.path().join("v.npy");
        run_ok(exe().arg("convert").arg(&jsonl).arg(&npy));
        Fixture {
            dir,
            images,
            jsonl,
            npy,
        }
    })
}

/// The server, stopped (by its own process id) when dropped.
struct Server {
    child: Child,
    addr: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn start(index: &Path, extra: &[&str]) -> Server {
        let mut child = exe()
            .arg("serve")
            .arg(index)
            .args(["--listen", "127.0.0.1:0", "--backend", "cpu"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(a.trim().to_owned());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the server did not say where it listens:\n{}",
                    log.lock().unwrap()
                )
            });
        Server {
            child,
            addr,
            stderr: log,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// One request; (status, head, body).
    fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        http(&self.addr, method, target, headers, body)
    }

    fn json(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        let (status, head, body) = self.request(method, target, headers, body);
        let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{method} {target}: {status}, not JSON:\n{head}\n{}",
                String::from_utf8_lossy(&body)
            )
        });
        (status, v)
    }

    fn search(&self, query: &str, body: Value) -> (u16, Value) {
        self.json(
            "POST",
            &format!("/api/search?{query}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    fn alive(&self) {
        let (status, _, body) = self.request("GET", "/healthz", &[], b"");
        assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 exchange (`Connection: close`; chunked answers decoded).
fn http(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body, and close.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{method} {target}: no HTTP answer: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let eol = at + rest[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[at..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            at = eol + 2 + n + 2;
        }
        rest = out;
    }
    (status, head, rest)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Runs `client(c)` for the clients `0..n` on threads of their own, all at
/// once, each returning what went wrong for it; fails with the first.
fn all_clients_succeed(n: usize, client: impl Fn(usize) -> Vec<String> + Sync) {
    let client = &client;
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|c| s.spawn(move || client(c))).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        errors.is_empty(),
        "{} failed, the first: {}",
        errors.len(),
        errors[0]
    );
}

/// `search INDEX ARGS --json --backend cpu`: its one answer.
fn cli_search(index: &Path, args: &[&str]) -> Value {
    let o = run_ok(
        exe()
            .arg("search")
            .arg(index)
            .args(args)
            .args(["--json", "--backend", "cpu"]),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// (path, score) of each hit, the score as the float32 it is (`neighbours --json`
/// writes it widened to float64, `search --json` and the server as float32).
fn hits(list: &Value) -> Vec<(String, f32)> {
    list.as_array()
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

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn indexed_paths(index: &Path) -> Vec<String> {
    std::fs::read_to_string(index)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A multipart/form-data body with one file field.
fn multipart(field: &str, file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "rmacBOUNDARY7f3a";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn answers_equal_search_json_by_image_path_and_vector() {
    let f = fixture();
    let server = Server::start(&f.jsonl, &[]);
    let paths = indexed_paths(&f.jsonl);
    // By image: raw bytes and a multipart upload give `search --image`'s results.
    for img in &f.images[..3] {
        let want = cli_search(&f.jsonl, &["--image", img.to_str().unwrap(), "-k", "4"]);
        let bytes = std::fs::read(img).unwrap();
        let (status, got) = server.json(
            "POST",
            "/api/search?k=4",
            &[("Content-Type", "image/png")],
            &bytes,
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["results"], want["results"], "{}", img.display());
        assert_eq!(
            (got["k"].clone(), got["query_kind"].clone()),
            (json!(4), json!("image"))
        );
        assert!(got["took_ms"].as_f64().unwrap() > 0.0);
        let (ctype, body) = multipart("image", "q.png", &bytes);
        let (status, got) = server.json(
            "POST",
            "/api/search?k=4",
            &[("Content-Type", &ctype)],
            &body,
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["results"], want["results"]);
        assert_eq!(got["query"], "q.png");
    }
    // By path, with αQE and the query left out.
    for p in &paths {
        let want = cli_search(
            &f.jsonl,
            &[
                "--path",
                p,
                "-k",
                "5",
                "--qe",
                "2",
                "--alpha",
                "3",
                "--exclude-query",
            ],
        );
        let (status, got) = server.search("k=5&qe=2&alpha=3&exclude_query=1", json!({"path": p}));
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["results"], want["results"]);
        assert_eq!(got["results"].as_array().unwrap().len(), 5);
        assert!(
            got["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["path"] != json!(p))
        );
    }
    // By vector, and from the NPY copy of the index (mapped) the same.
    let mut rng = common::Rng(11);
    let vector = common::unit_rows(&mut rng, 1, 512);
    let qfile = f.dir.path().join("q.json");
    std::fs::write(&qfile, serde_json::to_string(&vector).unwrap()).unwrap();
    let want = cli_search(
        &f.jsonl,
        &["--vector", &format!("@{}", qfile.display()), "-k", "6"],
    );
    let (status, got) = server.search("k=6", json!({"vector": vector}));
    assert_eq!(status, 200);
    assert_eq!(got["results"], want["results"]);
    let npy = Server::start(&f.npy, &["--no-model"]);
    assert_eq!(
        npy.search("k=6", json!({"vector": vector})).1["results"],
        want["results"]
    );
    let (status, e) = npy.json(
        "POST",
        "/api/search",
        &[("Content-Type", "image/png")],
        &std::fs::read(&f.images[0]).unwrap(),
    );
    assert_eq!(status, 503, "{e}");
    assert!(e["error"].as_str().unwrap().contains("--no-model"));

    // Neighbours: computed, and from `knn` graphs (JSONL and NPY) alike, as `neighbours --json`.
    let o = run_ok(
        exe()
            .arg("neighbours")
            .arg(&f.jsonl)
            .args(["-k", "3", "--json"]),
    );
    let want: Vec<Value> = o
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let graph_jsonl = f.dir.path().join("g.jsonl");
    run_ok(
        exe()
            .arg("knn")
            .arg(&f.jsonl)
            .args(["-k", "3", "--output"])
            .arg(&graph_jsonl),
    );
    let graph_npy = f.dir.path().join("g");
    run_ok(
        exe()
            .arg("knn")
            .arg(&f.jsonl)
            .args(["-k", "3", "--output"])
            .arg(&graph_npy),
    );
    let with_jsonl = Server::start(
        &f.jsonl,
        &["--no-model", "--knn", graph_jsonl.to_str().unwrap()],
    );
    let with_npy = Server::start(
        &f.npy,
        &["--no-model", "--knn", graph_npy.to_str().unwrap()],
    );
    for w in &want {
        let p = w["path"].as_str().unwrap();
        let target = format!("/api/neighbours?path={}&k=3", percent(p));
        for (s, source) in [
            (&server, "computed"),
            (&with_jsonl, "graph"),
            (&with_npy, "graph"),
        ] {
            let (status, got) = s.json("GET", &target, &[], b"");
            assert_eq!(status, 200, "{got}");
            assert_eq!(
                (hits(&got["neighbours"]), got["source"].as_str().unwrap()),
                (hits(&w["neighbours"]), source),
                "{p}"
            );
        }
        // More than the graph holds: computed.
        let (_, got) = with_npy.json(
            "GET",
            &format!("/api/neighbours?path={}&k=4", percent(p)),
            &[],
            b"",
        );
        assert_eq!(got["source"], "computed");
    }
    // A graph of other vectors is refused at start.
    let other = f.dir.path().join("other.jsonl");
    std::fs::write(
        &other,
        "{\"path\": \"elsewhere.png\", \"neighbours\": []}\n",
    )
    .unwrap();
    let o = exe()
        .arg("serve")
        .arg(&f.jsonl)
        .args(["--no-model", "--listen", "127.0.0.1:0", "--knn"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("kNN graph"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn bad_input_gets_a_4xx_with_a_message_and_the_server_keeps_answering() {
    let f = fixture();
    let server = Server::start(
        &f.jsonl,
        &[
            "--max-upload",
            "64KiB",
            "--max-pixels",
            "100000",
            "--max-k",
            "50",
        ],
    );
    let first = format!(
        "/api/neighbours?path={}&k=99999999999999999999",
        percent(&indexed_paths(&f.jsonl)[0])
    );
    let png = std::fs::read(&f.images[1]).unwrap();
    let mut wide = Vec::new();
    // A real PNG header claiming 20000×20000 (400 Mpx), the rest missing: refused from the header.
    image::codecs::png::PngEncoder::new(&mut wide)
        .write_image(
            &vec![0u8; 3 * 400 * 300],
            400,
            300,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    let mut bomb = png[..33].to_vec();
    bomb[16..20].copy_from_slice(&20000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    bomb.extend_from_slice(&png[33..]);
    let (form_ctype, _) = multipart("image", "x.png", b"");
    let no_file = "--rmacBOUNDARY7f3a\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--rmacBOUNDARY7f3a--\r\n".to_owned();
    let big = vec![0u8; 100 << 10];
    let json_ct = [("Content-Type", "application/json")];
    let png_ct = [("Content-Type", "image/png")];
    let form_ct = [("Content-Type", form_ctype.as_str())];
    // (method, target, headers, body, the status wanted, a word the message must hold)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/search",
            &png_ct,
            b"\x89PNG\r\n\x1a\nnot really".to_vec(),
            422,
            "cannot be used",
        ),
        (
            "POST",
            "/api/search",
            &png_ct,
            png[..png.len() / 2].to_vec(),
            422,
            "truncated",
        ),
        (
            "POST",
            "/api/search",
            &png_ct,
            b"GIF89a".to_vec(),
            422,
            "cannot be used",
        ),
        ("POST", "/api/search", &png_ct, wide.clone(), 413, "limit"),
        ("POST", "/api/search", &png_ct, bomb, 413, "limit"),
        (
            "POST",
            "/api/search",
            &png_ct,
            big.clone(),
            413,
            "upload limit",
        ),
        ("POST", "/api/search", &[], Vec::new(), 400, "empty"),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"{\"path\": ".to_vec(),
            400,
            "not JSON",
        ),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"[1, 2]".to_vec(),
            400,
            "one of",
        ),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"{}".to_vec(),
            400,
            "one of",
        ),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"{\"path\": \"nope.png\"}".to_vec(),
            404,
            "no such path",
        ),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"{\"path\": 7}".to_vec(),
            400,
            "string",
        ),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"{\"vector\": [1, 2, 3]}".to_vec(),
            422,
            "512-float",
        ),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"{\"vector\": [\"a\"]}".to_vec(),
            400,
            "array of numbers",
        ),
        (
            "POST",
            "/api/search",
            &json_ct,
            b"{\"vector\": [1e300]}".to_vec(),
            400,
            "finite",
        ),
        (
            "POST",
            "/api/search?k=0",
            &json_ct,
            b"{\"vector\": []}".to_vec(),
            400,
            "out of range",
        ),
        (
            "POST",
            "/api/search?k=1000000000000",
            &json_ct,
            b"{\"vector\": []}".to_vec(),
            400,
            "out of range",
        ),
        (
            "POST",
            "/api/search?k=51",
            &json_ct,
            b"{\"vector\": []}".to_vec(),
            400,
            "max-k",
        ),
        (
            "POST",
            "/api/search?k=ten",
            &json_ct,
            b"{\"vector\": []}".to_vec(),
            400,
            "whole number",
        ),
        (
            "POST",
            "/api/search?alpha=-1",
            &json_ct,
            b"{\"vector\": []}".to_vec(),
            400,
            "alpha",
        ),
        (
            "POST",
            "/api/search",
            &form_ct,
            no_file.into_bytes(),
            400,
            "no file",
        ),
        (
            "POST",
            "/api/search",
            &form_ct,
            b"garbage".to_vec(),
            400,
            "",
        ),
        ("GET", "/api/neighbours", &[], Vec::new(), 400, "path="),
        (
            "GET",
            "/api/neighbours?path=nope.png",
            &[],
            Vec::new(),
            404,
            "no such path",
        ),
        ("GET", &first, &[], Vec::new(), 400, "whole number"),
        ("GET", "/api/dedup", &[], Vec::new(), 404, "--dedup"),
        (
            "GET",
            "/nothing/here",
            &[],
            Vec::new(),
            404,
            "no such route",
        ),
        ("GET", "/imgs/", &[], Vec::new(), 404, "no such route"),
    ];
    for (method, target, headers, body, want, says) in cases {
        let (status, head, answer) = server.request(method, target, headers, &body);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, want, "{method} {target}: {text}");
        let v: Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|_| panic!("{method} {target}: not JSON: {head}\n{text}"));
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{method} {target}: {text}"
        );
        server.alive();
    }
    // A wrong method: 405, and the server still answers queries.
    assert_eq!(server.request("GET", "/api/search", &[], b"").0, 405);
    let (status, good) = server.json("POST", "/api/search?k=2", &png_ct, &png);
    assert_eq!(status, 200, "{good}");
    assert_eq!(good["results"][0]["score"], json!(1.0));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_request_past_its_deadline_gets_503_and_the_server_goes_on() {
    let f = fixture();
    // An image query takes ~0.1 s here (decode, VGG16, R-MAC); 10 ms is not enough.
    let server = Server::start(&f.jsonl, &["--timeout", "0.01"]);
    let png = std::fs::read(&f.images[4]).unwrap();
    let (status, e) = server.json(
        "POST",
        "/api/search",
        &[("Content-Type", "image/png")],
        &png,
    );
    assert_eq!(status, 503, "{e}");
    assert!(e["error"].as_str().unwrap().contains("--timeout"), "{e}");
    server.alive();
    let (status, page, body) = server.request("GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(
        header(&page, "content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("<script src=\"/app.js\"")
    );
}

/// CRC-32 (IEEE) of PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

use image::ImageEncoder;

#[test]
fn thumbnails_are_shown_for_indexed_paths_under_the_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let picture = image::RgbImage::from_fn(120, 80, |x, y| image::Rgb([x as u8, y as u8, 90]));
    picture.save(root.join("sub/a.png")).unwrap();
    picture.save(dir.path().join("outside.png")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.png"), root.join("link.png")).unwrap();
    std::os::unix::fs::symlink(root.join("sub/a.png"), root.join("inside-link.png")).unwrap();
    std::fs::write(root.join("text.png"), b"not an image").unwrap();
    let outside_abs = dir
        .path()
        .join("outside.png")
        .to_string_lossy()
        .into_owned();
    let inside_abs = root.join("sub/a.png").to_string_lossy().into_owned();
    let paths = [
        "sub/a.png",
        "link.png",
        "inside-link.png",
        "../outside.png",
        "sub/../../outside.png",
        outside_abs.as_str(),
        inside_abs.as_str(),
        "sub",
        "text.png",
        "gone.png",
    ];
    let mut rng = common::Rng(3);
    let rows = common::unit_rows(&mut rng, paths.len(), 512);
    let index = dir.path().join("v.jsonl");
    let lines: String = paths
        .iter()
        .zip(rows.chunks(512))
        .map(|(p, v)| json!({"path": p, "vector": v}).to_string() + "\n")
        .collect();
    std::fs::write(&index, lines).unwrap();
    let server = Server::start(
        &index,
        &["--no-model", "--images-root", root.to_str().unwrap()],
    );
    let thumb = |path: &str, size: &str| {
        let (status, head, body) = server.request(
            "GET",
            &format!("/api/thumb?path={}&size={size}", percent(path)),
            &[],
            b"",
        );
        (status, head, body)
    };
    for p in ["sub/a.png", "inside-link.png", inside_abs.as_str()] {
        let (status, head, body) = thumb(p, "40");
        assert_eq!(status, 200, "{p}: {}", String::from_utf8_lossy(&body));
        assert_eq!(header(&head, "content-type"), Some("image/jpeg"));
        let img = image::load_from_memory_with_format(&body, image::ImageFormat::Jpeg).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (40, 27),
            "{p}: shrunk to fit 40 px"
        );
    }
    // Cached: the same bytes again, and the cache counts one entry per (path, size).
    assert_eq!(thumb("sub/a.png", "40").2, thumb("sub/a.png", "40").2);
    for (p, want) in [
        ("link.png", 403),
        ("../outside.png", 403),
        ("sub/../../outside.png", 403),
        (outside_abs.as_str(), 403),
        ("sub", 422),
        ("text.png", 422),
        ("gone.png", 404),
        ("/etc/passwd", 404),
        ("../../../../etc/passwd", 404),
        ("outside.png", 404),
    ] {
        let (status, _, body) = thumb(p, "40");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, want, "{p}: {v}");
        assert!(v["error"].is_string());
        server.alive();
    }
    // Encodings of `..` and `/` in the raw request line reach the index lookup decoded, and miss.
    for raw in [
        "/api/thumb?path=%2e%2e%2foutside.png",
        "/api/thumb?path=..%2F..%2Fetc%2Fpasswd",
        "/api/thumb?path=%252e%252e%252foutside.png",
        "/api/thumb?path=sub%2f..%2f..%2foutside.png",
        "/api/thumb/../../outside.png",
        "/api/../outside.png",
        "/%2e%2e/outside.png",
    ] {
        let (status, _, body) = server.request("GET", raw, &[], b"");
        assert!(
            matches!(status, 400 | 403 | 404),
            "{raw}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            !body.starts_with(b"\x89PNG") && !body.starts_with(b"\xff\xd8"),
            "{raw}: image bytes served"
        );
    }
    let (status, _, _) = thumb("sub/a.png", "5000");
    assert_eq!(status, 400);
    let (_, _, m) = server.request("GET", "/metrics", &[], b"");
    let metrics = String::from_utf8(m).unwrap();
    assert!(metrics.contains("rmac_thumb_cache_entries 3"), "{metrics}");
}

#[test]
fn the_token_guards_every_route_but_healthz_and_cors_is_off_unless_asked() {
    let f = fixture();
    let server = Server::start(
        &f.jsonl,
        &[
            "--no-model",
            "--token",
            "s3cret-Tok",
            "--cors",
            "https://example.org",
        ],
    );
    let p0 = indexed_paths(&f.jsonl)[0].clone();
    let body = json!({"path": p0}).to_string();
    let (n0, t0) = (
        format!("/api/neighbours?path={}", percent(&p0)),
        format!("/api/thumb?path={}", percent(&p0)),
    );
    let routes: [(&str, &str, &[u8]); 6] = [
        ("GET", "/", b""),
        ("GET", "/api/info", b""),
        ("GET", "/metrics", b""),
        ("POST", "/api/search", body.as_bytes()),
        ("GET", &n0, b""),
        ("GET", &t0, b""),
    ];
    for (method, target, b) in routes {
        let ct = ("Content-Type", "application/json");
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-To"),
            Some("s3cret-Tok"),
            Some("Basic czNjcmV0LVRvaw=="),
        ] {
            let mut h = vec![ct];
            if let Some(a) = auth {
                h.push(("Authorization", a));
            }
            let (status, head, _) = server.request(method, target, &h, b);
            assert_eq!(status, 401, "{method} {target} with {auth:?}");
            assert_eq!(header(&head, "www-authenticate"), Some("Bearer"));
        }
        let (status, head, answer) = server.request(
            method,
            target,
            &[ct, ("Authorization", "Bearer s3cret-Tok")],
            b,
        );
        assert_eq!(
            status,
            200,
            "{method} {target}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            Some("https://example.org")
        );
    }
    assert_eq!(server.request("GET", "/healthz", &[], b"").0, 200);
    // A browser: /?token=T sets a cookie and drops the token from the address; the cookie then opens every route.
    let (status, head, _) = server.request("GET", "/?token=s3cret-Tok", &[], b"");
    assert_eq!((status, header(&head, "location")), (303, Some("/")));
    let cookie = header(&head, "set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("s3cret"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        server
            .request("GET", "/api/info", &[("Cookie", pair)], b"")
            .0,
        200
    );
    assert_eq!(server.request("GET", "/?token=wrong", &[], b"").0, 401);
    // A CORS preflight is answered without the token (browsers send none).
    let (status, head, _) = server.request(
        "OPTIONS",
        "/api/search",
        &[("Origin", "https://example.org")],
        b"",
    );
    assert_eq!(status, 204);
    assert!(
        header(&head, "access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );

    // No token, no CORS: every route open on loopback, no CORS header, no warning.
    let open = Server::start(&f.jsonl, &["--no-model"]);
    let (status, head, _) = open.request(
        "GET",
        "/api/info",
        &[("Origin", "https://evil.example")],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    assert!(!open.log().contains("warning"), "{}", open.log());
    // A non-loopback address without a token: a warning saying what is exposed.
    let exposed = {
        let mut child = exe()
            .arg("serve")
            .arg(&f.jsonl)
            .args(["--no-model", "--listen", "0.0.0.0:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut text = String::new();
        let t = Instant::now();
        while !text.contains("listening on") && t.elapsed() < Duration::from_secs(60) {
            if err.read_line(&mut text).unwrap() == 0 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        text
    };
    assert!(
        exposed.contains("warning: listening on 0.0.0.0") && exposed.contains("without --token"),
        "{exposed}"
    );
    // An empty token is refused at start.
    let o = exe()
        .arg("serve")
        .arg(&f.jsonl)
        .args(["--no-model", "--token", " "])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn thirty_two_clients_fifty_queries_each_all_answered_and_counted() {
    let f = fixture();
    let server = Server::start(&f.jsonl, &["--queue", "4"]);
    let paths = indexed_paths(&f.jsonl);
    // What each path query must answer (from `search --json`).
    let want: Vec<Value> = paths
        .iter()
        .map(|p| cli_search(&f.jsonl, &["--path", p, "-k", "3"])["results"].clone())
        .collect();
    let image = std::fs::read(&f.images[2]).unwrap();
    let image_want = cli_search(
        &f.jsonl,
        &["--image", f.images[2].to_str().unwrap(), "-k", "3"],
    )["results"]
        .clone();
    let start = Instant::now();
    all_clients_succeed(32, |c| {
        let mut errors = Vec::new();
        for q in 0..50 {
            // Client c's first query is an image (32 through a queue of 4); the rest by path.
            let (status, got, expected) = if q == 0 {
                let (st, v) = server.json(
                    "POST",
                    "/api/search?k=3",
                    &[("Content-Type", "image/png")],
                    &image,
                );
                (st, v, image_want.clone())
            } else {
                let i = (c * 7 + q) % paths.len();
                let (st, v) = server.search("k=3", json!({"path": paths[i]}));
                (st, v, want[i].clone())
            };
            if status != 200 || got["results"] != expected {
                errors.push(format!("client {c} query {q}: {status} {got}"));
            }
        }
        errors
    });
    eprintln!(
        "32 clients × 50 queries: {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let (_, _, m) = server.request("GET", "/metrics", &[], b"");
    let m = String::from_utf8(m).unwrap();
    for line in [
        "rmac_queries_total{kind=\"image\"} 32",
        "rmac_queries_total{kind=\"path\"} 1568",
        "rmac_requests_total{route=\"search\",status=\"200\"} 1600",
        "rmac_request_duration_seconds_count{route=\"search\"} 1600",
        "rmac_request_duration_seconds_bucket{route=\"search\",le=\"+Inf\"} 1600",
        "rmac_index_vectors 6",
        "rmac_index_dimension 512",
        "rmac_model_queue_waiting 0",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line} in\n{m}");
    }
    assert!(
        !m.contains("rmac_request_errors_total{route=\"search\"}"),
        "{m}"
    );
}

/// Chromium, headless, on `url`: its output (`--dump-dom`) or a screenshot.
fn chromium(args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=15000",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is needed for the page test: apt-get install chromium (ci/setup-deps.sh installs it)");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn the_page_runs_a_query_in_headless_chromium() {
    let f = fixture();
    // Duplicate groups for the page's second view.
    let groups = f.dir.path().join("groups.jsonl");
    run_ok(
        exe()
            .arg("dedup")
            .arg(&f.jsonl)
            .args(["--threshold", "0.9", "--output"])
            .arg(&groups),
    );
    let server = Server::start(
        &f.jsonl,
        &["--no-model", "--dedup", groups.to_str().unwrap()],
    );
    let query = indexed_paths(&f.jsonl)[3].clone();
    let query = query.as_str();
    let want = cli_search(&f.jsonl, &["--path", query, "-k", "5"]);
    let top = want["results"][0]["path"].as_str().unwrap();
    let second = want["results"][1]["path"].as_str().unwrap();
    let url = format!("http://{}/#path={}&k=5", server.addr, percent(query));
    let dom = chromium(&["--dump-dom"], &url);
    // The grid holds the five results in order, each with its thumbnail loaded.
    let tiles: Vec<&str> = dom
        .split("<button type=\"button\" class=\"hit\"")
        .skip(1)
        .collect();
    assert_eq!(tiles.len(), 5, "{dom}");
    assert!(
        tiles[0].contains(&format!("data-path=\"{top}\"")),
        "{}",
        tiles[0]
    );
    assert!(
        tiles[1].contains(&format!("data-path=\"{second}\"")),
        "{}",
        tiles[1]
    );
    for t in &tiles {
        assert!(
            t.contains("/api/thumb?path=") && t.contains("data-loaded=\"1\""),
            "a thumbnail not shown: {t}"
        );
    }
    let score = format!("{:.4}", want["results"][1]["score"].as_f64().unwrap());
    assert!(tiles[1].contains(&score), "{score} in {}", tiles[1]);
    assert!(
        dom.contains(&format!("5 results for path {query}")),
        "{dom}"
    );
    assert!(
        !dom.contains("id=\"tab-dedup\" class=\"tab\" aria-pressed=\"false\" hidden"),
        "the groups tab is offered"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[&format!("--screenshot={}", shot.display())], &url);
    let png = image::open(&shot).expect("a screenshot");
    assert_eq!((png.width(), png.height()), (1280, 900));
    eprintln!("screenshot of the page: {}", shot.display());
    // The page's fetches went through the API and were counted.
    let (_, _, m) = server.request("GET", "/metrics", &[], b"");
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("rmac_queries_total{kind=\"path\"} 2"), "{m}");
}

/// Concurrent queries are scanned together (one pass answers many, through
/// the 8-bit pre-filter where the CPU has AVX-512 VNNI), and each answer is
/// still `search --json`'s for that query alone: on 5000 vectors with runs of
/// exact duplicates (ties broken by row), near-duplicates one float32 step
/// apart, and k, qe and exclude_query differing from query to query.
#[test]
fn concurrent_queries_batched_into_one_pass_answer_as_search_json() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 512;
    let mut rng = common::Rng(29);
    let mut data = common::unit_rows(&mut rng, 5000, dim);
    let base = data[..dim].to_vec();
    for r in (100..5000).step_by(97) {
        let row: Vec<f32> = if r % 2 == 0 {
            base.clone()
        } else {
            base.iter().map(|x| x.next_up()).collect()
        };
        data[r * dim..(r + 1) * dim].copy_from_slice(&row);
    }
    let paths: Vec<String> = (0..5000).map(|i| format!("v/{i:05}.jpg")).collect();
    let npy = dir.path().join("v.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, dim).unwrap();
    // (query string, body, `search` flags) of each query.
    let mut cases: Vec<(String, Value, Vec<String>)> = Vec::new();
    for (i, q) in [
        base.clone(),
        common::unit_rows(&mut rng, 1, dim),
        common::unit_rows(&mut rng, 1, dim),
        data[777 * dim..778 * dim].iter().map(|x| x * 0.5).collect(),
    ]
    .into_iter()
    .enumerate()
    {
        let k = [20, 10, 1, 7][i];
        let file = dir.path().join(format!("q{i}.json"));
        std::fs::write(&file, serde_json::to_string(&q).unwrap()).unwrap();
        cases.push((
            format!("k={k}"),
            json!({ "vector": q }),
            vec![
                "--vector".into(),
                format!("@{}", file.display()),
                "-k".into(),
                k.to_string(),
            ],
        ));
    }
    for (p, extra) in [
        (&paths[0], "&exclude_query=1"),
        (&paths[197], "&qe=3&alpha=3"),
        (&paths[4999], "&qe=2&exclude_query=1"),
    ] {
        let mut flags = vec!["--path".into(), p.clone(), "-k".into(), "12".into()];
        if extra.contains("exclude_query") {
            flags.push("--exclude-query".into());
        }
        if let Some(qe) = extra.split("qe=").nth(1) {
            flags.extend(["--qe".into(), qe[..1].to_owned()]);
        }
        if extra.contains("alpha") {
            flags.extend(["--alpha".into(), "3".into()]);
        }
        cases.push((format!("k=12{extra}"), json!({ "path": p }), flags));
    }
    let want: Vec<Value> = cases
        .iter()
        .map(|(_, _, flags)| {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            cli_search(&npy, &flags)["results"].clone()
        })
        .collect();
    // The duplicates tie: the lowest rows come first, as search ranks them.
    assert_eq!(want[0][1]["path"], json!("v/00100.jpg"), "{}", want[0]);
    let server = Server::start(&npy, &["--no-model"]);
    all_clients_succeed(16, |c| {
        let mut errors = Vec::new();
        for n in 0..cases.len() * 3 {
            let i = (c + n) % cases.len();
            let (status, got) = server.search(&cases[i].0, cases[i].1.clone());
            if status != 200 || got["results"] != want[i] {
                errors.push(format!(
                    "client {c}, case {i} ({}): {status} {got}",
                    cases[i].0
                ));
            }
        }
        errors
    });
    let (_, info) = server.json("GET", "/api/info", &[], b"");
    eprintln!("scan: {}", info["scan"]);
    let (_, _, m) = server.request("GET", "/metrics", &[], b"");
    let m = String::from_utf8(m).unwrap();
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{m}"))
    };
    // Every search counted once, the two-step QE queries twice.
    let m_cases = cases.len();
    let qe_queries = (0..16)
        .flat_map(|c| (0..m_cases * 3).map(move |n| (c + n) % m_cases))
        .filter(|&i| cases[i].0.contains("qe="))
        .count() as u64;
    assert_eq!(
        value("rmac_scan_searches_total"),
        (16 * cases.len() * 3) as u64 + qe_queries
    );
    assert!(value("rmac_scan_passes_total") <= value("rmac_scan_searches_total"));
}

/// An index of another width than VGG16's 512 (100: not a whole number of the
/// 8-bit layout's 64-dimension chunks, nor of the 16 float lanes), with a
/// partial last group of rows: concurrent queries of every `k` up to all the
/// rows answer as `search --json`, whatever shares their pass.
#[test]
fn an_index_of_another_width_answers_as_search_json() {
    let dir = tempfile::tempdir().unwrap();
    let (dim, n) = (100, 3001);
    let mut rng = common::Rng(31);
    let data = common::unit_rows(&mut rng, n, dim);
    let paths: Vec<String> = (0..n).map(|i| format!("w/{i:05}.jpg")).collect();
    let npy = dir.path().join("w.npy");
    rmac_native::store::npy::write_npy(&npy, &paths, &data, dim).unwrap();
    let mut cases: Vec<(usize, Value, Value)> = Vec::new();
    for (i, k) in [1usize, 10, 10, 64, 500, n].into_iter().enumerate() {
        let q: Vec<f32> = if i == 2 {
            data[1234 * dim..1235 * dim].to_vec()
        } else {
            common::unit_rows(&mut rng, 1, dim)
        };
        let file = dir.path().join(format!("q{i}.json"));
        std::fs::write(&file, serde_json::to_string(&q).unwrap()).unwrap();
        let at = format!("@{}", file.display());
        let want = cli_search(&npy, &["--vector", &at, "-k", &k.to_string()])["results"].clone();
        assert_eq!(want.as_array().unwrap().len(), k);
        cases.push((k, json!({ "vector": q }), want));
    }
    assert_eq!(cases[2].2[0]["path"], json!("w/01234.jpg"));
    let server = Server::start(&npy, &["--no-model", "--max-k", "5000"]);
    all_clients_succeed(8, |c| {
        let mut errors = Vec::new();
        for r in 0..cases.len() * 2 {
            let (k, body, want) = &cases[(c + r) % cases.len()];
            let (status, got) = server.search(&format!("k={k}"), body.clone());
            if status != 200 || got["results"] != *want {
                errors.push(format!("client {c}, k = {k}: {status} {got}"));
            }
        }
        errors
    });
}
