#!/usr/bin/env bash
# The README's test command: the Rust test suite, the bare build (no system libraries), and the Python
# package's tests in a fresh virtual environment. Setup (Debian packages) is ci/setup-deps.sh's job.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked --features dev
# The bare build's fresh target folder then serves the Python extension, which needs the library with the
# same features (`--no-default-features --features gpu`): it compiles only PyO3 and the binding on top.
# The Python tests compare with the full CLI the test suite just built.
BARE_TARGET_DIR=$(mktemp -d)
export BARE_TARGET_DIR
trap 'rm -rf "$BARE_TARGET_DIR"' EXIT
bash ci/bare-build.sh
CARGO_TARGET_DIR=$BARE_TARGET_DIR RMAC_NATIVE_BIN=$PWD/target/release/rmac-native bash ci/python-tests.sh
