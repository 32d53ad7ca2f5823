//! A `knn` graph read back for `/api/neighbours`: `G.jsonl` (one
//! `{"path", "neighbours": [[path, score], …]}` line per vector) or the NPY
//! form (`G.idx.npy`, `G.score.npy`, `G.paths.txt`; `G` or `G.npy` names it).
//! Its rows are mapped onto the index's rows by path, so a graph made from
//! other vectors is refused rather than answering with wrong neighbours.

use crate::store::npy::{parse_header_of, read_paths};
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Each index row's neighbours (index rows, scores), best first.
pub struct NeighbourGraph {
    rows: Vec<Vec<(usize, f32)>>,
    /// Neighbours per row as made (`knn -k`).
    pub k: usize,
}

impl NeighbourGraph {
    /// The first `k` neighbours of `row` (fewer when the graph holds fewer).
    pub fn neighbours(&self, row: usize, k: usize) -> &[(usize, f32)] {
        let all = &self.rows[row];
        &all[..k.min(all.len())]
    }

    /// Reads `graph` and maps it onto the index (`rows`: path → row; `n` rows).
    pub fn read(graph: &Path, rows: &HashMap<String, usize>, n: usize) -> Result<NeighbourGraph> {
        let is_jsonl = graph
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
        let (paths, lists) = if is_jsonl {
            read_jsonl(graph)?
        } else {
            read_npy(graph)?
        };
        let row_of = |p: &str| {
            rows.get(p).copied().with_context(|| {
                format!(
                    "the kNN graph {} holds {p}, which is not in the index: was it made from other vectors? \
                     Make it again with `rmac-native knn INDEX -k K --output G`",
                    graph.display()
                )
            })
        };
        ensure!(
            paths.len() == n,
            "the kNN graph {} has {} rows and the index {n}: make it again from this index",
            graph.display(),
            paths.len()
        );
        let mut out = vec![Vec::new(); n];
        let mut k = 0;
        for (p, list) in paths.iter().zip(lists) {
            let r = row_of(p)?;
            k = k.max(list.len());
            out[r] = list
                .into_iter()
                .map(|(q, s)| Ok((row_of(&q)?, s)))
                .collect::<Result<_>>()?;
        }
        Ok(NeighbourGraph { rows: out, k })
    }
}

type Lists = (Vec<String>, Vec<Vec<(String, f32)>>);

fn read_jsonl(graph: &Path) -> Result<Lists> {
    #[derive(serde::Deserialize)]
    struct Line {
        path: String,
        neighbours: Vec<(String, f32)>,
    }
    let text = std::fs::read_to_string(graph)
        .with_context(|| format!("cannot read the kNN graph {}", graph.display()))?;
    let mut paths = Vec::new();
    let mut lists = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let l: Line = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not a kNN graph line {{\"path\", \"neighbours\": [[path, score], …]}}",
                graph.display(),
                i + 1
            )
        })?;
        paths.push(l.path);
        lists.push(l.neighbours);
    }
    Ok((paths, lists))
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A 2-D matrix of 4-byte little-endian numbers: (rows, cols, the numbers' bytes).
fn read_matrix(file: &Path, descr: &str) -> Result<(usize, usize, Vec<[u8; 4]>)> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("cannot read the kNN graph file {}", file.display()))?;
    let shape = parse_header_of(&bytes, file, descr)?;
    let (rows, cols) = (shape.rows as usize, shape.dim);
    let body = &bytes[shape.data_offset.min(bytes.len())..];
    if body.len() < rows * cols * 4 {
        bail!(
            "{} is cut short: {rows}×{cols} numbers need {} bytes, it holds {}",
            file.display(),
            rows * cols * 4,
            body.len()
        );
    }
    let values = body[..rows * cols * 4]
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    Ok((rows, cols, values))
}

fn read_npy(graph: &Path) -> Result<Lists> {
    let name = graph.file_name().unwrap_or_default().to_string_lossy();
    let stem = graph.with_file_name(name.strip_suffix(".npy").unwrap_or(&name));
    let (n, k, idx) = read_matrix(&with_suffix(&stem, ".idx.npy"), "<i4")?;
    let (n2, k2, score) = read_matrix(&with_suffix(&stem, ".score.npy"), "<f4")?;
    ensure!(
        (n, k) == (n2, k2),
        "{}: the indices are {n}×{k} and the scores {n2}×{k2}",
        stem.display()
    );
    // `read_paths` takes the `.npy` whose `.paths.txt` it reads.
    let paths = read_paths(&with_suffix(&stem, ".npy"))?;
    ensure!(
        paths.len() == n,
        "{}: {} paths for {n} rows",
        stem.display(),
        paths.len()
    );
    let mut lists = Vec::with_capacity(n);
    for i in 0..n {
        let mut list = Vec::with_capacity(k);
        for r in 0..k {
            let j = i32::from_le_bytes(idx[i * k + r]);
            let j = usize::try_from(j)
                .ok()
                .filter(|&j| j < n)
                .with_context(|| format!("{}: row {i} names row {j}", stem.display()))?;
            list.push((paths[j].clone(), f32::from_le_bytes(score[i * k + r])));
        }
        lists.push(list);
    }
    Ok((paths, lists))
}
