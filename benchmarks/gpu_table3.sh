#!/bin/bash
# Paper-scale Table 3 on the phantom LUS cohort on one GPU, after the throughput benchmark.
#
#   bash benchmarks/gpu_table3.sh OUT_DIR [SEEDS] [PATH] [LEARNER OPTIONS...]
#     SEEDS: a YAML list, default [0]; PATH: loader (default), device or device-graph; LEARNER OPTIONS:
#     appended to the cache and experiment commands (e.g. --set optim.epochs=1); PHANTOM: the phantom's
#     options, default "--size 224 --patients 160,44,17" (tests/test_benchmark_gpu.py runs it tiny on CPU);
#     LOSSES: the grid's objectives as a YAML list, default the config's three (MSE, MSE + CL, MSE + wCL).
#     LIMIT_S: the whole script's seconds (e.g. under a GPU window's command limit): the experiment runs
#     under `timeout` with what is left (20 s kept for the bundle), and the small outputs are bundled
#     whether it finished or not. Run again with the same OUT_DIR to go on: the phantom is kept and the
#     experiment resumes (finished cells reused).
#
# learner runs from src/ with the wheels carried in .whl/ (benchmarks/gpu_env.sh; make them here with
# benchmarks/gpu_wheels.sh): the GPU image lacks pydantic, monai, av, nibabel, pydicom and submitit. The script
# stops in its first seconds, naming the module, where one does not import.
#
# 1. benchmarks/gpu.py: tsm_resnet18 / vit / swin at 8 frames × 224 px, batch 16 (bf16 + channels-last), then
#    tsm_resnet18 in float32, without channels-last, and compiled; figures appended to OUT_DIR/bench.jsonl.
#    BENCH=0 skips them (a short GPU window: benchmarks/gpu_check.sh measures the step instead).
# 2. The phantom LUS cohort at Table 1's size (160 / 44 / 17 patients, 1001 clips) rendered at 224 px and cached.
# 3. `learner experiment table3 --config lus` (100 epochs, batch 16, 224 px, 8 frames): its cells run side by
#    side on the one GPU as local submitit jobs (they are bound by the CPU loaders and per-epoch validation
#    and checkpoints, so one process alone leaves the GPU mostly idle), runtime.workers=4 each.
#    With PATH=device (issue 22, not yet run on a GPU) the cells instead run in this one process with their
#    data on the device (data.device_data), the encoders of all its cells side by side (every seed's: 9 for
#    three seeds), one step each in turn on their own CUDA streams (runtime.cells_side_by_side), and a
#    checkpoint every 10 epochs.
#    PATH=device-graph adds runtime.cuda_graph: each cell's step recorded once as a CUDA graph and replayed
#    (not yet run on a GPU; run benchmarks/gpu_check.sh first, whose graph form checks the replay).
# OUT_DIR/table3_wall.txt: the wall seconds of step 3 alone (the figure of BENCHMARKS.md target 8).
# OUT_DIR/results-small.tgz holds everything but weights and cached arrays (a few MB): the tables, REPORT.md,
# results.json, Fig. 1, every pretraining's metrics.csv and the jobs' logs. PATH=loader needs submitit.
# Measured 2026-11-30 on one H200 (16 cores): 3 × 100-epoch cells of one seed in 378 s (BENCHMARKS.md).
set -euo pipefail
OUT=$(realpath -m "${1:?usage: gpu_table3.sh OUT_DIR [SEEDS] [PATH] [LEARNER OPTIONS...]}")
SEEDS=${2:-[0]}
DATA_PATH=${3:-loader}
shift $(($# < 3 ? $# : 3))
read -ra PHANTOM_OPTIONS <<<"${PHANTOM:---size 224 --patients 160,44,17}"
case "$DATA_PATH" in
  loader | device | device-graph) ;;
  *) echo "PATH must be loader, device or device-graph, got $DATA_PATH" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
case "$DATA_PATH" in
  loader) learner_needs learner.cli av nibabel pydicom monai submitit ;;
  *) learner_needs learner.cli av nibabel pydicom monai ;;
esac
mkdir -p "$OUT"
B=benchmarks/gpu.py
touch "$OUT/bench.jsonl"
if [ "${BENCH:-1}" != 0 ]; then
  $PY $B --steps 30 --warmup 5 --out "$OUT/bench.jsonl"
  $PY $B --steps 30 --warmup 5 --backbones tsm_resnet18 --no-amp --out "$OUT/bench.jsonl"
  $PY $B --steps 30 --warmup 5 --backbones tsm_resnet18 --no-channels-last --out "$OUT/bench.jsonl"
  $PY $B --steps 30 --warmup 5 --backbones tsm_resnet18 --compile --out "$OUT/bench.jsonl"
fi
if [ ! -f "$OUT/phantom/manifest.csv" ]; then
  $PY -m learner phantom lus "$OUT/phantom" "${PHANTOM_OPTIONS[@]}" --workers "$(nproc)"
fi
COMMON=(--config lus --set runtime.device=cuda --set runtime.workers=4 --set "runtime.cache_dir=$OUT/cache" "$@")
$PY -m learner data cache "$OUT/phantom/manifest.csv" "${COMMON[@]}" --workers "$(nproc)"
case "$DATA_PATH" in
  loader) LAUNCH=(--launcher submitit-local --launcher-opt gpus_per_node=1 --launcher-opt timeout_min=240) ;;
  device|device-graph)
    LAUNCH=(--set data.device_data=true --set runtime.cells_side_by_side=true --set runtime.checkpoint_every=10)
    if [ "$DATA_PATH" = device-graph ]; then LAUNCH+=(--set runtime.cuda_graph=true); fi ;;
esac
# The device paths pretrain one seed's cells side by side at a time, as runs over the growing seed lists
# [0], [0,1], ... (--resume: earlier cells reused; SEED_BY_SEED=0: all seeds at once). Every lane keeps its
# clip store (~0.8 GB) and its step's memory on the GPU (a paper-size bf16 step peaks at ~2 GB on a CPU; a
# CUDA graph keeps its own pool, and each stream its cached blocks): nine lanes may not fit an H100, three
# are what gpu_check.sh's cells forms measure.
PREFIXES=("$SEEDS")
if [ "$DATA_PATH" != loader ] && [ "${SEED_BY_SEED:-1}" != 0 ]; then
  read -ra seed_list <<<"$(echo "$SEEDS" | tr -d '[] ' | tr ',' ' ')"
  PREFIXES=()
  prefix=""
  for seed in "${seed_list[@]}"; do
    prefix="${prefix:+$prefix,}$seed"
    PREFIXES+=("[$prefix]")
  done
fi
if [ -n "${LOSSES:-}" ]; then LAUNCH+=(--set "experiment.losses=$LOSSES"); fi  # the grid's, not the cache's
STARTED=$(date +%s)
status=0
for seeds in "${PREFIXES[@]}"; do
  resume=()
  if [ -d "$OUT/table3" ]; then resume=(--resume); fi
  LIMIT=()
  if [ -n "${LIMIT_S:-}" ]; then
    left=$((LIMIT_S - SECONDS - 20))
    if [ "$left" -le 0 ] && [ "$seeds" = "${PREFIXES[0]}" ]; then
      echo "gpu_table3.sh: LIMIT_S=$LIMIT_S spent before the experiment (after $SECONDS s)" >&2
      exit 124
    elif [ "$left" -le 0 ]; then
      status=124
      break
    fi
    LIMIT=(timeout -k 10 "$left")
  fi
  "${LIMIT[@]}" $PY -m learner -v experiment table3 "${COMMON[@]}" --out "$OUT/table3" \
    --dataset "LUS=$OUT/phantom/manifest.csv@sf" --set "experiment.seeds=$seeds" "${LAUNCH[@]}" \
    "${resume[@]}" || {
    status=$?
    break
  }
done
wall=$(($(date +%s) - STARTED))
cells=0  # encoders finished (none where the experiment stopped before making its folder)
if [ -d "$OUT/table3" ]; then cells=$(find "$OUT/table3" -path '*/encoder/complete.json' | wc -l); fi
case $status in
  0) echo "table3 $DATA_PATH seeds $SEEDS: $wall s wall" ;;
  124 | 137) echo "table3 $DATA_PATH seeds $SEEDS: stopped (exit $status, LIMIT_S=${LIMIT_S:-unset}) after $wall s," \
    "$cells encoders finished; run again with the same OUT_DIR to go on" ;;
  *) echo "table3 $DATA_PATH seeds $SEEDS: failed (exit $status) after $wall s, $cells encoders finished" ;;
esac | tee "$OUT/table3_wall.txt"
(cd "$OUT" && { [ -d table3 ] && find table3 -type f \( -name '*.md' -o -name '*.json' -o -name '*.csv' \
  -o -name '*.png' -o -name '*.yaml' -o -name '*.txt' -o -name '*.out' -o -name '*.err' \) \
  -not -path '*/checkpoints/*' -print0; true; } | tar czf results-small.tgz --null -T - bench.jsonl table3_wall.txt)
echo "results: $OUT/table3/REPORT.md, $OUT/results-small.tgz"
exit "$status"
