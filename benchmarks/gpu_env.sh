# Sourced by gpu_check.sh and gpu_table3.sh, in the repository root, on the GPU machine: learner imported
# from src/ (no install); the wheels carried in .whl/ (made here by benchmarks/gpu_wheels.sh) installed
# into a temporary folder where the interpreter lacks what they hold (not in a developer's environment,
# whose Python they may not fit); and `learner_needs MODULE...`, which stops the script at once, in one
# line, where a module it needs does not import (before any GPU time goes to work that would fail later):
# learner's own modules (learner.cli, ...) are imported, which imports what they import; any other package is
# only found, as the wheels check below finds it (importing MONAI whole takes 4-8 s of a 2-core CPU, more
# than the rest of a tiny script; a carried wheel that did not fit the interpreter was refused by pip).
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
import importlib.util
import sys

missing = []
for name in sys.argv[1:]:
    try:
        if name.partition(".")[0] == "learner":
            importlib.import_module(name)
        elif importlib.util.find_spec(name) is None:
            missing.append(f"{name} (No module named {name!r})")
    except ImportError as error:
        missing.append(f"{name} ({error})")
if missing:
    sys.exit(f"cannot import {'; '.join(missing)}: run `bash benchmarks/gpu_wheels.sh` here and carry .whl")
PYTHON
}
