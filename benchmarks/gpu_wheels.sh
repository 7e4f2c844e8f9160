#!/bin/bash
# Run HERE (where pip can download), before a GPU window: the wheels of what learner needs and the GPU
# machine's image lacks (.library/device/KINDS.md lists what it holds), at constraints.txt's versions, for
# its Python 3.12, into .whl/ (git-ignored through .git/info/exclude). Carry `.whl` in the device run;
# benchmarks/gpu_env.sh (sourced by gpu_check.sh and gpu_table3.sh) installs them there. About 45 MB, av
# (PyAV, with its FFmpeg) 36 MB of it.
#
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES=(pydantic pydantic_core annotated-types typing-inspection typing_extensions monai av nibabel pydicom submitit)
pins=()
for name in "${NAMES[@]}"; do
  pattern="^${name//[-_]/[-_]}=="
  pin=$(grep -iE "$pattern" constraints.txt) || { echo "gpu_wheels.sh: $name is not pinned in constraints.txt" >&2; exit 2; }
  pins+=("$pin")
done
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${pins[@]}"
# pip installs all of .whl/*.whl at once there: two versions of one package would stop it
twice=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$twice" ]; then
  echo "gpu_wheels.sh: .whl/ holds two versions of: $twice; remove the older wheels" >&2
  exit 2
fi
du -sh .whl
