//! `index`: build a pgvector index (HNSW or IVFFlat, `vector_ip_ops`) on the
//! vectors table, after loading.

use crate::cli::IndexArgs;
use crate::cli::resolve::Env;
use anyhow::Result;
use rmac_native::store::postgres::{Db, IndexParams, redact};
use std::time::Instant;

pub fn index(args: &IndexArgs, env: &Env) -> Result<()> {
    let mut db = Db::connect(&args.db, &env.pg())?;
    let rows = db.count()?;
    let params = IndexParams {
        m: args.m,
        ef_construction: args.ef_construction,
        lists: args.lists,
        maintenance_work_mem: args.maintenance_work_mem.clone(),
        replace: args.replace,
    };
    let kind = args.kind.into();
    let start = Instant::now();
    eprintln!(
        "rmac-native: building a {kind:?} index (vector_ip_ops) over {rows} vectors in {} …",
        redact(&args.db)
    );
    let name = db.create_index(kind, &params)?;
    eprintln!(
        "rmac-native: index {name} ready in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
