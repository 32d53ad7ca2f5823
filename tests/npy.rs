//! `.npy` output: NumPy's exact header, round trips, resuming after a kill,
//! and `convert` between JSONL and NPY.

use rmac_native::store::VectorSink;
use rmac_native::store::npy::{
    HEADER_LEN, MappedNpy, NpySink, header, paths_path, read_paths, write_npy,
};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The first 128 bytes `numpy.save` (NumPy 2.3.5) writes for a float32 (N, 512)
/// array, copied from `np.save(io.BytesIO(), np.zeros((N, 512), np.float32))`:
/// the dict, then spaces so that the header ends at byte 128 with a newline.
fn numpy_header(n: &str) -> Vec<u8> {
    let mut h = b"\x93NUMPY\x01\x00v\x00".to_vec();
    h.extend_from_slice(
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, 512), }}").as_bytes(),
    );
    h.resize(127, b' ');
    h.push(b'\n');
    h
}

#[test]
fn header_is_byte_for_byte_numpys() {
    assert_eq!(header(0, 512).to_vec(), numpy_header("0"));
    assert_eq!(header(3, 512).to_vec(), numpy_header("3"));
    assert_eq!(header(1_000_000, 512).to_vec(), numpy_header("1000000"));
    // NumPy's own length field: 0x76 = 118 = 128 - 10; total a multiple of 64.
    assert_eq!(&header(3, 512)[8..10], &[0x76, 0]);
    assert_eq!(HEADER_LEN % 64, 0);
}

fn vec512(seed: u32) -> Vec<f32> {
    (0..512)
        .map(|i| ((seed * 512 + i) as f32 * 0.618).sin())
        .collect()
}

#[test]
fn sink_round_trips_exactly_through_the_mapped_reader() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.npy");
    let (mut sink, done) = NpySink::open(&out, false, 512).unwrap();
    assert!(done.is_empty());
    for i in 0..7 {
        sink.write_vector(&format!("dir/ä {i}.jpg"), &vec512(i))
            .unwrap();
    }
    sink.write_error("bad.jpg", "cannot decode").unwrap();
    drop(sink);
    let m = MappedNpy::open(&out).unwrap();
    assert_eq!(
        (m.shape.rows, m.shape.dim, m.shape.data_offset),
        (7, 512, 128)
    );
    for i in 0..7 {
        assert_eq!(
            &m.data()[i * 512..(i + 1) * 512],
            vec512(i as u32).as_slice()
        );
    }
    assert_eq!(
        read_paths(&out).unwrap(),
        (0..7).map(|i| format!("dir/ä {i}.jpg")).collect::<Vec<_>>()
    );
    let errors = std::fs::read_to_string(dir.path().join("v.errors.jsonl")).unwrap();
    assert_eq!(
        errors,
        "{\"path\":\"bad.jpg\",\"error\":\"cannot decode\"}\n"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 128 + 7 * 2048);
}

fn append(p: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn a_killed_run_is_reconciled_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.npy");
    {
        let (mut sink, _) = NpySink::open(&out, false, 512).unwrap();
        for i in 0..5 {
            sink.write_vector(&format!("p{i}"), &vec512(i)).unwrap();
        }
        sink.write_error("e0", "x").unwrap();
        std::mem::forget(sink); // a kill: no final header rewrite
    }
    // What a kill can leave: a stale header (0 rows, written at open), a row whose path
    // line never came, a torn row after it, and a torn error line.
    assert_eq!(&std::fs::read(&out).unwrap()[..HEADER_LEN], &header(0, 512));
    let extra: Vec<u8> = vec512(99).iter().flat_map(|x| x.to_le_bytes()).collect();
    append(&out, &extra);
    append(&out, &extra[..100]);
    append(
        &dir.path().join("v.errors.jsonl"),
        b"{\"path\":\"e1\",\"err",
    );
    let (mut sink, done) = NpySink::open(&out, false, 512).unwrap();
    let mut d: Vec<_> = done.into_iter().collect();
    d.sort();
    assert_eq!(d, vec!["e0", "p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(sink.rows(), 5);
    assert_eq!(
        &std::fs::read(&out).unwrap()[..HEADER_LEN],
        &header(5, 512),
        "header rewritten on open"
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        128 + 5 * 2048,
        "orphan and torn rows cut"
    );
    sink.write_vector("p5", &vec512(5)).unwrap();
    drop(sink);

    // A torn path line: that path's row is dropped too and the path is done again.
    append(&paths_path(&out), b"p6-torn");
    let (sink, done) = NpySink::open(&out, false, 512).unwrap();
    assert_eq!(sink.rows(), 6);
    assert!(done.contains("p5") && !done.contains("p6-torn"));
    drop(sink);
    let m = MappedNpy::open(&out).unwrap();
    assert_eq!(m.shape.rows, 6);
    assert_eq!(&m.data()[5 * 512..], vec512(5).as_slice());
    assert_eq!(
        std::fs::read_to_string(paths_path(&out)).unwrap(),
        "p0\np1\np2\np3\np4\np5\n"
    );

    // Restart empties everything.
    let (sink, done) = NpySink::open(&out, true, 512).unwrap();
    assert!(done.is_empty() && sink.rows() == 0);
}

#[test]
fn other_shapes_are_refused_with_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.npy");
    write_npy(&out, &["a".into()], &[1.0; 8], 8).unwrap();
    let err = NpySink::open(&out, false, 512).err().unwrap().to_string();
    assert!(err.contains("--restart"), "{err}");
}

#[test]
fn convert_jsonl_npy_jsonl_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a.jsonl");
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!(
            "{{\"path\":\"x/{i}.jpg\",\"vector\":{}}}",
            serde_json::to_string(&vec512(i)).unwrap()
        ));
        text.push('\n');
    }
    std::fs::write(&src, &text).unwrap();
    std::fs::write(
        dir.path().join("a.errors.jsonl"),
        "{\"path\":\"bad.jpg\",\"error\":\"truncated file\"}\n",
    )
    .unwrap();
    let npy = dir.path().join("b.npy");
    let back = dir.path().join("c.jsonl");
    for (from, to) in [(&src, &npy), (&npy, &back)] {
        let o = Command::new(env!("CARGO_BIN_EXE_rmac-native"))
            .arg("convert")
            .arg(from)
            .arg(to)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        std::fs::read_to_string(&back).unwrap() == text,
        "the round trip changed the JSONL"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c.errors.jsonl")).unwrap(),
        "{\"path\":\"bad.jpg\",\"error\":\"truncated file\"}\n"
    );
    // A second convert adds nothing.
    let o = Command::new(env!("CARGO_BIN_EXE_rmac-native"))
        .arg("convert")
        .arg(&npy)
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("0 vectors and 0 errors written, 20 already there")
    );
    assert!(
        std::fs::read_to_string(&back).unwrap() == text,
        "the round trip changed the JSONL"
    );
}
