//! The vector formats, one module each, and everything that names or guards
//! their files. Every format writes itself through [`VectorSink`] (so the run
//! loop never asks which one it has) and reads itself through
//! [`VectorSource`] (so `search`, `convert` and later readers never parse a
//! file of their own). Where vectors go or come from is a [`Target`], parsed
//! once at the edge.
//!
//! * [`jsonl`]: `{"path", "vector"}` lines + the error file.
//! * [`npy`]: float32 N×D NumPy matrix + `.paths.txt` + the error file.
//! * [`parquet`]: `path` + `vector` columns, settings in the metadata, + the error file.
//! * [`postgres`]: pgvector tables (writing, querying, indexes).
//! * [`companions`]: the names of the files beside an output; [`settings`]:
//!   the settings file that keeps a resume from mixing recipes; [`lock`]: one
//!   run per output.
pub mod companions;
pub mod jsonl;
pub mod lock;
pub mod npy;
pub mod parquet;
pub mod postgres;
pub mod settings;

use anyhow::Result;
use postgres::PgOptions;
use settings::RunSettings;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where vectors are written or read: a JSONL file, an NPY file (with its
/// paths file), or a PostgreSQL database (URL or libpq `key=value` string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Jsonl(PathBuf),
    Npy(PathBuf),
    Parquet(PathBuf),
    Postgres(String),
    /// `--output -`: JSONL records (vectors and errors) on standard output.
    Stdout,
}

impl Target {
    /// What a command-line value names: a database (`postgresql://…`,
    /// `postgres://…`, `host=… dbname=…`), a `.npy` file, or (anything else) JSONL.
    pub fn from_path(value: impl Into<PathBuf>) -> Target {
        let path: PathBuf = value.into();
        let text = path.to_string_lossy();
        if postgres::is_database(&text) {
            Target::Postgres(text.into_owned())
        } else if text.to_ascii_lowercase().ends_with(".npy") {
            Target::Npy(path)
        } else if text.to_ascii_lowercase().ends_with(".parquet") {
            Target::Parquet(path)
        } else {
            Target::Jsonl(path)
        }
    }

    /// A target to write: as [`Self::from_path`], but a file whose extension is
    /// neither `.jsonl` nor `.npy` is refused (rather than silently written as
    /// JSONL under a name that promises another format).
    pub fn for_output(value: impl Into<PathBuf>) -> Result<Target> {
        let value: PathBuf = value.into();
        if value.as_os_str() == "-" {
            return Ok(Target::Stdout);
        }
        let target = Target::from_path(value);
        if let Target::Jsonl(p) = &target
            && let Some(ext) = p.extension()
            && !ext.eq_ignore_ascii_case("jsonl")
        {
            anyhow::bail!(
                "{}: unknown output format `.{}`; rmac-native writes .jsonl, .npy, .parquet, a PostgreSQL \
                 database (postgresql://…) or - (JSONL on standard output)",
                p.display(),
                ext.to_string_lossy()
            );
        }
        Ok(target)
    }

    /// The file of a file target.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Target::Jsonl(p) | Target::Npy(p) | Target::Parquet(p) => Some(p),
            Target::Postgres(_) | Target::Stdout => None,
        }
    }

    pub fn is_database(&self) -> bool {
        matches!(self, Target::Postgres(_))
    }

    /// The same target with a file's path made absolute and every symlink
    /// resolved (the file's own, when it exists, and its folder's), so that
    /// two names for one file share one lock and one set of companions.
    pub fn canonical(&self) -> std::io::Result<Target> {
        let resolve = |p: &Path| -> std::io::Result<PathBuf> {
            match std::fs::canonicalize(p) {
                Ok(c) => Ok(c),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
                    let dir = std::fs::canonicalize(dir.unwrap_or(Path::new(".")))?;
                    Ok(dir.join(p.file_name().unwrap_or_default()))
                }
                Err(e) => Err(e),
            }
        };
        Ok(match self {
            Target::Jsonl(p) => Target::Jsonl(resolve(p)?),
            Target::Npy(p) => Target::Npy(resolve(p)?),
            Target::Parquet(p) => Target::Parquet(resolve(p)?),
            Target::Postgres(url) => Target::Postgres(url.clone()),
            Target::Stdout => Target::Stdout,
        })
    }

    /// Where the failures go: the error file beside a file output, or (for
    /// messages) the database's error table.
    pub fn errors(&self) -> PathBuf {
        match self {
            Target::Jsonl(p) | Target::Npy(p) | Target::Parquet(p) => companions::errors_path(p),
            Target::Postgres(url) => {
                format!("{} (table {})", postgres::redact(url), postgres::ERRORS).into()
            }
            Target::Stdout => "the \"error\" records on standard output".into(),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Target::from_path(s))
    }
}

/// A file target as its path, a database with its password hidden.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Jsonl(p) | Target::Npy(p) | Target::Parquet(p) => write!(f, "{}", p.display()),
            Target::Postgres(url) => f.write_str(&postgres::redact(url)),
            Target::Stdout => f.write_str("standard output"),
        }
    }
}

/// An output that takes one record per image and can be made durable.
pub trait VectorSink {
    /// The R-MAC vector of `path` (`path` exactly as listed in the input).
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()>;
    /// Why `path` has no vector, in words a person can act on.
    fn write_error(&mut self, path: &str, error: &str) -> Result<()>;
    /// `path` (a video frame) was skipped as static (`--skip-static`), and why:
    /// a record beside the error records, marked as skipped, so that a resume
    /// counts it as done and nobody counts it as a failure.
    fn write_skipped(&mut self, path: &str, why: &str) -> Result<()>;
    /// Forces everything written so far to durable storage.
    fn sync(&mut self) -> Result<()>;
    /// The run is over: complete the output (a Parquet file gets its rows and
    /// footer) and make it durable.
    fn finish(&mut self) -> Result<()> {
        self.sync()
    }
}

/// Refuses a vector with a NaN or an infinity: no output may hold one (JSON would
/// write `null`, which every reader then rejects; a NaN row would rank first
/// for every query).
pub fn check_finite(path: &str, vector: &[f32]) -> Result<()> {
    match vector.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => anyhow::bail!(
            "the vector of {path} holds {} at component {i}; vectors with NaN or infinite values are never written",
            vector[i]
        ),
    }
}

/// Vectors read back: paths and a row-major matrix, in file order. Shared
/// between threads by `serve`.
pub trait VectorSource: Send + Sync {
    fn paths(&self) -> &[String];
    /// Row-major `[len, dim]`.
    fn data(&self) -> &[f32];
    fn dim(&self) -> usize;

    fn len(&self) -> usize {
        self.paths().len()
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn row(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.data()[i * d..(i + 1) * d]
    }
    /// Row `i` copied into `out` (`dim` floats): for a memory-mapped file, a
    /// read that does not map its pages (see [`npy::MappedNpy::read_row`]).
    fn read_row(&self, i: usize, out: &mut [f32]) {
        out.copy_from_slice(self.row(i));
    }
    /// Row `i`, copied as [`VectorSource::read_row`] copies it.
    fn row_owned(&self, i: usize) -> Vec<f32> {
        let mut v = vec![0.0; self.dim()];
        self.read_row(i, &mut v);
        v
    }
    /// Row of `path` (first occurrence).
    fn find(&self, path: &str) -> Option<usize> {
        self.paths().iter().position(|p| p == path)
    }
}

/// Paths and their vectors held in memory (JSONL, PostgreSQL).
#[derive(Clone, Debug, Default)]
pub struct VectorSet {
    pub paths: Vec<String>,
    /// Row-major `[paths.len(), dim]`.
    pub data: Vec<f32>,
    pub dim: usize,
}

impl VectorSet {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

impl VectorSource for VectorSet {
    fn paths(&self) -> &[String] {
        &self.paths
    }
    fn data(&self) -> &[f32] {
        &self.data
    }
    fn dim(&self) -> usize {
        self.dim
    }
}

/// Opens vectors to read: `x.npy` mapped (no copy; paths from `x.paths.txt`),
/// a database read whole, or a JSONL file read whole.
pub fn open_source(target: &Target, pg: &PgOptions) -> Result<Box<dyn VectorSource>> {
    Ok(match target {
        Target::Npy(path) => Box::new(npy::MappedVectors::open(path)?),
        Target::Postgres(url) => {
            let (paths, data) = postgres::Db::connect(url, pg)?.read_all()?;
            Box::new(VectorSet {
                paths,
                data,
                dim: postgres::DIM,
            })
        }
        Target::Jsonl(path) => Box::new(jsonl::read_vectors(path)?),
        Target::Parquet(path) => Box::new(parquet::read_vectors(path)?),
        Target::Stdout => anyhow::bail!("vectors cannot be read from standard output"),
    })
}

/// Any source read whole into memory (for the commands that need owned rows).
pub fn read_set(target: &Target, pg: &PgOptions) -> Result<VectorSet> {
    match target {
        Target::Jsonl(path) => jsonl::read_vectors(path),
        _ => {
            let s = open_source(target, pg)?;
            Ok(VectorSet {
                paths: s.paths().to_vec(),
                data: s.data().to_vec(),
                dim: s.dim(),
            })
        }
    }
}

/// The settings the vectors of `target` were made with ([`SinkOptions::settings`]),
/// or `None` when it records none.
pub fn read_settings(target: &Target, pg: &PgOptions) -> Result<Option<RunSettings>> {
    match target {
        Target::Postgres(url) => postgres::Db::connect(url, pg)?.read_settings(),
        Target::Jsonl(p) | Target::Npy(p) => RunSettings::read_beside(p),
        // The file's own metadata first: it travels with the file.
        Target::Parquet(p) => match parquet::read_settings(p)? {
            Some(s) => Ok(Some(s)),
            None => RunSettings::read_beside(p),
        },
        Target::Stdout => Ok(None),
    }
}

/// The error records that come with a vectors source (a missing error file: none).
pub fn read_errors(target: &Target, pg: &PgOptions) -> Result<Vec<(String, String)>> {
    match target {
        Target::Postgres(url) => postgres::Db::connect(url, pg)?.read_errors(),
        Target::Jsonl(_) | Target::Npy(_) | Target::Parquet(_) => {
            jsonl::read_errors(&target.errors())
        }
        Target::Stdout => Ok(Vec::new()),
    }
}

/// The skipped records (`--skip-static`) that come with a vectors source, as
/// (path, why): the `skipped` lines of its error file, or table `rmac_skipped`.
pub fn read_skipped(target: &Target, pg: &PgOptions) -> Result<Vec<(String, String)>> {
    match target {
        Target::Postgres(url) => postgres::Db::connect(url, pg)?.read_skipped(),
        Target::Jsonl(_) | Target::Npy(_) | Target::Parquet(_) => {
            jsonl::read_skipped(&target.errors())
        }
        Target::Stdout => Ok(Vec::new()),
    }
}

/// How many of `listed` an earlier run of `target` recorded as failed: the
/// complete lines of its error file, or the database's error table.
pub fn failed_before(target: &Target, listed: &[String], pg: &PgOptions) -> Result<usize> {
    let failed: Vec<String> = match target {
        Target::Postgres(url) => postgres::Db::connect(url, pg)?
            .read_errors()?
            .into_iter()
            .map(|(path, _)| path)
            .collect(),
        Target::Jsonl(_) | Target::Npy(_) | Target::Parquet(_) => {
            std::fs::read_to_string(target.errors())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                // Skipped frames (`--skip-static`) share the file and are no failures.
                .filter(|v| v.get("skipped").is_none())
                .filter_map(|v| v["path"].as_str().map(str::to_owned))
                .collect()
        }
        Target::Stdout => Vec::new(),
    };
    let listed: HashSet<&str> = listed.iter().map(String::as_str).collect();
    Ok(failed
        .iter()
        .filter(|p| listed.contains(p.as_str()))
        .count())
}

/// How an output is opened.
#[derive(Clone, Debug, Default)]
pub struct SinkOptions {
    /// Empty the output first instead of resuming.
    pub restart: bool,
    /// What made the vectors: checked against what the output already holds
    /// (a resume with other settings is refused) and recorded with it — in the
    /// settings file beside a file output ([`settings`]), in table `rmac_runs`
    /// of a database. `None` (a `convert` from vectors that record none)
    /// records nothing.
    pub settings: Option<RunSettings>,
    pub pg: PgOptions,
    /// The video frames among the paths (JSONL records get `video`, `t`, `frame`).
    pub frames: std::sync::Arc<crate::video::FrameIndex>,
    /// Floats per vector when `settings` say nothing (a `convert` or `dba` of
    /// vectors that record no settings: the source's); else 512.
    pub dimension: Option<usize>,
}

/// Opens the output a run writes to, and with `db` a database beside it.
/// Returns the sink and the paths already done (resume; empty with `restart`).
pub fn open_sink(
    target: &Target,
    db: Option<&str>,
    options: &SinkOptions,
) -> Result<(Box<dyn VectorSink>, HashSet<String>)> {
    let tool = concat!("rmac-native ", env!("CARGO_PKG_VERSION"));
    let settings = options.settings.as_ref();
    let restart = options.restart;
    // Floats per vector: 512, or a reduced PCA's dimension (`pca fit --dim`).
    let dim = settings
        .map(|s| s.dimension)
        .or(options.dimension)
        .unwrap_or(crate::vgg16::spec::FEATURE_DIM);
    for file in target.file().into_iter().flat_map(|f| {
        let mut all = companions::all(f);
        all.insert(0, f.to_path_buf());
        all
    }) {
        crate::files::check_destination(&file)?;
    }
    let (first, done): (Box<dyn VectorSink>, HashSet<String>) = match target {
        Target::Postgres(url) => {
            let (s, d) = postgres::PgSink::open(url, restart, tool, settings, &options.pg)?;
            (Box::new(s), d)
        }
        Target::Npy(path) => {
            let (s, d) = npy::NpySink::open(path, restart, dim)?;
            (Box::new(s), d)
        }
        Target::Jsonl(path) => {
            let (s, d) = jsonl::JsonlSink::open(path, restart, dim)?;
            (Box::new(s.with_frames(options.frames.clone())), d)
        }
        Target::Parquet(path) => {
            let (s, d) = parquet::ParquetSink::open(path, restart, dim, settings.cloned())?;
            (Box::new(s), d)
        }
        Target::Stdout => (
            Box::new(jsonl::StdoutSink::new().with_frames(options.frames.clone())),
            HashSet::new(),
        ),
    };
    if let (Some(out), Some(settings)) = (target.file(), settings) {
        settings.check_and_write(out, done.len(), restart)?;
    }
    let Some(db) = db else {
        return Ok((first, done));
    };
    let (second, done2) = postgres::PgSink::open(db, restart, tool, settings, &options.pg)?;
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
struct Tee {
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
    fn write_skipped(&mut self, path: &str, why: &str) -> Result<()> {
        if !self.a_done.contains(path) {
            self.a.write_skipped(path, why)?;
        }
        if !self.b_done.contains(path) {
            self.b.write_skipped(path, why)?;
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        self.a.sync()?;
        self.b.sync()
    }
    fn finish(&mut self) -> Result<()> {
        self.a.finish()?;
        self.b.finish()
    }
}
