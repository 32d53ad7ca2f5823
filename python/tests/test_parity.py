"""The Python results equal the CLI's bit for bit: same files, same settings, every input kind."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import rmac_native
from conftest import MAX_SIZE, png_bytes, read_npy_output, run_cli


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and want.dtype == np.float32
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes(), f"max |diff| {np.max(np.abs(got - want))}"


def test_describe_many_equals_the_cli_with_bad_files_mixed_in(model, cli_run):
    ex = model.extractor()
    vectors, errors = ex.describe_many(cli_run["paths"])
    failed = {p for p, _ in errors}
    ok = [p for p in cli_run["paths"] if p not in failed]
    assert ok == cli_run["written"], "the rows are the images that succeeded, in the order given"
    assert_same_bits(vectors, cli_run["vectors"])
    # The same records, with the CLI's own messages, in the order given.
    assert errors == cli_run["errors"]
    assert len(errors) == 6


def test_describe_path_equals_the_cli_for_every_format(model, images, cli_run):
    ex = model.extractor()
    for name, path in images.items():
        want = cli_run["by_path"][str(path)]
        assert_same_bits(ex.describe(str(path)), want)
        assert_same_bits(ex.describe(path), want)  # os.PathLike


def test_describe_bytes_equals_the_file(model, images, cli_run):
    ex = model.extractor()
    for name, path in images.items():
        data = path.read_bytes()
        want = cli_run["by_path"][str(path)]
        assert_same_bits(ex.describe(data), want)
        assert_same_bits(ex.describe(bytearray(data)), want)
        assert_same_bits(ex.describe(memoryview(data)), want)


@pytest.mark.parametrize("name", ["rgb.png", "rgb.jpg", "gray.png", "gray.jpg", "rgba.png", "palette.png",
                                  "palette-transparent.png", "cmyk.jpg", "gray16.png", "anim.gif", "rgb.bmp",
                                  "rgb.tif", "rgb.webp"])
def test_pil_images_opened_from_files_equal_the_cli(model, images, cli_run, name):
    """Pillow's own decoding and convert("RGB") give the pixels the CLI decodes."""
    ex = model.extractor()
    img = Image.open(images[name])
    want = cli_run["by_path"][str(images[name])]
    assert_same_bits(ex.describe(img), want)
    assert_same_bits(ex.describe(np.asarray(img.convert("RGB"))), want)


def test_the_modes_are_as_expected(images):
    """The files above really exercise Pillow's modes."""
    modes = {name: Image.open(path).mode for name, path in images.items()}
    assert modes["gray.png"] == "L"
    assert modes["rgba.png"] == "RGBA"
    assert modes["palette.png"] == "P"
    assert modes["cmyk.jpg"] == "CMYK"
    assert modes["gray16.png"] in ("I;16", "I")
    assert modes["anim.gif"] == "P"


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1", "I"])
def test_pil_images_of_every_mode_are_converted_as_pillow_does(model, mode):
    ex = model.extractor()
    rgb = Image.fromarray(np.random.RandomState(3).randint(0, 256, (40, 52, 3)).astype(np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.random.RandomState(4).randint(0, 700, (40, 52))).astype(np.uint16))
        assert img.mode == "I;16"
    else:
        img = rgb.convert(mode)
    converted = img.convert("RGB")
    want = ex.describe(np.asarray(converted))
    assert_same_bits(ex.describe(img), want)
    assert_same_bits(ex.describe(converted), want)
    # And through a file the CLI reads.
    assert_same_bits(ex.describe(png_bytes(converted)), want)


def test_arrays_equal_the_cli(model, images, cli_run):
    ex = model.extractor()
    path = images["rgb.png"]
    pixels = np.asarray(Image.open(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (60, 80, 3)
    assert_same_bits(ex.describe(pixels), cli_run["by_path"][str(path)])


def test_non_contiguous_arrays_are_copied(model, tmp_path):
    ex = model.extractor()
    base = np.random.RandomState(7).randint(0, 256, (50, 70, 4)).astype(np.uint8)
    views = {
        "channel slice": base[..., :3],
        "flipped": base[::-1, ::-2, 2::-1],
        "fortran": np.asfortranarray(base[..., 1:]),
        "transposed": base[..., :3].transpose(1, 0, 2),
    }
    for what, view in views.items():
        assert not view.flags["C_CONTIGUOUS"], what
        want = ex.describe(np.ascontiguousarray(view))
        assert_same_bits(ex.describe(view), want)
        # The same pixels through a PNG file and the CLI.
        f = tmp_path / (what.replace(" ", "-") + ".png")
        Image.fromarray(np.ascontiguousarray(view)).save(f)
        out = tmp_path / (what.replace(" ", "-") + ".npy")
        model.extract([str(f)], out)
        _, cli = read_npy_output(out)
        assert_same_bits(want, cli[0])


def test_no_whitening_and_other_settings_equal_the_cli(model, images, tmp_path):
    paths = [str(images["rgb.jpg"]), str(images["gray.png"]), str(images["rgba.png"])]
    out = tmp_path / "none.npy"
    model.extract(paths, out, False)
    _, want = read_npy_output(out)
    vectors, errors = model.extractor(pca=False).describe_many(paths)
    assert errors == []
    assert_same_bits(vectors, want)
    # pca=None is not the same as whitening.
    assert not np.array_equal(vectors, model.extractor().describe_many(paths)[0])

    # Other --max-size and --levels (and --threads, which must not change a bit).
    out2 = tmp_path / "settings.npy"
    listing = tmp_path / "settings.txt"
    listing.write_text("".join(p + "\n" for p in paths))
    run_cli("extract", "--input", str(listing), "--output", str(out2), "--weights", str(model.weights),
            "--pca", str(model.pca), "--backend", "cpu", "--max-size", "96", "--levels", "2", "--threads", "1")
    _, want2 = read_npy_output(out2)
    for threads in (1, 2):
        ex = rmac_native.Extractor(model.weights, model.pca, backend="cpu", max_size=96, levels=2,
                                   threads=threads)
        assert (ex.max_size, ex.levels) == (96, 2)
        got, errors = ex.describe_many(paths)
        assert errors == []
        assert_same_bits(got, want2)
        assert_same_bits(ex.describe(paths[0]), want2[0])
    assert not np.array_equal(want2, want)


def test_backend_auto_is_the_cpu_here_or_within_the_contract(model, images, cli_run):
    ex = model.extractor(backend="auto")
    path = images["rgb.png"]
    got = ex.describe(path)
    want = cli_run["by_path"][str(path)]
    if ex.backend.startswith("cpu"):
        assert_same_bits(got, want)
    else:
        # A hardware GPU: float32 convolutions in another order (docs/contract.md, tolerance).
        assert np.max(np.abs(got - want)) <= 1e-4
    assert model.extractor(backend="cpu").backend.startswith("cpu")


def test_vectors_are_unit_length_512_float32(model, images):
    v = model.extractor().describe(images["rgb.png"])
    assert v.shape == (rmac_native.FEATURE_DIM,) == (512,)
    assert v.dtype == np.float32
    assert abs(float(np.linalg.norm(v.astype(np.float64))) - 1.0) < 1e-5


def test_max_size_is_the_cli_default_when_not_given(model):
    ex = rmac_native.Extractor(model.weights, model.pca, backend="cpu")
    assert (ex.max_size, ex.levels, ex.dim) == (1024, 3, 512)
    assert MAX_SIZE != 1024


def test_backend_gpu_equals_the_cli_or_fails_with_its_message(model, images, tmp_path):
    """With a hardware GPU: the CLI's GPU vectors bit for bit; without one (lavapipe only,
    or none): the CLI's refusal, word for word."""
    paths = [str(images["rgb.png"]), str(images["cmyk.jpg"])]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(p + "\n" for p in paths))
    out = tmp_path / "gpu.npy"
    proc = run_cli("extract", "--input", str(listing), "--output", str(out), "--weights", str(model.weights),
                   "--pca", str(model.pca), "--backend", "gpu", "--max-size", str(MAX_SIZE), ok_codes=(0, 1, 2))
    try:
        ex = model.extractor(backend="gpu")
    except rmac_native.RmacError as e:
        assert proc.returncode != 0
        assert f"error: {e}" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    _, want = read_npy_output(out)
    got, errors = ex.describe_many(paths)
    assert errors == []
    assert_same_bits(got, want)
