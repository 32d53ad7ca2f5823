//! `evaluate`: hand-computed mAP on a tiny ground truth, and revisitop's own
//! compute_map (ported in tests/reference/make_whiten_h5_evaluate_fixtures.py) on a fixture.

mod common;

use rmac_native::evaluate::{
    Protocol, QueryGnd, Resolved, compute_ap, evaluate, evaluate_rankings, load_ground_truth,
};
use rmac_native::store::VectorSet;
use rmac_native::store::jsonl::read_vectors as read_jsonl;
use std::path::PathBuf;

fn fx(name: &str) -> PathBuf {
    common::fixtures().join("evaluate").join(name)
}

#[test]
fn hand_computed_map() {
    // One query, database of 6; ranking [3, 0, 5, 1, 2, 4]; positives {0, 2}, junk {5}.
    // Junk removed: [3, 0, 1, 2, 4] → positives at 0-based ranks 1 and 3.
    // AP = ((0/1 + 1/2)/2 + (1/3 + 2/4)/2) / 2 = (0.25 + 0.416666…) / 2 = 0.3333…
    let resolved = Resolved {
        query_rows: vec![0],
        db_rows: (0..6).collect(),
        query_self: vec![None],
        protocols: vec![Protocol {
            name: "p".into(),
            queries: vec![QueryGnd {
                positives: vec![0, 2],
                junk: vec![5],
            }],
        }],
    };
    let r = &evaluate_rankings(&[vec![3, 0, 5, 1, 2, 4]], &resolved, &[1, 2, 4])[0];
    assert!((r.map - 1.0 / 3.0).abs() < 1e-12, "{}", r.map);
    assert!((compute_ap(&[1, 3], 2) - 1.0 / 3.0).abs() < 1e-12);
    // recall@1 = 0, @2 = 1/2, @4 = 1; revisitop's mP@k: kq = min(4, k) → 0/1, 1/2, 2/4.
    assert_eq!(r.recall_at_k, vec![0.0, 0.5, 1.0]);
    assert_eq!(r.mp_at_k, vec![0.0, 0.5, 0.5]);
    assert_eq!(r.hit_at_k, vec![0.0, 1.0, 1.0]);

    // The same through real vectors: 2-d, scores give that ranking.
    let angles = [1.0f32, 0.9, 0.3, 1.2, 0.0, 0.5]; // cos of (angle − 1.2) descending: 3, 0, 1, 5, 2, 4
    let db = VectorSet {
        paths: (0..6).map(|i| format!("d{i}.jpg")).collect(),
        data: angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect(),
        dim: 2,
    };
    let q = VectorSet {
        paths: vec!["q.jpg".into()],
        data: vec![1.2f32.cos(), 1.2f32.sin()],
        dim: 2,
    };
    let r = &evaluate(&q, &db, &resolved, &[1])[0];
    // Ranking 3, 0, 1, 5(junk), 2, 4 → positives 0, 2 at ranks 1 and 3 → AP 1/3 again.
    assert!((r.map - 1.0 / 3.0).abs() < 1e-12, "{}", r.map);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn matches_revisitop_compute_map() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx("eval_expected.json")).unwrap()).unwrap();
    let db = read_jsonl(&fx("eval_db.jsonl")).unwrap();
    let q = read_jsonl(&fx("eval_queries.jsonl")).unwrap();
    let check = |results: &[rmac_native::evaluate::ProtocolResult],
                 key_of: &dyn Fn(&str) -> String| {
        for r in results {
            let e = &expected[key_of(&r.protocol)];
            assert!(
                close(r.map, e["map"].as_f64().unwrap()),
                "{}: mAP {} vs {}",
                r.protocol,
                r.map,
                e["map"]
            );
            let aps: Vec<Option<f64>> = e["aps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64())
                .collect();
            assert_eq!(aps.len(), r.aps.len());
            for (a, b) in r.aps.iter().zip(&aps) {
                match (a, b) {
                    (Some(a), Some(b)) => assert!(close(*a, *b), "{}: AP {a} vs {b}", r.protocol),
                    (None, None) => {}
                    _ => panic!("{}: AP {a:?} vs {b:?}", r.protocol),
                }
            }
            for (name, got) in [
                ("mp_at_k", &r.mp_at_k),
                ("recall_at_k", &r.recall_at_k),
                ("hit_at_k", &r.hit_at_k),
            ] {
                let want: Vec<f64> = e[name]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert!(
                    got.iter().zip(&want).all(|(a, b)| close(*a, *b)),
                    "{} {name}: {got:?} vs {want:?}",
                    r.protocol
                );
            }
        }
    };
    // revisitop pickle: easy / medium / hard, separate query vectors.
    let resolved = load_ground_truth(
        &fx("gnd_eval.pkl"),
        &q,
        &db,
        &fx("eval_queries.jsonl"),
        &fx("eval_db.jsonl"),
    )
    .unwrap();
    let results = evaluate(&q, &db, &resolved, &[1, 5, 10]);
    assert_eq!(
        results
            .iter()
            .map(|r| r.protocol.as_str())
            .collect::<Vec<_>>(),
        ["easy", "medium", "hard"]
    );
    assert_eq!(
        results[2].queries, 4,
        "query 2 has no hard positives and is left out"
    );
    check(&results, &|p| p.to_owned());
    // Simple JSON: queries are database images, left out of their own ranking.
    let resolved = load_ground_truth(
        &fx("gnd_eval.json"),
        &db,
        &db,
        &fx("eval_db.jsonl"),
        &fx("eval_db.jsonl"),
    )
    .unwrap();
    let results = evaluate(&db, &db, &resolved, &[1, 5, 10]);
    check(&results, &|_| "simple".to_owned());
}

#[test]
fn command_prints_a_table_and_json() {
    let exe = env!("CARGO_BIN_EXE_rmac-native");
    let out = std::process::Command::new(exe)
        .args(["evaluate", "--vectors"])
        .arg(fx("eval_db.jsonl"))
        .arg("--queries")
        .arg(fx("eval_queries.jsonl"))
        .arg("--gnd")
        .arg(fx("gnd_eval.pkl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("medium") && text.contains("mAP"), "{text}");
    let out = std::process::Command::new(exe)
        // The index is positional and -k the cut-offs, as in search and neighbours.
        .args(["evaluate", "--json", "-k", "1,5"])
        .arg(fx("eval_db.jsonl"))
        .arg("--gnd")
        .arg(fx("gnd_eval.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["protocol"], "all");
    assert_eq!(v[0]["k"], serde_json::json!([1, 5]));
    // Queries missing from the vectors: an error naming them.
    let out = std::process::Command::new(exe)
        .args(["evaluate", "--vectors"])
        .arg(fx("eval_db.jsonl"))
        .arg("--gnd")
        .arg(fx("gnd_eval.pkl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("5 of 5 queries") && e.contains("q_0"), "{e}");
}
