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
#   4. the criterion bench benches/gpu_conv.rs (one layer per block at 1024×768 sizes);
#   5. the binary end to end on real photos (PHOTOS at pack time, default demo/images from
#      scripts/demo.sh; synthetic weights, made there by `weights synthetic`): vectors of
#      `--backend gpu` vs `--backend cpu` (≤ 1e-4 per component), then images/s of
#      `extract --backend gpu` on RMAC_CHECK_COPIES (20) links to each photo;
#   6. PyTorch on the same GPU (benches/pytorch_peer.py --cuda: fp32 and TF32), where the
#      box's python3 has CUDA PyTorch.
# Output: the console, and a copy in ${OUT:-.gpu-check}/gpu-check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=.gpu-check
export DIR
MODE=${1:-all}
LOG=${OUT:-$DIR}/gpu-check.log
mkdir -p "$DIR" "$(dirname "$LOG")"

pack() {
    set -e
    cargo test --release --no-default-features --features dev --test gpu_backend --no-run 2>&1 | tail -n 3
    cargo bench --no-default-features --features dev --bench gpu_conv --no-run 2>&1 | tail -n 3
    local t b
    t=$(cargo test --release --no-default-features --features dev --test gpu_backend --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*gpu_backend[^"]*\)".*/\1/p' | tail -n 1)
    b=$(cargo bench --no-default-features --features dev --bench gpu_conv --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*gpu_conv[^"]*\)".*/\1/p' | tail -n 1)
    objcopy --strip-debug "$t" "$DIR/gpu_backend"
    objcopy --strip-debug "$b" "$DIR/gpu_conv"
    # The binary itself, without MPI (the GPU box has no MPI library), and photos for step 5.
    CARGO_TARGET_DIR=target/gpu-only cargo build --release --quiet --no-default-features \
        --features dev --bin rmac-native
    objcopy --strip-debug target/gpu-only/release/rmac-native "$DIR/rmac-native"
    local photos=${PHOTOS:-demo/images}
    rm -rf "$DIR/photos"
    if [ -d "$photos" ]; then
        mkdir -p "$DIR/photos" && cp "$photos"/* "$DIR/photos/"
    else
        echo "note: no photos for step 5 ($photos: run scripts/demo.sh or set PHOTOS=DIR)"
    fi
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
    echo "== 5. extract end to end on real photos: --backend gpu vs --backend cpu"
    if [ -x "$DIR/rmac-native" ] && [ -d "$DIR/photos" ]; then
        timeout 300 bash -c "$(declare -f end_to_end); end_to_end" || rc=1
    else
        echo "(skipped: pack found no photos)"
    fi
    echo "== 6. PyTorch on the same GPU (fp32 and TF32; input on the GPU, no readback)"
    timeout 180 python3 benches/pytorch_peer.py --cuda --repeat 20 || echo "(no CUDA PyTorch here)"
    echo "== gpu-check: $([ $rc = 0 ] && echo PASS || echo FAIL)"
    return $rc
}

end_to_end() {
    set -e
    local bin=$PWD/$DIR/rmac-native w
    w=$(mktemp -d)
    "$bin" weights synthetic --seed 1 --output "$w/w.safetensors" --pca "$w/p.safetensors"
    local common=(--weights "$w/w.safetensors" --pca "$w/p.safetensors" --max-size "${RMAC_CHECK_MAX_SIZE:-1024}")
    ls -d "$PWD/$DIR/photos/"* >"$w/one.txt"
    "$bin" extract --backend gpu --input "$w/one.txt" --output "$w/gpu.jsonl" "${common[@]}"
    "$bin" extract --backend cpu --input "$w/one.txt" --output "$w/cpu.jsonl" "${common[@]}"
    python3 - "$w/gpu.jsonl" "$w/cpu.jsonl" <<'PY'
import json, sys
load = lambda p: {r["path"]: r["vector"] for r in map(json.loads, open(p))}
g, c = load(sys.argv[1]), load(sys.argv[2])
assert g.keys() == c.keys() and g, "different images"
d = max(abs(a - b) for k in g for a, b in zip(g[k], c[k]))
print(f"{len(g)} photos: max |gpu - cpu| per vector component = {d:.2e} (contract: 1e-4)")
sys.exit(0 if d <= 1e-4 else 1)
PY
    mkdir -p "$w/imgs"
    for r in $(seq 1 "${RMAC_CHECK_COPIES:-20}"); do
        for f in "$PWD/$DIR/photos/"*; do ln -s "$f" "$w/imgs/$r-$(basename "$f")"; done
    done
    ls -d "$w/imgs/"* >"$w/many.txt"
    "$bin" extract --backend gpu --input "$w/many.txt" --output "$w/many.jsonl" "${common[@]}" 2>&1 | tail -n 1
    python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['ranks'][0]; \
print(f\"backend + R-MAC head busy {r['busy_s']:.2f} s (two threads) in {r['wall_s']:.2f} s; decode {r['decode_s']:.2f} s\")" "$w/many.summary.json"
}

case "$MODE" in
    pack) pack ;;
    run) run "$DIR/gpu_backend" "$DIR/gpu_conv" 2>&1 | tee "$LOG" ;;
    all)
        pack && run "$DIR/gpu_backend" "$DIR/gpu_conv" 2>&1 | tee "$LOG" ;;
    *) echo "usage: $0 [all|pack|run]" >&2; exit 2 ;;
esac
