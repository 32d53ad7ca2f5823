//! What every handler shares, built once before the server starts.

use super::batch::Batcher;
use super::graph::NeighbourGraph;
use super::metrics::Metrics;
use super::model::ModelQueue;
use super::scan::Scanner;
use super::thumbs::{Resolver, ThumbCache};
use crate::image::decode::DecodeLimits;
use crate::store::VectorSource;
use std::collections::HashMap;
use std::sync::Arc;

/// The index, the optional extras and the server's own bookkeeping.
pub struct AppState {
    /// The vectors (an NPY file stays mapped; other formats are read whole).
    pub source: Arc<dyn VectorSource>,
    /// The scan every search goes through: queries that arrive together
    /// share one pass over the index.
    pub searcher: Batcher,
    /// Each path's row (its first occurrence, as `search --path` finds it).
    pub rows: HashMap<String, usize>,
    /// What the index is called in answers (a database URL without its password).
    pub name: String,
    /// Facts about the index for `/api/info` (its recorded settings).
    pub facts: serde_json::Value,
    /// The model for image queries; `None` when started without one (the reason).
    pub model: Result<ModelQueue, String>,
    /// A `knn` graph of this index (`--knn`).
    pub graph: Option<NeighbourGraph>,
    /// Duplicate groups of this index (`--dedup`): the `dedup` output's group
    /// lines and its summary line.
    pub dedup: Option<serde_json::Value>,
    pub resolver: Resolver,
    pub thumbs: ThumbCache,
    /// Limits for the files read for thumbnails (the decoder's pixel limit).
    pub thumb_limits: DecodeLimits,
    pub metrics: Metrics,
    /// The largest `k` (and `qe`) a query may ask for.
    pub max_k: usize,
}

impl AppState {
    /// The state of `source`, with each path's first row looked up once and
    /// the scan made ready (the 8-bit copy built where the CPU runs it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: Box<dyn VectorSource>,
        name: String,
        facts: serde_json::Value,
        model: Result<ModelQueue, String>,
        resolver: Resolver,
        thumb_cache: usize,
        thumb_limits: DecodeLimits,
    ) -> AppState {
        let source: Arc<dyn VectorSource> = Arc::from(source);
        let mut rows = HashMap::with_capacity(source.len());
        for (i, p) in source.paths().iter().enumerate() {
            rows.entry(p.clone()).or_insert(i);
        }
        let scanner = Scanner::new(source.as_ref(), true);
        AppState {
            searcher: Batcher::start(source.clone(), scanner),
            source,
            rows,
            name,
            facts,
            model,
            graph: None,
            dedup: None,
            resolver,
            thumbs: ThumbCache::new(thumb_cache),
            thumb_limits,
            metrics: Metrics::default(),
            max_k: 1000,
        }
    }

    /// Reads a `dedup` output (`--dedup GROUPS.jsonl`): its group lines and
    /// summary line; a group naming a path not in the index is refused.
    pub fn read_dedup(&self, file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
        use anyhow::Context;
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the duplicate groups {}", file.display()))?;
        let mut groups = Vec::new();
        let mut summary = serde_json::Value::Null;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not JSON", file.display(), i + 1))?;
            if let Some(s) = v.get("summary") {
                summary = s.clone();
                continue;
            }
            let members = v["members"].as_array().with_context(|| {
                format!(
                    "{} line {}: not a `dedup` group (no \"members\"); pass the file `dedup --output` wrote",
                    file.display(),
                    i + 1
                )
            })?;
            for m in members {
                let p = m[0].as_str().unwrap_or_default();
                anyhow::ensure!(
                    self.rows.contains_key(p),
                    "{} line {}: {p:?} is not in the index; were the groups made from other vectors?",
                    file.display(),
                    i + 1
                );
            }
            groups.push(v);
        }
        Ok(serde_json::json!({"groups": groups, "summary": summary}))
    }
}
