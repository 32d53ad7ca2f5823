//! `dedup INDEX --threshold T --output GROUPS.jsonl [--keep-list FILE]`:
//! near-duplicate groups over all pairs ([`rmac_native::knn::dedup`]).

use super::knn::{open_vectors, row_progress};
use super::locate::locator;
use crate::cli::DedupArgs;
use crate::cli::resolve::Env;
use anyhow::{Context, Result, bail};
use rmac_native::knn::Tiling;
use rmac_native::knn::dedup::groups;
use rmac_native::search::html::{SheetHeader, SheetRow, write_contact_sheet};
use rmac_native::store::postgres::redact;
use rmac_native::store::{Target, read_settings};
use std::io::Write;

/// Returns the exit code: 0, or 3 when the page could not show some images.
pub fn dedup(args: &DedupArgs, env: &Env) -> Result<u8> {
    if !args.threshold.is_finite() || args.threshold > 1.0 + 1e-6 {
        bail!(
            "--threshold takes a cosine score up to 1 (e.g. 0.95), not {}",
            args.threshold
        );
    }
    let source = open_vectors(&args.index, env)?;
    let (n, dim) = (source.len(), source.dim());
    let tiling = Tiling::for_budget(args.memory, 0, 0, rayon::current_num_threads());
    let found = groups(
        source.data(),
        dim,
        args.threshold,
        tiling,
        &row_progress("dedup", n),
    );
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
    let summary = serde_json::json!({
        "summary": {"vectors": n, "threshold": args.threshold, "groups": found.len(),
                    "in_groups": droppable + found.len(), "droppable": droppable, "kept": n - droppable}
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
        "rmac-native dedup: {n} vectors, threshold {}: {} groups, {droppable} could be dropped, {} kept → {}",
        args.threshold,
        found.len(),
        n - droppable,
        args.output.display()
    );
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
            ("threshold".into(), args.threshold.to_string()),
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
