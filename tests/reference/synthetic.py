"""Deterministic synthetic VGG16 + PCA weights, bit-for-bit equal to the Rust
generator in ``src/vgg16/synthetic.rs``.

Counter-based generator (any element computable alone):

    splitmix64(z): z += 0x9E3779B97F4A7C15; z = (z ^ z>>30)*0xBF58476D1CE4E5B9;
                   z = (z ^ z>>27)*0x94D049BB133111EB; z ^ z>>31    (wrapping u64)
    uniform(seed, stream, i) = (splitmix64((seed<<56) ^ (stream<<40) ^ i) >> 11) * 2**-53

* conv layer k (0..13, forward order), HWIO flat index i:
  (2u - 1) * sqrt(6 / (9*cin)),  u = uniform(seed, 2k, i)          (He-uniform)
* its bias j: (u - 0.5) * 0.2,   u = uniform(seed, 2k + 1, j)
* PCA weight, row-major [512, 512], flat index i: (2u - 1) * sqrt(3/512),
  u = uniform(seed, 100, i)
* PCA bias: b_r = -sum_c (f64(W_rc) * (1/sqrt(512)))  (sequential f64 sum over c
  of the f32 weights)

Every value is computed in float64 and rounded once to float32.
"""

import numpy as np

# (name, cin, cout) in forward order; a 2x2 max-pool follows conv*_2/conv*_3 of each block.
VGG16_CONVS = [
    ("block1_conv1", 3, 64),
    ("block1_conv2", 64, 64),
    ("block2_conv1", 64, 128),
    ("block2_conv2", 128, 128),
    ("block3_conv1", 128, 256),
    ("block3_conv2", 256, 256),
    ("block3_conv3", 256, 256),
    ("block4_conv1", 256, 512),
    ("block4_conv2", 512, 512),
    ("block4_conv3", 512, 512),
    ("block5_conv1", 512, 512),
    ("block5_conv2", 512, 512),
    ("block5_conv3", 512, 512),
]
POOL_AFTER = {"block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"}
FEATURE_DIM = 512
PCA_STREAM = 100

_U64 = np.uint64


def splitmix64(z):
    """splitmix64 finaliser on a uint64 scalar or array (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        z = z ^ (z >> _U64(31))
    return z


def uniform(seed, stream, i):
    """Uniform float64 in [0, 1) for element(s) i of `stream` under `seed` (vectorised over i)."""
    key = (_U64(seed) << _U64(56)) ^ (_U64(stream) << _U64(40)) ^ np.asarray(i, dtype=np.uint64)
    # (x >> 11) < 2**53 converts to float64 exactly; the scaling by 2**-53 is exact too.
    return (splitmix64(key) >> _U64(11)).astype(np.float64) * (1.0 / float(1 << 53))


def conv_layer(seed, k):
    """(kernel [3, 3, cin, cout] float32 HWIO, bias [cout] float32) of conv layer k."""
    _, cin, cout = VGG16_CONVS[k]
    limit = np.sqrt(6.0 / float(9 * cin))
    n = 9 * cin * cout
    u = uniform(seed, 2 * k, np.arange(n, dtype=np.uint64))
    kernel = ((2.0 * u - 1.0) * limit).astype(np.float32).reshape(3, 3, cin, cout)
    ub = uniform(seed, 2 * k + 1, np.arange(cout, dtype=np.uint64))
    bias = ((ub - 0.5) * 0.2).astype(np.float32)
    return kernel, bias


def vgg16(seed):
    """dict in the contract's safetensors layout: '<layer>.kernel' / '<layer>.bias'."""
    out = {}
    for k, (name, _, _) in enumerate(VGG16_CONVS):
        kernel, bias = conv_layer(seed, k)
        out[f"{name}.kernel"] = kernel
        out[f"{name}.bias"] = bias
    return out


def pca(seed):
    """{'pca.weight': [512, 512] float32 (y = W x + b), 'pca.bias': [512] float32}."""
    n = FEATURE_DIM
    limit = np.sqrt(3.0 / float(n))
    u = uniform(seed, PCA_STREAM, np.arange(n * n, dtype=np.uint64))
    weight = ((2.0 * u - 1.0) * limit).astype(np.float32).reshape(n, n)
    inv_sqrt_n = 1.0 / np.sqrt(float(n))
    w64 = weight.astype(np.float64)
    acc = np.zeros(n, dtype=np.float64)
    for c in range(n):  # sequential sum over c, vectorised over rows (no pairwise summation)
        acc = acc + w64[:, c] * inv_sqrt_n
    bias = (-acc).astype(np.float32)
    return {"pca.weight": weight, "pca.bias": bias}


def _self_test():
    assert int(splitmix64(0)) == 0xE220A8397B1DCDAF
    assert int(splitmix64(0x9E3779B97F4A7C15)) == 0x6E789E6AA1B965F4
    u = uniform(1, 3, np.arange(1000))
    assert (u >= 0).all() and (u < 1).all()
    assert uniform(1, 0, 0) != uniform(2, 0, 0)
    assert uniform(1, 0, 0) != uniform(1, 1, 0)


_self_test()
