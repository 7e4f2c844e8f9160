# Sourced by gpu_check.sh and gpu_table3.sh, in the repository root, on the GPU machine: learner imported
# from src/ (no install); the wheels carried in .whl/ (made here by benchmarks/gpu_wheels.sh) installed
# into a temporary folder where the interpreter lacks what they hold (not in a developer's environment,
# whose Python they may not fit); and `learner_needs MODULE...`, which stops the script at once, in one
# line, where a module it needs does not import (before any GPU time goes to work that would fail later).
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G '.whl/*.whl' >/dev/null &&
  # found, not imported: importing MONAI whole takes about 4 s of the lent machine's time per script
  ! "$PY" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' \
    pydantic monai av nibabel pydicom submitit 2>/dev/null; then
  site=$(mktemp -d)
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
    2>"$site.err"; then
    export PYTHONPATH="$PYTHONPATH:$site"
  else
    echo "gpu_env.sh: pip could not install .whl/*.whl for $PY: $(grep -v '^ *$' "$site.err" | tail -n 1)" >&2
  fi
fi

learner_needs() {
  "$PY" - "$@" <<'PYTHON'
import importlib
import sys

missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as error:
        missing.append(f"{name} ({error})")
if missing:
    sys.exit(f"cannot import {'; '.join(missing)}: run `bash benchmarks/gpu_wheels.sh` here and carry .whl")
PYTHON
}
