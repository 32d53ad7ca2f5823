//! `convert FROM TO`: vectors (and error records) between JSONL, NPY (with
//! its paths file) and PostgreSQL. Writes through the same sinks as
//! `extract`, so it resumes the same way: paths the destination already
//! holds are skipped (`--restart` empties it first). The settings the
//! vectors were made with come along.

use crate::cli::ConvertArgs;
use crate::cli::resolve::Env;
use anyhow::{Result, bail};
use rmac_native::store::VectorSource;
use rmac_native::store::{
    SinkOptions, Target, open_sink, open_source, read_errors, read_settings, read_skipped,
};
use std::borrow::Cow;
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
    let others = Others::read(&from, &pg)?;
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
        dimension: Some(source.dim()),
    };
    let copied = write_vectors(source.as_ref(), &others, &to, &options, &|i| {
        Cow::Borrowed(source.row(i))
    })?;
    let Copied {
        written,
        skipped,
        errors_written,
        static_written,
    } = copied;
    let frames = if others.skipped.is_empty() {
        String::new()
    } else {
        format!(
            " + {} frames skipped as static ({static_written} written)",
            others.skipped.len()
        )
    };
    eprintln!(
        "rmac-native: {} vectors + {} errors{frames} from {} → {}: {written} vectors and {errors_written} errors written, \
         {skipped} already there ({:.2} s)",
        source.len(),
        others.errors.len(),
        from,
        to,
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// A source's records that are not vectors, carried along with them.
pub struct Others {
    /// (path, error): the failures.
    pub errors: Vec<(String, String)>,
    /// (path, reason): video frames `--skip-static` skipped.
    pub skipped: Vec<(String, String)>,
}

impl Others {
    pub fn read(from: &Target, pg: &rmac_native::store::postgres::PgOptions) -> Result<Others> {
        Ok(Others {
            errors: read_errors(from, pg)?,
            skipped: read_skipped(from, pg)?,
        })
    }
}

/// What [`write_vectors`] wrote.
pub struct Copied {
    pub written: usize,
    /// Paths the destination already held (a resume).
    pub skipped: usize,
    pub errors_written: usize,
    /// Skipped-frame records (`--skip-static`) written.
    pub static_written: usize,
}

/// Writes each path of `source` once (its first row) with `vector(row)` to
/// `to`, then the error and skipped records, skipping what `to` already
/// holds: `convert` (the rows as they are) and `dba` (each row augmented)
/// resume the same way.
pub fn write_vectors<'s>(
    source: &'s dyn VectorSource,
    others: &Others,
    to: &Target,
    options: &SinkOptions,
    vector: &(dyn Fn(usize) -> Cow<'s, [f32]> + Sync),
) -> Result<Copied> {
    let (mut sink, done) = open_sink(to, None, options)?;
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
        sink.write_vector(path, &vector(i))?;
        written += 1;
    }
    if repeated > 0 {
        eprintln!("note: {repeated} repeated paths were written once (their first vector)");
    }
    let mut errors_written = 0;
    for (path, error) in &others.errors {
        if !done.contains(path) && !seen.contains(path.as_str()) {
            sink.write_error(path, error)?;
            errors_written += 1;
        }
    }
    let mut static_written = 0;
    for (path, why) in &others.skipped {
        if !done.contains(path) && !seen.contains(path.as_str()) {
            sink.write_skipped(path, why)?;
            static_written += 1;
        }
    }
    sink.finish()?;
    Ok(Copied {
        written,
        skipped,
        errors_written,
        static_written,
    })
}
