//! Fault injection through the binary, for real: FIFOs, devices, dangling and
//! looping links and non-UTF-8 names as inputs (under an address-space limit),
//! oversize and bomb files with the child's peak RSS measured, outputs that would
//! share companion files, a symlinked OUT, the input as the output, NaN through
//! every reader, huge `-k`, destinations that are not files, a progressive-scan
//! bomb, a list with a BOM, a decode watchdog, and a kill loop that must end
//! bit-identical to an uninterrupted run. Every command runs under `timeout`, so
//! a hang fails the test instead of the CI run.

mod common;

use common::batch::{args, assert_complete, batch, results, weights};
use common::exe;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `exe` wrapped in `timeout 120` (a hang is a failure, not a stuck CI).
fn bounded() -> Command {
    let mut c = Command::new("timeout");
    c.args(["--signal=KILL", "120", env!("CARGO_BIN_EXE_rmac-native")]);
    c
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The error records of OUT, path → message.
fn error_records(out: &Path) -> std::collections::BTreeMap<String, String> {
    let errors = rmac_native::store::companions::errors_path(out);
    std::fs::read_to_string(&errors)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_owned(),
                v["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 3 + u32::from(seed)) as u8, (y * 5) as u8, seed])
    })
    .save(path)
    .unwrap();
}

fn extract(input: &Path, out: &Path) -> Command {
    let (w, p) = weights();
    let mut c = bounded();
    c.arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--weights")
        .arg(w)
        .arg("--pca")
        .arg(p)
        .args(["--max-size", "64", "--backend", "cpu", "--threads", "1"]);
    c
}

/// Runs `cmd` and returns its output and its own peak RSS in MiB (wait4's rusage).
fn run_measured(cmd: &mut Command) -> (Output, f64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Drain the pipes in threads so the child never blocks on a full pipe.
    let mut child = child;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).unwrap();
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).unwrap();
        v
    });
    let mut status = 0;
    // SAFETY: plain syscall on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let out = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    };
    std::mem::forget(child); // already reaped
    (out, usage.ru_maxrss as f64 / 1024.0)
}

#[test]
fn fifos_devices_and_broken_links_are_records_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    write_png(&imgs.join("good.png"), 70, 50, 1);
    let fifo = imgs.join("pipe.jpg");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/dev/zero", imgs.join("zero.jpg")).unwrap();
    std::os::unix::fs::symlink(imgs.join("nowhere.png"), imgs.join("dead.png")).unwrap();
    std::os::unix::fs::symlink(imgs.join("loop.png"), imgs.join("loop.png")).unwrap();
    std::fs::create_dir(imgs.join("folder.jpg")).unwrap();
    write_png(&imgs.join("folder.jpg").join("inner.png"), 40, 40, 2);
    // A name that is not UTF-8.
    let bad_name = std::ffi::OsStr::from_bytes_compat(b"bad\xff.png");
    write_png(&imgs.join(bad_name), 40, 40, 3);

    // Folder input, under a 3 GB address-space limit: /dev/zero must not be read.
    let out = dir.path().join("v.jsonl");
    let start = Instant::now();
    let mut cmd = Command::new("bash");
    let ex = extract(&imgs, &out);
    let argv: Vec<String> = std::iter::once(ex.get_program())
        .chain(ex.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    cmd.arg("-c")
        .arg(format!("ulimit -v 3000000; exec {}", argv.join(" ")));
    let o = cmd.output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(100), "{}", text(&o));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let errors = error_records(&out);
    let find = |name: &str| {
        errors
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no record for {name}: {errors:#?}\n{}", text(&o)))
    };
    assert!(find("pipe.jpg").contains("FIFO"), "{errors:#?}");
    assert!(find("zero.jpg").contains("character device"), "{errors:#?}");
    assert!(find("dead.png").contains("not found"), "{errors:#?}");
    assert!(find("loop.png").contains("cannot read"), "{errors:#?}");
    assert!(find("bad\u{FFFD}.png").contains("not UTF-8"), "{errors:#?}");
    let vectors = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        vectors.lines().count(),
        2,
        "good.png and folder.jpg/inner.png"
    );

    // The same as a list (and /dev/zero itself), one process, no hang.
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "{}\n{}\n/dev/zero\n{}\n",
            imgs.join("good.png").display(),
            fifo.display(),
            imgs.display()
        ),
    )
    .unwrap();
    let out2 = dir.path().join("w.jsonl");
    let o = extract(&list, &out2).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let errors = error_records(&out2);
    assert!(
        errors["/dev/zero"].contains("character device"),
        "{errors:#?}"
    );
    assert!(errors[&fifo.display().to_string()].contains("FIFO"));
    assert!(errors[&imgs.display().to_string()].contains("a folder"));
}

/// `OsStr` from raw bytes (Unix).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn oversize_files_and_bombs_are_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A 3 GB sparse file with a JPEG signature: refused from its size, nothing read.
    let big = dir.path().join("big.jpg");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap();
        f.set_len(3 << 30).unwrap();
    }
    // A 41-byte GIF claiming 13000 × 13000 (169 Mpx, under the pixel limit).
    let gif = dir.path().join("bomb.gif");
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&13000u16.to_le_bytes());
    g.extend_from_slice(&13000u16.to_le_bytes());
    g.extend_from_slice(&[0x80, 0x00, 0x00]); // a global palette of 2 colours
    g.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    g.push(0x2C); // image descriptor
    g.extend_from_slice(&[0, 0, 0, 0]);
    g.extend_from_slice(&13000u16.to_le_bytes());
    g.extend_from_slice(&13000u16.to_le_bytes());
    g.push(0x00);
    g.extend_from_slice(&[0x02, 0x02, 0x4C, 0x01, 0x00, 0x3B]);
    std::fs::write(&gif, &g).unwrap();
    let good = dir.path().join("good.png");
    write_png(&good, 64, 48, 4);
    for (name, path, want) in [
        ("oversize", &big, "--max-file-bytes"),
        ("gif bomb", &gif, ""),
    ] {
        let list = dir.path().join(format!("{}.txt", name.replace(' ', "_")));
        std::fs::write(&list, format!("{}\n{}\n", good.display(), path.display())).unwrap();
        let out = dir.path().join(format!("{}.jsonl", name.replace(' ', "_")));
        let start = Instant::now();
        let (o, rss_mib) = run_measured(&mut extract(&list, &out));
        assert_eq!(o.status.code(), Some(3), "{name}: {}", text(&o));
        let errors = error_records(&out);
        let e = &errors[&path.display().to_string()];
        assert!(e.contains(want), "{name}: {e}");
        eprintln!(
            "{name}: {:.1} s, peak RSS {rss_mib:.0} MiB, record: {e}",
            start.elapsed().as_secs_f64()
        );
        // The bound documented in src/image/decode.rs (the model's ~450 MiB included).
        assert!(rss_mib < 2048.0, "{name}: peak RSS {rss_mib:.0} MiB");
        if name == "oversize" {
            assert!(rss_mib < 1024.0, "the 3 GB file was read: {rss_mib:.0} MiB");
        }
    }
}

/// A progressive JPEG (mozjpeg's default) whose first scan is repeated many times.
fn scan_bomb_jpeg(repeats: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 90]));
    let jpeg = mozjpeg_progressive(&img);
    // Find the first SOS segment and its entropy-coded data (up to the next marker).
    let mut i = 2;
    let (sos_start, sos_end) = loop {
        assert_eq!(jpeg[i], 0xFF);
        let marker = jpeg[i + 1];
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        if marker == 0xDA {
            let mut j = i + 2 + len;
            while !(jpeg[j] == 0xFF && jpeg[j + 1] != 0x00 && !(0xD0..=0xD7).contains(&jpeg[j + 1]))
            {
                j += 1;
            }
            break (i, j);
        }
        i += 2 + len;
    };
    let mut out = jpeg[..sos_end].to_vec();
    for _ in 0..repeats {
        out.extend_from_slice(&jpeg[sos_start..sos_end]);
    }
    out.extend_from_slice(&jpeg[sos_end..]);
    out
}

fn mozjpeg_progressive(img: &image::RgbImage) -> Vec<u8> {
    use mozjpeg_sys::*;
    // SAFETY: the libjpeg compression API used as documented; buffers outlive the calls.
    unsafe {
        let mut err: jpeg_error_mgr = std::mem::zeroed();
        let mut cinfo: jpeg_compress_struct = std::mem::zeroed();
        cinfo.common.err = jpeg_std_error(&mut err);
        jpeg_create_compress(&mut cinfo);
        let mut buf: *mut u8 = std::ptr::null_mut();
        let mut size: std::ffi::c_ulong = 0;
        jpeg_mem_dest(&mut cinfo, &mut buf, &mut size);
        cinfo.image_width = img.width();
        cinfo.image_height = img.height();
        cinfo.input_components = 3;
        cinfo.in_color_space = J_COLOR_SPACE::JCS_RGB;
        jpeg_set_defaults(&mut cinfo);
        jpeg_simple_progression(&mut cinfo);
        jpeg_start_compress(&mut cinfo, 1);
        let row = img.width() as usize * 3;
        for y in 0..img.height() as usize {
            let p = img.as_raw()[y * row..].as_ptr();
            jpeg_write_scanlines(&mut cinfo, &p, 1);
        }
        jpeg_finish_compress(&mut cinfo);
        let out = std::slice::from_raw_parts(buf, size as usize).to_vec();
        jpeg_destroy_compress(&mut cinfo);
        libc::free(buf.cast());
        out
    }
}

/// A progressive JPEG whose first scan is repeated 20,000 times (libjpeg would
/// make a pass over the coefficients for each) is refused in well under a second.
/// (A JPEG without its EOI marker stays an error, as in Pillow 13: see
/// tests/image_decode.rs, `truncated_files_are_errors_never_partial_images`.)
#[test]
fn a_progressive_scan_bomb_is_refused() {
    use rmac_native::image::decode::{DecodeLimits, decode_rgb};
    let limits = DecodeLimits::default();
    let normal = scan_bomb_jpeg(0);
    assert!(decode_rgb(&normal, &limits).is_ok());
    let bomb = scan_bomb_jpeg(20_000);
    let start = Instant::now();
    let e = decode_rgb(&bomb, &limits).unwrap_err().to_string();
    assert!(e.contains("progressive scans"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn outputs_never_share_companions_and_a_symlinked_out_shares_the_lock() {
    let b = batch(3);
    let stem = b.out("x.jsonl");
    let o = exe().args(args(&b, &stem)).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    // x.npy would share x.errors.jsonl, x.settings.json and x.lock.
    let o = exe().args(args(&b, &b.out("x.npy"))).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another --output"),
        "{}",
        text(&o)
    );

    // link.jsonl → real.jsonl: the lock is real's.
    let real = b.out("real.jsonl");
    std::fs::write(&real, "").unwrap();
    let link = b.out("link.jsonl");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(b.out("real.lock"))
        .unwrap();
    held.try_lock().unwrap();
    let o = exe().args(args(&b, &link)).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another rmac-native run"),
        "{}",
        text(&o)
    );
    drop(held);
    let o = exe().args(args(&b, &link)).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    assert_complete(&b, &results(&real));
}

#[test]
fn the_input_is_never_the_output_and_settings_are_never_guessed() {
    let b = batch(2);
    let out = b.out("v.jsonl");
    // The list, named like an output, given as both: refused, and the list is untouched.
    let list = b.out("list.jsonl");
    std::fs::copy(&b.list, &list).unwrap();
    let mut same = args(&b, &list);
    let i = same.iter().position(|s| s == "--input").unwrap();
    same[i + 1] = list.display().to_string();
    let o = exe().args(&same).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--input"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(&list).unwrap(),
        std::fs::read(&b.list).unwrap()
    );
    let o = exe().args(args(&b, &out)).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let before = std::fs::read(&out).unwrap();
    std::fs::remove_file(b.out("v.settings.json")).unwrap();
    let mut other = args(&b, &out);
    let i = other.iter().position(|s| s == "--max-size").unwrap();
    other[i + 1] = "96".into();
    let o = exe().args(&other).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--restart"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), before, "OUT untouched");
    other.push("--restart".into());
    let o = exe().args(&other).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
}

fn write_npy_rows(path: &Path, rows: &[Vec<f32>]) {
    let paths: Vec<String> = (0..rows.len()).map(|i| format!("p{i}.jpg")).collect();
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    rmac_native::store::npy::write_npy(path, &paths, &data, rows[0].len()).unwrap();
}

#[test]
fn nan_never_enters_an_output_and_readers_refuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut row = vec![0.0f32; 512];
    row[0] = 1.0;
    let mut nan = row.clone();
    nan[7] = f32::NAN;
    let npy = dir.path().join("nan.npy");
    write_npy_rows(&npy, &[row.clone(), nan]);
    let o = bounded()
        .arg("convert")
        .arg(&npy)
        .arg(dir.path().join("x.jsonl"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NaN"),
        "{}",
        text(&o)
    );
    let q = serde_json::to_string(&row).unwrap();
    let o = bounded()
        .arg("search")
        .arg(&npy)
        .args(["--vector", &q, "-k", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // JSONL with a null: refused by the reader, with the line.
    let jsonl = dir.path().join("null.jsonl");
    let mut line = serde_json::to_string(&serde_json::json!({"path": "a", "vector": row})).unwrap();
    line = line.replacen("1.0", "null", 1);
    std::fs::write(&jsonl, format!("{line}\n")).unwrap();
    let o = bounded()
        .arg("search")
        .arg(&jsonl)
        .args(["--vector", &q])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 1"),
        "{}",
        text(&o)
    );
    // An all-zero PCA is refused at load.
    let (w, _) = weights();
    let zero = rmac_native::rmac::pca::PcaWeights {
        weight: vec![0.0; 512 * 512],
        bias: vec![0.0; 512],
    };
    let pca = dir.path().join("zero_pca.safetensors");
    std::fs::write(&pca, zero.to_safetensors_bytes(&pca).unwrap()).unwrap();
    let b = batch(1);
    let mut a = args(&b, &b.out("v.jsonl"));
    let i = a.iter().position(|s| s == "--pca").unwrap();
    a[i + 1] = pca.display().to_string();
    let i = a.iter().position(|s| s == "--weights").unwrap();
    a[i + 1] = w.display().to_string();
    let o = exe().args(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("all zeros"),
        "{}",
        text(&o)
    );
}

#[test]
fn no_user_number_makes_an_allocation_abort_and_destinations_must_be_files() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Vec<f32>> = (0..5)
        .map(|i| {
            let mut r = vec![0.0f32; 512];
            r[i] = 1.0;
            r
        })
        .collect();
    let npy = dir.path().join("v.npy");
    write_npy_rows(&npy, &rows);
    let q = serde_json::to_string(&rows[0]).unwrap();
    let o = bounded()
        .arg("search")
        .arg(&npy)
        .args(["--vector", &q, "-k", "1000000000000", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 5);
    let jsonl = dir.path().join("v.jsonl");
    let o = bounded()
        .arg("convert")
        .arg(&npy)
        .arg(&jsonl)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = bounded()
        .arg("neighbours")
        .arg(&jsonl)
        .args(["-k", "1000000000000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = bounded()
        .arg("search")
        .arg(&npy)
        .args(["--vector", &q, "--html"])
        .arg(dir.path().join("s.html"))
        .args(["--thumb-size", "100000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A FIFO as the index: refused at once, not read forever.
    let fifo = dir.path().join("index.jsonl");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let o = bounded()
        .arg("search")
        .arg(&fifo)
        .args(["--vector", &q])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("FIFO"),
        "{}",
        text(&o)
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    let start = Instant::now();
    let o = bounded()
        .arg("convert")
        .arg(&jsonl)
        .arg("/dev/full")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a regular file"),
        "{}",
        text(&o)
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_bom_list_and_a_stalled_decode_are_handled() {
    let b = batch(2);
    // A list saved by a Windows editor: the BOM is not part of the first path.
    let text_list = std::fs::read_to_string(&b.list).unwrap();
    let bom = b.out("bom.txt");
    std::fs::write(&bom, format!("\u{feff}{text_list}")).unwrap();
    let out = b.out("bom.jsonl");
    let mut a = args(&b, &out);
    let i = a.iter().position(|s| s == "--input").unwrap();
    a[i + 1] = bom.display().to_string();
    let o = exe().args(&a).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    assert_complete(&b, &results(&out));
    // A watchdog far below any decode time: every image becomes a record, the run ends.
    let out = b.out("slow.jsonl");
    let mut a = args(&b, &out);
    a.extend(["--decode-timeout".into(), "0.000001".into()]);
    let o = exe().args(&a).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let errors = error_records(&out);
    assert!(
        errors.values().any(|e| e.contains("--decode-timeout")),
        "{errors:#?}"
    );
}

/// SIGKILL at random moments, resumed each time: the output ends bit-identical
/// to an uninterrupted run, every path exactly once.
#[test]
fn a_kill_loop_ends_bit_identical() {
    let b = batch(40);
    let clean = b.out("clean.jsonl");
    let o = exe().args(args(&b, &clean)).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let want = results(&clean);
    let out = b.out("killed.jsonl");
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut kills = 0;
    for round in 0..8 {
        let mut child = exe()
            .args(args(&b, &out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(800 + seed % 3000);
        let start = Instant::now();
        let mut finished = false;
        while start.elapsed() < wait {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if finished {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        eprintln!("round {round}: killed after {wait:?}");
    }
    let o = exe().args(args(&b, &out)).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    assert!(
        kills >= 1,
        "the run finished before any kill; make the batch larger"
    );
    let got = results(&out);
    assert_eq!(got, want, "after {kills} kills");
    assert_complete(&b, &got);
}
