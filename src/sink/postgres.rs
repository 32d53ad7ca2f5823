//! PostgreSQL output (pgvector): `--output postgresql://…` (or `--db URL`
//! beside a file output) writes into three tables, created when missing:
//!
//! ```sql
//! CREATE EXTENSION IF NOT EXISTS vector;
//! CREATE TABLE rmac_runs (                  -- one row per run that wrote here
//!     id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
//!     started_at timestamptz NOT NULL DEFAULT now(),
//!     tool       text NOT NULL,             -- 'rmac-native 0.1.0 extract' / '… convert'
//!     settings   jsonb                      -- model + preprocessing: weights_sha256, weights_bytes,
//!                                           -- pca_sha256, max_size, levels, preprocess (NULL: convert)
//! );
//! CREATE TABLE rmac_vectors (
//!     id        bigint GENERATED ALWAYS AS IDENTITY,   -- insertion order (dumps keep it)
//!     path      text PRIMARY KEY,                      -- exactly as listed in the input
//!     embedding vector(512) NOT NULL,                  -- the unit-length R-MAC vector
//!     run_id    bigint REFERENCES rmac_runs(id),       -- which run (model/preprocessing) made it
//!     added_at  timestamptz NOT NULL DEFAULT now()
//! );
//! CREATE TABLE rmac_errors (                -- images that failed, like the JSONL error file
//!     path text PRIMARY KEY, error text NOT NULL,
//!     run_id bigint REFERENCES rmac_runs(id), added_at timestamptz NOT NULL DEFAULT now()
//! );
//! ```
//!
//! Rows are buffered and sent in batches: binary COPY into a session-local
//! staging table, then `INSERT … SELECT … ON CONFLICT (path) DO UPDATE`, in one
//! transaction. A rerun or a resume therefore never duplicates a path. Resume:
//! the done set is every path in `rmac_vectors` and `rmac_errors`. A lost
//! connection (server restart, terminated backend, network) is retried with
//! backoff for up to `RMAC_PG_RETRY_SECONDS` (default 300); the batch in
//! flight stays buffered until its transaction commits, so nothing is lost.
//!
//! Similarity: the vectors are unit length, so `embedding <#> q` (pgvector's
//! *negative* inner product) orders by cosine similarity; `rmac-native index`
//! builds an HNSW or IVFFlat index with `vector_ip_ops` for it.

use anyhow::{Context, Result, anyhow, bail};
use pgvector::Vector;
use postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutIter};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{Kind, Type};
use postgres::{Client, NoTls};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub const VECTORS: &str = "rmac_vectors";
pub const ERRORS: &str = "rmac_errors";
pub const RUNS: &str = "rmac_runs";
/// The embedding column's dimension (the contract's vectors).
pub const DIM: usize = 512;
/// Rows per COPY batch (`RMAC_PG_BATCH` overrides it).
fn batch_size() -> usize {
    std::env::var("RMAC_PG_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2000)
}
/// A batch is also sent when it is this old, so progress is visible and durable.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Whether an `--output`/`--db` value names a database rather than a file:
/// a `postgres://` / `postgresql://` URL or a libpq `key=value` string.
pub fn is_database(s: &str) -> bool {
    s.starts_with("postgresql://")
        || s.starts_with("postgres://")
        || (s.contains('=')
            && s.split_whitespace()
                .any(|kv| kv.starts_with("host=") || kv.starts_with("dbname=")))
}

/// The connection string with any password hidden, for messages.
pub fn redact(conninfo: &str) -> String {
    if let Some(rest) = conninfo.split_once("://") {
        if let Some((auth, host)) = rest.1.split_once('@')
            && let Some((user, _)) = auth.split_once(':')
        {
            return format!("{}://{user}:***@{host}", rest.0);
        }
        return conninfo.to_owned();
    }
    conninfo
        .split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Errors worth reconnecting for: the connection is gone, or the server says
/// it is shutting down / the backend was terminated / connection trouble.
fn is_transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => e.as_db_error().is_none(), // I/O, timeouts, protocol: not a SQL error
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
                || c == "53300"
        }
    }
}

fn retry_budget() -> Duration {
    let s = std::env::var("RMAC_PG_RETRY_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(300.0);
    Duration::from_secs_f64(s.max(0.0))
}

/// One connection that comes back after it is lost.
pub struct Db {
    conninfo: String,
    client: Option<Client>,
    vector_type: Option<Type>,
}

impl Db {
    /// Connects (retrying a refused connection within the retry budget) and
    /// makes sure the `vector` extension exists.
    pub fn connect(conninfo: &str) -> Result<Db> {
        let mut db = Db {
            conninfo: conninfo.to_owned(),
            client: None,
            vector_type: None,
        };
        db.with_retry("connect", |_| Ok(()))?;
        Ok(db)
    }

    fn open(&mut self) -> Result<(), postgres::Error> {
        let mut client = Client::connect(&self.conninfo, NoTls)?;
        client.batch_execute(
            "SET application_name = 'rmac-native'; SET client_min_messages = warning",
        )?;
        // Needs CREATE privilege on the database when missing; a clear error comes from the lookup below.
        let _ = client.batch_execute("CREATE EXTENSION IF NOT EXISTS vector");
        let row = client.query_opt(
            "SELECT t.oid, n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = 'vector' LIMIT 1",
            &[],
        )?;
        self.vector_type =
            row.map(|r| Type::new("vector".into(), r.get::<_, u32>(0), Kind::Simple, r.get(1)));
        self.client = Some(client);
        Ok(())
    }

    /// The `vector` type of this database (binary COPY needs its OID).
    fn vector_type(&self) -> Result<Type> {
        self.vector_type.clone().ok_or_else(|| {
            anyhow!(
                "the database {} has no pgvector extension: install pgvector on the server and run \
                 `CREATE EXTENSION vector` as a user allowed to (ci/setup-deps.sh builds it for PostgreSQL 15)",
                redact(&self.conninfo)
            )
        })
    }

    /// Runs `f` on a live connection; on a transient failure reconnects with
    /// exponential backoff (0.2 s … 10 s) and runs `f` again, within
    /// `RMAC_PG_RETRY_SECONDS`. `f` must be safe to repeat (ours are
    /// transactions whose effects are idempotent).
    pub fn with_retry<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut wait = Duration::from_millis(200);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match self.client.as_mut() {
                Some(c) if !c.is_closed() => f(c),
                _ => self
                    .open()
                    .and_then(|_| f(self.client.as_mut().expect("just connected"))),
            };
            match result {
                Ok(v) => {
                    if attempt > 1 {
                        eprintln!("note: PostgreSQL: {what} succeeded after {attempt} attempts");
                    }
                    return Ok(v);
                }
                Err(e) if is_transient(&e) && start.elapsed() + wait <= retry_budget() => {
                    eprintln!(
                        "warning: PostgreSQL ({}): {what} failed ({e}); reconnecting in {:.1} s",
                        redact(&self.conninfo),
                        wait.as_secs_f64()
                    );
                    self.client = None;
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    let hint = if is_transient(&e) {
                        " (gave up after RMAC_PG_RETRY_SECONDS; is the server up? for tests: ci/start-pg.sh)"
                    } else {
                        ""
                    };
                    return Err(anyhow::Error::new(e)).with_context(|| {
                        format!(
                            "PostgreSQL ({}): {what} failed{hint}",
                            redact(&self.conninfo)
                        )
                    });
                }
            }
        }
    }

    /// Creates the tables when missing.
    pub fn ensure_schema(&mut self) -> Result<()> {
        self.with_retry("connect", |_| Ok(()))?;
        self.vector_type()?;
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {RUNS} (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 started_at timestamptz NOT NULL DEFAULT now(),
                 tool text NOT NULL,
                 settings jsonb);
             CREATE TABLE IF NOT EXISTS {VECTORS} (
                 id bigint GENERATED ALWAYS AS IDENTITY,
                 path text PRIMARY KEY,
                 embedding vector({DIM}) NOT NULL,
                 run_id bigint REFERENCES {RUNS}(id),
                 added_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {ERRORS} (
                 path text PRIMARY KEY,
                 error text NOT NULL,
                 run_id bigint REFERENCES {RUNS}(id),
                 added_at timestamptz NOT NULL DEFAULT now());"
        );
        self.with_retry("create the tables", |c| c.batch_execute(&sql))
    }

    /// Whether the vectors table exists.
    pub fn has_table(&mut self) -> Result<bool> {
        self.with_retry("look up the tables", |c| {
            Ok(
                c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&VECTORS])?
                    .get(0),
            )
        })
    }

    fn require_table(&mut self) -> Result<()> {
        if !self.has_table()? {
            bail!(
                "the database {} has no {VECTORS} table yet; load vectors first \
                 (`rmac-native --output postgresql://… ` or `rmac-native convert vectors.jsonl postgresql://…`)",
                redact(&self.conninfo)
            );
        }
        Ok(())
    }

    /// Paths already done: in the vectors table or the errors table.
    pub fn done_set(&mut self) -> Result<HashSet<String>> {
        self.with_retry("read the paths already loaded", |c| {
            let mut done = HashSet::new();
            for q in [
                format!("SELECT path FROM {VECTORS}"),
                format!("SELECT path FROM {ERRORS}"),
            ] {
                let mut rows = c.query_raw(q.as_str(), std::iter::empty::<i32>())?;
                while let Some(r) = rows.next()? {
                    done.insert(r.get::<_, String>(0));
                }
            }
            Ok(done)
        })
    }

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

    /// Records a run; refuses (unless `restart`) when the table already holds
    /// vectors made with other settings. With `restart` both tables are emptied.
    fn start_run(
        &mut self,
        tool: &str,
        settings: Option<&serde_json::Value>,
        restart: bool,
    ) -> Result<i64> {
        if restart {
            self.with_retry("empty the tables (--restart)", |c| {
                c.batch_execute(&format!("TRUNCATE {VECTORS}, {ERRORS}"))
            })?;
        }
        if let Some(now) = settings {
            let before: Option<serde_json::Value> = self.with_retry("read the settings of earlier runs", |c| {
                Ok(c.query_opt(
                    &format!(
                        "SELECT r.settings::text FROM {RUNS} r WHERE r.settings IS NOT NULL AND r.settings ? 'weights_sha256' \
                         AND EXISTS (SELECT 1 FROM {VECTORS} v WHERE v.run_id = r.id) ORDER BY r.id DESC LIMIT 1"
                    ),
                    &[],
                )?
                .and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
            })?;
            if let Some(before) = before {
                let diff = json_differences(&before, now);
                if !diff.is_empty() {
                    bail!(
                        "{VECTORS} in {} already holds vectors made with other settings ({}); resuming would mix them. \
                         Use the same settings, another database, or --restart to empty the tables",
                        redact(&self.conninfo),
                        diff.join("; ")
                    );
                }
            }
        }
        let settings = settings.map(|s| s.to_string());
        self.with_retry("record the run", |c| {
            Ok(c.query_one(
                &format!(
                    "INSERT INTO {RUNS} (tool, settings) VALUES ($1, $2::text::jsonb) RETURNING id"
                ),
                &[&tool, &settings],
            )?
            .get(0))
        })
    }
}

fn json_differences(before: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (before.as_object(), now.as_object()) else {
        return if before == now {
            vec![]
        } else {
            vec![format!("{before} before, {now} now")]
        };
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show =
                |v: Option<&serde_json::Value>| v.map_or("(none)".to_owned(), |v| v.to_string());
            format!("{k}: {} before, {} now", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

/// Options of a database search.
#[derive(Clone, Debug, Default)]
pub struct DbSearch {
    /// Never use an index (exact, like the file search).
    pub exact: bool,
    pub ef_search: Option<u32>,
    pub probes: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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

/// The database sink (see the module docs).
pub struct PgSink {
    db: Db,
    run_id: i64,
    rows: Vec<(String, Vec<f32>)>,
    row_index: HashMap<String, usize>,
    errors: Vec<(String, String)>,
    oldest: Option<Instant>,
    batch: usize,
    /// Rows committed by this sink.
    pub written: u64,
}

impl PgSink {
    /// Connects, creates the tables when missing, checks `settings` against
    /// what the table holds, records the run and returns the done set.
    pub fn open(
        conninfo: &str,
        restart: bool,
        tool: &str,
        settings: Option<&serde_json::Value>,
    ) -> Result<(Self, HashSet<String>)> {
        let mut db = Db::connect(conninfo)?;
        db.ensure_schema()?;
        let run_id = db.start_run(tool, settings, restart)?;
        let done = db.done_set()?;
        let sink = PgSink {
            db,
            run_id,
            rows: Vec::new(),
            row_index: HashMap::new(),
            errors: Vec::new(),
            oldest: None,
            batch: batch_size(),
            written: 0,
        };
        Ok((sink, done))
    }

    pub fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        if vector.len() != DIM {
            bail!(
                "a {}-float vector for {path}; the {VECTORS} table holds vector({DIM})",
                vector.len()
            );
        }
        if let Some(&i) = self.row_index.get(path) {
            self.rows[i].1 = vector.to_vec();
        } else {
            self.row_index.insert(path.to_owned(), self.rows.len());
            self.rows.push((path.to_owned(), vector.to_vec()));
        }
        self.oldest.get_or_insert_with(Instant::now);
        self.maybe_flush()
    }

    pub fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        self.errors.push((path.to_owned(), error.to_owned()));
        self.oldest.get_or_insert_with(Instant::now);
        self.maybe_flush()
    }

    fn maybe_flush(&mut self) -> Result<()> {
        if self.rows.len() >= self.batch
            || self.errors.len() >= self.batch
            || self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_EVERY)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the buffered rows in one transaction (retried on a lost
    /// connection; the buffer is cleared only after the commit).
    pub fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() && self.errors.is_empty() {
            return Ok(());
        }
        let vt = self.db.vector_type()?;
        let run_id = self.run_id;
        let (rows, errors) = (&self.rows, &self.errors);
        let stage = format!(
            "CREATE TEMP TABLE IF NOT EXISTS rmac_stage (ord bigint, path text, embedding vector({DIM})) ON COMMIT DELETE ROWS"
        );
        let insert = format!(
            "INSERT INTO {VECTORS} (path, embedding, run_id) SELECT path, embedding, $1 FROM rmac_stage ORDER BY ord \
             ON CONFLICT (path) DO UPDATE SET embedding = EXCLUDED.embedding, run_id = EXCLUDED.run_id, added_at = now()"
        );
        let insert_error = format!(
            "INSERT INTO {ERRORS} (path, error, run_id) VALUES ($1, $2, $3) \
             ON CONFLICT (path) DO UPDATE SET error = EXCLUDED.error, run_id = EXCLUDED.run_id, added_at = now()"
        );
        let n = rows.len();
        self.db.with_retry(&format!("write {n} rows"), |c| {
            let mut tx = c.transaction()?;
            if !rows.is_empty() {
                tx.batch_execute(&stage)?;
                let writer = tx
                    .copy_in("COPY rmac_stage (ord, path, embedding) FROM STDIN (FORMAT binary)")?;
                let mut w = BinaryCopyInWriter::new(writer, &[Type::INT8, Type::TEXT, vt.clone()]);
                for (i, (path, v)) in rows.iter().enumerate() {
                    w.write(&[&(i as i64), path, &Vector::from(v.clone())])?;
                }
                w.finish()?;
                tx.execute(&insert, &[&run_id])?;
            }
            if !errors.is_empty() {
                let stmt = tx.prepare(&insert_error)?;
                for (p, e) in errors {
                    tx.execute(&stmt, &[p, e, &run_id])?;
                }
            }
            tx.commit()
        })?;
        self.written += n as u64;
        self.rows.clear();
        self.row_index.clear();
        self.errors.clear();
        self.oldest = None;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<()> {
        self.flush()
    }
}

impl Drop for PgSink {
    fn drop(&mut self) {
        // Best effort: what does not make it is simply done again on resume.
        if !std::thread::panicking()
            && let Err(e) = self.flush()
        {
            eprintln!("warning: {e:#}; the unsent images are done again on the next run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_outputs_are_recognised() {
        assert!(is_database("postgresql://u@h/db"));
        assert!(is_database("postgres://h/db"));
        assert!(is_database(
            "host=127.0.0.1 port=54329 user=postgres dbname=postgres"
        ));
        assert!(!is_database("vectors.jsonl"));
        assert!(!is_database("/data/a=b.npy"));
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(
            redact("host=h password=secret dbname=d"),
            "host=h password=*** dbname=d"
        );
    }
}
