//! The routes, and the guard every request passes first (CORS preflight,
//! token, per-request timeout, security headers, metrics). Every error is a
//! JSON `{"error": "…"}` with a 4xx or 5xx status; no handler panics on input.
//!
//! | route | answers |
//! |---|---|
//! | `GET /` (`/app.js`, `/style.css`) | the page |
//! | `POST /api/search?k=&qe=&alpha=&exclude_query=` | an image (raw body or multipart), or JSON `{"path"}` / `{"vector"}` → `search --json`'s object + `took_ms` |
//! | `GET /api/neighbours?path=&k=` | a path's nearest others (from `--knn` when it holds `k`, else computed) |
//! | `GET /api/thumb?path=&size=` | a JPEG thumbnail of an indexed path |
//! | `GET /api/info`, `GET /api/dedup` | the index and its settings; the duplicate groups (`--dedup`) |
//! | `GET /healthz`, `GET /metrics` | liveness (no token needed); Prometheus text |

use super::ServeOptions;
use super::batch::Search;
use super::model::ModelError;
use super::state::AppState;
use super::thumbs::{ThumbError, render};
use crate::extractor::{ExtractError, prepare_image};
use crate::files::sha256_hex;
use crate::image::decode::{DecodeError, decode_rgb};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

type Shared = Arc<AppState>;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The name of the cookie the page's requests carry once `/?token=T` was opened.
const COOKIE: &str = "rmac_token";

/// An answer that is not a success: a status and a message saying what to do.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.message, "status": self.status.as_u16()})),
        )
            .into_response()
    }
}

/// A body extractor's refusal (too large: 413; unreadable: 400) as JSON.
fn refused(status: StatusCode, text: String) -> ApiError {
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("the request body is over the upload limit (--max-upload): {text}")
    } else {
        text
    };
    ApiError::new(status, message)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: {e}"),
    )
}

/// What the guard needs, resolved once.
struct Guard {
    /// sha256 (hex) of the token: compared in constant time, and what the cookie holds.
    token: Option<String>,
    cors: Option<HeaderValue>,
    timeout: Duration,
}

/// The router of `state`, with `options`' limits.
pub fn router(state: Shared, options: &ServeOptions) -> Router {
    let guard = Arc::new(Guard {
        token: options.token.as_deref().map(|t| sha256_hex(t.as_bytes())),
        cors: options
            .cors
            .as_deref()
            .and_then(|o| HeaderValue::from_str(o).ok()),
        timeout: options.timeout,
    });
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/info", get(info))
        .route("/api/search", post(search))
        .route("/api/neighbours", get(neighbours))
        .route("/api/neighbors", get(neighbours))
        .route("/api/thumb", get(thumb))
        .route("/api/dedup", get(dedup))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(options.max_upload))
        .layer(middleware::from_fn_with_state(
            (state.clone(), guard),
            guarded,
        ))
        .with_state(state)
}

/// A route's name for the metrics (never the raw URL: unbounded label values).
fn route_name(path: &str) -> &'static str {
    match path {
        "/" | "/app.js" | "/style.css" => "page",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        "/api/info" => "info",
        "/api/search" => "search",
        "/api/neighbours" | "/api/neighbors" => "neighbours",
        "/api/thumb" => "thumb",
        "/api/dedup" => "dedup",
        _ => "other",
    }
}

/// Equal in time whatever the contents (both are 64 hex digits).
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The request carries the token: `Authorization: Bearer T`, or the cookie
/// the page got from `/?token=T`.
fn authorised(want: &str, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same_digest(&sha256_hex(t.trim().as_bytes()), want));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|c| same_digest(c, want));
    bearer || cookie
}

/// `?token=T` in a query string, percent-decoded.
fn token_param(query: Option<&str>) -> Option<String> {
    let q = query?;
    let map: Query<HashMap<String, String>> = Query::try_from_uri(
        &format!("/?{q}")
            .parse()
            .unwrap_or_else(|_| axum::http::Uri::from_static("/")),
    )
    .ok()?;
    map.0.get("token").cloned()
}

async fn guarded(
    State((state, guard)): State<(Shared, Arc<Guard>)>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = route_name(req.uri().path());
    let mut response = if req.method() == Method::OPTIONS && guard.cors.is_some() {
        // A CORS preflight: answered here (browsers send it without credentials).
        StatusCode::NO_CONTENT.into_response()
    } else if let Some(want) = guard.token.as_deref().filter(|_| {
        route != "healthz" && !authorised(guard.token.as_deref().unwrap_or(""), req.headers())
    }) {
        // A browser cannot send a header when it opens a page: `/?token=T`
        // sets a cookie (HttpOnly, SameSite=Strict) and drops the token from the address.
        let given = token_param(req.uri().query());
        if req.uri().path() == "/"
            && given.is_some_and(|t| same_digest(&sha256_hex(t.as_bytes()), want))
        {
            Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, "/")
                .header(
                    header::SET_COOKIE,
                    format!("{COOKIE}={want}; HttpOnly; SameSite=Strict; Path=/"),
                )
                .body(Body::empty())
                .unwrap_or_default()
        } else {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server wants its token: send `Authorization: Bearer TOKEN`, or open /?token=TOKEN once in a browser",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    } else {
        match tokio::time::timeout(guard.timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than {:.0} s (--timeout) and was abandoned; try again, or a smaller k",
                    guard.timeout.as_secs_f64()
                ),
            )
            .into_response(),
        }
    };
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(origin) = &guard.cors {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
    }
    state
        .metrics
        .answered(route, response.status().as_u16(), start.elapsed());
    response
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such route: {} {}; the API is POST /api/search, GET /api/neighbours, /api/thumb, /api/info, \
             /api/dedup, /healthz, /metrics, and the page at /",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn metrics(State(s): State<Shared>) -> Response {
    let (bytes, entries) = s.thumbs.usage();
    let text = s.metrics.render(&super::metrics::Gauges {
        vectors: s.source.len(),
        dimension: s.source.dim(),
        queue_waiting: s.model.as_ref().map_or(0, |m| m.waiting()),
        thumb_cache_bytes: bytes,
        thumb_cache_entries: entries,
        scan_passes: s.searcher.counts.passes.load(Relaxed),
        scan_searches: s.searcher.counts.searches.load(Relaxed),
        scan_rescored: s.searcher.counts.rescored.load(Relaxed),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn info(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({
        "index": s.name,
        "vectors": s.source.len(),
        "dimension": s.source.dim(),
        "model": s.model.as_ref().ok().map(|m| m.backend.clone()),
        "model_note": s.model.as_ref().err(),
        "knn_k": s.graph.as_ref().map(|g| g.k),
        "dedup": s.dedup.is_some(),
        "max_k": s.max_k,
        "scan": s.searcher.engine,
        "settings": s.facts,
    }))
}

async fn dedup(State(s): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    s.dedup.clone().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no duplicate groups: start the server with --dedup GROUPS.jsonl (written by `rmac-native dedup`)",
        )
    })
}

/// A whole number from the query string, within `1..=max`.
fn count(
    params: &HashMap<String, String>,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(text) = params.get(name) else {
        return Ok(default);
    };
    let n: usize = text.trim().parse().map_err(|_| {
        ApiError::bad(format!(
            "{name}={text:?} is not a whole number ({min} to {max})"
        ))
    })?;
    if n < min || n > max {
        return Err(ApiError::bad(format!(
            "{name}={n} is out of range: {min} to {max} (the server's --max-k)"
        )));
    }
    Ok(n)
}

/// The indexed row of `path`, or a 404 saying so.
fn row_of(s: &AppState, path: &str) -> Result<usize, ApiError> {
    s.rows.get(path).copied().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such path in {}: {path:?}", s.name),
        )
    })
}

/// One result, as `search --json` and `neighbours --json` write it.
#[derive(serde::Serialize)]
struct Hit<'a> {
    rank: usize,
    path: &'a str,
    score: f32,
}

fn hits_of<'a>(paths: &'a [String], hits: &[(usize, f32)]) -> Vec<Hit<'a>> {
    hits.iter()
        .enumerate()
        .map(|(i, &(row, score))| Hit {
            rank: i + 1,
            path: &paths[row],
            score,
        })
        .collect()
}

/// `search --json`'s object for one query (the same fields, in the same
/// order, the scores as the same float32 text), and the time it took.
#[derive(serde::Serialize)]
struct Answer<'a> {
    query: &'a str,
    query_kind: &'a str,
    k: usize,
    qe: usize,
    alpha: f32,
    results: Vec<Hit<'a>>,
    took_ms: f64,
}

#[derive(serde::Serialize)]
struct Neighbours<'a> {
    path: &'a str,
    k: usize,
    /// `graph` (the `--knn` file) or `computed`.
    source: &'a str,
    neighbours: Vec<Hit<'a>>,
    took_ms: f64,
}

/// One query, however it came.
struct Question {
    kind: &'static str,
    label: String,
    vector: Vec<f32>,
    /// The query's own row (left out with `exclude_query`).
    own_row: Option<usize>,
}

fn json_question(s: &AppState, body: &[u8]) -> Result<Question, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "the body is not JSON ({e}); send {{\"path\": P}} or {{\"vector\": [...]}}, or an image"
        ))
    })?;
    match (v.get("path"), v.get("vector")) {
        (Some(p), None) => {
            let p = p
                .as_str()
                .ok_or_else(|| ApiError::bad("\"path\" must be a string"))?;
            let row = row_of(s, p)?;
            Ok(Question {
                kind: "path",
                label: p.to_owned(),
                vector: s.source.row_owned(row),
                own_row: Some(row),
            })
        }
        (None, Some(vector)) => {
            let vector: Vec<f32> = serde_json::from_value(vector.clone())
                .map_err(|_| ApiError::bad("\"vector\" must be an array of numbers"))?;
            if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
                return Err(ApiError::bad(format!(
                    "\"vector\" component {i} is not a finite float32"
                )));
            }
            if vector.len() != s.source.dim() {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the query vector has {} numbers; {} holds {}-float vectors",
                        vector.len(),
                        s.name,
                        s.source.dim()
                    ),
                ));
            }
            Ok(Question {
                kind: "vector",
                label: "vector".to_owned(),
                vector,
                own_row: None,
            })
        }
        _ => Err(ApiError::bad(
            "send a JSON object with one of \"path\" (a path in the index) or \"vector\" (an array of numbers)",
        )),
    }
}

/// An uploaded image: decoded and prepared on the blocking pool, then
/// described by the model worker.
async fn image_question(s: &AppState, label: String, bytes: Bytes) -> Result<Question, ApiError> {
    let model = s.model.as_ref().map_err(|why| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("image queries are off: {why}; query by path or vector"),
        )
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad(
            "the body is empty: send an image (raw bytes or a multipart upload), or JSON {\"path\"} / {\"vector\"}",
        ));
    }
    let config = model.config.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let img = decode_rgb(&bytes, &config.limits)?;
        prepare_image(&img, &config)
    })
    .await
    .map_err(internal)?
    .map_err(|e| unusable(&label, e))?;
    let vector = model.describe(prepared).await.map_err(|e| match e {
        ModelError::Extract(e) => unusable(&label, e),
        e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    })?;
    Ok(Question {
        kind: "image",
        own_row: s.rows.get(&label).copied(),
        label,
        vector,
    })
}

fn unusable(label: &str, e: ExtractError) -> ApiError {
    let status = match e {
        ExtractError::Decode(DecodeError::TooLarge { .. })
        | ExtractError::Decode(DecodeError::FileTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, format!("the image {label} cannot be used: {e}"))
}

async fn search(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let k = count(&params, "k", 10, 1, s.max_k)?;
    let qe = count(&params, "qe", 0, 0, s.max_k)?;
    let alpha: f32 = match params.get("alpha") {
        None => 0.0,
        Some(a) => a
            .trim()
            .parse()
            .ok()
            .filter(|a: &f32| a.is_finite() && *a >= 0.0)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "alpha={a:?}: want a number ≥ 0 (0: average query expansion; 3 is the usual αQE)"
                ))
            })?,
    };
    let exclude_query = matches!(
        params.get("exclude_query").map(String::as_str),
        Some("1" | "true" | "yes")
    );
    let kind = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let question = if kind.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|r| refused(r.status(), r.body_text()))?;
        let mut upload = None;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| refused(e.status(), e.body_text()))?
        {
            if field.file_name().is_some() || field.name() == Some("image") {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| refused(e.status(), e.body_text()))?;
                upload = Some((name, bytes));
                break;
            }
        }
        let (name, bytes) = upload.ok_or_else(|| {
            ApiError::bad(
                "the multipart form holds no file: send the image in a file field named \"image\"",
            )
        })?;
        image_question(&s, name, bytes).await?
    } else {
        let body = Bytes::from_request(req, &())
            .await
            .map_err(|r| refused(r.status(), r.body_text()))?;
        if kind.starts_with("application/json") {
            json_question(&s, &body)?
        } else {
            image_question(&s, "upload".to_owned(), body).await?
        }
    };
    s.metrics.query(question.kind);
    let hits = s
        .searcher
        .search(Search {
            vector: question.vector.clone(),
            k,
            exclude: question.own_row.filter(|_| exclude_query),
            qe,
            alpha,
        })
        .await
        .map_err(internal)?;
    Ok(Json(Answer {
        query: &question.label,
        query_kind: question.kind,
        k,
        qe,
        alpha,
        results: hits_of(s.source.paths(), &hits),
        took_ms: start.elapsed().as_secs_f64() * 1e3,
    })
    .into_response())
}

async fn neighbours(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let path = params
        .get("path")
        .ok_or_else(|| ApiError::bad("give ?path=P (a path in the index)"))?;
    let k = count(&params, "k", 10, 1, s.max_k)?;
    let row = row_of(&s, path)?;
    let (source, hits) = match s.graph.as_ref().filter(|g| k <= g.k) {
        Some(g) => ("graph", g.neighbours(row, k).to_vec()),
        None => {
            let hits = s
                .searcher
                .search(Search {
                    vector: s.source.row_owned(row),
                    k,
                    exclude: Some(row),
                    qe: 0,
                    alpha: 0.0,
                })
                .await
                .map_err(internal)?;
            ("computed", hits)
        }
    };
    Ok(Json(Neighbours {
        path,
        k,
        source,
        neighbours: hits_of(s.source.paths(), &hits),
        took_ms: start.elapsed().as_secs_f64() * 1e3,
    })
    .into_response())
}

async fn thumb(
    State(s): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = params
        .get("path")
        .ok_or_else(|| ApiError::bad("give ?path=P (a path in the index)"))?;
    let row = row_of(&s, path)?;
    let size = count(&params, "size", 160, 16, 1024)
        .map_err(|_| ApiError::bad("size is the thumbnail's longest side: 16 to 1024 pixels"))?
        as u32;
    let jpeg = match s.thumbs.get((row, size)) {
        Some(j) => j,
        None => {
            let shared = s.clone();
            let path = path.clone();
            let made = tokio::task::spawn_blocking(move || {
                let file = shared.resolver.file(&path)?;
                render(&path, &file, size, &shared.thumb_limits)
            })
            .await
            .map_err(internal)?
            .map_err(|e| {
                let status = match e {
                    ThumbError::Outside(_) => StatusCode::FORBIDDEN,
                    ThumbError::NotFound { .. } => StatusCode::NOT_FOUND,
                    ThumbError::Unreadable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError::new(status, e.to_string())
            })?;
            let made = Arc::new(made);
            s.thumbs.put((row, size), made.clone());
            made
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        jpeg.as_ref().clone(),
    )
        .into_response())
}
