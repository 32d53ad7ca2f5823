"""Shared fixtures: the CLI binary, synthetic weights made by it, test images made here.

The reference for every number is the ``rmac-native`` command line (``RMAC_NATIVE_BIN``,
else ``target/release/rmac-native`` of this checkout): the Python results must equal
its outputs bit for bit on the same images and settings.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
from PIL import Image

import rmac_native

REPO = Path(__file__).resolve().parents[2]

# Small images keep VGG16 on the CPU fast; the recipe is the same at any size.
MAX_SIZE = 64


def cli_binary() -> Path:
    env = os.environ.get("RMAC_NATIVE_BIN")
    path = Path(env) if env else REPO / "target" / "release" / "rmac-native"
    if not path.is_file():
        pytest.fail(
            f"the rmac-native CLI is not at {path}: build it with `cargo build --release --locked` "
            "or point RMAC_NATIVE_BIN at it",
            pytrace=False,
        )
    return path


def cli_env() -> Dict[str, str]:
    """The environment without RMAC_* settings (the Python layer reads none)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RMAC_")}


def run_cli(*args: str, ok_codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(cli_binary()), *args], capture_output=True, text=True, env=cli_env(), timeout=600
    )
    if proc.returncode not in ok_codes:
        raise AssertionError(
            f"rmac-native {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc


class Model:
    """Synthetic VGG16 weights and PCA written by `rmac-native weights synthetic`."""

    def __init__(self, folder: Path, seed: int):
        self.weights = folder / f"vgg16-{seed}.safetensors"
        self.pca = folder / f"pca-{seed}.safetensors"
        run_cli("weights", "synthetic", "--seed", str(seed), "--output", str(self.weights),
                "--pca", str(self.pca))

    def extractor(self, pca: bool = True, **kwargs) -> rmac_native.Extractor:
        kwargs.setdefault("backend", "cpu")
        kwargs.setdefault("max_size", MAX_SIZE)
        return rmac_native.Extractor(self.weights, self.pca if pca else None, **kwargs)

    def extract(self, paths: Sequence[str], out: Path, pca: bool = True, *flags: str
                ) -> Tuple[int, List[Tuple[str, str]]]:
        """Runs `rmac-native extract` on `paths` into `out`; returns the exit code and the error records."""
        listing = out.with_suffix(".list.txt")
        listing.write_text("".join(p + "\n" for p in paths))
        args = ["extract", "--input", str(listing), "--output", str(out),
                "--weights", str(self.weights), "--pca", str(self.pca) if pca else "none",
                "--backend", "cpu", "--max-size", str(MAX_SIZE), *flags]
        proc = run_cli(*args, ok_codes=(0, 3))
        errors_file = Path(str(out)[: -len(out.suffix)] + ".errors.jsonl")
        errors = []
        if errors_file.exists():
            for line in errors_file.read_text().splitlines():
                record = json.loads(line)
                errors.append((record["path"], record["error"]))
        return proc.returncode, errors


def read_npy_output(out: Path) -> Tuple[List[str], np.ndarray]:
    """An .npy output read with NumPy alone (the paths from the .paths.txt beside it)."""
    vectors = np.load(out)
    paths_file = Path(str(out)[:-4] + ".paths.txt")
    paths = paths_file.read_text().split("\n")[: len(vectors)]
    return paths, vectors


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Model:
    return Model(tmp_path_factory.mktemp("model"), seed=1)


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: an image a JPEG encoder treats like a photo."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                     ((x + y) * 127 // max(w + h - 2, 1))], axis=-1)
    noise = rng.randint(0, 60, size=(h, w, 3))
    return np.clip(base + noise - 30, 0, 255).astype(np.uint8)


def make_images(folder: Path) -> Dict[str, Path]:
    """One file per format and Pillow mode the decoder promises Pillow's pixels for."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_pattern(60, 80, 1))
    files: Dict[str, Path] = {}

    def save(name: str, img: Image.Image, **kw) -> None:
        path = folder / name
        img.save(path, **kw)
        files[name] = path

    save("rgb.png", rgb)
    save("rgb.jpg", Image.fromarray(_pattern(70, 50, 2)), quality=90)
    save("gray.png", Image.fromarray(_pattern(48, 64, 3)[..., 0]))          # L
    save("gray.jpg", Image.fromarray(_pattern(64, 40, 4)[..., 1]), quality=85)
    rgba = np.dstack([_pattern(50, 70, 5), np.random.RandomState(5).randint(0, 256, (50, 70)).astype(np.uint8)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("palette.png", rgb.quantize(colors=37))                            # P
    pal_t = Image.fromarray(_pattern(50, 70, 6)).quantize(colors=16)
    pal_t.info["transparency"] = 3
    save("palette-transparent.png", pal_t, transparency=3)
    save("cmyk.jpg", Image.fromarray(_pattern(56, 56, 7)).convert("CMYK"), quality=92)
    i16 = (np.random.RandomState(8).randint(0, 600, (45, 66))).astype(np.uint16)
    save("gray16.png", Image.fromarray(i16))                                # I;16
    save("anim.gif", Image.fromarray(_pattern(50, 50, 9)).quantize(colors=64))
    save("rgb.bmp", Image.fromarray(_pattern(45, 64, 10)))
    save("rgb.tif", Image.fromarray(_pattern(64, 48, 11)))
    save("rgb.webp", Image.fromarray(_pattern(52, 60, 12)), lossless=True)
    return files


def make_bad_files(folder: Path, good_png: Path) -> Dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = good_png.read_bytes()
    bad = {
        "truncated.png": data[: len(data) // 2],
        "corrupt.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4,
        "text.jpg": b"hello, this is not an image\n",
        "empty.png": b"",
    }
    files = {}
    for name, content in bad.items():
        (folder / name).write_bytes(content)
        files[name] = folder / name
    # 1000×20 at max-size 64 is 64×2: too small for VGG16's five poolings.
    Image.fromarray(_pattern(20, 1000, 13)).save(folder / "thin.png")
    files["thin.png"] = folder / "thin.png"
    files["missing.jpg"] = folder / "does-not-exist.jpg"
    return files


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Dict[str, Path]:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, images) -> Dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad"), images["rgb.png"])


@pytest.fixture(scope="session")
def cli_run(model, images, bad_files, tmp_path_factory):
    """The CLI's vectors (NPY, exact bits) and error records for good and bad files mixed."""
    good = [str(p) for p in images.values()]
    bad = [str(p) for p in bad_files.values()]
    # Bad files spread among the good ones.
    paths = []
    for i, p in enumerate(good):
        paths.append(p)
        if i % 2 == 1 and bad:
            paths.append(bad.pop(0))
    paths.extend(bad)
    out = tmp_path_factory.mktemp("cli") / "vectors.npy"
    code, errors = model.extract(paths, out)
    assert code == 3, "some images fail, the others are written"
    written, vectors = read_npy_output(out)
    return {"paths": paths, "written": written, "vectors": vectors, "errors": errors,
            "by_path": dict(zip(written, vectors)), "out": out}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
