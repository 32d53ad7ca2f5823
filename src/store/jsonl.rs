//! JSONL output: `OUT` holds `{"path", "vector"}` lines, the error file beside
//! it `{"path", "error"}` lines. Both are append-only and flushed line by line,
//! so a killed run loses at most the line in flight; on restart a torn last
//! line is cut off and every complete line counts as done.

use super::{VectorSet, VectorSink};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often written lines are forced to disk (a crash of the process loses
/// nothing flushed; this bounds what a power or node loss can take).
const SYNC_EVERY: Duration = Duration::from_secs(10);

#[derive(Serialize)]
struct VectorLine<'a> {
    path: &'a str,
    vector: &'a [f32],
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    path: &'a str,
    error: &'a str,
}

/// What resuming needs from a line: its path (and that it parses).
#[derive(Deserialize)]
struct AnyLine {
    path: String,
    vector: Option<Vec<f32>>,
    error: Option<String>,
}

/// `vectors.jsonl` → `vectors.errors.jsonl` (docs/contract.md#outputs: the error file beside OUT).
pub fn errors_path(out: &Path) -> PathBuf {
    super::companions::jsonl_errors_path(out)
}

/// One append-only JSONL file.
struct LineFile {
    path: PathBuf,
    file: File,
}

impl LineFile {
    /// Opens for appending; returns the paths of the complete lines already in
    /// it after cutting a torn last line. `want_vector`: lines must hold a
    /// 512-float vector (OUT) or an error text (the error file).
    fn open_resume(path: &Path, want_vector: bool, restart: bool) -> Result<(Self, Vec<String>)> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open {} for writing (check the folder exists and is writable)",
                    path.display()
                )
            })?;
        if restart {
            file.set_len(0)
                .with_context(|| format!("cannot truncate {}", path.display()))?;
            return Ok((
                LineFile {
                    path: path.to_path_buf(),
                    file,
                },
                Vec::new(),
            ));
        }
        let mut done = Vec::new();
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&file);
        reader.seek(SeekFrom::Start(0))?;
        let mut line = Vec::new();
        let mut number = 0;
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
            let parsed = serde_json::from_slice::<AnyLine>(&line).ok().filter(|l| {
                if want_vector {
                    l.vector.as_ref().is_some_and(|v| v.len() == 512)
                } else {
                    l.error.is_some()
                }
            });
            match (complete, parsed) {
                (true, Some(l)) => {
                    done.push(l.path);
                    good_len += n as u64;
                }
                _ => {
                    // Only the last line can be torn by a kill; anything else is damage
                    // we must not silently throw away.
                    let rest = reader.fill_buf()?.is_empty();
                    if !rest {
                        bail!(
                            "line {number} of {} is not a valid record, and more lines follow it; \
                             repair the file or start over with --restart",
                            path.display()
                        );
                    }
                    file.set_len(good_len).with_context(|| {
                        format!("cannot cut the torn last line of {}", path.display())
                    })?;
                    eprintln!(
                        "note: {}: cut a torn last line (line {number}); that image is done again",
                        path.display()
                    );
                    break;
                }
            }
        }
        Ok((
            LineFile {
                path: path.to_path_buf(),
                file,
            },
            done,
        ))
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
}

impl JsonlSink {
    /// Opens both files; with `restart` they are emptied, otherwise the paths
    /// already written (as vectors or as errors) are returned.
    pub fn open(out: &Path, restart: bool) -> Result<(Self, HashSet<String>)> {
        let (vectors, mut done) = LineFile::open_resume(out, true, restart)?;
        let (errors, failed) = LineFile::open_resume(&errors_path(out), false, restart)?;
        done.extend(failed);
        Ok((
            JsonlSink {
                vectors,
                errors,
                last_sync: Instant::now(),
            },
            done.into_iter().collect(),
        ))
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
        let mut line = serde_json::to_vec(&VectorLine { path, vector })?;
        line.push(b'\n');
        self.vectors.append(&line)?;
        self.maybe_sync()
    }

    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        let mut line = serde_json::to_vec(&ErrorLine { path, error })?;
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

/// Reads a vectors JSONL file written by `extract`.
pub fn read_vectors(path: &Path) -> Result<VectorSet> {
    #[derive(serde::Deserialize)]
    struct Line {
        path: String,
        vector: Vec<f32>,
    }
    let file = std::fs::File::open(path)
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
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("line {} of {} is not JSON", i + 1, path.display()))?;
        if let (Some(p), Some(e)) = (v["path"].as_str(), v["error"].as_str()) {
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
            let (mut sink, done) = JsonlSink::open(&out, false).unwrap();
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
        let (mut sink, done) = JsonlSink::open(&out, false).unwrap();
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
    fn damage_before_the_last_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        let good = serde_json::to_string(&VectorLine {
            path: "a",
            vector: &vec512(0.0),
        })
        .unwrap();
        std::fs::write(&out, format!("garbage\n{good}\n")).unwrap();
        let err = JsonlSink::open(&out, false).err().unwrap().to_string();
        assert!(err.contains("line 1") && err.contains("--restart"), "{err}");
    }

    #[test]
    fn restart_empties_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("v.jsonl");
        {
            let (mut sink, _) = JsonlSink::open(&out, false).unwrap();
            sink.write_vector("a", &vec512(0.0)).unwrap();
            sink.write_error("b", "x").unwrap();
        }
        let (_, done) = JsonlSink::open(&out, true).unwrap();
        assert!(done.is_empty());
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(errors_path(&out)).unwrap().len(), 0);
    }
}
