"""load_vectors reads back what the CLI wrote; search answers as `rmac-native search`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rmac_native
from conftest import read_npy_output, run_cli


@pytest.fixture(scope="session")
def outputs(model, images, tmp_path_factory):
    """The same images extracted by the CLI to JSONL, NPY and Parquet."""
    folder = tmp_path_factory.mktemp("outputs")
    paths = [str(p) for p in images.values()]
    files = {}
    for ext in ("jsonl", "npy", "parquet"):
        out = folder / ext / f"vectors.{ext}"  # one folder each: outputs share companion files
        out.parent.mkdir()
        code, errors = model.extract(paths, out)
        assert (code, errors) == (0, [])
        files[ext] = out
    return paths, files


def test_load_vectors_npy_is_what_was_written(outputs):
    paths, files = outputs
    got_paths, got = rmac_native.load_vectors(files["npy"])
    want_paths, want = read_npy_output(files["npy"])
    assert got_paths == want_paths == paths
    assert got.dtype == np.float32 and got.shape == (len(paths), 512)
    assert got.tobytes() == want.tobytes()
    # str paths too.
    assert rmac_native.load_vectors(str(files["npy"]))[1].tobytes() == want.tobytes()


def test_load_vectors_jsonl_and_parquet_equal_the_npy(outputs):
    paths, files = outputs
    _, want = read_npy_output(files["npy"])
    records = [json.loads(line) for line in Path(files["jsonl"]).read_text().splitlines()]
    for ext in ("jsonl", "parquet"):
        got_paths, got = rmac_native.load_vectors(files[ext])
        assert got_paths == paths, ext
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), ext
    # The JSONL text itself, parsed by Python, holds the same float32 values.
    assert [r["path"] for r in records] == paths
    assert np.array([r["vector"] for r in records], dtype=np.float32).tobytes() == want.tobytes()


def test_load_vectors_errors_are_the_cli_messages(tmp_path):
    with pytest.raises(rmac_native.RmacError) as info:
        rmac_native.load_vectors(tmp_path / "none.npy")
    assert "none.npy" in str(info.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a", "vector": [1, 2]}\n{"path": "b", "vector": "x"}\n')
    with pytest.raises(rmac_native.RmacError) as info:
        rmac_native.load_vectors(bad)
    proc = run_cli("search", str(bad), "--vector", "[1, 2]", ok_codes=(1, 2))
    assert f"error: {info.value}" in proc.stderr


def cli_search(index: Path, queries: np.ndarray, k: int):
    args = ["search", str(index), "-k", str(k), "--json"]
    for q in queries:
        args += ["--vector", json.dumps([float(x) for x in q])]
    answers = [json.loads(line) for line in run_cli(*args).stdout.splitlines()]
    return ([[hit["path"] for hit in a["results"]] for a in answers],
            [np.array([hit["score"] for hit in a["results"]], dtype=np.float32) for a in answers])


def test_search_equals_the_cli(outputs):
    paths, files = outputs
    names, vectors = rmac_native.load_vectors(files["npy"])
    rng = np.random.RandomState(0)
    queries = np.vstack([vectors[3], vectors[0] + vectors[5], rng.standard_normal(512)]).astype(np.float32)
    for k in (1, 4, len(paths), len(paths) + 5):
        indices, scores = rmac_native.search(vectors, queries, k)
        assert indices.dtype == np.int64 and scores.dtype == np.float32
        assert indices.shape == scores.shape == (3, min(k, len(paths)))
        want_paths, want_scores = cli_search(files["npy"], queries, k)
        for q in range(3):
            assert [names[i] for i in indices[q]] == want_paths[q]
            assert scores[q].tobytes() == want_scores[q].tobytes()
    # An image is its own best match.
    indices, scores = rmac_native.search(vectors, vectors[3], 1)
    assert indices.tolist() == [3]


def test_search_against_numpy_and_ties_by_index(tmp_path):
    """Independent reference: NumPy's scores (float64) rank the rows the same way;
    equal rows tie and come lowest row first, as in the CLI."""
    rng = np.random.RandomState(1)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vectors = np.vstack([base, base[[7, 3, 7]]])  # rows 40, 41, 42 repeat 7, 3, 7
    queries = np.vstack([base[7], base[3], rng.standard_normal(16)]).astype(np.float32)
    indices, scores = rmac_native.search(vectors, queries, 5)
    assert indices[0, :3].tolist() == [7, 40, 42]
    assert indices[1, :2].tolist() == [3, 41]
    exact = vectors.astype(np.float64) @ queries.T.astype(np.float64)
    for q in range(3):
        order = sorted(range(len(vectors)), key=lambda i: (-exact[i, q], i))[:5]
        # Ties in float64 are ties in float32 too (identical rows); elsewhere the gaps are far above rounding.
        assert indices[q].tolist() == order
        assert np.allclose(scores[q], exact[order, q], atol=1e-6)
    # The CLI on the same vectors (a JSONL index written here).
    index = tmp_path / "ties.jsonl"
    index.write_text("".join(json.dumps({"path": f"r{i}", "vector": [float(x) for x in row]}) + "\n"
                             for i, row in enumerate(vectors)))
    want_paths, want_scores = cli_search(index, queries, 5)
    for q in range(3):
        assert [f"r{i}" for i in indices[q]] == want_paths[q]
        assert scores[q].tobytes() == want_scores[q].tobytes()


def test_search_arguments(outputs):
    _, files = outputs
    _, vectors = rmac_native.load_vectors(files["npy"])
    with pytest.raises(TypeError, match="float32"):
        rmac_native.search(vectors.astype(np.float64), vectors[:1], 3)
    with pytest.raises(TypeError, match="float32"):
        rmac_native.search(vectors, vectors[:1].astype(np.float64), 3)
    with pytest.raises(ValueError, match="511"):
        rmac_native.search(vectors, vectors[:1, :511], 3)
    with pytest.raises(ValueError, match="2-D"):
        rmac_native.search(vectors[0], vectors[:1], 3)
    with pytest.raises(ValueError, match="negative"):
        rmac_native.search(vectors, vectors[:1], -1)
    with pytest.raises(TypeError):
        rmac_native.search(vectors, vectors[:1], 2.5)
    # Non-contiguous inputs are copied, not refused.
    strided = np.asfortranarray(vectors)
    assert rmac_native.search(strided, vectors[::2], 2)[0].tolist() == rmac_native.search(
        vectors, np.ascontiguousarray(vectors[::2]), 2)[0].tolist()
    # k = 0 and an empty index: empty answers.
    assert rmac_native.search(vectors, vectors[:2], 0)[0].shape == (2, 0)
    assert rmac_native.search(vectors[:0], vectors[:2], 3)[0].shape == (2, 0)


def test_the_native_search_refuses_what_it_would_misread(outputs):
    """A Fortran-ordered array is contiguous but holds columns: the native layer refuses it
    (the wrapper above copies it into C order first)."""
    _, files = outputs
    _, vectors = rmac_native.load_vectors(files["npy"])
    with pytest.raises(ValueError, match="C-contiguous"):
        rmac_native._native.search(np.asfortranarray(vectors), vectors[:2], 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        rmac_native._native.search(vectors, np.asfortranarray(vectors[:2]), 2)
