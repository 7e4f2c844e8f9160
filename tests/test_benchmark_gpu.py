"""``benchmarks/gpu.py --device cpu --tiny`` runs; its projection is its own step time × the step count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess that imports torch and trains (10 s): the full suite runs it
def test_gpu_benchmark_runs_tiny_on_cpu_and_projects_steps_times_step_time(tmp_path: Path) -> None:
    out = tmp_path / "gpu.jsonl"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny"]
    argv += ["--backbones", "tsm_resnet18", "vit", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=True)
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text().splitlines()[-1]) == printed
    steps = (701 // 4) * 100 * 3 * 3  # --tiny: batch 4; Table 1's 701 clips × 100 epochs × 3 losses × 3 seeds
    seconds = printed["step_seconds"]
    assert set(seconds) == {"tsm_resnet18", "vit"}
    assert all(s > 0 for s in seconds.values())
    assert printed["table3"]["steps"] == steps
    assert printed["table3"]["seconds"] == steps * seconds["tsm_resnet18"]
    assert printed["table4"]["seconds"] == steps * seconds["tsm_resnet18"] + steps * seconds["vit"]
    hours = f"{printed['table3']['seconds'] / 3600:.2f} h"
    assert f"Table 3 ({steps} steps of tsm_resnet18): {hours}" in done.stdout
