"""R-MAC image descriptors (VGG16, keras_rmac-compatible) as NumPy arrays.

The vectors, scores and error messages are those of the ``rmac-native``
command line, bit for bit: the same Rust library computes them.

>>> import numpy as np, rmac_native
>>> ex = rmac_native.Extractor(weights="weights/vgg16.safetensors", pca="weights/pca.safetensors")
>>> vectors, errors = ex.describe_many(["a.jpg", "b.jpg", "c.jpg"])
>>> query = ex.describe("query.jpg")
>>> indices, scores = rmac_native.search(vectors, query[None, :], k=2)
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import FEATURE_DIM, ImageError, RmacError

__all__ = [
    "Extractor",
    "ImageError",
    "RmacError",
    "FEATURE_DIM",
    "load_vectors",
    "search",
]

PathLike = Union[str, "os.PathLike[str]"]


def _fspath(path: Any, what: str) -> str:
    """A path argument as the string the library takes (bytes paths decoded as Python does)."""
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(f"{what} must be a path (str or os.PathLike), not {type(path).__name__}") from None
    return os.fsdecode(p)


def _pil_image_type() -> Optional[type]:
    """PIL.Image.Image when Pillow has been imported (an image cannot exist otherwise)."""
    module = sys.modules.get("PIL.Image")
    return getattr(module, "Image", None) if module is not None else None


def _rgb_array(x: np.ndarray) -> np.ndarray:
    """Checks an image array: uint8, (height, width, 3)."""
    if x.dtype != np.uint8:
        raise TypeError(
            f"the image array must have dtype uint8 (8-bit RGB), not {x.dtype}; "
            "convert it first, e.g. np.clip(x, 0, 255).astype(np.uint8)"
        )
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(
            f"the image array must have shape (height, width, 3) with RGB channels, not {x.shape}; "
            "for a grayscale or RGBA image use PIL's convert('RGB') or stack the channels"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"the image array is empty (shape {x.shape})")
    return x


class Extractor:
    """A loaded model: VGG16 on a backend, the optional PCA-whitening, the recipe.

    Args:
        weights: the VGG16 weights (safetensors), e.g. ``weights/vgg16.safetensors``
            or ``~/.cache/rmac-native/vgg16.safetensors`` (where ``rmac-native weights
            fetch`` installs them).
        pca: the PCA-whitening file (safetensors), or ``None`` for no whitening
            (the CLI's ``--pca none``).
        backend: ``"auto"`` (a hardware GPU when there is one, else the CPU),
            ``"cpu"`` or ``"gpu"``.
        max_size: the longest image side after resizing (32 to 16384; the CLI's ``--max-size``).
        levels: R-MAC region scales (1 to 16; the CLI's ``--levels``).
        threads: CPU threads (0: all cores).

    Raises:
        RmacError: the weights or PCA file cannot be used, or no backend opens.
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        weights: PathLike,
        pca: Optional[PathLike],
        backend: str = "auto",
        max_size: int = 1024,
        levels: int = 3,
        threads: int = 0,
    ) -> None:
        for name, value in (("max_size", max_size), ("levels", levels), ("threads", threads)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, not {value}")
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a str (\"auto\", \"cpu\" or \"gpu\"), not {type(backend).__name__}")
        self._native = _native.Extractor(
            _fspath(weights, "weights"),
            None if pca is None else _fspath(pca, "pca"),
            backend,
            int(max_size),
            int(levels),
            int(threads),
        )

    @property
    def dim(self) -> int:
        """Length of the vectors (512)."""
        return self._native.dim

    @property
    def backend(self) -> str:
        """The device the network runs on, as the CLI names it."""
        return self._native.backend

    @property
    def max_size(self) -> int:
        return self._native.max_size

    @property
    def levels(self) -> int:
        return self._native.levels

    def __repr__(self) -> str:
        return f"<rmac_native.Extractor backend={self.backend!r} max_size={self.max_size} levels={self.levels}>"

    def describe(self, x: Any) -> np.ndarray:
        """The R-MAC vector of one image: float32, shape ``(dim,)``, L2-normalised.

        ``x`` is a path (``str`` or ``os.PathLike``), the encoded file as ``bytes``
        (``bytearray``, ``memoryview``), a ``PIL.Image.Image`` of any mode (converted
        with ``convert("RGB")``, as Pillow would for a file), or a ``uint8`` NumPy array
        of shape ``(height, width, 3)`` holding RGB (any strides).

        Raises:
            ImageError: the image cannot be decoded or described (the message
                names the file, as the CLI's error file does).
            TypeError, ValueError: ``x`` is none of the above, or an array of the
                wrong dtype or shape.
        """
        if isinstance(x, np.ndarray):
            return self._native.describe_array(_rgb_array(x))
        if isinstance(x, bytes):
            return self._native.describe_bytes(x)
        if isinstance(x, (bytearray, memoryview)):
            return self._native.describe_bytes(bytes(x))
        if isinstance(x, (str, os.PathLike)):
            return self._native.describe_path(_fspath(x, "the image path"))
        pil_image = _pil_image_type()
        if pil_image is not None and isinstance(x, pil_image):
            rgb = x if x.mode == "RGB" else x.convert("RGB")
            return self._native.describe_array(_rgb_array(np.asarray(rgb)))
        raise TypeError(
            "describe() takes a path, bytes, a PIL.Image or a uint8 NumPy array (height, width, 3), "
            f"not {type(x).__name__}"
        )

    def describe_many(
        self,
        paths: Iterable[PathLike],
        progress: Optional[Callable[[int, int], Any]] = None,
    ) -> Tuple[np.ndarray, List[Tuple[str, str]]]:
        """The vectors of many image files, through the CLI's decode-ahead pipeline.

        Images are decoded ahead of the network on other threads, with the GIL
        released. A file that cannot be described is recorded and the run goes on.

        Args:
            paths: image files.
            progress: called as ``progress(done, total)`` after each image (with the GIL).
                An exception it raises stops the run and propagates.

        Returns:
            ``(vectors, errors)``: a float32 array of shape ``(succeeded, dim)``, one row
            per image that succeeded in the order given, and ``(path, message)`` for
            each image that failed (the CLI's error-file messages). The paths of the rows
            are ``[p for p in paths if p not in {e[0] for e in errors}]``.
        """
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("describe_many() takes a list of paths; for one image use describe()")
        listed = [_fspath(p, "each path") for p in paths]
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, not {type(progress).__name__}")
        return self._native.describe_many(listed, progress)


def load_vectors(path: PathLike) -> Tuple[List[str], np.ndarray]:
    """``(paths, vectors)`` of a file written by ``rmac-native extract --output``.

    ``.jsonl``, ``.npy`` (its paths in the ``.paths.txt`` beside it) or
    ``.parquet``; ``vectors`` is float32, one row per path, in file order.

    Raises:
        RmacError: the file cannot be read (the CLI's message).
    """
    return _native.load_vectors(_fspath(path, "path"))


def _float32_matrix(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.float32:
        raise TypeError(f"{what} must have dtype float32 (as rmac-native writes them), not {a.dtype}; "
                        "convert with .astype(np.float32)")
    return np.ascontiguousarray(a)


def search(vectors: np.ndarray, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``vectors`` for each query by inner product, as ``rmac-native search``.

    Exact (every row is scored), on all cores, with the GIL released; ties go to
    the lower row.

    Args:
        vectors: float32, shape ``(rows, dim)``.
        queries: float32, shape ``(n, dim)``, or ``(dim,)`` for one query.
        k: results per query (at most ``rows`` are returned).

    Returns:
        ``(indices, scores)``: int64 row numbers and float32 scores, best first, of
        shape ``(n, min(k, rows))`` (``(min(k, rows),)`` for a 1-D query).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, not {type(k).__name__}")
    if k < 0:
        raise ValueError(f"k must not be negative, not {k}")
    v = _float32_matrix(vectors, "vectors")
    q = _float32_matrix(queries, "queries")
    if v.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (rows, dim), not {v.ndim}-D")
    single = q.ndim == 1
    if single:
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"queries must be a 1-D or 2-D array, not {q.ndim}-D")
    indices, scores = _native.search(v, q, int(k))
    if single:
        return indices[0], scores[0]
    return indices, scores
