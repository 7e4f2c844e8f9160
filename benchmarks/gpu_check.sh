#!/bin/bash
# The GPU check of issue 22 (part 7), at most 4 minutes on one H100 / H200: the paper-scale training step with
# its data on the device in four forms (eager, CUDA-graph replay, torch.compile reduce-overhead, three cells
# on three streams; and the cells' graphs on the streams), GPU busy %, the top kernels of the eager step and
# the projected Tables 3 and 4 (benchmarks/gpu_check.py says how each is measured).
#
#   bash benchmarks/gpu_check.sh OUT_DIR [gpu_check.py options]     # e.g. OUT_DIR=$OUT on the device machine
#
# Small files only, under OUT_DIR: gpu_check.txt (everything printed: the markdown tables, the projection,
# the JSON line), gpu_check.jsonl (the JSON record), gpu_check.partial.json (the figures after every form:
# what is left if the run is stopped) and nvidia-smi.txt. The Python run has a hard timeout
# (GPU_CHECK_TIMEOUT_S, default 225 s); inside it, gpu_check.py's --budget-s (default 200 s) skips or stops
# what would not fit, so the figures come out first. learner is imported from src/ (no install), with the
# wheels of .whl/ (benchmarks/gpu_env.sh; made here by benchmarks/gpu_wheels.sh: pydantic for the config,
# monai for the vit / swin steps of Table 4). The real three-seed run is the next step:
# benchmarks/gpu_table3.sh.
set -uo pipefail
OUT=$(realpath -m "${1:?usage: gpu_check.sh OUT_DIR [gpu_check.py options]}")
shift
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
LIMIT=${GPU_CHECK_TIMEOUT_S:-225}
source benchmarks/gpu_env.sh
learner_needs learner.training.pretrain || exit 2
{ nvidia-smi || echo "(no nvidia-smi)"; } >"$OUT/nvidia-smi.txt" 2>&1
timeout -k 5 "$LIMIT" "$PY" benchmarks/gpu_check.py --out "$OUT/gpu_check.jsonl" \
  --partial "$OUT/gpu_check.partial.json" "$@" 2>&1 | tee "$OUT/gpu_check.txt"
status=${PIPESTATUS[0]}
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  so_far="the figures so far: $OUT/gpu_check.partial.json"
  [ -f "$OUT/gpu_check.partial.json" ] || so_far="no form had finished"
  echo "gpu_check.sh: stopped by its ${LIMIT} s timeout; $so_far" | tee -a "$OUT/gpu_check.txt"
fi
exit "$status"
