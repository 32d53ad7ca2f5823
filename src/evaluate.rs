//! Retrieval quality of a vectors file against a ground truth (`rmac-native evaluate`).
//!
//! # Ground truth formats
//!
//! * **revisitop** (`gnd_roxford5k.pkl`, `gnd_rparis6k.pkl`; a Python pickle):
//!   `{"imlist": [name…], "qimlist": [name…], "gnd": [{"easy": [i…], "hard": […],
//!   "junk": […], "bbx": […]}, …]}` with indices into `imlist`. Names are matched
//!   to the vectors' paths by file stem (`…/jpg/all_souls_000013.jpg` ↔
//!   `all_souls_000013`) or exactly. Three protocols, as in revisitop's
//!   `example_evaluate.py`:
//!   * easy: positives = easy; ignored (junk) = junk + hard,
//!   * medium: positives = easy + hard; ignored = junk,
//!   * hard: positives = hard; ignored = junk + easy.
//! * **simple JSON**: `{"query path": ["relevant path", …], …}`; the database is
//!   every vector of the file, in file order; one protocol ("all"), no junk.
//!
//! # Ranking and measures
//!
//! Each query is ranked against the database by inner product (descending;
//! ties by database order). The query's own database entry (same image) is
//! left out of the ranking unless the ground truth lists it for that query
//! (revisitop queries are separate crops, so this only matters when the query
//! vectors come from the database file itself). Ignored images are removed
//! from the ranking before measuring.
//!
//! * **AP**: revisitop's `compute_ap` (trapezoidal interpolation): for the j-th
//!   positive (0-based) at 0-based rank r (junk removed),
//!   `p0 = j / r` (1 if r = 0), `p1 = (j + 1) / (r + 1)`, `AP += (p0 + p1) / 2 / npos`.
//!   Queries without positives are left out of the mean (revisitop's `nempty`).
//! * **mP@k**: revisitop's precision at k: `kq = min(max positive rank (1-based), k)`,
//!   `P = #(positives ranked ≤ kq) / kq`.
//! * **recall@k**: the fraction of a query's positives among its first k results.
//! * **hit@k**: the fraction of queries with at least one positive in the first k.

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::store::VectorSet;

/// One query's ground truth, as indices into the database.
#[derive(Clone, Debug, Default)]
pub struct QueryGnd {
    pub positives: Vec<usize>,
    pub junk: Vec<usize>,
}

/// A protocol: per query, positives and ignored images.
#[derive(Clone, Debug)]
pub struct Protocol {
    pub name: String,
    pub queries: Vec<QueryGnd>,
}

/// A ground truth resolved against the vectors: which vector is each query,
/// which vectors are the database, and the protocols.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Row of each query in the query set.
    pub query_rows: Vec<usize>,
    /// Row of each database image in the database set (ground-truth order).
    pub db_rows: Vec<usize>,
    /// Per query, its own database index (if the query is a database image).
    pub query_self: Vec<Option<usize>>,
    pub protocols: Vec<Protocol>,
}

/// Measures of one protocol.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProtocolResult {
    pub protocol: String,
    /// Queries with at least one positive (the others are left out).
    pub queries: usize,
    pub map: f64,
    /// Per query AP (NaN → null for queries without positives).
    pub aps: Vec<Option<f64>>,
    pub k: Vec<usize>,
    pub mp_at_k: Vec<f64>,
    pub recall_at_k: Vec<f64>,
    pub hit_at_k: Vec<f64>,
}

/// revisitop's `compute_ap`: `ranks` are the 0-based positions of the positives
/// (sorted, junk already removed), `npos` the number of positives.
pub fn compute_ap(ranks: &[usize], npos: usize) -> f64 {
    let step = 1.0 / npos as f64;
    let mut ap = 0.0;
    for (j, &r) in ranks.iter().enumerate() {
        let p0 = if r == 0 { 1.0 } else { j as f64 / r as f64 };
        let p1 = (j + 1) as f64 / (r + 1) as f64;
        ap += (p0 + p1) * step / 2.0;
    }
    ap
}

/// The database indices ordered by decreasing inner product with `query`.
pub fn rank(db: &VectorSet, db_rows: &[usize], query: &[f32]) -> Vec<usize> {
    let scores: Vec<f32> = db_rows
        .iter()
        .map(|&r| db.row(r).iter().zip(query).map(|(a, b)| a * b).sum())
        .collect();
    let mut order: Vec<usize> = (0..db_rows.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Positions (0-based, junk removed) of the positives in `ranking`.
fn positive_positions(ranking: &[usize], gnd: &QueryGnd, skip: Option<usize>) -> Vec<usize> {
    let mut pos = Vec::new();
    let mut at = 0usize;
    for &i in ranking {
        if Some(i) == skip || gnd.junk.contains(&i) {
            continue;
        }
        if gnd.positives.contains(&i) {
            pos.push(at);
        }
        at += 1;
    }
    pos
}

/// Evaluates all protocols from precomputed rankings (`rankings[q]`: database
/// indices, best first).
pub fn evaluate_rankings(
    rankings: &[Vec<usize>],
    resolved: &Resolved,
    ks: &[usize],
) -> Vec<ProtocolResult> {
    resolved
        .protocols
        .iter()
        .map(|p| {
            let mut aps = Vec::with_capacity(p.queries.len());
            let (mut sum_ap, mut n) = (0.0, 0usize);
            let mut mp = vec![0.0; ks.len()];
            let mut rec = vec![0.0; ks.len()];
            let mut hit = vec![0.0; ks.len()];
            for (q, gnd) in p.queries.iter().enumerate() {
                let mut g = gnd.clone();
                g.positives.sort_unstable();
                g.positives.dedup();
                // A positive listed as junk too stays a positive (revisitop's lists are disjoint).
                g.junk.retain(|j| !g.positives.contains(j));
                if g.positives.is_empty() {
                    aps.push(None);
                    continue;
                }
                let own = resolved.query_self[q];
                let skip = own.filter(|s| !gnd.positives.contains(s) && !gnd.junk.contains(s));
                let pos = positive_positions(&rankings[q], &g, skip);
                let ap = compute_ap(&pos, g.positives.len());
                aps.push(Some(ap));
                sum_ap += ap;
                n += 1;
                let maxpos = pos.iter().map(|&r| r + 1).max().unwrap_or(usize::MAX);
                for (j, &k) in ks.iter().enumerate() {
                    let kq = maxpos.min(k);
                    let within = pos.iter().filter(|&&r| r < kq).count();
                    mp[j] += within as f64 / kq as f64;
                    let found = pos.iter().filter(|&&r| r < k).count();
                    rec[j] += found as f64 / g.positives.len() as f64;
                    hit[j] += if found > 0 { 1.0 } else { 0.0 };
                }
            }
            let div = |v: Vec<f64>| {
                v.into_iter()
                    .map(|x| if n > 0 { x / n as f64 } else { f64::NAN })
                    .collect()
            };
            ProtocolResult {
                protocol: p.name.clone(),
                queries: n,
                map: if n > 0 { sum_ap / n as f64 } else { f64::NAN },
                aps,
                k: ks.to_vec(),
                mp_at_k: div(mp),
                recall_at_k: div(rec),
                hit_at_k: div(hit),
            }
        })
        .collect()
}

/// Ranks every query and evaluates all protocols.
pub fn evaluate(
    queries: &VectorSet,
    db: &VectorSet,
    resolved: &Resolved,
    ks: &[usize],
) -> Vec<ProtocolResult> {
    let rankings: Vec<Vec<usize>> = resolved
        .query_rows
        .iter()
        .map(|&q| rank(db, &resolved.db_rows, queries.row(q)))
        .collect();
    evaluate_rankings(&rankings, resolved, ks)
}

/// αQE before measuring (`evaluate --qe N --alpha A`): each query is replaced
/// by [`crate::search::expand_query`] over its first `n` database results,
/// ranked as [`rank`] ranks (its own database entry, if any, left out: adding
/// the query to itself would only reweigh it), as `search --qe` expands a
/// query. Rows that are not queries are copied unchanged.
pub fn expand_queries(
    queries: &VectorSet,
    db: &VectorSet,
    resolved: &Resolved,
    n: usize,
    alpha: f32,
) -> VectorSet {
    let mut out = queries.clone();
    if n == 0 {
        return out;
    }
    for (q, &row) in resolved.query_rows.iter().enumerate() {
        let query = queries.row(row);
        let own = resolved.query_self[q];
        let hits: Vec<(usize, f32)> = rank(db, &resolved.db_rows, query)
            .into_iter()
            .filter(|&i| Some(i) != own)
            .take(n)
            .map(|i| {
                let r = resolved.db_rows[i];
                (r, db.row(r).iter().zip(query).map(|(a, b)| a * b).sum())
            })
            .collect();
        let expanded = crate::search::expand_query(query, &hits, |r| db.row(r).to_vec(), n, alpha);
        let dim = queries.dim;
        out.data[row * dim..(row + 1) * dim].copy_from_slice(&expanded);
    }
    out
}

/// Finds a ground-truth name among vector paths: exactly, else by a unique file stem.
struct PathIndex {
    exact: HashMap<String, usize>,
    /// stem → rows (several when ambiguous).
    stem: HashMap<String, Vec<usize>>,
}

fn stem_of(p: &str) -> String {
    let name = p.rsplit(['/', '\\']).next().unwrap_or(p);
    match name.rfind('.') {
        Some(i) if i > 0 => name[..i].to_owned(),
        _ => name.to_owned(),
    }
}

impl PathIndex {
    fn new(set: &VectorSet) -> Self {
        let mut exact = HashMap::new();
        let mut stem: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in set.paths.iter().enumerate() {
            exact.entry(p.clone()).or_insert(i);
            stem.entry(stem_of(p)).or_default().push(i);
        }
        PathIndex { exact, stem }
    }

    fn find(&self, name: &str) -> Result<Option<usize>> {
        if let Some(&i) = self.exact.get(name) {
            return Ok(Some(i));
        }
        match self.stem.get(&stem_of(name)).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([i]) => Ok(Some(*i)),
            Some(many) => bail!(
                "`{name}` matches {} vectors by file name (stem); use full paths",
                many.len()
            ),
        }
    }
}

fn missing_error(what: &str, missing: &[String], total: usize, file: &Path) -> anyhow::Error {
    let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
    anyhow::anyhow!(
        "{} of {total} {what} of the ground truth have no vector in {} (e.g. {}); extract them first, \
         or check that the paths' file names match the ground truth's names",
        missing.len(),
        file.display(),
        shown.join(", ")
    )
}

/// A revisitop ground truth file, parsed.
#[derive(Clone, Debug)]
pub struct RevisitopGnd {
    pub imlist: Vec<String>,
    pub qimlist: Vec<String>,
    /// Per query: easy, hard, junk.
    pub gnd: Vec<[Vec<usize>; 3]>,
}

fn pickle_str(v: &serde_pickle::Value) -> Option<String> {
    use serde_pickle::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn pickle_list(v: &serde_pickle::Value) -> Option<&[serde_pickle::Value]> {
    use serde_pickle::Value;
    match v {
        Value::List(l) | Value::Tuple(l) => Some(l),
        _ => None,
    }
}

fn pickle_index(v: &serde_pickle::Value) -> Option<usize> {
    use serde_pickle::Value;
    match v {
        Value::I64(i) if *i >= 0 => Some(*i as usize),
        Value::Int(i) => usize::try_from(i.clone()).ok(),
        Value::F64(f) if *f >= 0.0 && f.fract() == 0.0 => Some(*f as usize),
        _ => None,
    }
}

fn dict_get<'a>(d: &'a serde_pickle::Value, key: &str) -> Option<&'a serde_pickle::Value> {
    use serde_pickle::{HashableValue, Value};
    let Value::Dict(m) = d else { return None };
    m.get(&HashableValue::String(key.to_owned()))
        .or_else(|| m.get(&HashableValue::Bytes(key.as_bytes().to_vec())))
}

/// Reads a revisitop `gnd_*.pkl`.
pub fn read_revisitop(bytes: &[u8], origin: &Path) -> Result<RevisitopGnd> {
    let bad =
        |what: &str| anyhow::anyhow!("{}: not a revisitop ground truth: {what}", origin.display());
    let v = serde_pickle::value_from_slice(
        bytes,
        serde_pickle::DeOptions::new().replace_unresolved_globals(),
    )
    .with_context(|| format!("{}: cannot read the Python pickle", origin.display()))?;
    let names = |key: &str| -> Result<Vec<String>> {
        let l = dict_get(&v, key)
            .and_then(pickle_list)
            .ok_or_else(|| bad(&format!("no list `{key}`")))?;
        l.iter()
            .map(|x| pickle_str(x).ok_or_else(|| bad(&format!("`{key}` holds a non-string"))))
            .collect()
    };
    let imlist = names("imlist")?;
    let qimlist = names("qimlist")?;
    let gl = dict_get(&v, "gnd")
        .and_then(pickle_list)
        .ok_or_else(|| bad("no list `gnd`"))?;
    if gl.len() != qimlist.len() {
        bail!(bad(&format!(
            "{} `gnd` entries for {} queries",
            gl.len(),
            qimlist.len()
        )));
    }
    let mut gnd = Vec::with_capacity(gl.len());
    for (q, g) in gl.iter().enumerate() {
        let mut lists: [Vec<usize>; 3] = Default::default();
        for (slot, key) in ["easy", "hard", "junk"].iter().enumerate() {
            let Some(x) = dict_get(g, key) else {
                if *key == "junk" {
                    continue;
                }
                bail!(bad(&format!("query {q} has no `{key}`")));
            };
            let l = pickle_list(x).ok_or_else(|| {
                bad(&format!("query {q}: `{key}` is not a list (numpy arrays are not supported; convert with .tolist())"))
            })?;
            lists[slot] = l
                .iter()
                .map(|i| {
                    let i = pickle_index(i)
                        .ok_or_else(|| bad(&format!("query {q}: `{key}` holds a non-index")))?;
                    if i >= imlist.len() {
                        bail!(bad(&format!(
                            "query {q}: index {i} in `{key}` ≥ {} images",
                            imlist.len()
                        )));
                    }
                    Ok(i)
                })
                .collect::<Result<_>>()?;
        }
        gnd.push(lists);
    }
    Ok(RevisitopGnd {
        imlist,
        qimlist,
        gnd,
    })
}

/// Resolves a revisitop ground truth against the vectors (easy, medium, hard).
pub fn resolve_revisitop(
    g: &RevisitopGnd,
    queries: &VectorSet,
    db: &VectorSet,
    qfile: &Path,
    dbfile: &Path,
) -> Result<Resolved> {
    let dbi = PathIndex::new(db);
    let qi = PathIndex::new(queries);
    let mut db_rows = Vec::with_capacity(g.imlist.len());
    let mut missing = Vec::new();
    for n in &g.imlist {
        match dbi.find(n)? {
            Some(r) => db_rows.push(r),
            None => missing.push(n.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(missing_error(
            "database images",
            &missing,
            g.imlist.len(),
            dbfile,
        ));
    }
    let mut query_rows = Vec::with_capacity(g.qimlist.len());
    for n in &g.qimlist {
        match qi.find(n)? {
            Some(r) => query_rows.push(r),
            None => missing.push(n.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(missing_error("queries", &missing, g.qimlist.len(), qfile));
    }
    let by_name: HashMap<&str, usize> = g
        .imlist
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let query_self: Vec<Option<usize>> = g
        .qimlist
        .iter()
        .map(|q| by_name.get(q.as_str()).copied())
        .collect();
    let cat = |a: &[usize], b: &[usize]| -> Vec<usize> { a.iter().chain(b).copied().collect() };
    let proto = |name: &str, f: &dyn Fn(&[Vec<usize>; 3]) -> QueryGnd| Protocol {
        name: name.to_owned(),
        queries: g.gnd.iter().map(f).collect(),
    };
    let protocols = vec![
        proto("easy", &|l| QueryGnd {
            positives: l[0].clone(),
            junk: cat(&l[2], &l[1]),
        }),
        proto("medium", &|l| QueryGnd {
            positives: cat(&l[0], &l[1]),
            junk: l[2].clone(),
        }),
        proto("hard", &|l| QueryGnd {
            positives: l[1].clone(),
            junk: cat(&l[2], &l[0]),
        }),
    ];
    Ok(Resolved {
        query_rows,
        db_rows,
        query_self,
        protocols,
    })
}

/// Resolves a simple JSON ground truth (`{"query": ["relevant", …]}`): the
/// database is every vector of `db`, in file order.
pub fn resolve_json(
    text: &str,
    origin: &Path,
    queries: &VectorSet,
    db: &VectorSet,
    qfile: &Path,
    dbfile: &Path,
) -> Result<Resolved> {
    let map: BTreeMap<String, Vec<String>> = serde_json::from_str(text).with_context(|| {
        format!(
            "{}: expected a JSON object {{\"query path\": [\"relevant path\", …]}}",
            origin.display()
        )
    })?;
    // Queries in sorted order (per-query results follow it).
    let order: Vec<String> = map.keys().cloned().collect();
    let dbi = PathIndex::new(db);
    let qi = PathIndex::new(queries);
    let mut query_rows = Vec::new();
    let mut query_self = Vec::new();
    let mut gq = Vec::new();
    let (mut missing_q, mut missing_r) = (Vec::new(), Vec::new());
    for q in &order {
        match qi.find(q)? {
            Some(r) => query_rows.push(r),
            None => missing_q.push(q.clone()),
        }
        query_self.push(dbi.find(q)?);
        let mut positives = Vec::new();
        for rel in &map[q] {
            match dbi.find(rel)? {
                Some(r) => positives.push(r),
                None => missing_r.push(rel.clone()),
            }
        }
        gq.push(QueryGnd {
            positives,
            junk: Vec::new(),
        });
    }
    if !missing_q.is_empty() {
        return Err(missing_error("queries", &missing_q, order.len(), qfile));
    }
    if !missing_r.is_empty() {
        let total = map.values().map(Vec::len).sum();
        return Err(missing_error("relevant images", &missing_r, total, dbfile));
    }
    Ok(Resolved {
        query_rows,
        db_rows: (0..db.paths.len()).collect(),
        query_self,
        protocols: vec![Protocol {
            name: "all".into(),
            queries: gq,
        }],
    })
}

/// Reads a ground-truth file (pickle by magic/extension, else JSON) and resolves it.
pub fn load_ground_truth(
    gnd: &Path,
    queries: &VectorSet,
    db: &VectorSet,
    qfile: &Path,
    dbfile: &Path,
) -> Result<Resolved> {
    let bytes = std::fs::read(gnd)
        .with_context(|| format!("cannot read the ground truth {}", gnd.display()))?;
    let is_pickle = bytes.first() == Some(&0x80)
        || gnd
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pkl") || e.eq_ignore_ascii_case("pickle"));
    if is_pickle {
        let g = read_revisitop(&bytes, gnd)?;
        resolve_revisitop(&g, queries, db, qfile, dbfile)
    } else {
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{} is neither a pickle nor UTF-8 JSON", gnd.display()))?;
        resolve_json(&text, gnd, queries, db, qfile, dbfile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ap_by_hand() {
        // 2 positives at ranks 0 and 2: (1 + 1)/2/2 + (1/2 + 2/3)/2/2 = 0.5 + 0.291666…
        assert!((compute_ap(&[0, 2], 2) - (0.5 + (0.5 + 2.0 / 3.0) / 4.0)).abs() < 1e-15);
        assert_eq!(compute_ap(&[0, 1, 2], 3), 1.0);
        // 1 of 2 positives never retrieved.
        assert!((compute_ap(&[0], 2) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn stems() {
        assert_eq!(stem_of("a/b/all_souls_000013.jpg"), "all_souls_000013");
        assert_eq!(stem_of("x"), "x");
        assert_eq!(stem_of(".hidden"), ".hidden");
    }
    /// αQE here and `search --qe`'s expansion are the same computation: a
    /// simple-JSON ground truth (database = every row, no self) gives the
    /// vectors `search::search_qe` expands to.
    #[test]
    fn expanded_queries_equal_search_qe() {
        let dim = 7;
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mk = |rows: usize, next: &mut dyn FnMut() -> f32| {
            let mut data: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
            for r in data.chunks_mut(dim) {
                let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                r.iter_mut().for_each(|x| *x /= n);
            }
            VectorSet {
                paths: (0..rows).map(|i| format!("p{i}")).collect(),
                data,
                dim,
            }
        };
        let db = mk(40, &mut next);
        let queries = mk(5, &mut next);
        let resolved = Resolved {
            query_rows: vec![4, 0, 2],
            db_rows: (0..40).collect(),
            query_self: vec![None; 3],
            protocols: vec![],
        };
        for (n, alpha) in [(1, 0.0), (3, 3.0), (5, 1.5)] {
            let ours = expand_queries(&queries, &db, &resolved, n, alpha);
            let refs: Vec<&[f32]> = resolved
                .query_rows
                .iter()
                .map(|&r| queries.row(r))
                .collect();
            let (_, theirs) =
                crate::search::search_qe(&db.data, dim, &refs, 1, &[None; 3], n, alpha);
            for (q, &r) in resolved.query_rows.iter().enumerate() {
                assert_eq!(
                    ours.row(r),
                    theirs[q].as_slice(),
                    "n {n} alpha {alpha} query {q}"
                );
            }
            // Rows that are not queries stay as they were.
            assert_eq!(ours.row(1), queries.row(1));
            assert_eq!(ours.row(3), queries.row(3));
        }
    }
}
