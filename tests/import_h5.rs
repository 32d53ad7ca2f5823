#![cfg(feature = "h5")]
//! Keras `.h5` import: files written by Keras / h5py (tests/reference/make_whiten_h5_evaluate_fixtures.py)
//! in both kernel conventions, and both conventions run through the network.

mod common;

use rmac_native::backend::{Backend, CpuBackend};
use rmac_native::tensor::Tensor3;
use rmac_native::vgg16::import_h5::{
    ConvToWrite, Convention, Layout, import_h5, read_keras_h5, write_keras_h5,
};
use rmac_native::vgg16::synthetic;
use rmac_native::vgg16::weights::Vgg16Weights;
use std::path::PathBuf;
use std::sync::Arc;

fn fx(name: &str) -> PathBuf {
    common::fixtures().join("h5").join(name)
}

#[test]
fn keras_tf_file_and_theano_file_give_the_same_kernels() {
    // Written by Keras 3's Keras-2-layout writer: vlen string attributes, nested weight names,
    // backend = "tensorflow".
    let (tf, tf_report) = read_keras_h5(&fx("mini_tf_kernels.h5"), None).unwrap();
    assert_eq!(tf_report.convention, Convention::Tf, "{tf_report}");
    assert!(tf_report.reason.contains("backend"), "{}", tf_report.reason);
    assert_eq!(tf.len(), 13);
    assert!(tf.iter().all(|c| c.layout == Layout::Hwio));
    assert_eq!(
        tf_report.skipped.len(),
        6,
        "input + 5 pools: {:?}",
        tf_report.skipped
    );
    // Written with h5py in keras_rmac's Keras 1 Theano layout: fixed strings, OIHW, flipped;
    // no backend attribute, so the file name decides.
    let (th, th_report) = read_keras_h5(&fx("mini_th_dim_ordering_th_kernels.h5"), None).unwrap();
    assert_eq!(th_report.convention, Convention::Th, "{th_report}");
    assert!(
        th_report.reason.contains("file name"),
        "{}",
        th_report.reason
    );
    assert!(th.iter().all(|c| c.layout == Layout::Oihw));
    assert_eq!(tf.len(), th.len());
    for (a, b) in tf.iter().zip(&th) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.shape, b.shape, "{}", a.name);
        assert_eq!(a.kernel, b.kernel, "{}: th import differs from tf", a.name);
        assert_eq!(a.bias, b.bias, "{}", a.name);
    }
    assert_eq!(tf[0].shape, [3, 3, 3, 4]);
    // Keras 3's own format (model.save_weights): names from the `vars` groups, HWIO → tf.
    let (k3, r3) = read_keras_h5(&fx("mini_keras3.weights.h5"), None).unwrap();
    assert_eq!(r3.convention, Convention::Tf, "{r3}");
    assert_eq!(k3.len(), 13);
    for a in &tf {
        let b = k3
            .iter()
            .find(|b| b.name == a.name)
            .unwrap_or_else(|| panic!("{} missing: {r3}", a.name));
        assert_eq!((&a.kernel, &a.bias), (&b.kernel, &b.bias), "{}", a.name);
    }
    assert_eq!(tf[1].shape, [3, 3, 4, 3]);

    // Under a neutral name the OIHW layout decides (Keras 1 Theano) …
    let dir = tempfile::tempdir().unwrap();
    let neutral = dir.path().join("weights.h5");
    std::fs::copy(fx("mini_th_dim_ordering_th_kernels.h5"), &neutral).unwrap();
    let (th2, r2) = read_keras_h5(&neutral, None).unwrap();
    assert_eq!(r2.convention, Convention::Th);
    assert!(r2.reason.contains("OIHW"), "{}", r2.reason);
    assert_eq!(th2[3].kernel, tf[3].kernel);
    // … and --convention tf overrides: transposed but not flipped, so different.
    let (not_flipped, r3) = read_keras_h5(&neutral, Some(Convention::Tf)).unwrap();
    assert_eq!(r3.reason, "--convention");
    assert_ne!(not_flipped[0].kernel, tf[0].kernel);
}

/// The imported kernel, used as a cross-correlation, reproduces Keras' Conv2D output.
#[test]
fn imported_kernels_reproduce_keras_conv() {
    let (tf, _) = read_keras_h5(&fx("mini_tf_kernels.h5"), None).unwrap();
    let (th, _) = read_keras_h5(&fx("mini_th_dim_ordering_th_kernels.h5"), None).unwrap();
    let conv_file = fx("mini_conv.safetensors");
    let (xs, x) = common::read_f32(&conv_file, "x");
    let (ys, y) = common::read_f32(&conv_file, "y");
    assert_eq!(xs, [6, 6, 3]);
    assert_eq!(ys, [6, 6, 4]);
    for layers in [&tf, &th] {
        let c = &layers[0];
        let [_, _, cin, cout] = c.shape;
        let mut out = vec![0.0f32; 6 * 6 * cout];
        for r in 0..6i64 {
            for q in 0..6i64 {
                for o in 0..cout {
                    let mut s = f64::from(c.bias[o]);
                    for dh in 0..3i64 {
                        for dw in 0..3i64 {
                            let (yy, xx) = (r + dh - 1, q + dw - 1);
                            if !(0..6).contains(&yy) || !(0..6).contains(&xx) {
                                continue;
                            }
                            for i in 0..cin {
                                let k = c.kernel
                                    [((dh as usize * 3 + dw as usize) * cin + i) * cout + o];
                                s += f64::from(k) * f64::from(x[((yy * 6 + xx) as usize) * 3 + i]);
                            }
                        }
                    }
                    out[((r * 6 + q) as usize) * cout + o] = s as f32;
                }
            }
        }
        let d = common::max_abs_diff(&out, &y);
        assert!(
            d < 1e-5,
            "cross-correlation with the imported kernel differs from Keras by {d}"
        );
    }
}

fn pool5(weights: Vgg16Weights, input: &Tensor3) -> Tensor3 {
    let mut cpu = CpuBackend::new(Arc::new(weights), 2).unwrap();
    cpu.pool5(input).unwrap()
}

/// Full VGG16 shapes: the same synthetic weights saved tf-style (HWIO) and th-style
/// (OIHW, flipped) give bit-identical pool5 through the CPU backend; ignoring the
/// flip does not.
#[test]
fn both_conventions_through_the_network() {
    let w = synthetic::vgg16(3);
    let convs: Vec<ConvToWrite> = w
        .layers
        .iter()
        .map(|l| {
            (
                l.spec.name.to_owned(),
                [3, 3, l.spec.cin, l.spec.cout],
                l.kernel.clone(),
                l.bias.clone(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let tf_path = dir
        .path()
        .join("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5");
    let th_path = dir
        .path()
        .join("vgg16_weights_th_dim_ordering_th_kernels.h5");
    write_keras_h5(&tf_path, &convs, Layout::Hwio, Convention::Tf).unwrap();
    write_keras_h5(&th_path, &convs, Layout::Oihw, Convention::Th).unwrap();

    let (from_tf, rtf) = import_h5(&tf_path, None).unwrap();
    let (from_th, rth) = import_h5(&th_path, None).unwrap();
    assert_eq!(rtf.convention, Convention::Tf);
    assert_eq!(rth.convention, Convention::Th);
    for ((a, b), orig) in from_tf.layers.iter().zip(&from_th.layers).zip(&w.layers) {
        assert_eq!(a.kernel, orig.kernel, "{}", orig.spec.name);
        assert_eq!(b.kernel, orig.kernel, "{}", orig.spec.name);
        assert_eq!(b.bias, orig.bias);
    }
    // The stored th kernel really is flipped: its [0][0] tap is HWIO's [2][2].
    let (raw, _) = read_keras_h5(&th_path, Some(Convention::Tf)).unwrap();
    let l0 = &w.layers[0];
    let hwio =
        |k: &[f32], h: usize, ww: usize, i: usize, o: usize| k[((h * 3 + ww) * 3 + i) * 64 + o];
    assert_eq!(
        hwio(&raw[0].kernel, 0, 0, 1, 5),
        hwio(&l0.kernel, 2, 2, 1, 5)
    );

    let input = Tensor3::from_vec(
        64,
        64,
        3,
        (0..64 * 64 * 3)
            .map(|i| ((synthetic::uniform(9, 1, i as u64) - 0.5) * 200.0) as f32)
            .collect(),
    );
    let p_tf = pool5(from_tf, &input);
    let p_th = pool5(from_th, &input);
    assert_eq!((p_tf.h, p_tf.w, p_tf.c), (2, 2, 512));
    assert!(p_tf.data.iter().any(|&v| v > 0.0));
    assert_eq!(
        p_tf.data, p_th.data,
        "th and tf imports give different pool5"
    );

    // Importing the th file without the flip changes the network's output.
    let (unflipped, _) = import_h5(&th_path, Some(Convention::Tf)).unwrap();
    let p_wrong = pool5(unflipped, &input);
    assert!(common::max_abs_diff(&p_wrong.data, &p_tf.data) > 1e-3);

    // And the command writes the contract's safetensors.
    let out = dir.path().join("vgg16.safetensors");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_rmac-native"))
        .args(["weights", "import"])
        .arg(&th_path)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let stderr = String::from_utf8_lossy(&st.stderr);
    assert!(
        stderr.contains("th kernels") && stderr.contains("flipped"),
        "{stderr}"
    );
    let loaded = Vgg16Weights::load(&out).unwrap();
    assert_eq!(loaded.layers[12].kernel, w.layers[12].kernel);
}

#[test]
fn errors_name_the_problem() {
    // The mini file is not VGG16-sized: the error names the layer and both shapes.
    let e = import_h5(&fx("mini_tf_kernels.h5"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("block1_conv1") && e.contains("[3, 3, 3, 64]"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("x.h5");
    std::fs::write(&bad, b"not hdf5 at all").unwrap();
    let e = import_h5(&bad, None).unwrap_err().to_string();
    assert!(e.contains("not an HDF5 file"), "{e}");
}
