"""Bad inputs give clear Python exceptions with the CLI's messages; nothing crashes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import rmac_native
from conftest import run_cli


def test_bad_files_raise_image_error_naming_the_file_with_the_cli_message(model, bad_files, cli_run):
    ex = model.extractor()
    cli_messages = dict(cli_run["errors"])
    for name, path in bad_files.items():
        with pytest.raises(rmac_native.ImageError) as info:
            ex.describe(str(path))
        assert isinstance(info.value, ValueError)
        assert str(info.value) == f"{path}: {cli_messages[str(path)]}"
    # The messages say what happened.
    assert "file not found" in cli_messages[str(bad_files["missing.jpg"])]
    assert "truncated or corrupt" in cli_messages[str(bad_files["truncated.png"])]
    assert "empty file" in cli_messages[str(bad_files["empty.png"])]
    assert "not a recognised image format" in cli_messages[str(bad_files["text.jpg"])]
    assert "32 px" in cli_messages[str(bad_files["thin.png"])]


def test_bad_bytes_raise_image_error(model, bad_files, cli_run):
    ex = model.extractor()
    cli_messages = dict(cli_run["errors"])
    for name in ("truncated.png", "corrupt.jpg", "text.jpg", "empty.png", "thin.png"):
        path = bad_files[name]
        with pytest.raises(rmac_native.ImageError) as info:
            ex.describe(path.read_bytes())
        assert str(info.value) == f"<bytes>: {cli_messages[str(path)]}"


def test_the_extractor_goes_on_after_an_error(model, bad_files, images, cli_run):
    ex = model.extractor()
    with pytest.raises(rmac_native.ImageError):
        ex.describe(bad_files["corrupt.jpg"])
    assert ex.describe(images["rgb.png"]).tobytes() == cli_run["by_path"][str(images["rgb.png"])].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64, np.int8, bool])
def test_arrays_of_another_dtype_are_a_type_error(model, dtype):
    ex = model.extractor()
    with pytest.raises(TypeError, match="uint8"):
        ex.describe(np.zeros((40, 40, 3), dtype=dtype))


@pytest.mark.parametrize("shape", [(40, 40), (40, 40, 4), (40, 40, 1), (2, 40, 40, 3), (3, 40, 40), (0, 40, 3), (40,)])
def test_arrays_of_another_shape_are_a_value_error(model, shape):
    ex = model.extractor()
    with pytest.raises(ValueError, match=r"\(height, width, 3\)|empty"):
        ex.describe(np.zeros(shape, dtype=np.uint8))


def test_a_tiny_array_is_an_image_error(model):
    # 5×4 is enlarged to 64×52 at max_size 64; 3×300 shrinks to 64×1.
    ex = model.extractor()
    ex.describe(np.zeros((5, 4, 3), dtype=np.uint8))
    with pytest.raises(rmac_native.ImageError, match="32 px"):
        ex.describe(np.zeros((3, 300, 3), dtype=np.uint8))


@pytest.mark.parametrize("x", [42, 3.5, None, [1, 2, 3], {"path": "x.jpg"}])
def test_other_inputs_are_a_type_error(model, x):
    with pytest.raises(TypeError, match="path, bytes, a PIL.Image or a uint8 NumPy array"):
        model.extractor().describe(x)


def test_describe_many_wants_a_list(model, images):
    ex = model.extractor()
    with pytest.raises(TypeError, match="list of paths"):
        ex.describe_many(str(images["rgb.png"]))
    with pytest.raises(TypeError, match="path"):
        ex.describe_many([42])
    with pytest.raises(TypeError, match="callable"):
        ex.describe_many([str(images["rgb.png"])], progress=3)
    vectors, errors = ex.describe_many([])
    assert vectors.shape == (0, 512) and vectors.dtype == np.float32 and errors == []


def test_describe_many_with_only_bad_files(model, bad_files):
    vectors, errors = model.extractor().describe_many([str(p) for p in bad_files.values()])
    assert vectors.shape == (0, 512)
    assert [p for p, _ in errors] == [str(p) for p in bad_files.values()]


def test_progress_is_called_after_each_image_with_the_gil(model, images, bad_files):
    paths = [str(images["rgb.png"]), str(bad_files["corrupt.jpg"]), str(images["gray.png"])]
    calls = []
    main = threading.get_ident()
    vectors, errors = model.extractor().describe_many(
        paths, progress=lambda done, total: calls.append((done, total, threading.get_ident())))
    assert [(d, t) for d, t, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert {thread for _, _, thread in calls} == {main}
    assert vectors.shape == (2, 512) and len(errors) == 1


def test_an_exception_in_progress_stops_the_run_and_propagates(model, images):
    paths = [str(images["rgb.png"])] * 6
    seen = []

    def stop(done, total):
        seen.append(done)
        if done == 2:
            raise KeyError("stop here")

    ex = model.extractor()
    with pytest.raises(KeyError, match="stop here"):
        ex.describe_many(paths, progress=stop)
    assert seen == [1, 2]
    # The extractor is usable afterwards.
    assert ex.describe_many(paths[:2])[0].shape == (2, 512)


def test_other_threads_run_while_images_are_described(model, images):
    """The GIL is released: a Python thread that wakes up every millisecond keeps
    running while describe_many works (with the GIL held it could not wake up:
    native code that holds it runs no bytecode, so no thread switch happens)."""
    ex = model.extractor(max_size=128)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    worker = threading.Thread(target=count)
    worker.start()
    try:
        start = time.perf_counter()
        ex.describe_many([str(images["rgb.png"])] * 4)
        end = time.perf_counter()
    finally:
        stop.set()
        worker.join()
    during = [t for t in ticks if start < t < end]
    assert end - start > 0.05, "long enough to tell"
    assert len(during) > 20, f"{len(during)} wake-ups in {end - start:.2f} s"


def test_missing_weights_give_the_cli_message(model, tmp_path, images):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(rmac_native.RmacError) as info:
        rmac_native.Extractor(missing, model.pca, backend="cpu")
    assert isinstance(info.value, RuntimeError)
    listing = tmp_path / "list.txt"
    listing.write_text(str(images["rgb.png"]) + "\n")
    proc = run_cli("extract", "--input", str(listing), "--output", str(tmp_path / "o.jsonl"),
                   "--weights", str(missing), "--pca", str(model.pca), "--backend", "cpu", ok_codes=(1, 2))
    assert f"error: {info.value}" in proc.stderr
    assert str(missing) in str(info.value)


def test_missing_or_wrong_pca_gives_the_cli_message(model, tmp_path, images):
    missing = tmp_path / "nopca.safetensors"
    with pytest.raises(rmac_native.RmacError, match="no PCA file at") as info:
        rmac_native.Extractor(model.weights, missing, backend="cpu")
    listing = tmp_path / "list.txt"
    listing.write_text(str(images["rgb.png"]) + "\n")
    proc = run_cli("extract", "--input", str(listing), "--output", str(tmp_path / "o.jsonl"),
                   "--weights", str(model.weights), "--pca", str(missing), "--backend", "cpu", ok_codes=(1, 2))
    assert f"error: {info.value}" in proc.stderr
    # The weights file is not a PCA file.
    with pytest.raises(rmac_native.RmacError, match="pca.weight"):
        rmac_native.Extractor(model.weights, model.weights, backend="cpu")


@pytest.mark.parametrize("kwargs,error", [
    ({"max_size": 31}, ValueError), ({"max_size": 16385}, ValueError), ({"levels": 0}, ValueError),
    ({"levels": 17}, ValueError), ({"backend": "tpu"}, ValueError), ({"threads": -1}, ValueError),
    ({"max_size": "64"}, TypeError), ({"levels": 2.0}, TypeError), ({"backend": 1}, TypeError),
])
def test_bad_arguments(model, kwargs, error):
    with pytest.raises(error):
        rmac_native.Extractor(model.weights, model.pca, **kwargs)
    with pytest.raises(TypeError):
        rmac_native.Extractor(42, model.pca)
