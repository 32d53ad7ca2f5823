//! PostgreSQL (pgvector): the connection ([`Db`], retried), the output
//! ([`sink`]) and the queries (search, index; [`query`]).
//!
//! Output: `--output postgresql://…` (or `--db URL`
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
//! backoff for up to [`PgOptions::retry`] (default 300 s); the batch in
//! flight stays buffered until its transaction commits, so nothing is lost.
//!
//! Similarity: the vectors are unit length, so `embedding <#> q` (pgvector's
//! *negative* inner product) orders by cosine similarity; `rmac-native index`
//! builds an HNSW or IVFFlat index with `vector_ip_ops` for it.

mod query;
mod sink;

pub use query::{DbSearch, IndexKind, IndexParams};
pub use sink::PgSink;

use anyhow::{Context, Result, anyhow, bail};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{Kind, Type};
use postgres::{Client, NoTls};
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub const VECTORS: &str = "rmac_vectors";
pub const ERRORS: &str = "rmac_errors";
pub const RUNS: &str = "rmac_runs";
/// The embedding column's dimension (the contract's vectors).
pub const DIM: usize = 512;
/// How the database is written and how long a lost connection is retried;
/// resolved by the caller (the command line reads `RMAC_PG_BATCH` and
/// `RMAC_PG_RETRY_SECONDS`).
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Rows per COPY batch.
    pub batch: usize,
    /// How long a lost connection is retried before the run gives up.
    pub retry: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            batch: 2000,
            retry: Duration::from_secs(300),
        }
    }
}

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

/// One connection that comes back after it is lost.
pub struct Db {
    conninfo: String,
    client: Option<Client>,
    vector_type: Option<Type>,
    options: PgOptions,
}

impl Db {
    /// Connects (retrying a refused connection within the retry budget) and
    /// makes sure the `vector` extension exists.
    pub fn connect(conninfo: &str, options: &PgOptions) -> Result<Db> {
        let mut db = Db {
            conninfo: conninfo.to_owned(),
            client: None,
            vector_type: None,
            options: options.clone(),
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
    pub(super) fn vector_type(&self) -> Result<Type> {
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
    /// [`PgOptions::retry`]. `f` must be safe to repeat (ours are
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
                Err(e) if is_transient(&e) && start.elapsed() + wait <= self.options.retry => {
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

    pub(super) fn require_table(&mut self) -> Result<()> {
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
