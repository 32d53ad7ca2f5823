//! `convert FROM TO`: vectors (and error records) between JSONL, NPY (with
//! its paths file) and PostgreSQL. Writes through the same sinks as
//! `extract`, so it resumes the same way: paths the destination already
//! holds are skipped (`--restart` empties it first).

use crate::cli::ConvertArgs;
use crate::search::{open_vectors, read_errors_file};
use crate::sink::postgres::Db;
use crate::sink::{OutputKind, errors_file, open_sink};
use anyhow::{Result, bail};
use std::path::Path;
use std::time::Instant;

/// The error records that come with a vectors source.
fn source_errors(from: &str) -> Result<Vec<(String, String)>> {
    match OutputKind::of(from) {
        OutputKind::Postgres => Db::connect(from)?.read_errors(),
        _ => read_errors_file(&errors_file(Path::new(from))),
    }
}

/// Returns the exit code (0).
pub fn convert(args: &ConvertArgs) -> Result<u8> {
    if args.from == args.to {
        bail!(
            "convert: the source and the destination are the same ({})",
            args.from
        );
    }
    let start = Instant::now();
    let source = open_vectors(&args.from)?;
    if !source.is_empty() && source.dim() != 512 {
        bail!(
            "{} holds {}-float vectors; rmac-native outputs hold 512",
            args.from,
            source.dim()
        );
    }
    let errors = source_errors(&args.from)?;
    let (mut sink, done) = open_sink(Path::new(&args.to), None, args.restart, None)?;
    let (mut written, mut skipped) = (0usize, 0usize);
    for (i, path) in source.paths().iter().enumerate() {
        if done.contains(path) {
            skipped += 1;
            continue;
        }
        sink.write_vector(path, source.row(i))?;
        written += 1;
    }
    let mut errors_written = 0;
    for (path, error) in &errors {
        if !done.contains(path) {
            sink.write_error(path, error)?;
            errors_written += 1;
        }
    }
    sink.sync()?;
    drop(sink);
    eprintln!(
        "rmac-native: {} vectors + {} errors from {} → {}: {written} vectors and {errors_written} errors written, \
         {skipped} already there ({:.2} s)",
        source.len(),
        errors.len(),
        crate::sink::postgres::redact(&args.from),
        crate::sink::postgres::redact(&args.to),
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}
