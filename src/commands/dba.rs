//! `dba INDEX -k K [--alpha A] --output NEW`: database-side augmentation.
//! Every vector becomes itself plus its exact top-K neighbours (from the kNN
//! engine, the same graph `knn` writes), each weighted by its score to the
//! power alpha, L2-normalised — αQE applied to the database side, with
//! [`rmac_native::search::expand_query`]'s arithmetic (f64 sums). The new
//! vectors go through the sinks `convert` uses, so a rerun resumes; the
//! source's settings come along with `dba` recorded in them.

use super::convert::{Copied, Others, write_vectors};
use super::knn::open_vectors;
use crate::cli::DbaArgs;
use crate::cli::resolve::Env;
use anyhow::{Result, bail};
use rmac_native::knn::Graph;
use rmac_native::run::knn::knn_job;
use rmac_native::search::expand_query;
use rmac_native::store::{SinkOptions, Target, read_settings};
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Instant;

/// The augmented row `i`: itself (weight 1) plus its graph neighbours.
fn augmented(data: &[f32], dim: usize, graph: &Graph, i: usize, alpha: f32) -> Vec<f32> {
    let row = |j: usize| data[j * dim..(j + 1) * dim].to_vec();
    let hits: Vec<(usize, f32)> = graph.row(i).collect();
    expand_query(&row(i), &hits, row, hits.len(), alpha)
}

pub fn dba(args: &DbaArgs, env: &Env) -> Result<u8> {
    if args.k == 0 {
        bail!("-k must be at least 1 (the neighbours added to each vector)");
    }
    if !(args.alpha.is_finite() && args.alpha >= 0.0) {
        bail!(
            "--alpha takes a number ≥ 0 (0: every neighbour weighs 1), not {}",
            args.alpha
        );
    }
    if args.index == args.output {
        bail!(
            "dba: the source and the destination are the same ({}); write the new vectors elsewhere",
            args.index
        );
    }
    let start = Instant::now();
    let pg = env.pg();
    let (from, to) = (
        Target::from_path(&args.index),
        Target::for_output(&args.output)?,
    );
    let source = open_vectors(&args.index, env)?;
    let (n, dim) = (source.len(), source.dim());
    if n < 2 {
        bail!(
            "{} holds {n} vector(s): database-side augmentation needs at least 2",
            args.index
        );
    }
    let others = Others::read(&from, &pg)?;
    let settings = read_settings(&from, &pg)?.map(|mut s| {
        s.dba = Some(format!("k={},alpha={}", args.k, args.alpha));
        s
    });
    // The kNN run's state files (a killed run resumes by block) sit beside a
    // file output; a database output keeps them in the current folder.
    let state = match to.file() {
        Some(f) => f.to_path_buf(),
        None => PathBuf::from("rmac-native-dba"),
    };
    let job = crate::cli::resolve::knn_job(&args.engine, args.k, &state, env)?;
    let options = SinkOptions {
        restart: args.restart,
        settings,
        pg,
        frames: Default::default(),
        dimension: Some(dim),
    };
    let mut copied = None;
    let report = knn_job(&job, source.data(), dim, source.paths(), &mut |graph, _| {
        let data = source.data();
        copied = Some(write_vectors(
            source.as_ref(),
            &others,
            &to,
            &options,
            &|i| Cow::Owned(augmented(data, dim, graph, i, args.alpha)),
        )?);
        Ok(())
    })?;
    let Some(Copied {
        written,
        skipped,
        errors_written,
        ..
    }) = copied
    else {
        bail!("internal error: the kNN run ended without a graph");
    };
    eprintln!(
        "rmac-native dba: {n} vectors × {dim}, each + its {} nearest (alpha {}), graph in {:.1} s ({}) → {to}: \
         {written} vectors and {errors_written} errors written, {skipped} already there ({:.1} s in all)",
        report.graph_k,
        args.alpha,
        report.seconds,
        report.device,
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}
