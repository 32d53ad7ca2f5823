//! `neighbours`: each image's nearest neighbours in a vectors file.

use crate::cli::NeighboursArgs;
use crate::cli::resolve::Env;
use anyhow::Result;
use rmac_native::search::top_k;
use rmac_native::store::{Target, read_set};
use std::io::Write;

/// `neighbours`: each image's top-k by inner product, from any vectors source,
/// as a table or (`--json`) one JSON object per image.
pub fn neighbours(args: &NeighboursArgs, env: &Env) -> Result<()> {
    let set = read_set(&Target::from_path(&args.vectors), &env.pg())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for i in 0..set.paths.len() {
        let hits = top_k(&set, set.row(i), args.k, Some(i));
        if args.json {
            let neighbours: Vec<serde_json::Value> = hits
                .iter()
                .enumerate()
                .map(|(r, &(j, score))| {
                    serde_json::json!({"rank": r + 1, "path": set.paths[j], "score": score})
                })
                .collect();
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({"path": set.paths[i], "neighbours": neighbours}),
            )?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", set.paths[i])?;
            for (j, score) in hits {
                writeln!(out, "    {score:.4}  {}", set.paths[j])?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
