#!/bin/bash
# A whole GPU window in one device command (issue 22): the check, then the three-seed Table 3 on the path
# the check found fastest, inside one command's limit. A machine stays warm only 30 s after a command and a
# task has 15 minutes of device time, starts included, so the two steps cannot wait for someone to read
# the first one's figures: benchmarks/gpu_path.py chooses instead.
#
#   bash benchmarks/gpu_window.sh OUT_DIR [SEEDS] [LEARNER OPTIONS...]      # OUT_DIR=$OUT on the machine
#
# 1. benchmarks/gpu_check.sh OUT_DIR/check --forms eager graph cells cells_graph --budget-s CHECK_S (default
#    120; compile left out: Inductor's compile alone takes minutes), plus CHECK_OPTIONS (e.g. "--device
#    cpu --tiny" in the CPU test).
# 2. benchmarks/gpu_path.py: device-graph, device or loader, and why (OUT_DIR/path.txt).
# 3. benchmarks/gpu_table3.sh WORK SEEDS PATH (default [0,1,2]; BENCH=0) with LIMIT_S = what is left of
#    WINDOW_S (default 570 s, under the run tool's 600). WORK (default /tmp/gpu_window) stays outside
#    OUT_DIR; its bundle results-small.tgz (which holds table3_wall.txt) is copied into OUT_DIR as
#    results-small-PATH.tgz. Where the device-graph path fails outright (not stopped by LIMIT_S), the device
#    path goes on in WORK with the time left: the phantom, the cache and every finished cell are reused
#    (runtime.cuda_graph is not part of a cell's results), and the device-graph bundle is already in OUT_DIR.
# OUT_DIR gets at most 7 files (the run tool brings back 8): check/ 4, path.txt, two bundles.
# GPU_PATH=device|device-graph|loader overrides the choice (the check still runs). PHANTOM and learner
# options pass through to gpu_table3.sh. Exit: gpu_table3.sh's (0, 124 when LIMIT_S stopped it, else its
# error). The environment (benchmarks/gpu_env.sh: src/ and the carried wheels) is made once, here.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: gpu_window.sh OUT_DIR [SEEDS] [LEARNER OPTIONS...]}")
SEEDS=${2:-[0,1,2]}
shift $(($# < 2 ? $# : 2))
WINDOW_S=${WINDOW_S:-570}
CHECK_S=${CHECK_S:-120}
WORK=$(realpath -m "${WORK:-/tmp/gpu_window}")
read -ra CHECK_EXTRA <<<"${CHECK_OPTIONS:-}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
source benchmarks/gpu_env.sh  # exported: the scripts below find the wheels installed and install nothing
GPU_CHECK_TIMEOUT_S=$((CHECK_S + 25)) bash benchmarks/gpu_check.sh "$OUT/check" \
  --forms eager graph cells cells_graph --budget-s "$CHECK_S" "${CHECK_EXTRA[@]}"
IFS=$'\t' read -r DATA_PATH WHY < <($PY benchmarks/gpu_path.py "$OUT/check/gpu_check.partial.json")
echo "gpu_window.sh: path ${DATA_PATH:-?} after ${SECONDS} s: ${WHY:-gpu_path.py printed nothing}" |
  tee "$OUT/path.txt"
if [ -n "${GPU_PATH:-}" ] || [ -z "${DATA_PATH:-}" ]; then
  DATA_PATH=${GPU_PATH:-device}
  echo "gpu_window.sh: path $DATA_PATH (GPU_PATH=${GPU_PATH:-})" | tee -a "$OUT/path.txt"
fi

table3() {  # table3 WORK_DIR PATH: gpu_table3.sh with what is left of the window, its outputs into OUT
  local left=$((WINDOW_S - SECONDS))
  LIMIT_S=$left BENCH=0 bash benchmarks/gpu_table3.sh "$1" "$SEEDS" "$2" "${OPTIONS[@]}"
  local status=$?
  cp "$1/results-small.tgz" "$OUT/results-small-$2.tgz" 2>/dev/null
  return $status
}
OPTIONS=("$@")
table3 "$WORK" "$DATA_PATH"
status=$?
if [ "$DATA_PATH" = device-graph ] && [ "$status" != 0 ] && [ "$status" != 124 ] && [ "$status" != 137 ]; then
  echo "gpu_window.sh: device-graph failed (exit $status); the device path with the $((WINDOW_S - SECONDS)) s left" |
    tee -a "$OUT/path.txt"
  table3 "$WORK" device
  status=$?
fi
echo "gpu_window.sh: done after ${SECONDS} s (exit $status); outputs in $OUT"
exit "$status"
