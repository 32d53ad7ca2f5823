//! `neighbours`: each image's nearest neighbours in a vectors file.

use crate::cli::NeighboursArgs;
use anyhow::Result;
use rmac_native::search::top_k;
use rmac_native::store::jsonl::read_vectors;

/// `neighbours`: each image's top-k by inner product.
pub fn neighbours(args: &NeighboursArgs) -> Result<()> {
    let set = read_vectors(&args.vectors)?;
    for i in 0..set.paths.len() {
        println!("{}", set.paths[i]);
        for (j, score) in top_k(&set, set.row(i), args.k, Some(i)) {
            println!("    {score:.4}  {}", set.paths[j]);
        }
    }
    Ok(())
}
