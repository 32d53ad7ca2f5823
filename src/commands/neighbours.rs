//! `neighbours`: each image's nearest neighbours in a vectors file.

use crate::cli::NeighboursArgs;
use anyhow::Result;

/// `neighbours`: each image's top-k by inner product.
pub fn neighbours(args: &NeighboursArgs) -> Result<()> {
    let set = crate::search::read_jsonl(&args.vectors)?;
    for i in 0..set.paths.len() {
        println!("{}", set.paths[i]);
        for (j, score) in crate::search::top_k(&set, set.row(i), args.k, Some(i)) {
            println!("    {score:.4}  {}", set.paths[j]);
        }
    }
    Ok(())
}
