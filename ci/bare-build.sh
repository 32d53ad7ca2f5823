#!/usr/bin/env bash
# Issue 17: the binary builds with nothing but a Rust toolchain. Builds `--no-default-features` and
# `--no-default-features --features gpu` in a fresh target directory with pkg-config disabled (a crate
# that probes for a system library fails the build instead of finding one), then checks with ldd that
# the binaries link only the C runtime (no HDF5, OpenBLAS, MPI, FFmpeg), and that they run.
# BARE_TARGET_DIR=DIR reuses a directory (e.g. to share it with ci/python-tests.sh); default: a fresh one.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${BARE_TARGET_DIR:-$(mktemp -d)}
ALLOWED='^(linux-vdso\.so|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux-x86-64\.so|/lib64/ld-linux-x86-64\.so)'
for features in "" gpu; do
  start=$SECONDS
  PKG_CONFIG=/bin/false CARGO_TARGET_DIR=$TARGET \
    cargo build --release --locked --quiet --no-default-features ${features:+--features "$features"} --bin rmac-native
  bin=$TARGET/release/rmac-native
  linked=$(ldd "$bin" | awk '{print $1}')
  extra=$(grep -Ev "$ALLOWED" <<<"$linked" || true)
  if [ -n "$extra" ]; then
    echo "bare build (features: ${features:-none}) links system libraries it must not:" >&2
    echo "$extra" >&2
    exit 1
  fi
  "$bin" --version >/dev/null
  echo "bare build (features: ${features:-none}) in $((SECONDS - start)) s links only: $(tr '\n' ' ' <<<"$linked")"
done
