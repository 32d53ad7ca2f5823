#!/usr/bin/env bash
# The GPU backend's check on a real GPU (written for an NVIDIA H100/H200 box, ~15 min budget;
# it needs a few minutes at most once built).
#
#   bash benches/gpu-check.sh            # where cargo exists: build, then run everything below
#   bash benches/gpu-check.sh pack       # here (no GPU needed): build the test + bench binaries,
#                                        #   strip them into .gpu-check/ with the Vulkan loader .debs
#   bash benches/gpu-check.sh run        # on the GPU box (no Rust needed): run from .gpu-check/
#
# What runs:
#   1. tests/gpu_backend.rs (every shader vs the f64 reference, tiling, GPU vs CPU pool5);
#   2. real_size_parity: GPU vs CPU pool5 at 768×1024 and a second odd size (synthetic weights);
#   3. real_size_report: per-layer conv GFLOP/s and % of fp32 peak (RMAC_PEAK_TFLOPS, default 67 =
#      H100 SXM; H200 is the same chip: 67), each layer timed twice: one pass (per-layer submit
#      and wait, as one image sees it) and steady state (RMAC_CHECK_ITERS=10 back-to-back runs in
#      one submission); and images/s at 768×1024; then (3b) the same report with RMAC_GPU_CONV set
#      to each of ${RMAC_CHECK_AB:-128x128 64x64 128x64 k16 128x128-k16 64x64-k16 128x64-k16}
#      (every layer forced onto one tile; BK 16 by layer size / forced), for A/B comparisons,
#      ~5 s each; add v1 (the first shader) to RMAC_CHECK_AB to see it; RMAC_CHECK_AB= skips them;
#   4. the criterion bench benches/gpu_conv.rs (one layer per block at 1024×768 sizes).
# Output: the console, and a copy in ${OUT:-.gpu-check}/gpu-check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=.gpu-check
MODE=${1:-all}
LOG=${OUT:-$DIR}/gpu-check.log
mkdir -p "$DIR" "$(dirname "$LOG")"

pack() {
    set -e
    cargo test --release --no-default-features --features gpu --test gpu_backend --no-run 2>&1 | tail -n 3
    cargo bench --no-default-features --features gpu --bench gpu_conv --no-run 2>&1 | tail -n 3
    local t b
    t=$(cargo test --release --no-default-features --features gpu --test gpu_backend --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*gpu_backend[^"]*\)".*/\1/p' | tail -n 1)
    b=$(cargo bench --no-default-features --features gpu --bench gpu_conv --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*gpu_conv[^"]*\)".*/\1/p' | tail -n 1)
    objcopy --strip-debug "$t" "$DIR/gpu_backend"
    objcopy --strip-debug "$b" "$DIR/gpu_conv"
    # Vulkan/EGL loaders, in case the GPU box has only the driver.
    if command -v apt-get >/dev/null; then
        (cd "$DIR" && apt-get download libvulkan1 >/dev/null 2>&1) || echo "note: could not download libvulkan1"
    fi
    ls -la "$DIR"
    set +e
}

vulkan_env() {
    if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
        for f in "$DIR"/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
        ldconfig
    fi
    if ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1; then
        for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
            [ -e "$f" ] && export VK_DRIVER_FILES=$f && break
        done
    fi
    export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-$$}
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
}

run() {
    local t=$1 b=$2 rc=0
    vulkan_env
    echo "== 1. GPU tests"
    timeout 300 "$t" --test-threads 1 --nocapture || rc=1
    echo "== 2. real-size parity (GPU vs CPU pool5)"
    timeout 300 "$t" --ignored --exact real_size_parity --nocapture || rc=1
    echo "== 3. per-layer throughput at 768×1024 (peak ${RMAC_PEAK_TFLOPS:=67} TFLOP/s fp32)"
    RMAC_PEAK_TFLOPS=$RMAC_PEAK_TFLOPS timeout 300 "$t" --ignored --exact real_size_report --nocapture || rc=1
    # A/B: every layer forced onto one tile (for the tile choice), and BK 16.
    for v in ${RMAC_CHECK_AB-128x128 64x64 128x64 k16 128x128-k16 64x64-k16 128x64-k16}; do
        echo "== 3b. the same with RMAC_GPU_CONV=$v"
        RMAC_GPU_CONV=$v RMAC_CHECK_IMAGES=3 timeout 120 "$t" --ignored --exact real_size_report --nocapture || rc=1
    done
    echo "== 4. criterion bench (elem/s = FLOP/s)"
    timeout 300 "$b" --bench || rc=1
    echo "== gpu-check: $([ $rc = 0 ] && echo PASS || echo FAIL)"
    return $rc
}

case "$MODE" in
    pack) pack ;;
    run) run "$DIR/gpu_backend" "$DIR/gpu_conv" 2>&1 | tee "$LOG" ;;
    all)
        pack && run "$DIR/gpu_backend" "$DIR/gpu_conv" 2>&1 | tee "$LOG" ;;
    *) echo "usage: $0 [all|pack|run]" >&2; exit 2 ;;
esac
