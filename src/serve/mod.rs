//! `serve`: the vectors of an index held in memory (an NPY file stays mapped)
//! and the query model loaded once, behind an HTTP API and a web page.
//!
//! * [`routes`]: the router, the handlers and the guards in front of them
//!   (token, CORS, upload limit, per-request timeout).
//! * [`batch`]: the searches that arrive together answered from one pass.
//! * [`scan`]: that pass — over an 8-bit copy with exact float32 re-scoring
//!   ([`prefilter`]) where the CPU has AVX-512 VNNI, else float32; [`pages`]
//!   gives the mapped float32 pages back once the copy is made.
//! * [`state`]: what the handlers share — the index, its path → row map, the
//!   kNN graph and duplicate groups when given, the model queue, the metrics.
//! * [`model`]: one worker thread owns the model; image queries reach it
//!   through a bounded queue (decoding and resizing run on the blocking pool).
//! * [`graph`]: a `knn` graph read back (NPY or JSONL) for `/api/neighbours`.
//! * [`thumbs`]: JPEG thumbnails of indexed paths only, cached.
//! * [`metrics`]: counters and a latency histogram in the Prometheus text format.
//! * `assets/`: the page (HTML, CSS, JS), embedded in the binary.
//!
//! The answers of `/api/search` are those of `search --json` for the same
//! query ([`crate::search::search_qe`]): the same rows, the same order, the
//! same scores, bit for bit, whichever scan ran and whatever else was in its batch.

pub mod batch;
pub mod graph;
pub mod metrics;
pub mod model;
pub mod pages;
pub mod prefilter;
pub mod routes;
pub mod scan;
pub mod state;
pub mod thumbs;

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;

/// How the server listens and what it accepts, resolved at the edge.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// `Authorization: Bearer TOKEN` on every route but `/healthz`.
    pub token: Option<String>,
    /// The one origin allowed to call the API from another site's pages.
    pub cors: Option<String>,
    /// Largest request body (an upload) in bytes; above it: 413.
    pub max_upload: usize,
    /// Longest a request may take; after it: 503.
    pub timeout: Duration,
    /// Largest `k` a query may ask for; above it: 400.
    pub max_k: usize,
    /// Image queries waiting for the model; when full, further ones wait
    /// (within the timeout) for a place.
    pub queue: usize,
    /// Thumbnail cache budget in bytes.
    pub thumb_cache: usize,
}

/// Binds, says where (`listening on http://ADDR` on stderr: with port 0 the
/// port the system chose), and serves until SIGINT or SIGTERM.
pub fn run(options: ServeOptions, state: state::AppState) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rmac-serve")
        .build()
        .context("cannot start the HTTP runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("cannot listen on {}", options.listen))?;
        let bound = listener.local_addr()?;
        eprintln!("rmac-native serve: exact scan: {}", state.searcher.engine);
        eprintln!("rmac-native serve: listening on http://{bound}");
        let app = routes::router(std::sync::Arc::new(state), &options);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the HTTP server stopped")?;
        eprintln!("rmac-native serve: stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Whether binding `addr` exposes the server beyond this machine.
pub fn is_exposed(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}
