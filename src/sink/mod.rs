//! Where vectors go: every output format implements [`VectorSink`], so the run
//! loop (local or MPI) never asks which one it has.
pub mod jsonl;
pub mod npy;
pub mod postgres;

use anyhow::Result;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// An output that takes one record per image and can be made durable.
pub trait VectorSink {
    /// The R-MAC vector of `path` (`path` exactly as listed in the input).
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()>;
    /// Why `path` has no vector, in words a person can act on.
    fn write_error(&mut self, path: &str, error: &str) -> Result<()>;
    /// Forces everything written so far to durable storage.
    fn sync(&mut self) -> Result<()>;
}

impl VectorSink for jsonl::JsonlSink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        jsonl::JsonlSink::write_vector(self, path, vector)
    }
    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        jsonl::JsonlSink::write_error(self, path, error)
    }
    fn sync(&mut self) -> Result<()> {
        jsonl::JsonlSink::sync(self)
    }
}

impl VectorSink for npy::NpySink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        npy::NpySink::write_vector(self, path, vector)
    }
    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        npy::NpySink::write_error(self, path, error)
    }
    fn sync(&mut self) -> Result<()> {
        npy::NpySink::sync(self)
    }
}

impl VectorSink for postgres::PgSink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        postgres::PgSink::write_vector(self, path, vector)
    }
    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        postgres::PgSink::write_error(self, path, error)
    }
    fn sync(&mut self) -> Result<()> {
        postgres::PgSink::sync(self)
    }
}

/// What an `--output` names: a `.npy` file, a database, or (anything else) JSONL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Jsonl,
    Npy,
    Postgres,
}

impl OutputKind {
    pub fn of(output: &str) -> OutputKind {
        if postgres::is_database(output) {
            OutputKind::Postgres
        } else if output.to_ascii_lowercase().ends_with(".npy") {
            OutputKind::Npy
        } else {
            OutputKind::Jsonl
        }
    }
}

/// The file next to `path` named like it, without the extension `strip`
/// (when it has it) and with `suffix` added: `sibling("v.jsonl", ".jsonl",
/// ".lock")` is `v.lock`.
pub fn sibling(path: &Path, strip: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(strip).unwrap_or(&name);
    path.with_file_name(format!("{stem}{suffix}"))
}

/// Where the failures of a file output go (`x.jsonl`/`x.npy` → `x.errors.jsonl`).
pub fn errors_file(output: &Path) -> std::path::PathBuf {
    let text = output.to_string_lossy();
    match OutputKind::of(&text) {
        OutputKind::Npy => npy::errors_path(output),
        // Not a file: what messages show for a database output.
        OutputKind::Postgres => {
            format!("{} (table {})", postgres::redact(&text), postgres::ERRORS).into()
        }
        OutputKind::Jsonl => jsonl::errors_path(output),
    }
}

/// How many of `listed` an earlier run of `output` recorded as failed: the
/// complete lines of its error file, or the database's error table.
pub fn failed_before(output: &Path, listed: &[String]) -> Result<usize> {
    let text = output.to_string_lossy();
    let failed: Vec<String> = match OutputKind::of(&text) {
        OutputKind::Postgres => postgres::Db::connect(&text)?
            .read_errors()?
            .into_iter()
            .map(|(path, _)| path)
            .collect(),
        OutputKind::Jsonl | OutputKind::Npy => std::fs::read_to_string(errors_file(output))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["path"].as_str().map(str::to_owned))
            .collect(),
    };
    let listed: HashSet<&str> = listed.iter().map(String::as_str).collect();
    Ok(failed
        .iter()
        .filter(|p| listed.contains(p.as_str()))
        .count())
}

/// Opens the output a run writes to: `output` (a `.jsonl` or `.npy` file, or
/// a `postgresql://` URL) and, with `db`, a database beside it. Returns the
/// sink and the paths already done (resume; empty with `restart`).
/// `settings` (model and preprocessing) are recorded in the database and
/// checked against what it already holds.
pub fn open_sink(
    output: &Path,
    db: Option<&str>,
    restart: bool,
    settings: Option<&serde_json::Value>,
) -> Result<(Box<dyn VectorSink>, HashSet<String>)> {
    let tool = concat!("rmac-native ", env!("CARGO_PKG_VERSION"));
    let text = output.to_string_lossy();
    let (first, done): (Box<dyn VectorSink>, HashSet<String>) = match OutputKind::of(&text) {
        OutputKind::Postgres => {
            let (s, d) = postgres::PgSink::open(&text, restart, tool, settings)?;
            (Box::new(s), d)
        }
        OutputKind::Npy => {
            let (s, d) = npy::NpySink::open(output, restart, 512)?;
            (Box::new(s), d)
        }
        OutputKind::Jsonl => {
            let (s, d) = jsonl::JsonlSink::open(output, restart)?;
            (Box::new(s), d)
        }
    };
    let Some(db) = db else {
        return Ok((first, done));
    };
    let (second, done2) = postgres::PgSink::open(db, restart, tool, settings)?;
    let both: HashSet<String> = done.intersection(&done2).cloned().collect();
    let tee = Tee {
        a: first,
        a_done: done,
        b: Box::new(second),
        b_done: done2,
    };
    Ok((Box::new(tee), both))
}

/// Two sinks fed the same records (`--output FILE --db URL`). A path one of
/// them already holds (an earlier run wrote only there) goes to the other only.
pub struct Tee {
    a: Box<dyn VectorSink>,
    a_done: HashSet<String>,
    b: Box<dyn VectorSink>,
    b_done: HashSet<String>,
}

impl VectorSink for Tee {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        if !self.a_done.contains(path) {
            self.a.write_vector(path, vector)?;
        }
        if !self.b_done.contains(path) {
            self.b.write_vector(path, vector)?;
        }
        Ok(())
    }
    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        if !self.a_done.contains(path) {
            self.a.write_error(path, error)?;
        }
        if !self.b_done.contains(path) {
            self.b.write_error(path, error)?;
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        self.a.sync()?;
        self.b.sync()
    }
}
