#!/usr/bin/env bash
# Throughput of `extract` by ranks × threads on this machine, and the
# coordinator's overhead per image (tiny images, so communication dominates).
#
#   bash benches/mpi-scaling.sh [IMAGES] [MAX_SIZE]      (defaults: 48 images, --max-size 224)
#
# Inputs are generated (synthetic weights, PNGs of 160–320 px and of 40–70 px)
# by an ignored test in tests/mpi.rs. Each configuration runs twice; the better
# run is reported. Every run's per-rank stats are in $DIR/*.summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-48}; S=${2:-224}
DIR=${RMAC_BENCH_DIR:-$(mktemp -d)}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
[ -n "${RMAC_BENCH_NO_BUILD:-}" ] || cargo build --release --quiet
[ -f "$DIR/list.txt" ] ||   # RMAC_BENCH_DIR from an earlier run: reuse its inputs
  RMAC_BENCH_DIR=$DIR RMAC_BENCH_IMAGES=$N cargo bench --quiet --bench mpi_bench_inputs >/dev/null
BIN=target/release/rmac-native
COMMON=(--backend cpu --weights "$DIR/vgg16.safetensors" --pca "$DIR/pca.safetensors")

# run NAME LIST MAXSIZE LAUNCH... -- ARGS...: best images/s of 2 runs, and the coordinator µs/image of that run.
run() {
  local name=$1 list=$2 size=$3; shift 3
  local launch=(); while [ "$1" != "--" ]; do launch+=("$1"); shift; done; shift
  local best=0 coord=0
  for rep in 1 2; do
    local out="$DIR/$name.jsonl"
    "${launch[@]}" "$BIN" extract --input "$list" --output "$out" --max-size "$size" --restart "${COMMON[@]}" "$@" 2>"$DIR/$name.log" || true
    read -r ips cus < <(python3 -c "import json,sys; s=json.load(open('$DIR/$name.summary.json')); print(s['images_per_second'], s['coordinator_us_per_image'])")
    if python3 -c "import sys; sys.exit(0 if $ips > $best else 1)"; then best=$ips; coord=$cus; fi
  done
  printf '| %-34s | %9.2f | %9.1f |\n' "$name" "$best" "$coord"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $N images; $(date -u +%F)"
echo
echo "| configuration (--max-size $S)      | images/s  | coordinator CPU µs/img |"
echo "|---|---|---|"
run "1 rank x 1 thread (plain)"     "$DIR/list.txt" "$S" env -- --threads 1
run "1 rank x 2 threads (plain)"   "$DIR/list.txt" "$S" env -- --threads 2
run "1 rank x 2 threads (mpiexec)" "$DIR/list.txt" "$S" mpiexec -np 1 --bind-to none -- --threads 2
run "2 ranks x 1 thread"           "$DIR/list.txt" "$S" mpiexec -np 2 -- --threads 1
run "2 ranks x 2 threads"          "$DIR/list.txt" "$S" mpiexec -np 2 --bind-to none -- --threads 2
echo
echo "| tiny images (--max-size 32, $((10 * N)) images) | images/s  | coordinator CPU µs/img |"
echo "|---|---|---|"
run "tiny: 1 rank x 1 thread (plain)"  "$DIR/tiny.txt" 32 env -- --threads 1
run "tiny: 2 ranks x 1 thread"         "$DIR/tiny.txt" 32 mpiexec -np 2 -- --threads 1
run "tiny: 3 ranks x 1 thread"         "$DIR/tiny.txt" 32 mpiexec -np 3 -- --threads 1
echo
echo "inputs and summaries: $DIR"
