#!/usr/bin/env bash
# The Python package's tests, as CI runs them: a fresh virtual environment, the
# package built and installed with `pip install ./python` (one abi3 wheel for
# CPython >= 3.9, built by maturin with the Rust toolchain alone), then pytest,
# which checks the results against the CLI bit for bit.
#
# Needs: python3 (or PYTHON=/path/to/python3.X) with its venv module (Debian: python3-venv), a Rust toolchain, a
# C compiler (libjpeg-turbo is built from source), and PyPI for the pinned wheels.
# The Cargo target folder is the root build's (CARGO_TARGET_DIR, default ./target):
# the CLI binary the tests compare with is $CARGO_TARGET_DIR/release/rmac-native
# (built here when missing, or pass RMAC_NATIVE_BIN), and the extension reuses
# the dependencies already compiled there.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

bin="${RMAC_NATIVE_BIN:-$CARGO_TARGET_DIR/release/rmac-native}"
if [ ! -x "$bin" ]; then
    echo "python-tests: no CLI at $bin; building it" >&2
    cargo build --release --locked
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
# maturin's build backend runs `maturin` from PATH: the venv's own.
export PATH="$tmp/venv/bin:$PATH"
# Pinned: these versions install as wheels on CPython 3.11 (Debian 12's python3.11 included).
"$py" -m pip install --quiet --disable-pip-version-check \
    maturin==1.16.0 numpy==2.4.6 pillow==13.0.0 pytest==9.2.0
# --no-build-isolation: the build uses the pinned maturin just installed (pyproject.toml pins the same).
"$py" -m pip install --quiet --disable-pip-version-check --no-build-isolation ./python

# One wheel for every CPython from 3.9 on: the stable ABI tag and module name.
wheel_file=$("$py" -c 'import importlib.metadata as m; print(m.distribution("rmac-native")._path / "WHEEL")')
if ! grep -q '^Tag: cp39-abi3-' "$wheel_file"; then
    echo "python-tests: the wheel is not cp39-abi3:" >&2
    cat "$wheel_file" >&2
    exit 1
fi
"$py" - <<'PY'
import pathlib, rmac_native, rmac_native._native as n
assert "site-packages" in rmac_native.__file__, rmac_native.__file__
assert pathlib.Path(n.__file__).name == "_native.abi3.so", n.__file__
print("python-tests: installed", pathlib.Path(n.__file__))
PY
# Built with a Rust toolchain alone: the extension links only the C runtime (no HDF5, BLAS, MPI, FFmpeg).
so=$("$py" -c 'import rmac_native._native as n; print(n.__file__)')
allowed='^(linux-vdso\.so|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux-x86-64\.so|/lib64/ld-linux-x86-64\.so)'
extra=$(ldd "$so" | awk '{print $1}' | grep -Ev "$allowed" || true)
if [ -n "$extra" ]; then
    echo "python-tests: $so links system libraries it must not: $extra" >&2
    exit 1
fi

RMAC_NATIVE_BIN="$bin" "$py" -m pytest -q -p no:cacheprovider python/tests
echo "python-tests: done in $((SECONDS - start)) s"
