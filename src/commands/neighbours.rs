//! `neighbours`: each image's nearest neighbours in a vectors file.

use crate::cli::NeighboursArgs;
use crate::cli::resolve::Env;
use anyhow::Result;
use rmac_native::search::top_k;
use rmac_native::store::{Target, read_set};

/// `neighbours`: each image's top-k by inner product, from any vectors source.
pub fn neighbours(args: &NeighboursArgs, env: &Env) -> Result<()> {
    let set = read_set(&Target::from_path(&args.vectors), &env.pg())?;
    for i in 0..set.paths.len() {
        println!("{}", set.paths[i]);
        for (j, score) in top_k(&set, set.row(i), args.k, Some(i)) {
            println!("    {score:.4}  {}", set.paths[j]);
        }
    }
    Ok(())
}
