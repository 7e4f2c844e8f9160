"""Which data path ``benchmarks/gpu_table3.sh`` takes in a GPU window, from ``benchmarks/gpu_check.py``'s
figures (its ``--partial`` file): the fastest path the check found to compute what the eager step computes.

Usage::

    python benchmarks/gpu_path.py OUT/check/gpu_check.partial.json   # prints: PATH<TAB>why

* ``device-graph`` (``runtime.cuda_graph``) where the replay check agrees (the recorded step's losses equal
  the eager step's within 1e-3) and the recorded step is faster than the eager one: the three cells' forms
  compared where both ran (Table 3's cells train side by side), else the one cell's;
* ``device`` (the eager device-data step) where the eager step ran but recording did not help, did not
  agree, or did not run (a host sync that CUDA's sync debug mode found makes recording fail);
* ``loader`` (the DataLoader path, measured on a GPU before: BENCHMARKS.md) where the eager device-data step
  itself failed or has no figures.

``benchmarks/gpu_window.sh`` calls it between the check and the experiment, with no one to ask: a GPU
machine stays warm for 30 s after a command, so the window's two steps run in one command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ms(form: dict[str, Any]) -> float | None:
    return float(form["step_ms"]) if form.get("status") == "ok" and form.get("step_ms") else None


def _why_not(name: str, form: dict[str, Any]) -> str:
    return (
        f"{name} {form.get('status', 'not run')}: {form.get('reason') or form.get('error') or 'no figures'}"
    )


def choose_path(figures: dict[str, Any]) -> tuple[str, str]:
    """``(path, why)`` for ``gpu_table3.sh`` from the check's figures (the module docstring)."""
    forms: dict[str, dict[str, Any]] = figures.get("forms", {})
    eager, graph = forms.get("eager", {}), forms.get("graph", {})
    if _ms(eager) is None:
        return "loader", _why_not("eager", eager)
    syncs = figures.get("host_syncs")
    if syncs not in (None, "none"):
        return "device", f"the eager step syncs with the host ({syncs}), which recording refuses"
    if _ms(graph) is None:
        return "device", _why_not("graph", graph)
    check = graph.get("replay_check", {})
    if not check.get("agree"):
        return (
            "device",
            f"the recorded step's losses disagree with the eager step's: {check.get('loss_sums')}",
        )
    both_cells = all(_ms(forms.get(name, {})) for name in ("cells_graph", "cells"))
    recorded, plain = ("cells_graph", "cells") if both_cells else ("graph", "eager")
    ms = {name: _ms(forms[name]) or 0.0 for name in (recorded, plain)}  # both ran (checked above)
    compared = f"{recorded} {ms[recorded]:.2f} ms/step against {plain} {ms[plain]:.2f}"
    if ms[recorded] >= ms[plain]:
        return "device", f"recording is no faster: {compared}"
    return "device-graph", f"{compared}; the replay agrees"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: gpu_path.py GPU_CHECK_PARTIAL_JSON")
    path = Path(sys.argv[1])
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"loader\t{path}: no figures to choose from ({error.__class__.__name__})")
        return
    print("\t".join(choose_path(figures)))


if __name__ == "__main__":
    main()
