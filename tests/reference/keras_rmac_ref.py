"""Independent keras_rmac reference: VGG16 + R-MAC built from real Keras 3 layers
(TensorFlow CPU backend, float32, channels_last).

The recipe is the one fixed in the project's contract (docs/contract.md):

1. Pillow ``open(p).convert("RGB")``; S = max size, scale = S / max(w, h),
   new = (ceil(scale*w), ceil(scale*h)) in float64; BICUBIC resize only if new != (w, h).
2. float32 HWC RGB; mode "keras" (keras_rmac's own ``preprocess_image``):
   subtract 103.939, 116.779, 123.68 from channels 0, 1, 2 then reverse to BGR;
   mode "caffe": reverse to BGR first, then subtract B 103.939, G 116.779, R 123.68.
3. ``keras.applications.VGG16(include_top=False, weights=None)`` up to block5_pool.
4. keras_rmac's ``rmac_regions(W5, H5, L)`` (reproduced faithfully below) and its
   ``RoiPooling([1], num_rois)`` in 'tf' ordering, as a Keras layer.
5. L2 -> PCA (Dense(512), kernel = W^T, bias = b) -> L2 -> sum over regions -> L2.
   With no PCA ("--pca none"): L2 -> sum -> L2 (no whitening, no second L2).

Also usable as a CLI to compare the Rust binary against Keras on your own photos::

    python keras_rmac_ref.py --weights vgg16.safetensors --pca pca.safetensors \
        --max-size 1024 --levels 3 --output ref.jsonl IMAGES...
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import keras  # noqa: E402
from keras import ops  # noqa: E402

keras.config.set_floatx("float32")
keras.config.set_image_data_format("channels_last")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import synthetic  # noqa: E402

CONV_NAMES = [name for name, _, _ in synthetic.VGG16_CONVS]


# --------------------------------------------------------------------------
# keras_rmac's get_regions.py, reproduced (np.float -> float64, np.int -> int64)
# --------------------------------------------------------------------------

def get_size_vgg_feat_map(input_W, input_H):
    output_W = input_W
    output_H = input_H
    for i in range(1, 6):
        output_H = np.floor(output_H / 2)
        output_W = np.floor(output_W / 2)

    return output_W, output_H


def rmac_regions(W, H, L):
    # W, H are numpy float64 as returned by get_size_vgg_feat_map: the W == H,
    # level-1 division below is 0/0 -> nan (numpy semantics), which the
    # original code turns into b = 0.
    W = np.float64(W)
    H = np.float64(H)

    ovr = 0.4  # desired overlap of neighboring regions
    steps = np.array([2, 3, 4, 5, 6, 7], dtype=np.float64)  # possible regions for the long dimension

    w = min(W, H)

    b = (max(H, W) - w) / (steps - 1)
    idx = np.argmin(abs(((w ** 2 - w * b) / w ** 2) - ovr))  # steps(idx) regions for long dimension

    # region overplus per dimension
    Wd, Hd = 0, 0
    if H < W:
        Wd = idx + 1
    elif H > W:
        Hd = idx + 1

    regions = []

    with np.errstate(divide="ignore", invalid="ignore"):
        for l in range(1, L + 1):

            wl = np.floor(2 * w / (l + 1))
            wl2 = np.floor(wl / 2 - 1)

            b = (W - wl) / (l + Wd - 1)
            if np.isnan(b):  # for the first level
                b = 0
            cenW = np.floor(wl2 + np.arange(0, l + Wd) * b) - wl2  # center coordinates

            b = (H - wl) / (l + Hd - 1)
            if np.isnan(b):  # for the first level
                b = 0
            cenH = np.floor(wl2 + np.arange(0, l + Hd) * b) - wl2  # center coordinates

            for i_ in cenH:
                for j_ in cenW:
                    R = np.array([j_, i_, wl, wl], dtype=np.int64)
                    if not min(R[2:]):
                        continue

                    regions.append(R)

    regions = np.asarray(regions)
    return regions


def regions_for_input(w, h, levels):
    """(W5, H5, regions [R, 4] int64 (x, y, w, h)) for a w x h network input."""
    W5, H5 = get_size_vgg_feat_map(w, h)
    return int(W5), int(H5), rmac_regions(W5, H5, levels)


# --------------------------------------------------------------------------
# Image loading and preprocessing
# --------------------------------------------------------------------------

def load_and_resize(path, max_size):
    """8-bit RGB HWC uint8 array after the contract's resize."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = max_size / max(w, h)
    new = (int(math.ceil(scale * w)), int(math.ceil(scale * h)))
    if new != (w, h):
        img = img.resize(new, Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8).copy()


MEAN = (np.float32(103.939), np.float32(116.779), np.float32(123.68))


def preprocess(rgb_u8, mode="keras"):
    """float32 HWC network input (BGR) from an 8-bit RGB HWC image."""
    x = rgb_u8.astype(np.float32)
    if mode == "keras":
        # keras_rmac utils.preprocess_image: mean of channel 0, 1, 2 on R, G, B; then RGB -> BGR
        x[..., 0] -= MEAN[0]
        x[..., 1] -= MEAN[1]
        x[..., 2] -= MEAN[2]
        x = x[..., ::-1]
    elif mode == "caffe":
        x = x[..., ::-1].copy()
        x[..., 0] -= MEAN[0]  # B
        x[..., 1] -= MEAN[1]  # G
        x[..., 2] -= MEAN[2]  # R
    else:
        raise ValueError(f"unknown preprocess mode {mode!r}")
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

def load_vgg16_safetensors(path):
    from safetensors.numpy import load_file

    t = load_file(path)
    out = {}
    for name, cin, cout in synthetic.VGG16_CONVS:
        k = np.asarray(t[f"{name}.kernel"], dtype=np.float32)
        b = np.asarray(t[f"{name}.bias"], dtype=np.float32)
        if k.shape != (3, 3, cin, cout) or b.shape != (cout,):
            raise ValueError(f"{path}: {name} has shapes {k.shape}, {b.shape}")
        out[f"{name}.kernel"] = k
        out[f"{name}.bias"] = b
    return out


def load_pca_safetensors(path):
    from safetensors.numpy import load_file

    t = load_file(path)
    w = np.asarray(t["pca.weight"], dtype=np.float32)
    b = np.asarray(t["pca.bias"], dtype=np.float32)
    if w.shape != (512, 512) or b.shape != (512,):
        raise ValueError(f"{path}: pca shapes {w.shape}, {b.shape}")
    return {"pca.weight": w, "pca.bias": b}


def load_pca_mat(path):
    """keras_rmac's PCAmatrices.mat: y = weights . x + bias (as in rmac.py: Dense kernel = weights^T)."""
    import scipy.io

    mat = scipy.io.loadmat(path)
    b = np.squeeze(mat["bias"], axis=1)
    w = mat["weights"]
    return {"pca.weight": w.astype(np.float32), "pca.bias": b.astype(np.float32)}


# --------------------------------------------------------------------------
# The Keras model
# --------------------------------------------------------------------------

def l2_normalize(x, axis):
    """keras_rmac's K.l2_normalize: x / sqrt(max(sum x^2, 1e-12))."""
    sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return ops.divide(x, ops.sqrt(ops.maximum(sq, 1e-12)))


class RoiPooling(keras.layers.Layer):
    """keras_rmac's RoiPooling(pool_list=[1], num_rois), 'tf' dim ordering.

    Inputs: [img (1, rows, cols, C), rois (1, num_rois, 4) as (x, y, w, h)].
    Output: (1, num_rois, C), the max over img[:, y1:y2, x1:x2, :] with
    x1 = round(x), x2 = round(x + h), y1 = round(y), y2 = round(y + w)
    (the original's row_length = w, col_length = h, as written there).
    """

    def __init__(self, num_rois, **kwargs):
        super().__init__(**kwargs)
        self.num_rois = num_rois

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_rois, input_shape[0][3])

    def call(self, inputs):
        img, rois = inputs
        outputs = []
        for roi_idx in range(self.num_rois):
            x = rois[0, roi_idx, 0]
            y = rois[0, roi_idx, 1]
            w = rois[0, roi_idx, 2]
            h = rois[0, roi_idx, 3]
            row_length = w / 1
            col_length = h / 1
            x1 = x
            x2 = x1 + col_length
            y1 = y
            y2 = y1 + row_length
            x1 = ops.cast(ops.round(x1), "int32")
            x2 = ops.cast(ops.round(x2), "int32")
            y1 = ops.cast(ops.round(y1), "int32")
            y2 = ops.cast(ops.round(y2), "int32")
            x_crop = img[:, y1:y2, x1:x2, :]
            outputs.append(ops.max(x_crop, axis=(1, 2)))
        out = ops.concatenate(outputs, axis=0)
        return ops.reshape(out, (1, self.num_rois, -1))


def build_vgg16(h, w, vgg_weights):
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(h, w, 3))
    for name in CONV_NAMES:
        base.get_layer(name).set_weights([vgg_weights[f"{name}.kernel"], vgg_weights[f"{name}.bias"]])
    return base


def build_rmac_model(h, w, num_rois, vgg_weights, pca_weights):
    """Multi-output Keras model [image, rois] -> [pool5, region_max, regions_pca, vector].

    regions_pca is after PCA and the second L2 (after the first L2 only when there is no PCA).
    """
    base = build_vgg16(h, w, vgg_weights)
    pool5 = base.get_layer("block5_pool").output
    in_roi = keras.Input(shape=(num_rois, 4), name="input_roi")
    region_max = RoiPooling(num_rois, name="roi_pooling")([pool5, in_roi])
    x = keras.layers.Lambda(lambda t: l2_normalize(t, axis=2), name="norm1")(region_max)
    if pca_weights is not None:
        dense = keras.layers.Dense(512, name="pca")
        x = dense(x)
        dense.set_weights([np.ascontiguousarray(pca_weights["pca.weight"].T), pca_weights["pca.bias"]])
        x = keras.layers.Lambda(lambda t: l2_normalize(t, axis=2), name="pca_norm")(x)
    regions_pca = x
    s = keras.layers.Lambda(lambda t: ops.sum(t, axis=1), name="rmac")(x)
    vector = keras.layers.Lambda(lambda t: l2_normalize(t, axis=1), name="rmac_norm")(s)
    return keras.Model([base.input, in_roi], [pool5, region_max, regions_pca, vector])


_MODEL_CACHE = {}


def run_pipeline(x, levels, vgg_weights, pca_weights, cache_key=None):
    """Run the Keras model on a preprocessed float32 HWC input.

    Returns dict with pool5 [H5, W5, 512], region_max [R, 512], regions_pca [R, 512],
    vector [512] (float32 numpy) and w5, h5, regions [R, 4].
    """
    h, w, _ = x.shape
    W5, H5, regions = regions_for_input(w, h, levels)
    if W5 == 0 or H5 == 0:
        raise ValueError(f"input {w}x{h} gives an empty pool5 map")
    key = (cache_key, h, w, len(regions)) if cache_key is not None else None
    model = _MODEL_CACHE.get(key) if key is not None else None
    if model is None:
        keras.backend.clear_session()
        _MODEL_CACHE.clear()
        model = build_rmac_model(h, w, len(regions), vgg_weights, pca_weights)
        if key is not None:
            _MODEL_CACHE[key] = model
    rois = regions.astype(np.float32)[None]
    outs = model([x[None], rois], training=False)
    pool5, region_max, regions_pca, vector = (np.asarray(o) for o in outs)
    return {
        "pool5": pool5[0],
        "region_max": region_max[0],
        "regions_pca": regions_pca[0],
        "vector": vector[0],
        "w5": W5,
        "h5": H5,
        "regions": regions,
    }


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="VGG16 safetensors in the contract's layout (HWIO kernels)")
    p.add_argument("--synthetic-seed", type=int, help="use synthetic.py weights (VGG16 and PCA) for this seed instead")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pca", help="PCA safetensors (pca.weight, pca.bias), or 'none' for no whitening")
    g.add_argument("--pca-mat", help="keras_rmac's PCAmatrices.mat")
    p.add_argument("--max-size", type=int, default=1024)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--preprocess", choices=["keras", "caffe"], default="keras")
    p.add_argument("--output", required=True, help="JSON lines: {\"path\": P, \"vector\": [512 floats]}")
    p.add_argument("images", nargs="+")
    a = p.parse_args(argv)

    if a.synthetic_seed is not None:
        vgg = synthetic.vgg16(a.synthetic_seed)
        pca = synthetic.pca(a.synthetic_seed)
    else:
        if not a.weights:
            p.error("--weights (or --synthetic-seed) is required")
        vgg = load_vgg16_safetensors(a.weights)
        pca = None
    if a.pca_mat:
        pca = load_pca_mat(a.pca_mat)
    elif a.pca is not None:
        pca = None if a.pca == "none" else load_pca_safetensors(a.pca)
    elif a.synthetic_seed is None:
        p.error("--pca FILE|none or --pca-mat FILE is required")

    failed = 0
    with open(a.output, "w") as out:
        for path in a.images:
            try:
                rgb = load_and_resize(path, a.max_size)
                x = preprocess(rgb, a.preprocess)
                r = run_pipeline(x, a.levels, vgg, pca, cache_key="cli")
            except Exception as e:  # report and go on, like the binary
                failed += 1
                print(f"{path}: {e}", file=sys.stderr)
                continue
            vec = [float(v) for v in r["vector"]]
            out.write(json.dumps({"path": path, "vector": vec}) + "\n")
            out.flush()
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
