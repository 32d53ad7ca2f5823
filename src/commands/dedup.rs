//! `dedup INDEX --threshold T --output GROUPS.jsonl [--keep-list FILE]`:
//! near-duplicate groups over all pairs ([`rmac_native::knn::dedup`]).

use super::knn::open_vectors;
use super::locate::locator;
use crate::cli::DedupArgs;
use crate::cli::resolve::{Env, int8_prefilter};
use anyhow::{Context, Result, bail};
use rmac_native::knn::Tiling;
use rmac_native::knn::dedup::{Summary, groups};
use rmac_native::knn::int8::{Quantized, cannot_run};
use rmac_native::run::coordinator::progress::WorkProgress;
use rmac_native::search::html::{SheetHeader, SheetRow, write_contact_sheet};
use rmac_native::store::postgres::redact;
use rmac_native::store::{Target, read_settings};
use std::io::Write;

/// Returns the exit code: 0, or 3 when the page could not show some images.
pub fn dedup(args: &DedupArgs, env: &Env) -> Result<u8> {
    for &t in &args.threshold {
        if !t.is_finite() || t > 1.0 + 1e-6 {
            bail!("--threshold takes cosine scores up to 1 (e.g. 0.95), not {t}");
        }
    }
    let threshold = args.threshold[0];
    let source = open_vectors(&args.index, env)?;
    let (n, dim) = (source.len(), source.dim());
    let tiling = Tiling::for_budget(args.memory, 0, 0, rayon::current_num_threads());
    let blocks = tiling.blocks(n);
    let mut progress = WorkProgress::new(
        "dedup",
        (0..blocks).map(|b| tiling.block_pairs(b, n)).sum(),
        blocks,
    );
    // The 8-bit copies, when wanted and they fit beside the tiles (as `knn` decides).
    let tiles = tiling.bytes(0, 0, rayon::current_num_threads());
    let prefilter = match int8_prefilter(args.prefilter) {
        Some((kernel, required)) => {
            let why_not = cannot_run(n, dim, tiles, args.memory);
            match why_not {
                Some(why) if required => bail!("--prefilter int8: {why}"),
                Some(why) => {
                    eprintln!(
                        "rmac-native dedup: scoring in fp32, without the 8-bit pre-filter: {why}"
                    );
                    None
                }
                None => Some((Quantized::of(source.data(), dim), kernel)),
            }
        }
        None => None,
    };
    let (found, summaries) = groups(
        source.data(),
        dim,
        &args.threshold,
        tiling,
        prefilter.as_ref().map(|(q, k)| (q, *k)),
        &mut |b| progress.add(tiling.block_pairs(b, n)),
    );
    progress.finish();
    let paths = source.paths();
    let mut text = Vec::new();
    let mut droppable = 0usize;
    for g in &found {
        droppable += g.members.len() - 1;
        let members: Vec<(&str, f32)> = g
            .members
            .iter()
            .map(|&(i, s)| (paths[i].as_str(), s))
            .collect();
        serde_json::to_writer(
            &mut text,
            &serde_json::json!({"keeper": paths[g.keeper], "size": g.members.len(), "members": members}),
        )?;
        text.write_all(b"\n")?;
    }
    let counts = |s: &Summary| {
        serde_json::json!({"threshold": s.threshold, "groups": s.groups, "in_groups": s.in_groups,
                           "droppable": s.in_groups - s.groups, "kept": n - (s.in_groups - s.groups)})
    };
    let mut by_threshold: Vec<&Summary> = summaries.iter().collect();
    by_threshold.sort_by(|a, b| b.threshold.total_cmp(&a.threshold));
    let summary = serde_json::json!({
        "summary": {"vectors": n, "threshold": threshold, "groups": found.len(),
                    "in_groups": droppable + found.len(), "droppable": droppable, "kept": n - droppable,
                    "by_threshold": by_threshold.into_iter().map(counts).collect::<Vec<_>>()}
    });
    serde_json::to_writer(&mut text, &summary)?;
    text.write_all(b"\n")?;
    rmac_native::files::write_atomically(&args.output, &text)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    if let Some(keep) = &args.keep_list {
        let mut in_group_not_keeper = vec![false; n];
        for g in &found {
            for &(i, _) in &g.members[1..] {
                in_group_not_keeper[i] = true;
            }
        }
        let mut list = String::new();
        for (i, p) in paths.iter().enumerate() {
            if !in_group_not_keeper[i] {
                list.push_str(p);
                list.push('\n');
            }
        }
        rmac_native::files::write_atomically(keep, list.as_bytes())
            .with_context(|| format!("cannot write {}", keep.display()))?;
    }
    eprintln!(
        "rmac-native dedup: {n} vectors, threshold {threshold}: {} groups, {droppable} could be dropped, {} kept → {}",
        found.len(),
        n - droppable,
        args.output.display()
    );
    for s in summaries.iter().skip(1) {
        eprintln!(
            "  at {}: {} groups, {} could be dropped",
            s.threshold,
            s.groups,
            s.in_groups - s.groups
        );
    }
    let Some(html) = &args.html else {
        return Ok(0);
    };
    let index = Target::from_path(&args.index);
    let made = read_settings(&index, &env.pg()).unwrap_or(None);
    let locate = locator(args.root.as_deref(), &index, made.as_ref());
    let rows: Vec<SheetRow> = found
        .iter()
        .map(|g| SheetRow {
            label: format!("{} copies: keep {}", g.members.len(), paths[g.keeper]),
            image: Some((paths[g.keeper].clone(), locate(&paths[g.keeper]))),
            hits: g.members[1..]
                .iter()
                .map(|&(i, s)| (paths[i].clone(), s))
                .collect(),
        })
        .collect();
    let header = SheetHeader {
        facts: vec![
            ("index".into(), redact(&args.index)),
            ("vectors".into(), n.to_string()),
            ("threshold".into(), threshold.to_string()),
            ("groups".into(), found.len().to_string()),
            ("could be dropped".into(), droppable.to_string()),
        ],
    };
    let report = write_contact_sheet(html, &header, &rows, args.thumb_size, &locate)?;
    eprintln!("rmac-native: groups page → {}", html.display());
    if report.missing.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "warning: the page could not show {} of its {} images (marked in their tiles); the first: {} ({}). \
         If the images are elsewhere, pass --root FOLDER",
        report.missing.len(),
        report.tiles,
        report.missing[0].0,
        report.missing[0].1
    );
    Ok(3)
}
