//! `serve INDEX`: the index and the query model loaded once, answering HTTP
//! ([`rmac_native::serve`]) until SIGINT or SIGTERM.

use super::locate::locator;
use super::search::query_extractor;
use crate::cli::ServeArgs;
use crate::cli::resolve::{Env, serve_options};
use anyhow::{Context, Result};
use rmac_native::image::decode::DecodeLimits;
use rmac_native::serve::graph::NeighbourGraph;
use rmac_native::serve::model::ModelQueue;
use rmac_native::serve::state::AppState;
use rmac_native::serve::thumbs::Resolver;
use rmac_native::store::postgres::redact;
use rmac_native::store::{Target, open_source, read_settings};

pub fn serve(args: &ServeArgs, env: &Env) -> Result<()> {
    let options = serve_options(args)?;
    let name = redact(&args.index);
    let index = Target::from_path(&args.index);
    let source = open_source(&index, &env.pg())?;
    let made = read_settings(&index, &env.pg())?;
    let limits = DecodeLimits {
        max_pixels: args.max_pixels,
        max_file_bytes: options.max_upload as u64,
        ..DecodeLimits::default()
    };
    let model = if args.no_model {
        Err("the server was started with --no-model".to_owned())
    } else {
        let extractor = query_extractor(
            &args.model,
            &args.pca,
            &args.engine,
            made.as_ref(),
            &name,
            env,
        )
        .context(
            "cannot load the query model (pass --no-model to serve path and vector queries only)",
        )?;
        let mut queue = ModelQueue::start(extractor, options.queue);
        queue.config.limits = limits;
        Ok(queue)
    };
    let resolver = Resolver::new(
        args.images_root.as_deref(),
        Box::new(locator(None, &index, made.as_ref())),
    )
    .with_context(|| {
        format!(
            "--images-root {}: no such folder",
            args.images_root
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )
    })?;
    let facts = serde_json::to_value(&made)?;
    let mut state = AppState::new(
        source,
        name.clone(),
        facts,
        model,
        resolver,
        options.thumb_cache,
        DecodeLimits {
            max_pixels: args.max_pixels,
            ..DecodeLimits::default()
        },
    );
    state.max_k = options.max_k;
    if let Some(g) = &args.knn {
        state.graph = Some(NeighbourGraph::read(g, &state.rows, state.source.len())?);
    }
    if let Some(d) = &args.dedup {
        state.dedup = Some(state.read_dedup(d)?);
    }
    eprintln!(
        "rmac-native serve: {name}: {} vectors of {}{}{}",
        state.source.len(),
        state.source.dim(),
        match &state.model {
            Ok(m) => format!(", image queries on {}", m.backend),
            Err(_) => ", no model (path and vector queries only)".to_owned(),
        },
        match &state.graph {
            Some(g) => format!(", kNN graph of k = {}", g.k),
            None => String::new(),
        }
    );
    if rmac_native::serve::is_exposed(&options.listen) && options.token.is_none() {
        eprintln!(
            "warning: listening on {} without --token: anyone who can reach this address can search the index, \
             upload images to it and see the thumbnails of every indexed image. Pass --token (or --token-file), \
             or listen on 127.0.0.1",
            options.listen
        );
    }
    rmac_native::serve::run(options, state)
}
