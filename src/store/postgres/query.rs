//! Reading and querying the vectors table: counts, whole reads, one path's
//! vector, top-k by inner product (exact or through a pgvector index), and
//! building that index.

use super::{Db, ERRORS, SKIPPED, VECTORS};
use anyhow::Result;
use pgvector::Vector;
use postgres::binary_copy::BinaryCopyOutIter;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::Type;

impl Db {
    /// Row count of the vectors table.
    pub fn count(&mut self) -> Result<i64> {
        self.require_table()?;
        self.with_retry("count rows", |c| {
            Ok(
                c.query_one(&format!("SELECT count(*) FROM {VECTORS}"), &[])?
                    .get(0),
            )
        })
    }

    /// Every (path, vector), in insertion order, by binary COPY.
    pub fn read_all(&mut self) -> Result<(Vec<String>, Vec<f32>)> {
        self.require_table()?;
        let vt = self.vector_type()?;
        self.with_retry("read the vectors", |c| {
            let reader = c.copy_out(&format!(
                "COPY (SELECT path, embedding FROM {VECTORS} ORDER BY id) TO STDOUT (FORMAT binary)"
            ))?;
            let mut rows = BinaryCopyOutIter::new(reader, &[Type::TEXT, vt.clone()]);
            let (mut paths, mut data) = (Vec::new(), Vec::new());
            while let Some(r) = rows.next()? {
                paths.push(r.get::<String>(0));
                data.extend_from_slice(r.get::<Vector>(1).as_slice());
            }
            Ok((paths, data))
        })
    }

    /// Every (path, error), by path.
    pub fn read_errors(&mut self) -> Result<Vec<(String, String)>> {
        self.require_table()?;
        self.with_retry("read the errors", |c| {
            Ok(c.query(
                &format!("SELECT path, error FROM {ERRORS} ORDER BY path COLLATE \"C\""),
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    /// Every (path, reason) of the frames `--skip-static` skipped, by path
    /// (none in a database written before the table existed).
    pub fn read_skipped(&mut self) -> Result<Vec<(String, String)>> {
        self.require_table()?;
        self.with_retry("read the skipped frames", |c| {
            let exists: bool = c
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&SKIPPED])?
                .get(0);
            if !exists {
                return Ok(Vec::new());
            }
            Ok(c.query(
                &format!("SELECT path, reason FROM {SKIPPED} ORDER BY path COLLATE \"C\""),
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    /// The stored vector of `path`, if any.
    pub fn vector_of(&mut self, path: &str) -> Result<Option<Vec<f32>>> {
        self.require_table()?;
        self.with_retry("look up a path", |c| {
            Ok(c.query_opt(
                &format!("SELECT embedding FROM {VECTORS} WHERE path = $1"),
                &[&path],
            )?
            .map(|r| r.get::<_, Vector>(0).to_vec()))
        })
    }

    /// The `k` most similar rows to each query by inner product (pgvector
    /// `<#>`), skipping `exclude` paths; ties by path. With an index the
    /// planner may use it (approximate); `opts.exact` forbids that.
    pub fn search(
        &mut self,
        queries: &[Vec<f32>],
        k: usize,
        exclude: &[Option<String>],
        opts: &DbSearch,
    ) -> Result<Vec<Vec<(String, f32)>>> {
        self.require_table()?;
        let mut settings = String::new();
        if opts.exact {
            settings
                .push_str("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off;");
        }
        if let Some(ef) = opts.ef_search {
            settings.push_str(&format!("SET LOCAL hnsw.ef_search = {ef};"));
        }
        if let Some(p) = opts.probes {
            settings.push_str(&format!("SET LOCAL ivfflat.probes = {p};"));
        }
        let sql = format!(
            "SELECT path, (embedding <#> $1) * -1 AS score FROM {VECTORS} \
             WHERE $3::text IS NULL OR path <> $3 ORDER BY embedding <#> $1 LIMIT $2"
        );
        self.with_retry("search", |c| {
            let mut tx = c.transaction()?;
            if !settings.is_empty() {
                tx.batch_execute(&settings)?;
            }
            let stmt = tx.prepare(&sql)?;
            let mut all = Vec::new();
            for (q, ex) in queries.iter().zip(exclude) {
                let v = Vector::from(q.clone());
                let rows = tx.query(&stmt, &[&v, &(k as i64), ex])?;
                let mut hits: Vec<(String, f32)> = rows
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, f64>(1) as f32))
                    .collect();
                hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                all.push(hits);
            }
            tx.commit()?;
            Ok(all)
        })
    }

    /// `CREATE INDEX` for inner-product search; returns the index name.
    pub fn create_index(&mut self, kind: IndexKind, params: &IndexParams) -> Result<String> {
        self.require_table()?;
        let rows = self.count()?;
        let (name, with) = match kind {
            IndexKind::Hnsw => (
                format!("{VECTORS}_embedding_hnsw"),
                format!(
                    "m = {}, ef_construction = {}",
                    params.m, params.ef_construction
                ),
            ),
            IndexKind::Ivfflat => {
                // pgvector's advice: rows/1000 lists up to 1M rows, sqrt(rows) beyond.
                let lists = params.lists.unwrap_or_else(|| {
                    if rows <= 1_000_000 {
                        (rows / 1000).max(1) as usize
                    } else {
                        (rows as f64).sqrt() as usize
                    }
                });
                (
                    format!("{VECTORS}_embedding_ivfflat"),
                    format!("lists = {lists}"),
                )
            }
        };
        let method = match kind {
            IndexKind::Hnsw => "hnsw",
            IndexKind::Ivfflat => "ivfflat",
        };
        let mut sql = format!(
            "SET maintenance_work_mem = '{}';",
            params.maintenance_work_mem
        );
        if params.replace {
            sql.push_str(&format!("DROP INDEX IF EXISTS {name};"));
        }
        sql.push_str(&format!("CREATE INDEX IF NOT EXISTS {name} ON {VECTORS} USING {method} (embedding vector_ip_ops) WITH ({with});"));
        self.with_retry("create the index", |c| c.batch_execute(&sql))?;
        Ok(name)
    }
}

/// Options of a database search.
#[derive(Clone, Debug, Default)]
pub struct DbSearch {
    /// Never use an index (exact, like the file search).
    pub exact: bool,
    pub ef_search: Option<u32>,
    pub probes: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    Hnsw,
    Ivfflat,
}

#[derive(Clone, Debug)]
pub struct IndexParams {
    pub m: u32,
    pub ef_construction: u32,
    pub lists: Option<usize>,
    pub maintenance_work_mem: String,
    pub replace: bool,
}
