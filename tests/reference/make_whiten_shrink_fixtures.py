"""Fixtures for `pca fit --shrink A --dim D` (tests/fixtures/whiten/pca_shrink_numpy.safetensors).

    /work/venv-ref/bin/python tests/reference/make_whiten_shrink_fixtures.py

Environment: tests/reference/requirements.txt (only numpy 2.3.5 and safetensors
0.8.0 are used). Runs in a few seconds. The training vectors are
``pca_data()`` of make_whiten_h5_evaluate_fixtures.py (2000 region-like
vectors in 512 dimensions, regenerated bit for bit in Rust). Recipe, numpy's
own, independent of the Rust code:

    mu = mean(x); C = np.cov(x) (unbiased); lam, E = np.linalg.eigh(C),
    sorted by decreasing lam, each eigenvector signed so that its largest-|.|
    component is positive;
    s = lam + A * mean(lam); s = max(s, 1e-9 * s[0]);
    W = (diag(s^-1/2) E^T)[:D]; b = -W mu.

For each case ``<name>`` (A, D) below it writes, float64: ``<name>.bias`` [D],
``<name>.probes`` [4, D] = W x + b for the first 4 vectors, ``<name>.rowsum``
[D] = W 1.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_whiten_h5_evaluate_fixtures import out, pca_data  # noqa: E402

# (name, shrink A, kept dimension D)
CASES = [("shrink0.5", 0.5, 512), ("dim128", 0.0, 128), ("shrink0.1_dim64", 0.1, 64)]
EIGEN_FLOOR_REL = 1e-9


def shrunk_whitening(x32, shrink, dim):
    x = x32.astype(np.float64)
    mu = x.mean(axis=0)
    c = np.cov(x, rowvar=False)
    lam, e = np.linalg.eigh(c)
    order = np.argsort(-lam, kind="stable")
    lam, e = lam[order], e[:, order]
    for k in range(e.shape[1]):
        j = np.argmax(np.abs(e[:, k]))
        if e[j, k] < 0:
            e[:, k] = -e[:, k]
    s = lam + shrink * lam.mean()
    s = np.maximum(s, EIGEN_FLOOR_REL * s[0])
    w = (np.diag(s ** -0.5) @ e.T)[:dim]
    b = -w @ mu
    return w, b, lam


def main():
    from safetensors.numpy import save_file

    x = pca_data()
    tensors = {}
    for name, shrink, dim in CASES:
        w, b, lam = shrunk_whitening(x, shrink, dim)
        white = (x.astype(np.float64) @ w.T) + b
        # Self-check: the whitened covariance is diag(lam / (lam + A mean(lam))) on the kept components.
        cov = np.cov(white, rowvar=False)
        want = np.diag(lam[:dim] / (lam[:dim] + shrink * lam.mean()))
        assert np.abs(cov - want).max() < 1e-8, f"{name}: numpy self-check"
        tensors[f"{name}.bias"] = b
        tensors[f"{name}.probes"] = white[:4].copy()
        tensors[f"{name}.rowsum"] = w.sum(axis=1)
        print(f"{name}: A={shrink} D={dim} |b|max={np.abs(b).max():.4e}")
    save_file(tensors, out("whiten", "pca_shrink_numpy.safetensors"))


if __name__ == "__main__":
    main()
