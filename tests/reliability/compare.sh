#!/usr/bin/env bash
# Count what changed: run the reliability catalogue (tests/reliability, today's tests) against the source of a
# previous revision and against today's, and print one table of the two and the tests whose outcome changed.
#
#   tests/reliability/compare.sh REV [PYTEST ARGS...]     e.g. tests/reliability/compare.sh fe5b01f -n 0
#
# REV's src/ is exported with `git archive` into a temporary folder (read-only git: the working tree, the
# index and HEAD are left as they are) and put first on PYTHONPATH for the first run; the second run imports
# today's src/ (the installed editable package). Both run `pytest tests/reliability -q -p no:randomly`, with
# PYTEST ARGS added (e.g. `-n 0`, `-k catalogue`). Run it from the activated virtual environment (PYTHON
# names another interpreter). KEEP=1 keeps the temporary folder (the two logs and JUnit files) and prints it.
# Exit status: 0 when the table was printed, 2 on a usage or set-up error.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    [[ $# -ge 1 ]] && exit 0 || exit 2
fi
rev=$1
shift
python=${PYTHON:-python}
root=$(git rev-parse --show-toplevel)
cd "$root"
commit=$(git rev-parse --verify --quiet "$rev^{commit}") || { echo "error: $rev: not a revision of $root" >&2; exit 2; }
git cat-file -e "$commit:src" 2>/dev/null || { echo "error: $rev has no src/ folder" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/reliability-compare.XXXXXX")
if [[ ${KEEP:-0} == 1 ]]; then
    echo "keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi
git archive "$commit" src | tar -x -C "$work"

old_path="$work/src${PYTHONPATH:+:$PYTHONPATH}"
imported=$(PYTHONPATH="$old_path" "$python" -c 'import learner; print(learner.__file__)')
if [[ $imported != "$work/src/"* ]]; then
    echo "error: with $work/src first on PYTHONPATH, python still imports learner from $imported" >&2
    exit 2
fi

today=$("$python" -c 'import learner; print(learner.__file__)')
if [[ $today != "$root/src/"* ]]; then
    echo "error: python imports learner from $today, not from $root/src (activate this checkout's venv)" >&2
    exit 2
fi

run() {  # run LABEL PYTHONPATH [PYTEST ARGS]: JUnit results in $work/LABEL.xml, the log in $work/LABEL.log
    local label=$1 path=$2 status=0
    local -a environment=(env -u PYTHONPATH)
    [[ -n $path ]] && environment=(env "PYTHONPATH=$path")
    shift 2
    echo "running tests/reliability against $label ..." >&2
    "${environment[@]}" "$python" -m pytest tests/reliability -q -p no:randomly -p no:cacheprovider \
        --junitxml="$work/$label.xml" "$@" >"$work/$label.log" 2>&1 || status=$?
    if [[ ! -s $work/$label.xml ]]; then
        echo "error: pytest against $label wrote no results (exit $status); the end of its log:" >&2
        tail -n 20 "$work/$label.log" >&2
        exit 2
    fi
}
run rev "$old_path" "$@"
run now "${PYTHONPATH:-}" "$@"

"$python" - "$rev" "$(git rev-parse --short "$commit")" "$work/rev.xml" "$work/now.xml" <<'PYTHON'
"""Print the two runs side by side: counts per outcome, then every test whose outcome changed."""

import sys
import xml.etree.ElementTree as ET

rev, short, rev_xml, now_xml = sys.argv[1:5]


def outcomes(path: str) -> dict[str, str]:
    """test id → passed | failed | error | skipped, from a JUnit file (a module that failed to import is one
    'error' entry named after the module)."""
    found = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        where = case.get("classname", "").removeprefix("tests.reliability.")
        name = f"{where}::{case.get('name')}" if case.get("name") else where
        children = {child.tag for child in case}
        if "failure" in children:
            found[name] = "failed"
        elif "error" in children:
            found[name] = "error"
        elif "skipped" in children:
            found[name] = "skipped"
        else:
            found[name] = "passed"
    return found


before, after = outcomes(rev_xml), outcomes(now_xml)
names = sorted(before.keys() | after.keys())
kinds = ["passed", "failed", "error", "skipped", "absent"]
label = rev if rev.startswith(short) else f"{rev} ({short})"
print(f"tests/reliability on {label} and now (the working tree)\n")
print(f"| tests | on {label} | now |")
print("|---|---:|---:|")
for kind in kinds:
    counts = [sum(1 for name in names if runs.get(name, "absent") == kind) for runs in (before, after)]
    if any(counts) or kind in ("passed", "failed"):
        print(f"| {kind} | {counts[0]} | {counts[1]} |")
print(f"| total | {len(before)} | {len(after)} |")
changed = [name for name in names if before.get(name, "absent") != after.get(name, "absent")]
print(f"\n{len(changed)} changed" + (":" if changed else ""))
if changed:
    print(f"\n| test | on {label} | now |")
    print("|---|---|---|")
    for name in changed:
        print(f"| {name.replace('|', '/')} | {before.get(name, 'absent')} | {after.get(name, 'absent')} |")
PYTHON
