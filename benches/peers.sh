#!/usr/bin/env bash
# Times the peers a user would pick instead of rmac-native (PyTorch with
# oneDNN, channels_last; ONNX Runtime; optionally Keras on TensorFlow) on VGG16
# conv1_1…pool5, 1 and 2 threads, then rmac-native's own `bench` on the same
# sizes, and prints the ratios.
#
#   benches/peers.sh [WIDTH HEIGHT]          # default 1024 768
#   PEERS_VENV=/path  (default ~/.cache/rmac-native-peers: outside the repo)
#   PEERS_TF=1        also time Keras 3 on TensorFlow (another large wheel)
#   REPEAT=5          timed passes per configuration (best is reported)
#   BASELINE=REV      also time rmac-native built at git revision REV (a worktree
#                     under target/baseline), for before/after tables in one run
#
# The pinned versions are installed into the venv only when this script runs
# (PyPI only: the PyPI torch wheel is the CPU+CUDA build; CUDA is never used).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-1024}
H=${2:-768}
REPEAT=${REPEAT:-5}
VENV=${PEERS_VENV:-$HOME/.cache/rmac-native-peers}
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.2"
ORT_PIN="onnxruntime==1.32.0"
ONNX_PIN="onnx==1.23.2"
TF_PIN="tensorflow-cpu==2.21.0"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "$TORCH_PIN" "$TORCHVISION_PIN" "$ORT_PIN" "$ONNX_PIN" numpy
if [ "${PEERS_TF:-0}" = 1 ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TF_PIN"
fi
[ "${PEERS_INSTALL_ONLY:-0}" = 1 ] && exit 0

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
cargo build --release --quiet --bin rmac-native
if [ -n "${BASELINE:-}" ]; then
    rm -rf target/baseline
    git worktree prune
    git worktree add --quiet --detach target/baseline "$BASELINE"
    # CPU path only: the baseline needs neither the GPU nor MPI.
    (cd target/baseline && CARGO_TARGET_DIR=../baseline-build cargo build --release --quiet \
        --no-default-features --bin rmac-native)
    echo "baseline: $(git rev-parse --short "$BASELINE") ($(git log -1 --format=%s "$BASELINE"))"
fi
for t in 1 2; do
    "$VENV/bin/python" benches/pytorch_peer.py --width "$W" --height "$H" --threads "$t" --repeat "$REPEAT" \
        ${PEERS_TF:+--tf} | tee "target/peers-$t.txt"
    ./target/release/rmac-native bench --width "$W" --height "$H" --threads "$t" --repeat "$REPEAT" --algo auto,im2col \
        | tee "target/rmac-$t.txt"
    if [ -n "${BASELINE:-}" ]; then
        target/baseline-build/release/rmac-native bench --width "$W" --height "$H" --threads "$t" \
            --repeat "$REPEAT" --algo auto | tee "target/baseline-$t.txt"
        base=$(awk '/^image ms \(pool5/{print $NF}' "target/baseline-$t.txt" | sort -g | head -1)
    fi
    # ratio: fastest peer / rmac-native (best algorithm), both to pool5 + R-MAC head.
    peer=$(awk '/^peer /{print $3}' "target/peers-$t.txt" | sort -g | head -1)
    ours=$(awk '/^image ms auto /{print $4}' "target/rmac-$t.txt" | sort -g | head -1)
    awk -v p="$peer" -v o="$ours" -v t="$t" \
        'BEGIN { printf "threads %d: fastest peer %.0f ms, rmac-native %.0f ms, speed-up %.2fx\n", t, p, o, p / o }'
    if [ -n "${BASELINE:-}" ]; then
        awk -v b="$base" -v o="$ours" -v t="$t" \
            'BEGIN { printf "threads %d: baseline %.0f ms, now %.0f ms, %.2fx faster\n", t, b, o, b / o }'
    fi
done
