//! JSONL output: `OUT` holds `{"path", "vector"}` lines, the error file beside
//! it `{"path", "error"}` lines (and `{"path", "skipped"}` lines: frames
//! `--skip-static` skipped). Both are append-only and flushed line by line,
//! so a killed run loses at most the line in flight; on restart a torn last
//! line is cut off and every complete line counts as done.

use super::{VectorSet, VectorSink};
use crate::video::FrameIndex;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often written lines are forced to disk (a crash of the process loses
/// nothing flushed; this bounds what a power or node loss can take).
const SYNC_EVERY: Duration = Duration::from_secs(10);

#[derive(Serialize)]
struct VectorLine<'a> {
    path: &'a str,
    #[serde(flatten)]
    frame: Option<FrameFields<'a>>,
    vector: &'a [f32],
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    path: &'a str,
    #[serde(flatten)]
    frame: Option<FrameFields<'a>>,
    error: &'a str,
}

/// A frame `--skip-static` skipped, in the error file: done, but no failure.
#[derive(Serialize)]
struct SkippedLine<'a> {
    path: &'a str,
    #[serde(flatten)]
    frame: Option<FrameFields<'a>>,
    skipped: &'a str,
}

/// A video frame's record says which video, when, and which frame
/// (docs/contract.md#videos).
#[derive(Serialize)]
struct FrameFields<'a> {
    video: &'a str,
    /// Seconds from the stream start, millisecond precision.
    t: f64,
    /// Index in presentation order.
    frame: u64,
}

fn frame_fields<'a>(frames: &'a FrameIndex, path: &str) -> Option<FrameFields<'a>> {
    frames.get(path).map(|f| FrameFields {
        video: &f.video,
        t: f.t_ms as f64 / 1000.0,
        frame: f.frame,
    })
}

/// What resuming needs from a line: its path (and that it parses).
#[derive(Deserialize)]
struct AnyLine {
    path: String,
    vector: Option<Vec<f32>>,
    error: Option<String>,
    skipped: Option<String>,
}

/// `vectors.jsonl` → `vectors.errors.jsonl` (docs/contract.md#outputs: the error file beside OUT).
pub fn errors_path(out: &Path) -> PathBuf {
    super::companions::errors_path(out)
}

/// One append-only JSONL file.
struct LineFile {
    path: PathBuf,
    file: File,
}

/// One complete, valid record found when resuming: its path and its bytes.
struct Record {
    path: String,
    start: usize,
    end: usize,
}

/// The path of a line `extract` wrote (`{"path":"…","vector":[…]}` or
/// `{"path":"…","error":"…"}`) read from its first bytes only, and whether the
/// rest has the shape of a whole record (for vectors: `dim` numbers). Resuming a
/// run of a million images reads only this, not every float. `None` when the
/// line has another shape (other key order, spaces): the caller parses it whole.
/// `want_vector`: `Some(dim)` for a vector line of `dim` floats, `None` for a
/// line of the error file (`"error"` or `"skipped"`).
fn fast_record(line: &[u8], want_vector: Option<usize>) -> Option<String> {
    let rest = line.strip_prefix(b"{\"path\":\"")?;
    // The end of the JSON string: the first quote not escaped.
    let mut k = 0;
    while k < rest.len() {
        match rest[k] {
            b'\\' => k += 2,
            b'"' => break,
            _ => k += 1,
        }
    }
    if k >= rest.len() {
        return None;
    }
    let path: String = serde_json::from_slice(&line[8..8 + k + 2]).ok()?;
    let body = &rest[k + 1..];
    if let Some(dim) = want_vector {
        let numbers = body.strip_prefix(b",\"vector\":[")?.strip_suffix(b"]}")?;
        let commas = numbers.iter().filter(|&&b| b == b',').count();
        let plain = numbers
            .iter()
            .all(|&b| b.is_ascii_digit() || matches!(b, b',' | b'.' | b'-' | b'e' | b'E' | b'+'));
        (commas + 1 == dim && plain && !numbers.is_empty()).then_some(path)
    } else {
        body.strip_prefix(b",\"error\":\"")
            .or_else(|| body.strip_prefix(b",\"skipped\":\""))?
            .strip_suffix(b"\"}")?;
        Some(path)
    }
}

/// The slow path of [`fast_record`]: the whole line through serde.
fn parsed_record(line: &[u8], want_vector: Option<usize>) -> Option<String> {
    serde_json::from_slice::<AnyLine>(line)
        .ok()
        .filter(|l| {
            if let Some(dim) = want_vector {
                l.vector.as_ref().is_some_and(|v| v.len() == dim)
            } else {
                l.error.is_some() || l.skipped.is_some()
            }
        })
        .map(|l| l.path)
}

/// Reads `file` from the start in one streaming pass (a line at a time, so a
/// 6 GB output costs megabytes, not gigabytes), returns its complete valid
/// records, and cuts a torn last line. Damage before the last line is refused.
fn scan(file: &mut File, path: &Path, want_vector: Option<usize>) -> Result<Vec<Record>> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(1 << 20, &*file);
    let mut records = Vec::new();
    let mut line = Vec::new();
    let (mut start, mut number) = (0usize, 0usize);
    let mut torn_at = None;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        number += 1;
        let complete = line.ends_with(b"\n");
        let body = &line[..n - complete as usize];
        let record = complete
            .then(|| fast_record(body, want_vector).or_else(|| parsed_record(body, want_vector)))
            .flatten();
        match record {
            Some(p) => records.push(Record {
                path: p,
                start,
                end: start + n,
            }),
            None => {
                // Only the last line can be torn by a kill; anything else is damage
                // we must not silently throw away.
                if !reader.fill_buf()?.is_empty() {
                    bail!(
                        "line {number} of {} is not a valid record, and more lines follow it; \
                         repair the file or start over with --restart",
                        path.display()
                    );
                }
                torn_at = Some(start);
                break;
            }
        }
        start += n;
    }
    drop(reader);
    if let Some(cut) = torn_at {
        file.set_len(cut as u64)
            .with_context(|| format!("cannot cut the torn last line of {}", path.display()))?;
        eprintln!(
            "note: {}: cut a torn last line (line {number}); that image is done again",
            path.display()
        );
    }
    Ok(records)
}

impl LineFile {
    fn open(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open {} for writing (check the folder exists and is writable)",
                    path.display()
                )
            })
    }

    /// Opens for appending; returns the complete records already in it after
    /// cutting a torn last line (and the file's bytes). `want_vector`: lines
    /// must hold a vector of that many floats (OUT), or (`None`) an error text
    /// (the error file).
    fn open_resume(
        path: &Path,
        want_vector: Option<usize>,
        restart: bool,
    ) -> Result<(Self, Vec<Record>)> {
        let mut file = Self::open(path)?;
        if restart {
            file.set_len(0)
                .with_context(|| format!("cannot truncate {}", path.display()))?;
            return Ok((Self::at(path, file), Vec::new()));
        }
        let records = scan(&mut file, path, want_vector)?;
        Ok((Self::at(path, file), records))
    }

    fn at(path: &Path, file: File) -> Self {
        LineFile {
            path: path.to_path_buf(),
            file,
        }
    }

    /// Replaces the file by the records `keep` accepts, streamed through a
    /// temporary file and a rename (a kill leaves the old file or the new one),
    /// and reopens it for appending.
    fn rewrite(&mut self, records: &[Record], mut keep: impl FnMut(&Record) -> bool) -> Result<()> {
        let what = || format!("cannot rewrite {}", self.path.display());
        let tmp = self
            .path
            .with_extension(format!("rewrite{}", std::process::id()));
        {
            let mut src =
                BufReader::with_capacity(1 << 20, File::open(&self.path).with_context(what)?);
            let mut dst =
                std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp).with_context(what)?);
            let mut line = Vec::new();
            for r in records {
                line.resize(r.end - r.start, 0);
                src.seek(SeekFrom::Start(r.start as u64))
                    .with_context(what)?;
                std::io::Read::read_exact(&mut src, &mut line).with_context(what)?;
                if keep(r) {
                    dst.write_all(&line).with_context(what)?;
                }
            }
            dst.into_inner()
                .map_err(|e| e.into_error())
                .with_context(what)?
                .sync_all()
                .with_context(what)?;
        }
        std::fs::rename(&tmp, &self.path).with_context(what)?;
        self.file = Self::open(&self.path)?;
        Ok(())
    }

    fn append(&mut self, line: &[u8]) -> Result<()> {
        // One write of the whole line: a kill leaves it complete or torn, never interleaved.
        self.file
            .write_all(line)
            .with_context(|| format!("cannot write to {} (disk full?)", self.path.display()))
    }
}

/// The vectors file and the error file beside it.
pub struct JsonlSink {
    vectors: LineFile,
    errors: LineFile,
    last_sync: Instant,
    /// The video frames among the paths written (their records get `video`, `t`, `frame`).
    frames: Arc<FrameIndex>,
}

impl JsonlSink {
    /// Video frames' records get `video`, `t` and `frame` from `frames`.
    pub fn with_frames(mut self, frames: Arc<FrameIndex>) -> Self {
        self.frames = frames;
        self
    }

    /// Opens both files; with `restart` they are emptied, otherwise the paths
    /// already written (as vectors or as errors) are returned. A path recorded
    /// twice (a line repeated, or a path both in OUT and in the error file) is
    /// reported and resolved: its first vector is kept, and an error record of
    /// a path that has a vector is dropped.
    /// `dim`: the floats per vector (the settings' dimension, 512 but for a
    /// reduced PCA).
    pub fn open(out: &Path, restart: bool, dim: usize) -> Result<(Self, HashSet<String>)> {
        Self::open_pair(out, &errors_path(out), restart, dim)
    }

    /// As [`Self::open`], with the error records in `errors_file`.
    pub fn open_pair(
        out: &Path,
        errors_file: &Path,
        restart: bool,
        dim: usize,
    ) -> Result<(Self, HashSet<String>)> {
        let (mut vectors, vrecs) = LineFile::open_resume(out, Some(dim), restart)?;
        let (mut errors, erecs) = LineFile::open_resume(errors_file, None, restart)?;
        let mut done: HashSet<String> = HashSet::with_capacity(vrecs.len() + erecs.len());
        let mut first_of = std::collections::HashMap::with_capacity(vrecs.len());
        for r in &vrecs {
            first_of.entry(r.path.as_str()).or_insert(r.start);
        }
        let repeated = vrecs.len() - first_of.len();
        if repeated > 0 {
            eprintln!(
                "note: {} holds {repeated} repeated records (the same path twice); keeping the first vector of each",
                out.display()
            );
            vectors.rewrite(&vrecs, |r| first_of[r.path.as_str()] == r.start)?;
        }
        let mut seen_errors = HashSet::with_capacity(erecs.len());
        let stale = erecs
            .iter()
            .filter(|r| {
                first_of.contains_key(r.path.as_str()) || !seen_errors.insert(r.path.as_str())
            })
            .count();
        if stale > 0 {
            eprintln!(
                "note: {} holds {stale} error records of paths that have a vector or another error record; dropped",
                errors_file.display()
            );
            let mut kept = HashSet::new();
            errors.rewrite(&erecs, |r| {
                !first_of.contains_key(r.path.as_str()) && kept.insert(r.path.clone())
            })?;
        }
        done.extend(first_of.keys().map(|p| p.to_string()));
        done.extend(erecs.into_iter().map(|r| r.path));
        Ok((
            JsonlSink {
                vectors,
                errors,
                last_sync: Instant::now(),
                frames: Arc::default(),
            },
            done,
        ))
    }

    /// Empties the vectors file (its records are safe elsewhere: a Parquet
    /// journal folded into its file).
    pub fn truncate_vectors(&mut self) -> Result<()> {
        let v = &mut self.vectors;
        v.file
            .set_len(0)
            .and_then(|()| v.file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| v.file.sync_data())
            .with_context(|| format!("cannot empty {}", v.path.display()))
    }

    fn maybe_sync(&mut self) -> Result<()> {
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }
}

impl VectorSink for JsonlSink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        super::check_finite(path, vector)?;
        let frame = frame_fields(&self.frames, path);
        let mut line = serde_json::to_vec(&VectorLine {
            path,
            frame,
            vector,
        })?;
        line.push(b'\n');
        self.vectors.append(&line)?;
        self.maybe_sync()
    }

    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        let frame = frame_fields(&self.frames, path);
        let mut line = serde_json::to_vec(&ErrorLine { path, frame, error })?;
        line.push(b'\n');
        self.errors.append(&line)?;
        self.maybe_sync()
    }

    fn write_skipped(&mut self, path: &str, why: &str) -> Result<()> {
        let frame = frame_fields(&self.frames, path);
        let mut line = serde_json::to_vec(&SkippedLine {
            path,
            frame,
            skipped: why,
        })?;
        line.push(b'\n');
        self.errors.append(&line)?;
        self.maybe_sync()
    }

    /// Forces everything written to disk.
    fn sync(&mut self) -> Result<()> {
        self.vectors
            .file
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.vectors.path.display()))?;
        self.errors
            .file
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.errors.path.display()))?;
        self.last_sync = Instant::now();
        Ok(())
    }
}

/// `--output -`: vector and error records as JSONL on standard output, each
/// line flushed as it is written (so a pipe sees every image as it is done).
/// Nothing to resume from: a rerun starts over.
pub struct StdoutSink {
    out: std::io::Stdout,
    frames: Arc<FrameIndex>,
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        StdoutSink {
            out: std::io::stdout(),
            frames: Arc::default(),
        }
    }

    /// Video frames' records get `video`, `t` and `frame` from `frames`.
    pub fn with_frames(mut self, frames: Arc<FrameIndex>) -> Self {
        self.frames = frames;
        self
    }

    fn line(&mut self, record: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut out = self.out.lock();
        out.write_all(&line)
            .and_then(|()| out.flush())
            .context("cannot write to standard output (closed by the reader?)")
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorSink for StdoutSink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        super::check_finite(path, vector)?;
        let frames = self.frames.clone();
        let frame = frame_fields(&frames, path);
        let line = VectorLine {
            path,
            frame,
            vector,
        };
        self.line(&line)
    }

    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        let frames = self.frames.clone();
        let frame = frame_fields(&frames, path);
        let line = ErrorLine { path, frame, error };
        self.line(&line)
    }

    fn write_skipped(&mut self, path: &str, why: &str) -> Result<()> {
        let frames = self.frames.clone();
        let frame = frame_fields(&frames, path);
        let line = SkippedLine {
            path,
            frame,
            skipped: why,
        };
        self.line(&line)
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Reads a vectors JSONL file written by `extract`.
pub fn read_vectors(path: &Path) -> Result<VectorSet> {
    #[derive(serde::Deserialize)]
    struct Line {
        path: String,
        vector: Vec<f32>,
    }
    let file = crate::files::open_regular(path)
        .with_context(|| format!("cannot open the vectors file {}", path.display()))?;
    let mut set = VectorSet {
        paths: Vec::new(),
        data: Vec::new(),
        dim: 0,
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.is_empty() {
            continue;
        }
        let rec: Line = serde_json::from_str(&line).with_context(|| {
            format!(
                "line {} of {} is not a {{\"path\", \"vector\"}} record",
                i + 1,
                path.display()
            )
        })?;
        if set.dim == 0 {
            set.dim = rec.vector.len();
        } else if rec.vector.len() != set.dim {
            bail!(
                "line {} of {} has {} numbers, earlier lines {}",
                i + 1,
                path.display(),
                rec.vector.len(),
                set.dim
            );
        }
        set.paths.push(rec.path);
        set.data.extend_from_slice(&rec.vector);
    }
    Ok(set)
}

/// Reads the `{"path", "error"}` lines of an error file (missing file: none).
pub fn read_errors(path: &Path) -> Result<Vec<(String, String)>> {
    read_records(path, "error")
}

/// Reads the `{"path", "skipped"}` lines of an error file (missing file: none).
pub fn read_skipped(path: &Path) -> Result<Vec<(String, String)>> {
    read_records(path, "skipped")
}

/// The (path, text) of the lines of an error file that hold `key`.
fn read_records(path: &Path, key: &str) -> Result<Vec<(String, String)>> {
    let read = crate::files::open_regular(path).and_then(|mut f| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).map(|_| text)
    });
    let text = match read {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("line {} of {} is not JSON", i + 1, path.display()))?;
        if let (Some(p), Some(e)) = (v["path"].as_str(), v[key].as_str()) {
            out.push((p.to_owned(), e.to_owned()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec512(x: f32) -> Vec<f32> {
        vec![x; 512]
    }

    #[test]
    fn errors_file_sits_beside_out() {
        assert_eq!(
            errors_path(Path::new("/d/vectors.jsonl")),
            Path::new("/d/vectors.errors.jsonl")
        );
        assert_eq!(errors_path(Path::new("out")), Path::new("out.errors.jsonl"));
    }

    #[test]
    fn resume_keeps_complete_lines_and_cuts_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        {
            let (mut sink, done) = JsonlSink::open(&out, false, 512).unwrap();
            assert!(done.is_empty());
            sink.write_vector("a.jpg", &vec512(0.5)).unwrap();
            sink.write_error("b.jpg", "broken").unwrap();
            sink.write_vector("c.jpg", &vec512(0.25)).unwrap();
        }
        // Simulate a kill in the middle of writing d.jpg's line.
        let mut f = OpenOptions::new().append(true).open(&out).unwrap();
        f.write_all(br#"{"path":"d.jpg","vector":[0.1,0.2"#)
            .unwrap();
        drop(f);
        let (mut sink, done) = JsonlSink::open(&out, false, 512).unwrap();
        let mut done: Vec<_> = done.into_iter().collect();
        done.sort();
        assert_eq!(done, vec!["a.jpg", "b.jpg", "c.jpg"]);
        sink.write_vector("d.jpg", &vec512(1.0)).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
    }

    #[test]
    fn skipped_lines_are_done_on_resume_and_read_apart_from_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        {
            let (mut sink, _) = JsonlSink::open(&out, false, 512).unwrap();
            sink.write_vector("a.mp4#t=0.000", &vec512(0.5)).unwrap();
            sink.write_skipped("a.mp4#t=1.000", "static").unwrap();
            sink.write_error("a.mp4#t=2.000", "broken").unwrap();
        }
        let (_, done) = JsonlSink::open(&out, false, 512).unwrap();
        assert_eq!(done.len(), 3);
        let errors = errors_path(&out);
        assert_eq!(
            read_skipped(&errors).unwrap(),
            vec![("a.mp4#t=1.000".to_owned(), "static".to_owned())]
        );
        assert_eq!(
            read_errors(&errors).unwrap(),
            vec![("a.mp4#t=2.000".to_owned(), "broken".to_owned())]
        );
    }

    #[test]
    fn damage_before_the_last_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        let good = serde_json::to_string(&VectorLine {
            path: "a",
            frame: None,
            vector: &vec512(0.0),
        })
        .unwrap();
        std::fs::write(&out, format!("garbage\n{good}\n")).unwrap();
        let err = JsonlSink::open(&out, false, 512).err().unwrap().to_string();
        assert!(err.contains("line 1") && err.contains("--restart"), "{err}");
    }

    #[test]
    fn restart_empties_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        {
            let (mut sink, _) = JsonlSink::open(&out, false, 512).unwrap();
            sink.write_vector("a", &vec512(0.0)).unwrap();
            sink.write_error("b", "x").unwrap();
        }
        let (_, done) = JsonlSink::open(&out, true, 512).unwrap();
        assert!(done.is_empty());
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(errors_path(&out)).unwrap().len(), 0);
    }
}
