"""Fixtures for PCA fit (tests/fixtures/whiten/), Keras .h5 import (tests/fixtures/h5/)
and evaluate (tests/fixtures/evaluate/).

    /work/venv-ref/bin/python tests/reference/make_whiten_h5_evaluate_fixtures.py

Environment: tests/reference/requirements.txt (numpy, keras/tensorflow-cpu,
scipy, safetensors, h5py). Runs in a few seconds. What it writes:

* ``pca_numpy.safetensors`` -- numpy's PCA-whitening of 2000 deterministic
  region-like vectors (``pca_data`` below, regenerated bit-for-bit in Rust from
  the shared splitmix64 generator): ``eigenvalues`` (decreasing), ``mean``,
  ``bias``, ``probes`` = W x + b for the first 4 vectors, ``rowsum`` = W 1;
  float64. Recipe: np.cov (unbiased), np.linalg.eigh, eigenvectors sorted by
  decreasing eigenvalue, each signed so that its largest-|.| component is
  positive, W = diag(l^-1/2) E^T, b = -W mu.
* ``mini_tf_kernels.h5`` -- a 13-layer VGG16-shaped model with tiny channel
  counts, built from real Keras 3 Conv2D layers and saved with Keras' own
  Keras-2-layout writer (``legacy_h5_format.save_weights_to_hdf5_group``): HWIO,
  cross-correlation; ``mini_keras3.weights.h5``: the same model in Keras 3's own
  format (``model.save_weights``). ``mini_conv.safetensors``: ``x`` [6, 6, 3] and Keras'
  block1_conv1 output ``y`` (no activation, padding same) on it.
* ``mini_th_dim_ordering_th_kernels.h5`` -- the same weights in keras_rmac's
  Keras 1 Theano layout, written with h5py: kernels [O, I, 3, 3], flipped 180
  degrees, weight names ``<layer>_W`` / ``<layer>_b``, no ``backend`` attribute.
  The script checks that scipy's true convolution with these th kernels equals
  Keras' Conv2D with the tf kernels (what Theano computed).
* ``eval_db.jsonl``, ``eval_queries.jsonl``, ``gnd_eval.pkl`` (revisitop
  format), ``gnd_eval.json`` (simple format) and ``eval_expected.json``: mAP,
  per-query AP, mP@k (revisitop's ``compute_map``, ported verbatim), recall@k
  and hit@k for k = 1, 5, 10.
"""

import json
import os
import pickle
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synthetic import uniform  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def out(folder, name):
    """tests/fixtures/<folder>/<name>, the folder created when missing."""
    os.makedirs(os.path.join(FIXTURES, folder), exist_ok=True)
    return os.path.join(FIXTURES, folder, name)

# ---------------------------------------------------------------- PCA ----------
PCA_SEED, PCA_STREAM, PCA_N, PCA_D = 6, 600, 2000, 512


def pca_data():
    """[2000, 512] float32: v_ij = u^3 / (1 + j/32), u = uniform(6, 600, i*512 + j),
    each row L2-normalised (sequential f64 sum over j), rounded once to float32."""
    idx = np.arange(PCA_N * PCA_D, dtype=np.uint64)
    u = uniform(PCA_SEED, PCA_STREAM, idx).reshape(PCA_N, PCA_D)
    scale = 1.0 / (1.0 + np.arange(PCA_D, dtype=np.float64) / 32.0)
    v = u * u * u * scale
    ss = np.zeros(PCA_N)
    for j in range(PCA_D):  # sequential, as in Rust
        ss = ss + v[:, j] * v[:, j]
    return (v / np.sqrt(ss)[:, None]).astype(np.float32)


def numpy_whitening(x32):
    x = x32.astype(np.float64)
    mu = x.mean(axis=0)
    c = np.cov(x, rowvar=False)  # unbiased (n - 1)
    lam, e = np.linalg.eigh(c)
    order = np.argsort(-lam, kind="stable")
    lam, e = lam[order], e[:, order]
    for k in range(e.shape[1]):
        j = np.argmax(np.abs(e[:, k]))
        if e[j, k] < 0:
            e[:, k] = -e[:, k]
    w = np.diag(lam ** -0.5) @ e.T
    b = -w @ mu
    return lam, mu, w, b


def make_pca():
    from safetensors.numpy import save_file

    x = pca_data()
    lam, mu, w, b = numpy_whitening(x)
    white = (x.astype(np.float64) @ w.T) + b
    cov_white = np.cov(white, rowvar=False)
    assert np.abs(cov_white - np.eye(PCA_D)).max() < 1e-8, "numpy whitening self-check"
    save_file(
        {
            "eigenvalues": lam,
            "mean": mu,
            "bias": b,
            "probes": white[:4].copy(),
            "rowsum": w.sum(axis=1),
            "x_head": x[:2].astype(np.float64),  # the first 2 inputs, to check the generator
        },
        out("whiten", "pca_numpy.safetensors"),
    )
    print(f"pca: eigenvalues {lam[0]:.4e} .. {lam[-1]:.4e}")


# ---------------------------------------------------------------- h5 -----------
# The 13 VGG16 layer names with tiny channel counts (cout; cin chains from 3).
MINI = [
    ("block1_conv1", 4), ("block1_conv2", 3), ("block2_conv1", 2), ("block2_conv2", 2),
    ("block3_conv1", 2), ("block3_conv2", 2), ("block3_conv3", 2), ("block4_conv1", 2),
    ("block4_conv2", 2), ("block4_conv3", 2), ("block5_conv1", 2), ("block5_conv2", 2),
    ("block5_conv3", 2),
]
POOLS = {"block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"}
H5_SEED = 7


def mini_weights():
    """[(name, kernel HWIO float32, bias float32)] from the shared generator (stream 700 + 2k, 701 + 2k)."""
    out, cin = [], 3
    for k, (name, cout) in enumerate(MINI):
        n = 9 * cin * cout
        kern = (2.0 * uniform(H5_SEED, 700 + 2 * k, np.arange(n, dtype=np.uint64)) - 1.0).astype(np.float32)
        bias = (uniform(H5_SEED, 701 + 2 * k, np.arange(cout, dtype=np.uint64)) - 0.5).astype(np.float32)
        out.append((name, kern.reshape(3, 3, cin, cout), bias))
        cin = cout
    return out


def make_h5():
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    from safetensors.numpy import save_file
    from scipy.signal import convolve2d

    weights = mini_weights()
    inp = keras.Input((None, None, 3), name="input_1")
    t = inp
    for name, kern, _ in weights:
        t = keras.layers.Conv2D(kern.shape[3], 3, padding="same", activation="relu", name=name)(t)
        if name in POOLS:
            t = keras.layers.MaxPooling2D(2, name=name.split("_")[0] + "_pool")(t)
    model = keras.Model(inp, t, name="vgg16")
    for name, kern, bias in weights:
        model.get_layer(name).set_weights([kern, bias])
    tf_path = out("h5", "mini_tf_kernels.h5")
    if os.path.exists(tf_path):
        os.remove(tf_path)
    with h5py.File(tf_path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    k3_path = out("h5", "mini_keras3.weights.h5")
    if os.path.exists(k3_path):
        os.remove(k3_path)
    model.save_weights(k3_path)  # Keras 3's own format: layers/<auto name>/vars/{0,1}

    # Keras' block1_conv1 (linear) on a 6x6x3 input.
    x = (uniform(H5_SEED, 799, np.arange(108, dtype=np.uint64)).reshape(6, 6, 3) - 0.5).astype(np.float32)
    k1, b1 = weights[0][1], weights[0][2]
    lin = keras.layers.Conv2D(k1.shape[3], 3, padding="same", name="lin")
    lin.build((None, 6, 6, 3))
    lin.set_weights([k1, b1])
    y = np.asarray(lin(x[None]))[0]
    save_file({"x": x, "y": y}, out("h5", "mini_conv.safetensors"))

    # Theano layout: OIHW, flipped 180 degrees.
    th_path = out("h5", "mini_th_dim_ordering_th_kernels.h5")
    if os.path.exists(th_path):
        os.remove(th_path)
    with h5py.File(th_path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in ["input_1"] + [w[0] for w in weights]]
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for name, kern, bias in weights:
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}_W".encode(), f"{name}_b".encode()]
            th = np.ascontiguousarray(kern.transpose(3, 2, 0, 1)[:, :, ::-1, ::-1])  # OIHW, flipped
            g.create_dataset(f"{name}_W", data=th)
            g.create_dataset(f"{name}_b", data=bias)
            if name == "block1_conv1":
                # Theano's conv2d is a true convolution: check it equals Keras' cross-correlation.
                xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
                for o in range(th.shape[0]):
                    acc = sum(convolve2d(xp[:, :, i], th[o, i].astype(np.float64), mode="valid") for i in range(3))
                    assert np.abs(acc + bias[o] - y[:, :, o]).max() < 1e-5, "th kernels are not Theano's"
    print("h5: wrote", tf_path, th_path)


# ---------------------------------------------------------------- evaluate -----
# revisitop's evaluation (github.com/filipradenovic/revisitop, python/evaluate.py), verbatim but np.isin.
def compute_ap(ranks, nres):
    nimgranks = len(ranks)
    ap = 0
    recall_step = 1.0 / nres
    for j in np.arange(nimgranks):
        rank = ranks[j]
        if rank == 0:
            precision_0 = 1.0
        else:
            precision_0 = float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def compute_map(ranks, gnd, kappas=[]):
    map = 0.0
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    nempty = 0
    for i in np.arange(nq):
        qgnd = np.array(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            aps[i] = float("nan")
            prs[i, :] = float("nan")
            nempty += 1
            continue
        try:
            qgndj = np.array(gnd[i]["junk"])
        except KeyError:
            qgndj = np.empty(0)
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = 0
        ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = compute_ap(pos, len(qgnd))
        map = map + ap
        aps[i] = ap
        pos += 1
        for j in np.arange(len(kappas)):
            kq = min(max(pos), kappas[j])
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    map = map / (nq - nempty)
    pr = pr / (nq - nempty)
    return map, aps, pr, prs


def recall_hit(ranks, gnd, kappas):
    """recall@k (fraction of positives in the first k, junk removed) and hit@k."""
    rec, hit, n = np.zeros(len(kappas)), np.zeros(len(kappas)), 0
    for i in range(len(gnd)):
        ok = set(int(v) for v in gnd[i]["ok"])
        if not ok:
            continue
        n += 1
        junk = set(int(v) for v in gnd[i]["junk"])
        ranking = [int(r) for r in ranks[:, i] if int(r) not in junk]
        for j, k in enumerate(kappas):
            found = sum(1 for r in ranking[:k] if r in ok)
            rec[j] += found / len(ok)
            hit[j] += 1.0 if found else 0.0
    return (rec / n).tolist(), (hit / n).tolist()


def make_eval():
    kappas = [1, 5, 10]
    ndb, nq, d = 40, 5, 16
    rng = np.random.default_rng(6)
    db = rng.standard_normal((ndb, d)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    names = [f"img_{i:03d}" for i in range(ndb)]
    # Queries: noisy copies of db images 0, 7, 14, 21, 28.
    qsrc = [0, 7, 14, 21, 28]
    qv = (db[qsrc] + 0.8 * rng.standard_normal((nq, d))).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    qnames = [f"q_{i}" for i in range(nq)]
    with open(out("evaluate", "eval_db.jsonl"), "w") as f:
        # db in a shuffled file order, paths with a folder and an extension
        for i in rng.permutation(ndb):
            f.write(json.dumps({"path": f"jpg/{names[i]}.jpg", "vector": [float(v) for v in db[i]]}) + "\n")
    with open(out("evaluate", "eval_queries.jsonl"), "w") as f:
        for i in range(nq):
            f.write(json.dumps({"path": f"queries/{qnames[i]}.jpg", "vector": [float(v) for v in qv[i]]}) + "\n")
    gnd = []
    for q in range(nq):
        perm = [int(v) for v in rng.permutation(ndb)]
        easy = sorted(perm[:4] + [qsrc[q]]) if qsrc[q] not in perm[:4] else sorted(perm[:4])
        rest = [v for v in perm[4:] if v not in easy]
        hard = sorted(rest[:3]) if q != 2 else []  # query 2: no hard positives
        junk = sorted(rest[3:5])
        gnd.append({"easy": easy, "hard": hard, "junk": junk, "bbx": [0.0, 0.0, 10.0, 10.0]})
    with open(out("evaluate", "gnd_eval.pkl"), "wb") as f:
        pickle.dump({"imlist": names, "qimlist": qnames, "gnd": gnd}, f, protocol=3)
    # Scores in float64 from the float32 vectors; ties are impossible here.
    scores = db.astype(np.float64) @ qv.astype(np.float64).T
    ranks = np.argsort(-scores, axis=0, kind="stable")
    expected = {}
    for proto, mk in [
        ("easy", lambda g: {"ok": g["easy"], "junk": g["junk"] + g["hard"]}),
        ("medium", lambda g: {"ok": g["easy"] + g["hard"], "junk": g["junk"]}),
        ("hard", lambda g: {"ok": g["hard"], "junk": g["junk"] + g["easy"]}),
    ]:
        gt = [mk(g) for g in gnd]
        m, aps, pr, _ = compute_map(ranks, gt, kappas)
        rec, hit = recall_hit(ranks, gt, kappas)
        expected[proto] = {
            "map": m,
            "aps": [None if np.isnan(a) else float(a) for a in aps],
            "mp_at_k": pr.tolist(),
            "recall_at_k": rec,
            "hit_at_k": hit,
        }
    # Simple JSON: queries are db images (self left out of the ranking), relevant = medium positives.
    simple = {f"jpg/{names[qsrc[q]]}.jpg": [f"jpg/{names[i]}.jpg" for i in gnd[q]["easy"] + gnd[q]["hard"] if i != qsrc[q]]
              for q in range(nq)}
    with open(out("evaluate", "gnd_eval.json"), "w") as f:
        json.dump(simple, f, indent=1)
    order = sorted(simple)  # Rust evaluates the JSON queries in sorted order
    sscores = db.astype(np.float64) @ db.astype(np.float64).T
    sranks = np.argsort(-sscores, axis=0, kind="stable")
    qidx = [names.index(k[4:-4]) for k in order]
    sgt = [{"ok": [names.index(p[4:-4]) for p in simple[k]], "junk": [qi]} for k, qi in zip(order, qidx)]
    m, aps, pr, _ = compute_map(sranks[:, qidx], sgt, kappas)
    rec, hit = recall_hit(sranks[:, qidx], sgt, kappas)
    expected["simple"] = {"map": m, "aps": [float(a) for a in aps], "mp_at_k": pr.tolist(),
                          "recall_at_k": rec, "hit_at_k": hit}
    with open(out("evaluate", "eval_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print("eval:", {k: round(v["map"], 4) for k, v in expected.items()})


if __name__ == "__main__":
    make_pca()
    make_eval()
    make_h5()
