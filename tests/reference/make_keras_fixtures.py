"""Regenerate tests/fixtures/keras/** (Keras reference fixtures for the Rust tests).

    /work/venv-ref/bin/python tests/reference/make_keras_fixtures.py [--out tests/fixtures/keras]

Writes:
  images/<name>.png         deterministic test images (numpy: gradients + shapes + seeded noise)
  <case>.safetensors        input (u8 [h, w, 3] RGB after resize), pool5 [H5, W5, 512],
                            region_max [R, 512], regions_pca [R, 512], vector [512] (f32)
  cases.json                one entry per case (see README.md)
  regions.json              rmac_regions(W, H, L) for many map sizes
  synthetic_check.json      check values of the synthetic weight generator

and runs a self-check: the Keras vectors of a few small cases against an
independent float64 numpy implementation of the same recipe.
"""

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

import keras_rmac_ref as ref  # noqa: E402
import synthetic  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))


# --------------------------------------------------------------------------
# Test images
# --------------------------------------------------------------------------

def make_image(w, h, seed):
    """RGB uint8 [h, w, 3]: smooth gradients, a disc, a rectangle, stripes, seeded noise."""
    rng = np.random.Generator(np.random.PCG64(seed))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u = xx / max(w - 1, 1)
    v = yy / max(h - 1, 1)
    img = np.empty((h, w, 3), dtype=np.float64)
    img[..., 0] = 40 + 170 * u
    img[..., 1] = 30 + 190 * v
    img[..., 2] = 128 + 90 * np.sin(2 * np.pi * (1.3 * u + 0.7 * v) + seed)
    # a disc
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    r = rng.uniform(0.15, 0.3) * min(w, h) + 2
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    img[disc] = rng.uniform(0, 255, 3)
    # a rectangle
    x0, y0 = int(rng.integers(0, max(w // 2, 1))), int(rng.integers(0, max(h // 2, 1)))
    x1, y1 = x0 + max(w // 4, 2), y0 + max(h // 3, 2)
    img[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
    # diagonal stripes in one corner
    stripes = ((xx + yy) // 3 % 2 == 0) & (xx > 0.6 * w) & (yy > 0.6 * h)
    img[stripes] = 255 - img[stripes]
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# name: (w, h, seed, PIL mode)
IMAGES = {
    "sq64": (64, 64, 11, "RGB"),
    "sq32": (32, 32, 12, "RGB"),
    "r96x160": (96, 160, 13, "RGB"),
    "r224x160": (224, 160, 14, "RGB"),
    "tall33x200": (33, 200, 15, "RGB"),
    "wide250x40": (250, 40, 16, "L"),  # grayscale PNG: convert("RGB") replicates
    "r100x70": (100, 70, 17, "RGBA"),  # RGBA PNG: convert("RGB") drops alpha
    "r200x260": (200, 260, 18, "RGB"),
    "r320x240": (320, 240, 19, "RGB"),
    "big300x225": (300, 225, 20, "RGB"),
    "small41x37": (41, 37, 21, "RGB"),
}


def write_images(img_dir):
    os.makedirs(img_dir, exist_ok=True)
    for name, (w, h, seed, mode) in IMAGES.items():
        rgb = make_image(w, h, seed)
        if mode == "RGB":
            im = Image.fromarray(rgb, "RGB")
        elif mode == "L":
            im = Image.fromarray(rgb.mean(axis=2).round().astype(np.uint8), "L")
        elif mode == "RGBA":
            rng = np.random.Generator(np.random.PCG64(seed + 1000))
            alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
            alpha[: h // 2] = 255
            im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
        im.save(os.path.join(img_dir, name + ".png"), optimize=True)


# name, image, seed, max_size (None: max(w, h), no resize), levels, preprocess, pca
CASES = [
    ("sq64_keras_s1_l3", "sq64", 1, None, 3, "keras", "synthetic"),
    ("sq64_caffe_s2_l2", "sq64", 2, None, 2, "caffe", "synthetic"),
    ("sq32_keras_s1_l3", "sq32", 1, None, 3, "keras", "synthetic"),
    ("r96x160_caffe_s1_l3", "r96x160", 1, None, 3, "caffe", "synthetic"),
    ("r96x160_keras_s1_l3_nopca", "r96x160", 1, None, 3, "keras", "none"),
    ("r224x160_keras_s2_l3", "r224x160", 2, None, 3, "keras", "synthetic"),
    ("tall33x200_keras_s1_l3", "tall33x200", 1, None, 3, "keras", "synthetic"),
    ("wide250x40_caffe_s2_l3", "wide250x40", 2, None, 3, "caffe", "synthetic"),
    ("r100x70_keras_s1_l1", "r100x70", 1, None, 1, "keras", "synthetic"),
    ("r100x70_keras_s2_l2", "r100x70", 2, None, 2, "keras", "synthetic"),
    ("r200x260_caffe_s1_l4", "r200x260", 1, None, 4, "caffe", "synthetic"),
    ("r320x240_keras_s2_l3", "r320x240", 2, None, 3, "keras", "synthetic"),
    ("resize300x225_to150_keras_s1_l3", "big300x225", 1, 150, 3, "keras", "synthetic"),
    ("enlarge41x37_to96_caffe_s2_l3", "small41x37", 2, 96, 3, "caffe", "synthetic"),
]

SELF_CHECK_CASES = ["sq64_keras_s1_l3", "sq32_keras_s1_l3", "r96x160_keras_s1_l3_nopca", "r100x70_keras_s2_l2"]


# --------------------------------------------------------------------------
# Independent float64 numpy implementation (self-check)
# --------------------------------------------------------------------------

def np64_conv3x3_relu(x, k, b):
    """x [H, W, Cin] f64, k [3, 3, Cin, Cout], zero padding 1, cross-correlation, bias, ReLU."""
    h, w, cin = x.shape
    p = np.zeros((h + 2, w + 2, cin))
    p[1:-1, 1:-1] = x
    out = np.zeros((h, w, k.shape[3]))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("hwc,co->hwo", p[dy:dy + h, dx:dx + w], k[dy, dx].astype(np.float64), optimize=True)
    return np.maximum(out + b.astype(np.float64), 0.0)


def np64_maxpool2(x):
    h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2, c).max(axis=(1, 3))


def np64_l2(x):
    return x / np.sqrt(np.maximum((x * x).sum(axis=-1, keepdims=True), 1e-12))


def np64_regions(W, H, L):
    """Independent re-derivation of rmac_regions (plain Python floats, no numpy nan tricks)."""
    w = min(W, H)
    idx = 0
    if W != H:
        best = None
        for i, s in enumerate([2, 3, 4, 5, 6, 7]):
            b = (max(W, H) - w) / (s - 1)
            err = abs((w * w - w * b) / (w * w) - 0.4)
            if best is None or err < best:
                best, idx = err, i
    Wd = idx + 1 if H < W else 0
    Hd = idx + 1 if H > W else 0
    out = []
    for l in range(1, L + 1):
        wl = math.floor(2 * w / (l + 1))
        wl2 = math.floor(wl / 2 - 1)
        bw = (W - wl) / (l + Wd - 1) if l + Wd - 1 else 0.0
        bh = (H - wl) / (l + Hd - 1) if l + Hd - 1 else 0.0
        cw = [math.floor(wl2 + i * bw) - wl2 for i in range(l + Wd)]
        ch = [math.floor(wl2 + i * bh) - wl2 for i in range(l + Hd)]
        for y in ch:
            for x in cw:
                if wl > 0:
                    out.append([x, y, wl, wl])
    return out


def np64_pipeline(x32, levels, vgg, pca):
    x = x32.astype(np.float64)
    for name, _, _ in synthetic.VGG16_CONVS:
        x = np64_conv3x3_relu(x, vgg[f"{name}.kernel"], vgg[f"{name}.bias"])
        if name in synthetic.POOL_AFTER:
            x = np64_maxpool2(x)
    pool5 = x
    H5, W5, _ = pool5.shape
    regs = np64_regions(W5, H5, levels)
    rm = np.stack([pool5[y:y + h, x_:x_ + w].max(axis=(0, 1)) for x_, y, w, h in regs])
    r = np64_l2(rm)
    if pca is not None:
        r = np64_l2(r @ pca["pca.weight"].astype(np.float64).T + pca["pca.bias"].astype(np.float64))
    v = np64_l2(r.sum(axis=0))
    return pool5, regs, rm, r, v


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

def fr(v):
    """float -> exact repr (of the f64 value; an f32 value round-trips exactly)."""
    return float(v)


def write_regions_json(path):
    combos = []
    for W in range(1, 21):
        for H in range(1, 21):
            combos.append((W, H, 3))
    for n in range(1, 65):
        combos += [(n, n, 3), (1, n, 3), (n, 1, 3)]
    combos += [(16, 2, 3), (2, 16, 3)]
    real = [(32, 24), (24, 32), (16, 12), (12, 16), (17, 14), (14, 19), (31, 31), (64, 48)]
    for W, H in real:
        combos.append((W, H, 3))
    subset = real + [(1, 1), (2, 2), (3, 2), (7, 5), (5, 7), (1, 6), (7, 1), (10, 3), (20, 20), (13, 40), (40, 13)]
    for W, H in subset:
        for L in range(1, 6):
            combos.append((W, H, L))
    seen, entries = set(), []
    for c in combos:
        if c in seen:
            continue
        seen.add(c)
        W, H, L = c
        regs = ref.rmac_regions(np.float64(W), np.float64(H), L)
        regs = [[int(t) for t in r] for r in regs]
        assert regs == np64_regions(W, H, L), (W, H, L)
        entries.append({"w": W, "h": H, "levels": L, "regions": regs})
    with open(path, "w") as f:
        f.write('{"note": "keras_rmac rmac_regions(W, H, L) on a W x H pool5 map; regions are [x, y, w, h]",\n')
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(e, separators=(",", ":")) for e in entries))
        f.write("\n]}\n")
    return len(entries)


def fnv1a64_all(seed):
    """FNV-1a 64 over the f32 bit patterns (each as one u64 step: h = (h ^ bits) * 0x100000001b3)
    of every generated value in order: for each conv layer kernel (flat HWIO) then bias, then
    pca.weight (row-major) then pca.bias."""
    vals = []
    for k in range(len(synthetic.VGG16_CONVS)):
        kern, bias = synthetic.conv_layer(seed, k)
        vals += [kern.reshape(-1), bias]
    p = synthetic.pca(seed)
    vals += [p["pca.weight"].reshape(-1), p["pca.bias"]]
    bits = np.concatenate(vals).view(np.uint32).astype(np.uint64)
    h = 0xCBF29CE484222325
    m = (1 << 64) - 1
    for x in bits.tolist():
        h = ((h ^ x) * 0x100000001B3) & m
    return h


def write_synthetic_check(path):
    pairs = [(0, 0), (0, 1), (1, 0), (3, 12345), (25, 2359295), (100, 0), (100, 262143), (7, 1 << 20)]
    out = {
        "note": "check values of tests/reference/synthetic.py (== src/vgg16/synthetic.rs); "
        "floats are the exact f64 repr of the value (f32 values round-trip exactly); "
        "sums are sequential f64 sums in flat (row-major) order of the f32 values; "
        "fnv1a64_all_bits: see fnv1a64_all() in make_keras_fixtures.py",
        "splitmix64_0": "0x%016X" % int(synthetic.splitmix64(0)),
        "seeds": [],
    }
    for seed in (1, 2):
        s = {"seed": seed, "uniform": [], "layers": []}
        for stream, i in pairs:
            s["uniform"].append({"stream": stream, "i": i, "value": fr(synthetic.uniform(seed, stream, i))})
        for k, (name, cin, cout) in enumerate(synthetic.VGG16_CONVS):
            kern, bias = synthetic.conv_layer(seed, k)
            kf = kern.reshape(-1).astype(np.float64)
            s["layers"].append({
                "name": name,
                "kernel_shape": [3, 3, cin, cout],
                "kernel_first4": [fr(v) for v in kf[:4]],
                "kernel_last4": [fr(v) for v in kf[-4:]],
                "kernel_sum": fr(np.cumsum(kf)[-1]),
                "bias_first4": [fr(v) for v in bias[:4]],
                "bias_last4": [fr(v) for v in bias[-4:]],
                "bias_sum": fr(np.cumsum(bias.astype(np.float64))[-1]),
            })
        p = synthetic.pca(seed)
        wf = p["pca.weight"].reshape(-1).astype(np.float64)
        bf = p["pca.bias"].astype(np.float64)
        s["pca"] = {
            "weight_first4": [fr(v) for v in wf[:4]],
            "weight_last4": [fr(v) for v in wf[-4:]],
            "weight_sum": fr(np.cumsum(wf)[-1]),
            "bias_first4": [fr(v) for v in bf[:4]],
            "bias_last4": [fr(v) for v in bf[-4:]],
            "bias_sum": fr(np.cumsum(bf)[-1]),
        }
        s["fnv1a64_all_bits"] = "0x%016X" % fnv1a64_all(seed)
        out["seeds"].append(s)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "keras"))
    ap.add_argument("--skip-self-check", action="store_true")
    a = ap.parse_args()
    out = a.out
    img_dir = os.path.join(out, "images")
    os.makedirs(out, exist_ok=True)

    assert int(synthetic.splitmix64(0)) == 0xE220A8397B1DCDAF
    write_synthetic_check(os.path.join(out, "synthetic_check.json"))
    n = write_regions_json(os.path.join(out, "regions.json"))
    print(f"regions.json: {n} (W, H, L) entries")
    write_images(img_dir)

    weights = {s: (synthetic.vgg16(s), synthetic.pca(s)) for s in (1, 2)}
    cases_json = []
    self_check = {}
    for name, image, seed, max_size, levels, mode, pca_kind in CASES:
        t0 = time.time()
        w0, h0, _, pil_mode = IMAGES[image]
        if max_size is None:
            max_size = max(w0, h0)
        img_path = os.path.join(img_dir, image + ".png")
        rgb = ref.load_and_resize(img_path, max_size)
        x = ref.preprocess(rgb, mode)
        vgg, pca = weights[seed]
        if pca_kind == "none":
            pca = None
        r = ref.run_pipeline(x, levels, vgg, pca)
        h, w, _ = rgb.shape
        tensors = {
            "input": np.ascontiguousarray(rgb, dtype=np.uint8),
            "pool5": np.ascontiguousarray(r["pool5"], dtype=np.float32),
            "region_max": np.ascontiguousarray(r["region_max"], dtype=np.float32),
            "regions_pca": np.ascontiguousarray(r["regions_pca"], dtype=np.float32),
            "vector": np.ascontiguousarray(r["vector"], dtype=np.float32),
        }
        save_file(tensors, os.path.join(out, name + ".safetensors"))
        entry = {
            "name": name,
            "image": "images/" + image + ".png",
            "image_mode": pil_mode,
            "image_size": [w0, h0],
            "seed": seed,
            "max_size": max_size,
            "levels": levels,
            "preprocess": mode,
            "pca": pca_kind,
            "input_size": [w, h],
            "pool5_size": [r["w5"], r["h5"]],
            "regions": [[int(t) for t in reg] for reg in r["regions"]],
        }
        if name in SELF_CHECK_CASES and not a.skip_self_check:
            p5, regs, rm, rp, v = np64_pipeline(x, levels, vgg, pca)
            assert regs == entry["regions"], (regs, entry["regions"])
            d = {
                "pool5_max_rel": float(np.abs(r["pool5"] - p5).max() / max(np.abs(p5).max(), 1e-30)),
                "region_max_max_rel": float(np.abs(r["region_max"] - rm).max() / max(np.abs(rm).max(), 1e-30)),
                "regions_pca_max_abs": float(np.abs(r["regions_pca"] - rp).max()),
                "vector_max_abs": float(np.abs(r["vector"] - v).max()),
            }
            self_check[name] = d
            entry["self_check_vs_numpy_f64"] = d
        cases_json.append(entry)
        print(f"{name}: input {w}x{h} pool5 {r['w5']}x{r['h5']} R={len(r['regions'])} "
              f"({time.time() - t0:.1f}s)" + (f" self-check {self_check[name]}" if name in self_check else ""))
        sys.stdout.flush()

    with open(os.path.join(out, "cases.json"), "w") as f:
        f.write('{"note": "Keras reference cases; tensors in <name>.safetensors; sizes are [w, h]; '
                'regions are [x, y, w, h] in pool5 cells; weights: synthetic.py / src/vgg16/synthetic.rs for seed",\n')
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(e, separators=(",", ":")) for e in cases_json))
        f.write("\n]}\n")

    worst = max((d["vector_max_abs"] for d in self_check.values()), default=None)
    print("self-check (Keras f32 vs numpy f64), max |vector diff| over cases:", worst)
    if worst is not None and worst > 1e-5:
        print("SELF-CHECK FAILED", file=sys.stderr)
        sys.exit(1)

    total = 0
    for root, _, files in os.walk(out):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    print(f"fixtures total: {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
