//! `evaluate`: mAP, mP@k, recall@k of a vectors file against a ground truth.

use crate::cli::EvaluateArgs;
use crate::cli::resolve::Env;
use anyhow::{Result, bail};
use rmac_native::evaluate::{evaluate as run_evaluate, expand_queries, load_ground_truth};
use rmac_native::store::{Target, VectorSet, read_set};
use std::path::Path;

/// `evaluate …`: prints a table (or JSON with `--json`). The vectors may be
/// in any format (JSONL, NPY, PostgreSQL).
pub fn evaluate(args: &EvaluateArgs, env: &Env) -> Result<()> {
    if args.k.is_empty() || args.k.contains(&0) {
        bail!("-k takes positive cut-offs, e.g. -k 1,5,10");
    }
    let index = args
        .index
        .as_ref()
        .or(args.vectors_flag.as_ref())
        .expect("clap requires one");
    let pg = env.pg();
    let read_jsonl = |p: &Path| -> Result<VectorSet> { read_set(&Target::from_path(p), &pg) };
    let db = read_jsonl(index)?;
    let qfile = args.queries.as_deref().unwrap_or(index);
    let queries = match &args.queries {
        Some(q) => read_jsonl(q)?,
        None => read_jsonl(index)?,
    };
    if queries.dim != db.dim {
        bail!(
            "the query vectors have {} dimensions, the database {}",
            queries.dim,
            db.dim
        );
    }
    let resolved = load_ground_truth(&args.gnd, &queries, &db, qfile, index)?;
    if !args.alpha.is_finite() {
        bail!("--alpha must be a finite number, e.g. --alpha 3");
    }
    let queries = expand_queries(&queries, &db, &resolved, args.qe, args.alpha);
    let results = run_evaluate(&queries, &db, &resolved, &args.k);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    println!(
        "{} queries, {} database images ({})",
        resolved.query_rows.len(),
        resolved.db_rows.len(),
        args.gnd.display()
    );
    if args.qe > 0 {
        println!(
            "queries expanded with their first {} results (αQE, α = {})",
            args.qe, args.alpha
        );
    }
    let ks: Vec<String> = args.k.iter().map(|k| k.to_string()).collect();
    println!(
        "{:<8} {:>7} {:>8}  {:<24} {:<24} {:<24}",
        "protocol",
        "queries",
        "mAP",
        format!("mP@{}", ks.join("/")),
        format!("recall@{}", ks.join("/")),
        format!("hit@{}", ks.join("/"))
    );
    let pct = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.2}", 100.0 * x))
            .collect::<Vec<_>>()
            .join("/")
    };
    for r in &results {
        println!(
            "{:<8} {:>7} {:>8.2}  {:<24} {:<24} {:<24}",
            r.protocol,
            r.queries,
            100.0 * r.map,
            pct(&r.mp_at_k),
            pct(&r.recall_at_k),
            pct(&r.hit_at_k)
        );
    }
    println!("(percentages; queries without positives are left out, as in revisitop)");
    Ok(())
}
