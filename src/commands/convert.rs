//! `convert FROM TO`: vectors (and error records) between JSONL, NPY (with
//! its paths file) and PostgreSQL. Writes through the same sinks as
//! `extract`, so it resumes the same way: paths the destination already
//! holds are skipped (`--restart` empties it first). The settings the
//! vectors were made with come along.

use crate::cli::ConvertArgs;
use crate::cli::resolve::Env;
use anyhow::{Result, bail};
use rmac_native::store::{SinkOptions, Target, open_sink, open_source, read_errors, read_settings};
use std::time::Instant;

/// Returns the exit code (0).
pub fn convert(args: &ConvertArgs, env: &Env) -> Result<u8> {
    if args.from == args.to {
        bail!(
            "convert: the source and the destination are the same ({})",
            args.from
        );
    }
    let start = Instant::now();
    let pg = env.pg();
    let (from, to) = (Target::from_path(&args.from), Target::for_output(&args.to)?);
    let source = open_source(&from, &pg)?;
    let errors = read_errors(&from, &pg)?;
    // The settings travel with the vectors, so that the destination still says
    // what made them (and a later `search --image` extracts its queries alike).
    let settings = read_settings(&from, &pg)?;
    // 512 floats, or what the settings say (a reduced PCA, `pca fit --dim`).
    let want = settings.as_ref().map_or(512, |s| s.dimension);
    if !source.is_empty() && source.dim() != want {
        bail!(
            "{} holds {}-float vectors, and {}; convert vectors made by rmac-native",
            args.from,
            source.dim(),
            if settings.is_some() {
                format!("its settings say {want}")
            } else {
                "without settings rmac-native outputs hold 512".to_owned()
            }
        );
    }
    if settings.is_none() && !source.is_empty() {
        eprintln!(
            "note: {from} records no settings (weights, PCA, recipe), so {to} records none either; \
             queries by image will use the defaults or the flags given"
        );
    }
    let options = SinkOptions {
        restart: args.restart,
        settings,
        pg,
        frames: Default::default(),
    };
    let (mut sink, done) = open_sink(&to, None, &options)?;
    let (mut written, mut skipped) = (0usize, 0usize);
    // A path the source holds twice is written once (its first vector).
    let mut seen = std::collections::HashSet::with_capacity(source.len());
    let mut repeated = 0usize;
    for (i, path) in source.paths().iter().enumerate() {
        if done.contains(path) {
            skipped += 1;
            continue;
        }
        if !seen.insert(path.as_str()) {
            repeated += 1;
            continue;
        }
        sink.write_vector(path, source.row(i))?;
        written += 1;
    }
    if repeated > 0 {
        eprintln!(
            "note: {repeated} repeated paths in {from} were written once (their first vector)"
        );
    }
    let mut errors_written = 0;
    for (path, error) in &errors {
        if !done.contains(path) && !seen.contains(path.as_str()) {
            sink.write_error(path, error)?;
            errors_written += 1;
        }
    }
    sink.finish()?;
    drop(sink);
    eprintln!(
        "rmac-native: {} vectors + {} errors from {} → {}: {written} vectors and {errors_written} errors written, \
         {skipped} already there ({:.2} s)",
        source.len(),
        errors.len(),
        from,
        to,
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}
