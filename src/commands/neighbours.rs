//! `neighbours`: each image's nearest neighbours in a vectors file.

use crate::cli::NeighboursArgs;
use crate::cli::resolve::Env;
use anyhow::Result;
use rmac_native::knn::int8::{Int8Kernel, cannot_run, knn_int8};
use rmac_native::knn::{Tiling, knn};
use rmac_native::store::{Target, open_source};
use std::io::Write;

/// `neighbours`: each image's top-k by inner product, from any vectors source,
/// as a table or (`--json`) one JSON object per image.
pub fn neighbours(args: &NeighboursArgs, env: &Env) -> Result<()> {
    let set = open_source(&Target::from_path(&args.vectors), &env.pg())?;
    // The kNN engine: every pair scored once, bit-identical to `search`'s scores.
    let n = set.len();
    let threads = rayon::current_num_threads();
    let k = args.k.min(n.saturating_sub(1));
    let (dim, tiling) = (set.dim(), Tiling::for_budget(1 << 30, n, k, threads));
    // The 8-bit pre-filter where the CPU has it and its copies fit the budget: the same graph.
    let graph = match Int8Kernel::detect() {
        Some(kernel) if cannot_run(n, dim, tiling.bytes(n, k, threads), 1 << 30).is_none() => {
            knn_int8(set.data(), dim, k, tiling, kernel)
        }
        _ => knn(set.data(), dim, k, tiling, &|_| {}),
    };
    let paths = set.paths();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for i in 0..n {
        let hits: Vec<(usize, f32)> = graph.row(i).collect();
        if args.json {
            let neighbours: Vec<serde_json::Value> = hits
                .iter()
                .enumerate()
                .map(|(r, &(j, score))| {
                    serde_json::json!({"rank": r + 1, "path": paths[j], "score": score})
                })
                .collect();
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"path": paths[i], "neighbours": neighbours}),
            )?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", paths[i])?;
            for (j, score) in hits {
                writeln!(out, "    {score:.4}  {}", paths[j])?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
