//! `serve` under load, the real binary on loopback: queries/s and latency
//! (p50, p99, max) of by-vector queries (`{"vector": […]}`, k = 10) on N
//! synthetic unit vectors (default 1M × 512, an NPY index), with C concurrent
//! keep-alive HTTP/1.1 clients; the server's peak memory (VmHWM) against the
//! index's size; then by-image queries at `--max-size 512` (synthetic
//! weights, CPU), images/s and latency. Every answer must be 200, and a
//! sample of the by-vector answers is checked against the exact scan
//! (`search_many`, what `search --json` runs), path and score. Not a test: a
//! benchmark. One command runs it all:
//!
//!     cargo bench --locked --features dev --bench serve
//!
//! Settings (environment): `RMAC_SERVE_N` (vectors, 1000000),
//! `RMAC_SERVE_CLIENTS` (comma-separated client counts, `1,8`),
//! `RMAC_SERVE_SECONDS` (per by-vector run, 20), `RMAC_SERVE_IMAGE_CLIENTS`
//! (`1,2`), `RMAC_SERVE_IMAGE_SECONDS` (per by-image run, 20; 0 skips it),
//! `RMAC_SERVE_DIR` (where the index and images are written and kept for the
//! next run, `target/serve-bench`), `RMAC_SERVE_BIN` (another build of the
//! binary to measure, e.g. an older commit's; default: this one).
use rmac_native::search::search_many;
use rmac_native::store::VectorSource;
use rmac_native::store::npy::{MappedVectors, header, write_paths};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DIM: usize = 512;
const K: usize = 10;

#[path = "common/settings.rs"]
mod settings;
use settings::{env_or, list};

#[path = "common/unit_vectors.rs"]
mod unit_vectors;
use unit_vectors::Rng;

/// `n` synthetic unit vectors as an NPY index (kept when already there).
fn index(dir: &Path, n: usize) -> PathBuf {
    let npy = dir.join(format!("vectors-{n}.npy"));
    let paths = dir.join(format!("vectors-{n}.paths.txt"));
    let size = (header(n as u64, DIM).len() + n * DIM * 4) as u64;
    if std::fs::metadata(&npy).is_ok_and(|m| m.len() == size) && paths.exists() {
        return npy;
    }
    eprintln!(
        "writing {n} × {DIM} synthetic unit vectors to {}",
        npy.display()
    );
    let mut out = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&npy).unwrap());
    out.write_all(&header(n as u64, DIM)).unwrap();
    let mut rng = Rng(0x5EED);
    for _ in 0..n {
        let v = rng.unit(DIM);
        out.write_all(bytemuck::cast_slice(&v)).unwrap();
    }
    out.flush().unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("synthetic/{i:07}.jpg")).collect();
    write_paths(&paths, &names).unwrap();
    npy
}

/// The binary to measure.
fn exe() -> String {
    env_or("RMAC_SERVE_BIN", env!("CARGO_BIN_EXE_rmac-native"))
}

/// The server, killed (by its own id) when dropped.
struct Server {
    child: Child,
    addr: String,
    started: Duration,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let t = Instant::now();
        let mut child = Command::new(exe())
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start rmac-native serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  server: {line}");
                if let Some(a) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(600))
            .expect("the server did not start");
        Server {
            child,
            addr,
            started: t.elapsed(),
        }
    }

    /// A line of /proc/PID/status, in MiB.
    fn mib(&self, field: &str) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive connection.
struct Client {
    stream: BufReader<TcpStream>,
    addr: String,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
        Client {
            stream: BufReader::new(s),
            addr: addr.to_owned(),
        }
    }

    /// POST `body`; (status, answer body).
    fn post(&mut self, target: &str, kind: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut status = 0;
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if status == 0 {
                status = l
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).unwrap();
        (status, answer)
    }
}

/// (request index, answer) samples of one client.
type Samples = Vec<(usize, Vec<u8>)>;

struct Run {
    latencies: Vec<f64>,
    seconds: f64,
    /// (request index, answer) of the first answer to each request.
    samples: Samples,
}

/// `clients` threads posting `bodies` (round robin from different offsets)
/// for `seconds`.
fn load(addr: &str, clients: usize, seconds: f64, kind: &str, bodies: &[Vec<u8>]) -> Run {
    // Warm-up: one request per client.
    std::thread::scope(|s| {
        for c in 0..clients {
            s.spawn(move || {
                let (st, _) =
                    Client::connect(addr).post("/api/search?k=10", kind, &bodies[c % bodies.len()]);
                assert_eq!(st, 200);
            });
        }
    });
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let per: Vec<(Vec<f64>, Samples)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let mut client = Client::connect(addr);
                    let (mut lat, mut samples) = (Vec::new(), Vec::new());
                    let mut i = c * 7919;
                    while Instant::now() < until {
                        let b = i % bodies.len();
                        let t = Instant::now();
                        let (status, answer) = client.post("/api/search?k=10", kind, &bodies[b]);
                        lat.push(t.elapsed().as_secs_f64());
                        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                        if samples.len() < 4 {
                            samples.push((b, answer));
                        }
                        i += 1;
                    }
                    (lat, samples)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut samples = Vec::new();
    for (l, s) in per {
        latencies.extend(l);
        samples.extend(s);
    }
    latencies.sort_by(f64::total_cmp);
    Run {
        latencies,
        seconds,
        samples,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn report(what: &str, clients: usize, run: &Run) {
    let l = &run.latencies;
    println!(
        "{what:<28} {clients:>3} clients  {:>8.1} queries/s  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  ({} queries in {:.1} s, load average {})",
        l.len() as f64 / run.seconds,
        pct(l, 0.50) * 1e3,
        pct(l, 0.99) * 1e3,
        l.last().unwrap() * 1e3,
        l.len(),
        run.seconds,
        load_average()
    );
}

fn metric(addr: &str, name: &str) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn by_vector(dir: &Path) {
    let n: usize = env_or("RMAC_SERVE_N", "1000000")
        .parse()
        .expect("RMAC_SERVE_N");
    let seconds: f64 = env_or("RMAC_SERVE_SECONDS", "20")
        .parse()
        .expect("RMAC_SERVE_SECONDS");
    let npy = index(dir, n);
    let mut rng = Rng(0xC0FFEE);
    let queries: Vec<Vec<f32>> = (0..256).map(|_| rng.unit(DIM)).collect();
    let bodies: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| serde_json::to_vec(&serde_json::json!({ "vector": q })).unwrap())
        .collect();
    let server = Server::start(&[npy.to_str().unwrap(), "--no-model"]);
    let index_mib = (n * DIM * 4) as f64 / 1048576.0;
    println!(
        "by vector: {n} × {DIM} (index {index_mib:.0} MiB), k = {K}; server ready in {:.1} s; \
         RSS after start {:.0} MiB (peak {:.0} MiB)",
        server.started.as_secs_f64(),
        server.mib("VmRSS:"),
        server.mib("VmHWM:")
    );
    let mut samples = Vec::new();
    for clients in list("RMAC_SERVE_CLIENTS", "1,8") {
        let (p0, s0, r0) = (
            metric(&server.addr, "rmac_scan_passes_total"),
            metric(&server.addr, "rmac_scan_searches_total"),
            metric(&server.addr, "rmac_scan_rescored_total"),
        );
        let run = load(&server.addr, clients, seconds, "application/json", &bodies);
        report("by vector", clients, &run);
        let (p1, s1, r1) = (
            metric(&server.addr, "rmac_scan_passes_total"),
            metric(&server.addr, "rmac_scan_searches_total"),
            metric(&server.addr, "rmac_scan_rescored_total"),
        );
        println!(
            "{:<28} {:.2} searches per pass, {:.0} rows re-scored in float32 per search",
            "",
            (s1 - s0) / (p1 - p0),
            (r1 - r0) / (s1 - s0)
        );
        samples.extend(run.samples);
    }
    println!(
        "server memory: peak (VmHWM) {:.0} MiB, now (VmRSS) {:.0} MiB = anonymous {:.0} + file {:.0}; \
         the index is {index_mib:.0} MiB, the target ≤ index + 300 MB = {:.0} MiB",
        server.mib("VmHWM:"),
        server.mib("VmRSS:"),
        server.mib("RssAnon:"),
        server.mib("RssFile:"),
        index_mib + 300e6 / 1048576.0
    );
    drop(server);
    // The answers against the exact scan (what `search --json` runs).
    let set = MappedVectors::open(&npy).unwrap();
    samples.sort_by_key(|s| s.0);
    samples.dedup_by_key(|s| s.0);
    samples.truncate(12);
    for (b, answer) in &samples {
        let got: serde_json::Value = serde_json::from_slice(answer).unwrap();
        let want = search_many(set.data(), DIM, &[&queries[*b]], K, &[None])
            .pop()
            .unwrap();
        let want: Vec<(String, f32)> = want
            .iter()
            .map(|&(r, s)| (set.paths()[r].clone(), s))
            .collect();
        let got: Vec<(String, f32)> = got["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["path"].as_str().unwrap().to_owned(),
                    h["score"].as_f64().unwrap() as f32,
                )
            })
            .collect();
        assert_eq!(
            got, want,
            "query {b}: the server's answer differs from the exact scan"
        );
    }
    println!(
        "{} answers checked against the exact scan: equal (paths and float32 scores)",
        samples.len()
    );
}

fn run_ok(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn by_image(dir: &Path) {
    let seconds: f64 = env_or("RMAC_SERVE_IMAGE_SECONDS", "20")
        .parse()
        .expect("RMAC_SERVE_IMAGE_SECONDS");
    if seconds <= 0.0 {
        return;
    }
    let exe = exe();
    let dir = dir.join("images");
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let (w, p) = (dir.join("vgg16.safetensors"), dir.join("pca.safetensors"));
    if !w.exists() || !p.exists() {
        run_ok(
            Command::new(&exe)
                .args(["weights", "synthetic", "--output"])
                .arg(&w)
                .arg("--pca")
                .arg(&p),
        );
    }
    // Photo-sized JPEGs (4:3, larger than 512, so each is resized as a real query would be).
    let mut bodies = Vec::new();
    for i in 0..8u32 {
        let f = imgs.join(format!("q{i}.jpg"));
        if !f.exists() {
            let img = image::RgbImage::from_fn(1024, 768, |x, y| {
                let v = (x * (3 + i) + y * 5 + i * 29) % 256;
                image::Rgb([
                    v as u8,
                    ((x ^ y) % 256) as u8,
                    ((x * y / 64 + i) % 256) as u8,
                ])
            });
            img.save(&f).unwrap();
        }
        bodies.push(std::fs::read(&f).unwrap());
    }
    let index = dir.join("images.jsonl");
    if !index.exists() {
        run_ok(
            Command::new(&exe)
                .arg("--input")
                .arg(&imgs)
                .arg("--output")
                .arg(&index)
                .arg("--weights")
                .arg(&w)
                .arg("--pca")
                .arg(&p)
                .args(["--max-size", "512", "--backend", "cpu"]),
        );
    }
    let server = Server::start(&[index.to_str().unwrap(), "--backend", "cpu"]);
    println!(
        "by image: 1024 × 768 JPEGs, --max-size 512, synthetic weights, --backend cpu, k = {K}"
    );
    for clients in list("RMAC_SERVE_IMAGE_CLIENTS", "1,2") {
        let run = load(&server.addr, clients, seconds, "image/jpeg", &bodies);
        report("by image", clients, &run);
    }
}

fn main() {
    let dir = PathBuf::from(env_or(
        "RMAC_SERVE_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/serve-bench"),
    ));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "rmac-native serve benchmark: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    by_vector(&dir);
    by_image(&dir);
}
