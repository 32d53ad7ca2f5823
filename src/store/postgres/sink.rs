//! Writing vectors and error records: batched binary COPY into a staging
//! table, then one idempotent upsert per batch (see the module docs of
//! [`super`]), and the run row that records the settings.

use super::{DIM, Db, ERRORS, RUNS, SKIPPED, VECTORS, redact};
use crate::store::VectorSink;
use crate::store::settings::RunSettings;
use anyhow::{Result, bail};
use pgvector::Vector;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A batch is also sent when it is this old, so progress is visible and durable.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Db {
    /// The settings of the latest run that left vectors in the table (none
    /// for an empty table or one filled without settings).
    pub fn read_settings(&mut self) -> Result<Option<RunSettings>> {
        let text: Option<String> = self.with_retry("read the settings of earlier runs", |c| {
            Ok(c.query_opt(
                &format!(
                    "SELECT r.settings::text FROM {RUNS} r WHERE r.settings IS NOT NULL AND r.settings ? 'weights_sha256' \
                     AND EXISTS (SELECT 1 FROM {VECTORS} v WHERE v.run_id = r.id) ORDER BY r.id DESC LIMIT 1"
                ),
                &[],
            )?
            .map(|r| r.get(0)))
        })?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                anyhow::anyhow!(
                    "the settings recorded in {RUNS} of {} do not parse ({e}); repair that row, or --restart",
                    redact(&self.conninfo)
                )
            })
        })
        .transpose()
    }

    /// Records a run; refuses (unless `restart`) when the table already holds
    /// vectors made with other settings. With `restart` both tables are emptied.
    pub(super) fn start_run(
        &mut self,
        tool: &str,
        settings: Option<&RunSettings>,
        restart: bool,
    ) -> Result<i64> {
        if restart {
            self.with_retry("empty the tables (--restart)", |c| {
                c.batch_execute(&format!("TRUNCATE {VECTORS}, {ERRORS}, {SKIPPED}"))
            })?;
        }
        if let Some(now) = settings
            && let Some(before) = self.read_settings()?
        {
            let diff = before.differences(now);
            if !diff.is_empty() {
                bail!(
                    "{VECTORS} in {} already holds vectors made with other settings ({}); resuming would mix them. \
                     Use the same settings, another database, or --restart to empty the tables",
                    redact(&self.conninfo),
                    diff.join("; ")
                );
            }
        }
        let settings = settings.map(serde_json::to_string).transpose()?;
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

/// The database sink (see the module docs).
pub struct PgSink {
    db: Db,
    run_id: i64,
    rows: Vec<(String, Vec<f32>)>,
    row_index: HashMap<String, usize>,
    errors: Vec<(String, String)>,
    /// Frames `--skip-static` skipped: (path, reason).
    skipped: Vec<(String, String)>,
    oldest: Option<Instant>,
    batch: usize,
    /// Rows committed by this sink.
    pub written: u64,
    /// Floats per vector (the embedding column's `vector(dim)`).
    dim: usize,
}

impl PgSink {
    /// Connects, creates the tables when missing, checks `settings` against
    /// what the table holds, records the run and returns the done set.
    pub fn open(
        conninfo: &str,
        restart: bool,
        tool: &str,
        settings: Option<&RunSettings>,
        options: &super::PgOptions,
    ) -> Result<(Self, HashSet<String>)> {
        let mut db = Db::connect(conninfo, options)?;
        // Before anything is written or emptied (`--restart`): one writer per table.
        db.lock_writer()?;
        let dim = settings.map_or(DIM, |s| s.dimension);
        db.ensure_schema(dim)?;
        let run_id = db.start_run(tool, settings, restart)?;
        let done = db.done_set()?;
        let sink = PgSink {
            db,
            run_id,
            rows: Vec::new(),
            row_index: HashMap::new(),
            errors: Vec::new(),
            skipped: Vec::new(),
            oldest: None,
            batch: options.batch.max(1),
            written: 0,
            dim,
        };
        Ok((sink, done))
    }

    fn maybe_flush(&mut self) -> Result<()> {
        if self.rows.len() >= self.batch
            || self.errors.len() >= self.batch
            || self.skipped.len() >= self.batch
            || self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_EVERY)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the buffered rows in one transaction (retried on a lost
    /// connection; the buffer is cleared only after the commit).
    pub fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() && self.errors.is_empty() && self.skipped.is_empty() {
            return Ok(());
        }
        let vt = self.db.vector_type()?;
        let run_id = self.run_id;
        let (rows, errors, skipped) = (&self.rows, &self.errors, &self.skipped);
        let stage = format!(
            "CREATE TEMP TABLE IF NOT EXISTS rmac_stage (ord bigint, path text, embedding vector({})) ON COMMIT DELETE ROWS",
            self.dim
        );
        let insert = format!(
            "INSERT INTO {VECTORS} (path, embedding, run_id) SELECT path, embedding, $1 FROM rmac_stage ORDER BY ord \
             ON CONFLICT (path) DO UPDATE SET embedding = EXCLUDED.embedding, run_id = EXCLUDED.run_id, added_at = now()"
        );
        let insert_error = format!(
            "INSERT INTO {ERRORS} (path, error, run_id) VALUES ($1, $2, $3) \
             ON CONFLICT (path) DO UPDATE SET error = EXCLUDED.error, run_id = EXCLUDED.run_id, added_at = now()"
        );
        let insert_skipped = format!(
            "INSERT INTO {SKIPPED} (path, reason, run_id) VALUES ($1, $2, $3) \
             ON CONFLICT (path) DO UPDATE SET reason = EXCLUDED.reason, run_id = EXCLUDED.run_id, added_at = now()"
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
            if !skipped.is_empty() {
                let stmt = tx.prepare(&insert_skipped)?;
                for (p, why) in skipped {
                    tx.execute(&stmt, &[p, why, &run_id])?;
                }
            }
            tx.commit()
        })?;
        self.written += n as u64;
        self.rows.clear();
        self.row_index.clear();
        self.errors.clear();
        self.skipped.clear();
        self.oldest = None;
        Ok(())
    }
}

impl VectorSink for PgSink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        crate::store::check_finite(path, vector)?;
        if vector.len() != self.dim {
            bail!(
                "a {}-float vector for {path}; the {VECTORS} table holds vector({})",
                vector.len(),
                self.dim
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

    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        self.errors.push((path.to_owned(), error.to_owned()));
        self.oldest.get_or_insert_with(Instant::now);
        self.maybe_flush()
    }

    fn write_skipped(&mut self, path: &str, why: &str) -> Result<()> {
        self.skipped.push((path.to_owned(), why.to_owned()));
        self.oldest.get_or_insert_with(Instant::now);
        self.maybe_flush()
    }

    fn sync(&mut self) -> Result<()> {
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
