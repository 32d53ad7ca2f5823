//! `extract`: resolve the flags, run the batch ([`rmac_native::run::extract`]).

use crate::cli::ExtractArgs;
use crate::cli::resolve::{Env, extract_job};
use anyhow::Result;
use rmac_native::run::coordinator::stats::RunSummary;

pub fn extract(args: &ExtractArgs, env: &Env) -> Result<RunSummary> {
    rmac_native::run::extract::extract(&extract_job(args, env)?)
}
