"""The native half of rmac_native (Rust, PyO3). Use the wrappers in ``rmac_native``."""

from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

FEATURE_DIM: int
"""Length of an R-MAC vector (512)."""

class ImageError(ValueError):
    """An image could not be described (unreadable, corrupt, truncated, too small, ...).

    The message is the one the CLI writes into its error file; for a file it starts with the path.
    """

class RmacError(RuntimeError):
    """A failure that is not about one image: the weights or PCA file, the backend, a vectors file."""

class Extractor:
    """A loaded model: VGG16 on a backend, the optional PCA-whitening, the recipe."""

    def __init__(
        self,
        weights: str,
        pca: Optional[str],
        backend: str = "auto",
        max_size: int = 1024,
        levels: int = 3,
        threads: int = 0,
    ) -> None: ...
    @property
    def dim(self) -> int:
        """Length of the vectors."""
    @property
    def backend(self) -> str:
        """The device the network runs on, as the CLI names it."""
    @property
    def max_size(self) -> int: ...
    @property
    def levels(self) -> int: ...
    def describe_path(self, path: str) -> npt.NDArray[np.float32]:
        """The vector of an image file, through the CLI's pipeline; raises ImageError naming the file."""
    def describe_bytes(self, data: bytes) -> npt.NDArray[np.float32]:
        """The vector of an encoded image (JPEG, PNG, ... bytes)."""
    def describe_array(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """The vector of an 8-bit RGB image of shape (height, width, 3), any strides."""
    def describe_many(
        self,
        paths: List[str],
        progress: Optional[Callable[[int, int], Any]] = None,
    ) -> Tuple[npt.NDArray[np.float32], List[Tuple[str, str]]]:
        """(vectors of the images that succeeded, in order; (path, message) of each failure)."""

def load_vectors(path: str) -> Tuple[List[str], npt.NDArray[np.float32]]:
    """(paths, vectors) of a .jsonl, .npy or .parquet file written by ``rmac-native extract``."""

def search(
    vectors: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    k: int,
) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The k best rows per query by inner product, best first (ties: lower row); C-contiguous float32 in."""
