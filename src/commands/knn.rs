//! `knn INDEX -k K --output G`: every vector's K most similar others, exact
//! ([`rmac_native::knn`]), written as NPY (`G.idx.npy`, `G.score.npy`,
//! `G.paths.txt`) or JSONL (`G.jsonl`).

use crate::cli::KnnArgs;
use crate::cli::resolve::Env;
use anyhow::{Context, Result, bail};
use rmac_native::knn::Graph;
use rmac_native::run::knn::knn_job;
use rmac_native::store::npy::{write_matrix, write_paths};
use rmac_native::store::{Target, VectorSource, open_source};
use std::path::{Path, PathBuf};

/// Opens INDEX and checks what every all-pairs command needs.
pub fn open_vectors(index: &str, env: &Env) -> Result<Box<dyn VectorSource>> {
    let source = open_source(&Target::from_path(index), &env.pg())?;
    if source.len() > u32::MAX as usize {
        bail!(
            "{index} holds {} vectors; at most {} are supported",
            source.len(),
            u32::MAX
        );
    }
    Ok(source)
}

/// `G.npy` and `G` both mean the files `G.idx.npy`, `G.score.npy`, `G.paths.txt`.
fn npy_stem(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let stem = name.strip_suffix(".npy").unwrap_or(&name).to_owned();
    out.with_file_name(stem)
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn knn(args: &KnnArgs, env: &Env) -> Result<()> {
    let job = crate::cli::resolve::knn_job(&args.engine, args.k, &args.output, env)?;
    let source = open_vectors(&args.index, env)?;
    let (n, dim) = (source.len(), source.dim());
    let report = knn_job(&job, source.data(), dim, source.paths(), &mut |graph, _| {
        write_graph(&args.output, source.paths(), graph)
    })?;
    eprintln!(
        "rmac-native knn: {n} vectors × {dim}, k = {}: {:.1} s, {:.1} GFLOP/s{} (tiles of {} rows, {} × {} threads, {}) → {}",
        report.graph_k,
        report.seconds,
        // N²·D per second, as the benchmark and dense GEMM count the all-pairs work
        // (each pair is scored once, `dim` multiplies and `dim` adds), for the share
        // of the pairs this run scored (a resumed run skips the finished blocks').
        n as f64 * n as f64 * dim as f64 * report.pairs as f64
            / report.all_pairs.max(1) as f64
            / report.seconds.max(1e-9)
            / 1e9,
        if report.resumed_blocks > 0 {
            format!(
                ", {} of {} blocks resumed",
                report.resumed_blocks, report.blocks
            )
        } else {
            String::new()
        },
        report.tile_rows,
        report.ranks,
        report.threads,
        report.device,
        args.output.display()
    );
    Ok(())
}

fn write_graph(out: &Path, paths: &[String], g: &Graph) -> Result<()> {
    let is_jsonl = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    if is_jsonl {
        // Streamed: at a million rows the text is hundreds of MiB.
        return rmac_native::files::write_atomically_with(out, &mut |w| {
            for i in 0..g.n {
                let neighbours: Vec<(&str, f32)> =
                    g.row(i).map(|(j, s)| (paths[j].as_str(), s)).collect();
                serde_json::to_writer(
                    &mut *w,
                    &serde_json::json!({"path": paths[i], "neighbours": neighbours}),
                )?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
        .with_context(|| format!("cannot write {}", out.display()));
    }
    let stem = npy_stem(out);
    write_matrix(
        &with_suffix(&stem, ".idx.npy"),
        "<i4",
        g.n,
        g.k,
        g.idx.iter().map(|&i| (i as i32).to_le_bytes()),
    )?;
    write_matrix(
        &with_suffix(&stem, ".score.npy"),
        "<f4",
        g.n,
        g.k,
        g.score.iter().map(|s| s.to_le_bytes()),
    )?;
    write_paths(&with_suffix(&stem, ".paths.txt"), paths)
}
