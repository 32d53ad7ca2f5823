//! `index`: build a pgvector index (HNSW or IVFFlat, `vector_ip_ops`) on the
//! vectors table, after loading.

use crate::cli::IndexArgs;
use crate::sink::postgres::{Db, IndexParams, redact};
use anyhow::Result;
use std::time::Instant;

pub fn index(args: &IndexArgs) -> Result<()> {
    let mut db = Db::connect(&args.db)?;
    let rows = db.count()?;
    let params = IndexParams {
        m: args.m,
        ef_construction: args.ef_construction,
        lists: args.lists,
        maintenance_work_mem: args.maintenance_work_mem.clone(),
        replace: args.replace,
    };
    let start = Instant::now();
    eprintln!(
        "rmac-native: building a {:?} index (vector_ip_ops) over {rows} vectors in {} …",
        args.kind,
        redact(&args.db)
    );
    let name = db.create_index(args.kind, &params)?;
    eprintln!(
        "rmac-native: index {name} ready in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
