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
//!     tool       text NOT NULL,             -- 'rmac-native 0.1.0' (the version that wrote)
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
//! CREATE TABLE rmac_skipped (               -- video frames --skip-static skipped (no failures)
//!     path text PRIMARY KEY, reason text NOT NULL,
//!     run_id bigint REFERENCES rmac_runs(id), added_at timestamptz NOT NULL DEFAULT now()
//! );
//! ```
//!
//! Rows are buffered and sent in batches: binary COPY into a session-local
//! staging table, then `INSERT … SELECT … ON CONFLICT (path) DO UPDATE`, in one
//! transaction. A rerun or a resume therefore never duplicates a path. Resume:
//! the done set is every path in `rmac_vectors`, `rmac_errors` and `rmac_skipped`. A lost
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
pub const SKIPPED: &str = "rmac_skipped";
pub const RUNS: &str = "rmac_runs";
/// The embedding column's dimension of the contract's vectors
/// (docs/contract.md#outputs); a reduced PCA (`pca fit --dim`) gives fewer.
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
    if let Some((scheme, rest)) = conninfo.split_once("://") {
        return format!("{scheme}://{}", redact_url_rest(rest));
    }
    redact_keywords(conninfo)
}

/// Keys whose values are secrets, in either connection-string form.
fn is_secret_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// `user:password@host/db?k=v&password=…` with every password hidden.
fn redact_url_rest(rest: &str) -> String {
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(k) => rest.split_at(k),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{authority}{tail}")
}

/// libpq's `key = value` form, values bare or single-quoted (with `\'` and
/// `\\` escapes), spaces allowed around `=`: every secret value becomes `***`.
fn redact_keywords(conninfo: &str) -> String {
    let c: Vec<char> = conninfo.chars().collect();
    let mut out = String::with_capacity(conninfo.len());
    let mut i = 0;
    while i < c.len() {
        if c[i].is_whitespace() {
            out.push(c[i]);
            i += 1;
            continue;
        }
        // A key, up to `=` or a space.
        let k0 = i;
        while i < c.len() && c[i] != '=' && !c[i].is_whitespace() {
            i += 1;
        }
        let key: String = c[k0..i].iter().collect();
        out.push_str(&key);
        while i < c.len() && c[i].is_whitespace() {
            out.push(c[i]);
            i += 1;
        }
        if i >= c.len() || c[i] != '=' {
            continue;
        }
        out.push('=');
        i += 1;
        while i < c.len() && c[i].is_whitespace() {
            out.push(c[i]);
            i += 1;
        }
        // The value: quoted or bare.
        let v0 = i;
        if i < c.len() && c[i] == '\'' {
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(c.len());
        } else {
            while i < c.len() && !c[i].is_whitespace() {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = i.min(c.len());
        }
        if is_secret_key(&key) {
            out.push_str("***");
        } else {
            out.extend(&c[v0..i]);
        }
    }
    out
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
    /// This connection writes the vectors table and holds its advisory lock
    /// ([`Self::lock_writer`]); taken again after every reconnect.
    writer: bool,
    /// A reconnect found the lock taken by another run.
    lock_lost: bool,
}

/// The advisory lock key of the vectors table: one writer per database.
const WRITER_LOCK_KEY: i64 = 0x726d_6163_5f76_6563; // "rmac_vec"

/// How long a writer waits for a lock that a run which just ended may still hold.
const WRITER_LOCK_GRACE: Duration = Duration::from_secs(3);

impl Drop for Db {
    fn drop(&mut self) {
        // Free the writer lock before the process ends, so that the next run,
        // started right after this one, finds it free (the server would free it
        // too, but only once it notices the closed connection).
        if self.writer
            && !self.lock_lost
            && let Some(client) = self.client.as_mut()
            && !client.is_closed()
        {
            let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK_KEY]);
        }
    }
}

impl Db {
    /// Connects and makes sure the `vector` extension exists. The first
    /// connection is tried once: a wrong URL, host, port, user or password
    /// fails at once with the cause, before any image is read. Only what fails
    /// later (a server restart mid-run) is retried, within the retry budget.
    pub fn connect(conninfo: &str, options: &PgOptions) -> Result<Db> {
        let mut db = Db {
            conninfo: conninfo.to_owned(),
            client: None,
            vector_type: None,
            options: options.clone(),
            writer: false,
            lock_lost: false,
        };
        db.open().map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot connect to the PostgreSQL database {}; check the URL (host, port, user, password, \
                 database name) and that the server is running (for tests: ci/start-pg.sh)",
                redact(conninfo)
            ))
        })?;
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
        if self.writer {
            // A run that just ended (or was killed) may still hold the lock for a
            // moment: its server process frees it only once it notices the
            // closed connection. Give that a short grace before refusing.
            let grace = Instant::now() + WRITER_LOCK_GRACE;
            loop {
                let got: bool = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK_KEY])?
                    .get(0);
                self.lock_lost = !got;
                if got || Instant::now() >= grace {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.client = Some(client);
        Ok(())
    }

    /// Takes the database's writer lock (a session advisory lock, released when
    /// the connection ends however the run ends), or explains that another run
    /// holds it: two writers — or a `--restart` during a run — would lose rows.
    pub fn lock_writer(&mut self) -> Result<()> {
        self.writer = true;
        self.client = None; // reconnect: `open` takes the lock
        self.with_retry("take the writer lock", |_| Ok(()))
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
                _ => match self.open() {
                    Ok(()) if self.lock_lost => bail!(
                        "another rmac-native run is writing the {VECTORS} table of {} (it holds the \
                         table's writer lock); wait for it to finish, or write another database",
                        redact(&self.conninfo)
                    ),
                    Ok(()) => f(self.client.as_mut().expect("just connected")),
                    Err(e) => Err(e),
                },
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

    /// Creates the tables when missing, the embedding column `vector(dim)`; an
    /// existing table with another dimension is refused (pgvector would refuse
    /// every row).
    pub fn ensure_schema(&mut self, dim: usize) -> Result<()> {
        self.with_retry("connect", |_| Ok(()))?;
        self.vector_type()?;
        if self.has_table()? {
            let typmod: i32 = self.with_retry("look up the vector dimension", |c| {
                Ok(c.query_one(
                    "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'embedding'",
                    &[&VECTORS],
                )?
                .get(0))
            })?;
            if typmod > 0 && typmod as usize != dim {
                bail!(
                    "the {VECTORS} table of {} holds vector({typmod}), and these vectors have {dim} floats \
                     (a PCA file with another dimension); write them to another database, or drop the table",
                    redact(&self.conninfo)
                );
            }
        }
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {RUNS} (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 started_at timestamptz NOT NULL DEFAULT now(),
                 tool text NOT NULL,
                 settings jsonb);
             CREATE TABLE IF NOT EXISTS {VECTORS} (
                 id bigint GENERATED ALWAYS AS IDENTITY,
                 path text PRIMARY KEY,
                 embedding vector({dim}) NOT NULL,
                 run_id bigint REFERENCES {RUNS}(id),
                 added_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {ERRORS} (
                 path text PRIMARY KEY,
                 error text NOT NULL,
                 run_id bigint REFERENCES {RUNS}(id),
                 added_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE IF NOT EXISTS {SKIPPED} (
                 path text PRIMARY KEY,
                 reason text NOT NULL,
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

    /// Paths already done: in the vectors, errors or skipped table.
    pub fn done_set(&mut self) -> Result<HashSet<String>> {
        self.with_retry("read the paths already loaded", |c| {
            let mut done = HashSet::new();
            for q in [
                format!("SELECT path FROM {VECTORS}"),
                format!("SELECT path FROM {ERRORS}"),
                format!("SELECT path FROM {SKIPPED}"),
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
        // Every form libpq accepts: query parameters, quoted values with spaces and
        // escapes, spaces around `=`, upper case, sslpassword, '@' in the password.
        for (given, want) in [
            (
                "postgresql://h/db?user=u&password=SECRET&sslmode=disable",
                "postgresql://h/db?user=u&password=***&sslmode=disable",
            ),
            ("postgres://u:p%40ss@h", "postgres://u:***@h"),
            ("postgres://u:a@b@h/db", "postgres://u:***@h/db"),
            (
                "host=h password='SEC RET' dbname=d",
                "host=h password=*** dbname=d",
            ),
            (
                "host=h password = 'it\\'s SECRET' user=u",
                "host=h password = *** user=u",
            ),
            ("PASSWORD=SECRET host=h", "PASSWORD=*** host=h"),
            ("host=h sslpassword=SECRET", "host=h sslpassword=***"),
            (
                "host=h password=SE\\ CRET dbname=d",
                "host=h password=*** dbname=d",
            ),
        ] {
            let got = redact(given);
            assert_eq!(got, want, "{given}");
            assert!(
                !got.contains("SECRET") && !got.contains("RET") && !got.contains("ss@"),
                "{got}"
            );
        }
    }
}
