//! `knn INDEX -k K --output G`: every vector's K most similar others, exact
//! ([`rmac_native::knn`]), written as NPY (`G.idx.npy`, `G.score.npy`,
//! `G.paths.txt`) or JSONL (`G.jsonl`).

use crate::cli::KnnArgs;
use crate::cli::resolve::Env;
use anyhow::{Context, Result, bail};
use rmac_native::knn::{Graph, Tiling, knn as knn_graph};
use rmac_native::store::npy::{write_matrix, write_paths};
use rmac_native::store::{Target, VectorSource, open_source};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reports rows done on stderr: a line at most every 10 s (and at the end),
/// with the rate and the time left.
pub fn row_progress(what: &'static str, total: usize) -> impl Fn(usize) + Sync {
    let start = Instant::now();
    let last = Mutex::new(Instant::now());
    move |done: usize| {
        let mut last = last.lock().unwrap();
        if done < total && last.elapsed() < Duration::from_secs(10) {
            return;
        }
        *last = Instant::now();
        let s = start.elapsed().as_secs_f64();
        // The tiles of the first rows are the widest (all later rows): the ETA is pessimistic early on.
        let work_done = 1.0 - (1.0 - done as f64 / total.max(1) as f64).powi(2);
        let eta = if work_done > 0.0 {
            s / work_done - s
        } else {
            0.0
        };
        eprintln!(
            "{what}: {done}/{total} rows ({:.1}% of the pairs), {s:.0} s, about {eta:.0} s left",
            100.0 * work_done
        );
    }
}

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
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let source = open_vectors(&args.index, env)?;
    let (n, dim) = (source.len(), source.dim());
    let threads = rayon::current_num_threads();
    let tiling = Tiling::for_budget(args.memory, n, args.k.min(n.saturating_sub(1)), threads);
    let needed = tiling.bytes(n, args.k.min(n.saturating_sub(1)), threads);
    if needed > args.memory {
        bail!(
            "the graph of {n} × {} neighbours needs {:.0} MiB with the smallest tiles; raise --memory (now {:.0} MiB) or lower -k",
            args.k,
            needed as f64 / 1048576.0,
            args.memory as f64 / 1048576.0
        );
    }
    let start = Instant::now();
    let graph = knn_graph(source.data(), dim, args.k, tiling, &row_progress("knn", n));
    let seconds = start.elapsed().as_secs_f64();
    write_graph(&args.output, source.paths(), &graph)?;
    eprintln!(
        "rmac-native knn: {n} vectors × {dim}, k = {}: {:.1} s, {:.1} GFLOP/s (tiles of {} rows, {threads} threads) → {}",
        graph.k,
        seconds,
        n as f64 * n as f64 * dim as f64 / seconds.max(1e-9) / 1e9,
        tiling.rows,
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
