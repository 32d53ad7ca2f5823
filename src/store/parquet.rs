//! Parquet (`x.parquet`): column `path` (UTF-8) and column `vector` (an Arrow
//! fixed-size list of 512 float32), the [settings](super::settings) as JSON in
//! the file's key-value metadata under [`SETTINGS_KEY`]; readable by pandas,
//! DuckDB, Polars and pyarrow.
//!
//! A Parquet file is readable only once its footer is written, so a run does
//! not write it row by row: vectors go to a journal beside it
//! (`x.journal.jsonl`, JSONL lines flushed as they come, exactly as a JSONL
//! output), errors to `x.errors.jsonl`. When the run ends ([`VectorSink::finish`])
//! the Parquet file is rewritten — its earlier rows streamed, then the
//! journal's — into a temporary file renamed over it, and the journal removed.
//! A killed run leaves the last complete Parquet file and the journal; the next
//! run resumes from both, so nothing is lost and nothing is done twice.

use super::companions::{errors_path, journal_path};
use super::jsonl::JsonlSink;
use super::settings::RunSettings;
use super::{VectorSet, VectorSink};
use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use ::parquet::arrow::{ArrowWriter, ProjectionMask};
use ::parquet::basic::Compression;
use ::parquet::file::metadata::KeyValue;
use ::parquet::file::properties::WriterProperties;
use anyhow::{Context, Result, bail};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The key-value metadata entry that holds the settings (JSON).
pub const SETTINGS_KEY: &str = "rmac_native.settings";

/// Rows per row group (and per batch written): 16384 × 2 KiB = 32 MiB, so the
/// writer's buffer stays small however many rows the file holds.
const ROWS_PER_GROUP: usize = 16384;

fn schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
    ]))
}

fn batch(
    schema: &Arc<Schema>,
    paths: &[String],
    data: Vec<f32>,
    dim: usize,
) -> Result<RecordBatch> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors =
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(data)), None)?;
    let paths: ArrayRef = Arc::new(StringArray::from_iter_values(paths));
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![paths, Arc::new(vectors)],
    )?)
}

/// Paths and vectors of one record batch (the vector column a fixed-size list,
/// or a plain list as other writers make it, every row `dim` long).
fn rows_of(batch: &RecordBatch, file: &Path) -> Result<(Vec<String>, Vec<f32>, usize)> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "{}: {why}; expected columns path (string) and vector (list of float32)",
            file.display()
        )
    };
    let paths = batch
        .column_by_name("path")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| bad("no string column `path`"))?;
    let vectors = batch
        .column_by_name("vector")
        .ok_or_else(|| bad("no column `vector`"))?;
    let (values, dim): (&Float32Array, usize) =
        if let Some(list) = vectors.as_any().downcast_ref::<FixedSizeListArray>() {
            let v = list
                .values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| bad("`vector` is not float32"))?;
            (v, list.value_length() as usize)
        } else if let Some(list) = vectors.as_any().downcast_ref::<arrow_array::ListArray>() {
            let v = list
                .values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| bad("`vector` is not float32"))?;
            let offsets = list.value_offsets();
            let dim = offsets.get(1).map_or(0, |o| (o - offsets[0]) as usize);
            if offsets.windows(2).any(|w| (w[1] - w[0]) as usize != dim) {
                return Err(bad("the vectors are not all the same length"));
            }
            let start = offsets[0] as usize;
            let sliced = v.slice(start, offsets[offsets.len() - 1] as usize - start);
            return Ok((
                paths
                    .iter()
                    .map(|p| p.unwrap_or_default().to_owned())
                    .collect(),
                sliced.values().to_vec(),
                dim,
            ));
        } else {
            return Err(bad("`vector` is not a list"));
        };
    if paths.null_count() > 0 || vectors.null_count() > 0 {
        return Err(bad("null paths or vectors"));
    }
    let start = vectors.offset() * dim;
    let data = values.values()[start..start + batch.num_rows() * dim].to_vec();
    Ok((
        paths
            .iter()
            .map(|p| p.unwrap_or_default().to_owned())
            .collect(),
        data,
        dim,
    ))
}

/// Reads a whole Parquet vectors file.
pub fn read_vectors(file: &Path) -> Result<VectorSet> {
    let f = std::fs::File::open(file)
        .with_context(|| format!("cannot open the vectors file {}", file.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{} is not a readable Parquet file", file.display()))?
        .with_batch_size(ROWS_PER_GROUP)
        .build()?;
    let mut set = VectorSet::default();
    for b in reader {
        let b = b.with_context(|| format!("cannot read {}", file.display()))?;
        let (paths, data, dim) = rows_of(&b, file)?;
        if set.dim != 0 && dim != set.dim && !paths.is_empty() {
            bail!(
                "{}: vectors of {} and of {dim} floats in one file",
                file.display(),
                set.dim
            );
        }
        if !paths.is_empty() {
            set.dim = dim;
        }
        set.paths.extend(paths);
        set.data.extend(data);
    }
    if let Some(i) = set.data.iter().position(|x| !x.is_finite()) {
        bail!(
            "{}: the vector of {} holds {}; vectors with NaN or infinite values are refused",
            file.display(),
            set.paths[i / set.dim.max(1)],
            set.data[i]
        );
    }
    Ok(set)
}

/// The settings recorded in the file's key-value metadata, if any.
pub fn read_settings(file: &Path) -> Result<Option<RunSettings>> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{} is not a readable Parquet file", file.display()))?;
    let value = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == SETTINGS_KEY))
        .and_then(|e| e.value.clone());
    value
        .map(|v| {
            serde_json::from_str(&v)
                .with_context(|| format!("the settings in {} do not parse", file.display()))
        })
        .transpose()
}

/// The paths a Parquet file holds (a missing file: none), reading the `path`
/// column only: a resume does not read the vectors.
fn paths_in(file: &Path) -> Result<Vec<String>> {
    if !file.exists() {
        return Ok(Vec::new());
    }
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{} is not a readable Parquet file", file.display()))?;
    let only_paths = ProjectionMask::columns(builder.parquet_schema(), ["path"]);
    let reader = builder
        .with_projection(only_paths)
        .with_batch_size(ROWS_PER_GROUP)
        .build()?;
    let mut paths = Vec::new();
    for b in reader {
        let b = b.with_context(|| format!("cannot read {}", file.display()))?;
        let column = b
            .column_by_name("path")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .with_context(|| format!("{}: no string column `path`", file.display()))?;
        paths.extend(column.iter().map(|p| p.unwrap_or_default().to_owned()));
    }
    Ok(paths)
}

/// The Parquet sink (see the module docs).
pub struct ParquetSink {
    out: PathBuf,
    journal: JsonlSink,
    settings: Option<RunSettings>,
    dim: usize,
    /// Rows the journal received since the file was last rewritten.
    pending: bool,
}

impl ParquetSink {
    /// Opens (resumes) `out`: the done set is what the Parquet file, its
    /// journal and its error file hold; with `restart` all three are emptied.
    pub fn open(
        out: &Path,
        restart: bool,
        dim: usize,
        settings: Option<RunSettings>,
    ) -> Result<(Self, HashSet<String>)> {
        if restart && out.exists() {
            std::fs::remove_file(out)
                .with_context(|| format!("cannot remove {} (--restart)", out.display()))?;
        }
        let earlier = paths_in(out)?;
        let (journal, mut done) =
            JsonlSink::open_pair(&journal_path(out), &errors_path(out), restart, dim)?;
        let pending = std::fs::metadata(journal_path(out)).is_ok_and(|m| m.len() > 0);
        done.extend(earlier);
        let mut sink = ParquetSink {
            out: out.to_path_buf(),
            journal,
            settings,
            dim,
            pending,
        };
        if !sink.out.exists() {
            // An empty but valid file from the start: a reader never finds a half-made one.
            sink.pending = true;
            sink.rewrite()?;
        }
        Ok((sink, done))
    }

    /// Streams the earlier rows and the journal's into a new file, renames it
    /// over `out` and empties the journal.
    fn rewrite(&mut self) -> Result<()> {
        self.journal.sync()?;
        let schema = schema(self.dim);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_max_row_group_row_count(Some(ROWS_PER_GROUP));
        if let Some(s) = &self.settings {
            props = props.set_key_value_metadata(Some(vec![KeyValue::new(
                SETTINGS_KEY.to_owned(),
                serde_json::to_string(s)?,
            )]));
        }
        let name = self
            .out
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let tmp = self
            .out
            .with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| -> Result<()> {
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props.build()))?;
            if self.out.exists() {
                let f = std::fs::File::open(&self.out)?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(f)?
                    .with_batch_size(ROWS_PER_GROUP)
                    .build()?;
                for b in reader {
                    let (paths, data, dim) = rows_of(&b?, &self.out)?;
                    if !paths.is_empty() && dim != self.dim {
                        bail!(
                            "{} holds {dim}-float vectors, not {}",
                            self.out.display(),
                            self.dim
                        );
                    }
                    writer.write(&batch(&schema, &paths, data, self.dim)?)?;
                }
            }
            let journal = journal_path(&self.out);
            if journal.exists() {
                let mut paths = Vec::with_capacity(ROWS_PER_GROUP);
                let mut data = Vec::with_capacity(ROWS_PER_GROUP * self.dim);
                for line in std::io::BufReader::new(std::fs::File::open(&journal)?).lines() {
                    let line = line?;
                    // A torn last line of a killed run was cut when the journal was opened.
                    let Ok(rec) = serde_json::from_str::<JournalLine>(&line) else {
                        continue;
                    };
                    if rec.vector.len() != self.dim {
                        bail!(
                            "{}: a vector of {} floats, not {}",
                            journal.display(),
                            rec.vector.len(),
                            self.dim
                        );
                    }
                    paths.push(rec.path);
                    data.extend(rec.vector);
                    if paths.len() == ROWS_PER_GROUP {
                        writer.write(&batch(
                            &schema,
                            &paths,
                            std::mem::take(&mut data),
                            self.dim,
                        )?)?;
                        paths.clear();
                    }
                }
                if !paths.is_empty() {
                    writer.write(&batch(&schema, &paths, data, self.dim)?)?;
                }
            }
            writer.into_inner()?.sync_all()?;
            std::fs::rename(&tmp, &self.out).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), self.out.display())
            })?;
            self.journal.truncate_vectors()?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.with_context(|| {
            format!(
                "cannot write {} (the vectors are safe in {}; rerun the same command to finish it)",
                self.out.display(),
                journal_path(&self.out).display()
            )
        })?;
        self.pending = false;
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct JournalLine {
    path: String,
    vector: Vec<f32>,
}

impl VectorSink for ParquetSink {
    fn write_vector(&mut self, path: &str, vector: &[f32]) -> Result<()> {
        self.pending = true;
        self.journal.write_vector(path, vector)
    }

    fn write_error(&mut self, path: &str, error: &str) -> Result<()> {
        self.journal.write_error(path, error)
    }

    fn write_skipped(&mut self, path: &str, why: &str) -> Result<()> {
        self.journal.write_skipped(path, why)
    }

    fn sync(&mut self) -> Result<()> {
        self.journal.sync()
    }

    fn finish(&mut self) -> Result<()> {
        if self.pending {
            self.rewrite()?;
        }
        self.journal.sync()
    }
}
