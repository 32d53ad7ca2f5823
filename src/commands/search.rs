//! `search INDEX --image IMG | --path P | --vector V`: the top-k most similar
//! images by inner product, from a vectors file (exact, SIMD, all cores) or a
//! PostgreSQL table (pgvector SQL), with optional query expansion.

use super::locate::locator;
use crate::cli::resolve::{Env, query_model};
use crate::cli::{EngineArgs, ModelArgs, PcaArgs, SearchArgs};
use anyhow::{Context, Result, bail};
use rmac_native::backend::open_backend;
use rmac_native::extractor::Extractor;
use rmac_native::run::extract::load_pca;
use rmac_native::search::html::{SheetHeader, SheetRow, write_contact_sheet};
use rmac_native::search::{expand_query, search_qe};
use rmac_native::store::postgres::{Db, DbSearch, redact};
use rmac_native::store::settings::RunSettings;
use rmac_native::store::{Target, VectorSource, open_source, read_settings};
use rmac_native::vgg16::weights::Vgg16Weights;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// One query, however it was given.
struct Query {
    /// `image`, `path` or `vector`.
    kind: &'static str,
    label: String,
    /// The image to show in the contact sheet: (name, file).
    image: Option<(String, PathBuf)>,
    vector: Vec<f32>,
    /// The path to leave out of the results (`--exclude-query`).
    own_path: Option<String>,
}

#[derive(Serialize)]
struct Hit<'a> {
    rank: usize,
    path: &'a str,
    score: f32,
}

#[derive(Serialize)]
struct Answer<'a> {
    query: &'a str,
    query_kind: &'a str,
    k: usize,
    qe: usize,
    alpha: f32,
    results: Vec<Hit<'a>>,
}

fn parse_vector(arg: &str) -> Result<Vec<f32>> {
    let text = match arg.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the query vector file {file}"))?,
        None => arg.to_owned(),
    };
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .context("--vector wants a JSON array of numbers, or @FILE holding one")?;
    let arr = v.get("vector").unwrap_or(&v);
    serde_json::from_value(arr.clone())
        .context("--vector wants a JSON array of numbers (or a {\"vector\": […]} record)")
}

/// The vectors of the `--image` queries, described as the index's vectors
/// were made (`made`: its settings; see [`query_model`]).
fn image_vectors(
    args: &SearchArgs,
    env: &Env,
    made: Option<&RunSettings>,
) -> Result<Vec<Vec<f32>>> {
    if args.image.is_empty() {
        return Ok(Vec::new());
    }
    let mut ex = query_extractor(
        &args.model,
        &args.pca,
        &args.engine,
        made,
        &redact(&args.index),
        env,
    )?;
    args.image
        .iter()
        .map(|p| {
            ex.describe_path(p)
                .with_context(|| format!("cannot describe the query image {}", p.display()))
        })
        .collect()
}

/// The model a query image of `index` is described with ([`query_model`]:
/// the index's settings unless a flag says otherwise), loaded (`search
/// --image`, `serve`).
pub fn query_extractor(
    model: &ModelArgs,
    pca: &PcaArgs,
    engine: &EngineArgs,
    made: Option<&RunSettings>,
    index: &str,
    env: &Env,
) -> Result<Extractor> {
    let model = query_model(model, pca, made, index, env)?;
    let pca = load_pca(model.pca.as_deref(), false)?;
    let weights = Arc::new(Vgg16Weights::load(&model.weights)?);
    let (choice, engine) = env.engine(engine)?;
    let backend = open_backend(choice, weights, &engine)?;
    Ok(Extractor::new(backend, pca, model.config))
}

fn gather_queries(
    args: &SearchArgs,
    env: &Env,
    file: Option<&dyn VectorSource>,
    mut db: Option<&mut Db>,
    made: Option<&RunSettings>,
    locate: &dyn Fn(&str) -> PathBuf,
) -> Result<Vec<Query>> {
    let mut qs = Vec::new();
    for (p, v) in args.image.iter().zip(image_vectors(args, env, made)?) {
        let s = p.to_string_lossy().into_owned();
        qs.push(Query {
            kind: "image",
            label: s.clone(),
            image: Some((s.clone(), p.clone())),
            vector: v,
            own_path: Some(s),
        });
    }
    for p in &args.path {
        let v = match (file, db.as_deref_mut()) {
            (Some(f), _) => f.find(p).map(|i| f.row(i).to_vec()),
            (None, Some(db)) => db.vector_of(p)?,
            _ => None,
        };
        let v =
            v.with_context(|| format!("--path {p}: no such path in {}", redact(&args.index)))?;
        qs.push(Query {
            kind: "path",
            label: p.clone(),
            image: Some((p.clone(), locate(p))),
            vector: v,
            own_path: Some(p.clone()),
        });
    }
    for (i, v) in args.vector.iter().enumerate() {
        let label = if args.vector.len() > 1 {
            format!("vector #{}", i + 1)
        } else {
            "vector".to_owned()
        };
        qs.push(Query {
            kind: "vector",
            label,
            image: None,
            vector: parse_vector(v)?,
            own_path: None,
        });
    }
    if qs.is_empty() {
        bail!(
            "search: give a query: --image IMG, --path P (a path in the index) or --vector '[…]'"
        );
    }
    Ok(qs)
}

/// Results per query: (path, score), best first.
type Results = Vec<Vec<(String, f32)>>;

fn search_file(args: &SearchArgs, set: &dyn VectorSource, qs: &[Query]) -> Result<Results> {
    let dim = set.dim();
    for q in qs {
        if q.vector.len() != dim {
            bail!(
                "the query {} has {} numbers; {} holds {dim}-float vectors",
                q.label,
                q.vector.len(),
                args.index
            );
        }
    }
    let exclude: Vec<Option<usize>> = qs
        .iter()
        .map(|q| {
            if args.exclude_query {
                q.own_path.as_deref().and_then(|p| set.find(p))
            } else {
                None
            }
        })
        .collect();
    let refs: Vec<&[f32]> = qs.iter().map(|q| q.vector.as_slice()).collect();
    let mut times = Vec::new();
    let mut hits = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        hits = search_qe(
            set.data(),
            dim,
            &refs,
            args.k,
            &exclude,
            args.qe,
            args.alpha,
        )
        .0;
        times.push(t.elapsed().as_secs_f64());
    }
    report_times(&times, set.len(), qs.len());
    Ok(hits
        .into_iter()
        .map(|h| {
            h.into_iter()
                .map(|(i, s)| (set.paths()[i].clone(), s))
                .collect()
        })
        .collect())
}

fn report_times(times: &[f64], rows: usize, queries: usize) {
    if times.len() > 1 {
        let mut t = times.to_vec();
        t.sort_by(f64::total_cmp);
        eprintln!(
            "search: {rows} vectors, {queries} queries, {} runs: best {:.1} ms, median {:.1} ms, worst {:.1} ms ({} threads)",
            t.len(),
            t[0] * 1e3,
            t[t.len() / 2] * 1e3,
            t[t.len() - 1] * 1e3,
            rayon::current_num_threads()
        );
    }
}

fn search_db(args: &SearchArgs, db: &mut Db, qs: &[Query]) -> Result<Results> {
    let opts = DbSearch {
        exact: args.exact,
        ef_search: args.ef_search,
        probes: args.probes,
    };
    let exclude: Vec<Option<String>> = qs
        .iter()
        .map(|q| {
            if args.exclude_query {
                q.own_path.clone()
            } else {
                None
            }
        })
        .collect();
    let mut times = Vec::new();
    let mut out = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let mut vectors: Vec<Vec<f32>> = qs.iter().map(|q| q.vector.clone()).collect();
        if args.qe > 0 {
            let first = db.search(&vectors, args.qe, &exclude, &opts)?;
            for (v, hits) in vectors.iter_mut().zip(&first) {
                let mut rows = Vec::new();
                for (p, _) in hits {
                    rows.push(db.vector_of(p)?.with_context(|| {
                        format!("{p} vanished from the table during the search")
                    })?);
                }
                let idx: Vec<(usize, f32)> =
                    hits.iter().enumerate().map(|(i, h)| (i, h.1)).collect();
                *v = expand_query(v, &idx, |i| rows[i].clone(), args.qe, args.alpha);
            }
        }
        out = db.search(&vectors, args.k, &exclude, &opts)?;
        times.push(t.elapsed().as_secs_f64());
    }
    report_times(&times, db.count()? as usize, qs.len());
    Ok(out)
}

/// The contact sheet's header: what was searched, how, and with which settings.
fn sheet_header(args: &SearchArgs, rows: usize, made: Option<&RunSettings>) -> SheetHeader {
    let mut facts = vec![
        ("index".to_owned(), redact(&args.index)),
        ("vectors".to_owned(), rows.to_string()),
        ("k".to_owned(), args.k.to_string()),
        (
            "query expansion".to_owned(),
            match (args.qe, args.alpha) {
                (0, _) => "off".to_owned(),
                (n, 0.0) => format!("average of the query and its first {n} results"),
                (n, a) => format!("αQE over the first {n} results, α = {a}"),
            },
        ),
    ];
    match made {
        Some(m) => facts.extend([
            ("settings".to_owned(), {
                let mut line = format!(
                    "max-size {}, levels {}, preprocess {}, {} dimensions",
                    m.max_size, m.levels, m.preprocess, m.dimension
                );
                // The opt-in recipe and what the vectors went through, when set:
                // two sheets that differ only there must not read the same.
                if m.no_enlarge {
                    line.push_str(", no-enlarge");
                }
                if m.pool != "max" {
                    line.push_str(&format!(", pool {}", m.pool));
                }
                if m.scales != "1" {
                    line.push_str(&format!(", scales {}", m.scales));
                }
                if let Some(v) = &m.video_sampling {
                    line.push_str(&format!(", videos {v}"));
                }
                if let Some(d) = m.skip_static {
                    line.push_str(&format!(", skip-static {d}"));
                }
                if let Some(d) = &m.dba {
                    line.push_str(&format!(", dba {d}"));
                }
                line
            }),
            ("weights (sha256)".to_owned(), m.weights_sha256.clone()),
            ("PCA (sha256)".to_owned(), m.pca_sha256.clone()),
        ]),
        None => facts.push((
            "settings".to_owned(),
            "not recorded with the index".to_owned(),
        )),
    }
    SheetHeader { facts }
}

/// Returns the exit code: 0, or 3 when the contact sheet could not show some images.
pub fn search(args: &SearchArgs, env: &Env) -> Result<u8> {
    if args.alpha < 0.0 || !args.alpha.is_finite() {
        bail!("--alpha must be ≥ 0 (0: average query expansion; 3 is the usual αQE)");
    }
    let results: Results;
    let qs;
    let rows;
    let pg = env.pg();
    let index = Target::from_path(&args.index);
    // The index's settings: how a query image is described, and what the sheet reports.
    let wants_settings = !args.image.is_empty() || args.html.is_some();
    let made;
    if index.is_database() {
        let mut db = Db::connect(&args.index, &pg)?;
        made = if wants_settings {
            db.read_settings()?
        } else {
            None
        };
        let locate = locator(args.root.as_deref(), &index, made.as_ref());
        qs = gather_queries(args, env, None, Some(&mut db), made.as_ref(), &locate)?;
        results = search_db(args, &mut db, &qs)?;
        rows = db.count()? as usize;
    } else {
        let set = open_source(&index, &pg)?;
        made = if wants_settings {
            read_settings(&index, &pg)?
        } else {
            None
        };
        let locate = locator(args.root.as_deref(), &index, made.as_ref());
        qs = gather_queries(args, env, Some(set.as_ref()), None, made.as_ref(), &locate)?;
        results = search_file(args, set.as_ref(), &qs)?;
        rows = set.len();
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    use std::io::Write;
    for (q, hits) in qs.iter().zip(&results) {
        if args.json {
            let answer = Answer {
                query: &q.label,
                query_kind: q.kind,
                k: args.k,
                qe: args.qe,
                alpha: args.alpha,
                results: hits
                    .iter()
                    .enumerate()
                    .map(|(i, (p, s))| Hit {
                        rank: i + 1,
                        path: p,
                        score: *s,
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut out, &answer)?;
            writeln!(out)?;
        } else {
            writeln!(out, "query ({}): {}", q.kind, q.label)?;
            writeln!(out, "{:>5}  {:>8}  path", "rank", "score")?;
            for (i, (p, s)) in hits.iter().enumerate() {
                writeln!(out, "{:>5}  {:>8.5}  {p}", i + 1, s)?;
            }
            writeln!(out)?;
        }
    }
    out.flush()?;
    let Some(html) = &args.html else {
        return Ok(0);
    };
    let sheet_rows: Vec<SheetRow> = qs
        .iter()
        .zip(&results)
        .map(|(q, h)| SheetRow {
            label: q.label.clone(),
            image: q.image.clone(),
            hits: h.clone(),
        })
        .collect();
    let locate = locator(args.root.as_deref(), &index, made.as_ref());
    let report = write_contact_sheet(
        html,
        &sheet_header(args, rows, made.as_ref()),
        &sheet_rows,
        args.thumb_size,
        &locate,
    )?;
    eprintln!("rmac-native: contact sheet → {}", html.display());
    if report.missing.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "warning: the contact sheet could not show {} of its {} images (marked in their tiles); the first: {} ({}). \
         If the images are elsewhere, pass --root FOLDER (where the index's relative paths start)",
        report.missing.len(),
        report.tiles,
        report.missing[0].0,
        report.missing[0].1
    );
    Ok(3)
}
