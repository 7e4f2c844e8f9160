"""``benchmarks/gpu.py --device cpu --tiny`` runs; its projection is its own step time × the step count.
``benchmarks/gpu_check.py --device cpu --tiny`` runs its CPU forms, skips the CUDA ones, projects from the
best form; its busy-time arithmetic, its per-form guard and its budget, in-process; its replay check with a
stand-in recorder. ``benchmarks/device_data.py`` times the loader and the device-data arms on CPU.
``benchmarks/gpu_table3.sh`` runs the device path end to end, tiny, on CPU, stops at its ``LIMIT_S`` and
refuses a bad path; ``benchmarks/gpu_env.sh`` installs carried wheels where the interpreter lacks what
they hold (or says in one line why it could not), and names a module that does not import, in one line.
``benchmarks/gpu_path.py`` chooses the path from the check's figures; ``benchmarks/gpu_window.sh`` runs the
check, the choice and the experiment in one command, tiny, on CPU, falling back from a failed path."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml

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


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/gpu_check.py`` imported in-process (its folder on ``sys.path``, as when run)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("gpu_check")


@pytest.mark.slow  # a subprocess that imports torch, trains tiny models (~10 s): the full suite runs it
def test_gpu_check_runs_tiny_on_cpu_skips_the_cuda_forms_and_projects_from_the_best_form(
    tmp_path: Path,
) -> None:
    out, partial = tmp_path / "check.jsonl", tmp_path / "partial.json"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny"]
    argv += ["--table4", "vit", "--out", str(out), "--partial", str(partial)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=True)
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text().splitlines()[-1]) == printed
    assert json.loads(partial.read_text())["forms"] == printed["forms"]
    forms = printed["forms"]
    assert list(forms) == ["eager", "graph", "cells", "cells_graph", "compile"]  # the order they ran
    for form in ("graph", "compile", "cells_graph"):
        assert forms[form] == {"status": "skipped", "reason": "CUDA only"}
        assert f"{form}: skipped: CUDA only" in done.stdout
    eager, cells = forms["eager"], forms["cells"]
    assert eager["status"] == cells["status"] == "ok"
    assert (eager["cells"], cells["cells"], cells["streams"]) == (1, 3, 0)  # round-robin, no streams on a CPU
    for r in (eager, cells):
        assert r["step_ms"] > 0
        assert r["steps_per_s"] > 0
        assert r["busy_percent"] is None  # no GPU
    assert cells["step_ms"] == pytest.approx(cells["round_ms"] / 3)  # per cell-step
    assert 1 <= len(eager["top"]) <= 10
    assert eager["top_of"] == "ops by self CPU time"
    assert printed["batch_ms"] > 0
    assert printed["tflop_per_step"] > 0
    assert "| form | cells | ms/step | steps/s | GPU busy % | TFLOP/s | × eager | note |" in done.stdout
    # the projection: gpu.py's step count (batch 4) × the best form's seconds per step
    steps = (701 // 4) * 100 * 3 * 3
    best = min(("eager", "cells"), key=lambda f: forms[f]["step_ms"])
    best_s = forms[best]["step_ms"] / 1e3
    assert printed["best_form"] == best
    assert printed["table3"]["steps"] == steps
    assert printed["table3"]["seconds"] == pytest.approx(steps * best_s)
    vit_s = printed["table4_eager"]["vit"]["step_ms"] / 1e3
    assert printed["table4"]["seconds"] == pytest.approx(steps * best_s + steps * vit_s)
    assert printed["table4"]["missing"] == []
    assert f"Table 3 ({steps} steps of tsm_resnet18, {best}): {steps * best_s / 60:.1f} min" in done.stdout


def test_gpu_check_busy_time_counts_overlapping_device_work_once(gpu_check: ModuleType) -> None:
    events = [
        {"ph": "X", "cat": "kernel", "name": "conv", "ts": 0.0, "dur": 10.0},
        {"ph": "X", "cat": "kernel", "name": "conv", "ts": 5.0, "dur": 10.0},  # another stream: overlaps
        {"ph": "X", "cat": "gpu_memcpy", "name": "copy", "ts": 20.0, "dur": 2.0},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "step", "ts": 0.0, "dur": 100.0},  # not work
        {"ph": "X", "cat": "cpu_op", "name": "aten::conv", "ts": 0.0, "dur": 50.0},  # host side
    ]
    spans = gpu_check.device_intervals(events)
    assert gpu_check.union_us(spans) == 17.0  # 0–15 and 20–22
    top = gpu_check.top_kernels(spans, steps=2)
    assert [k["name"] for k in top] == ["conv", "copy"]
    assert top[0]["ms_per_step"] == pytest.approx(0.01)
    assert top[0]["calls_per_step"] == 1
    assert top[0]["percent"] == pytest.approx(100 * 20 / 22)


def test_gpu_check_guards_each_form_and_keeps_to_its_budget(
    gpu_check: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = gpu_check.Budget(10.0, start=time.monotonic())

    def broken() -> dict[str, float]:
        raise RuntimeError("no compiler\nhere")

    failed = gpu_check.guarded("compile", 1.0, budget, broken)
    assert failed["status"] == "error"
    assert failed["error"] == "RuntimeError: no compiler here"
    assert "RuntimeError" in failed["traceback"]
    ran = gpu_check.guarded("eager", 1.0, budget, lambda: {"step_ms": 1.0})
    assert ran == {"status": "ok", "step_ms": 1.0}
    assert gpu_check.guarded("cells", 60.0, budget, lambda: {})["status"] == "skipped"  # 60 s > what is left
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "compile: error: RuntimeError: no compiler here"
    assert lines[1].startswith("cells: skipped: over budget (0 s spent + ~60 s > 10 s)")
    # a form that runs past the budget is interrupted, and reported as an error
    short = gpu_check.Budget(0.2, start=time.monotonic())
    started = time.monotonic()
    stopped = gpu_check.guarded("compile", 0.0, short, lambda: time.sleep(5))
    assert time.monotonic() - started < 2
    assert stopped["status"] == "error"
    assert stopped["error"].startswith("BudgetExceeded")


@pytest.mark.slow  # builds two tiny trainees and trains them (a few seconds)
def test_gpu_check_replay_check_compares_a_recorded_cell_with_an_eager_one(
    gpu_check: ModuleType, replaying_recorders: Callable[[ModuleType], list[Any]], one_thread: None
) -> None:
    """The check the graph form prints first, run on CPU with a stand-in recorder: the recorded cell takes
    the same steps as the eager one, so they agree exactly."""
    recorders = replaying_recorders(gpu_check)
    args = argparse.Namespace(frames=2, size=32, preset="tiny", batch=4, chunk=2, steps=4)
    cpu = torch.device("cpu")
    setup = gpu_check.build_setup(args, cpu)
    runner = gpu_check.Runner(args, cpu, gpu_check.Budget(60.0, start=time.monotonic()))
    check = runner.replay_matches_eager(setup, steps=6)
    assert check["steps"] == 6
    assert [len(recorder.recorded) for recorder in recorders] == [1]
    assert check["agree"] is True
    assert check["param_max_abs_diff"] == 0.0
    first, second = check["loss_sums"]
    assert first == second
    assert first > 0


@pytest.mark.slow  # a subprocess that imports torch and trains two tiny arms (~10 s)
def test_device_data_benchmark_times_both_paths_through_the_toolkits_own_run(tmp_path: Path) -> None:
    """``benchmarks/device_data.py`` tiny on CPU: the loader arm and the device arm (as pretraining starts
    it, ``start_device_run``); the CUDA-graph arm is left out on a CPU."""
    out = tmp_path / "device_data.jsonl"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(ROOT / "benchmarks" / "device_data.py"), "--reps", "2", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=True)
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text().splitlines()[-1]) == printed
    assert set(printed["step_seconds"]) == {"loader", "device"}
    assert all(seconds > 0 for seconds in printed["step_seconds"].values())
    assert printed["device_over_graph"] is None
    assert "loader/device" in done.stdout


def run_script(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``bash benchmarks/SCRIPT ARGS`` with this interpreter as its ``PYTHON`` (learner from src/)."""
    environ = os.environ | {"PYTHON": sys.executable} | env
    argv = ["bash", str(ROOT / "benchmarks" / script), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=600, check=False)


@pytest.mark.slow  # a tiny phantom, its cache and a one-epoch Table 3 of two seeds × two cells (~35 s)
def test_gpu_table3_script_runs_the_device_path_tiny_on_cpu_and_keeps_the_small_outputs(
    tmp_path: Path,
) -> None:
    """``benchmarks/gpu_table3.sh`` end to end, as a GPU window runs it but tiny and on CPU: the phantom,
    the cache, the grid with its data on the device and one seed's cells side by side at a time, the
    wall-time line and the bundle of small outputs (results.json and the report over both seeds, no
    checkpoints). First with a ``LIMIT_S`` spent before the experiment: it stops with 124 and one line, and
    the second call goes on from its phantom."""
    out = tmp_path / "t3"
    tiny = ["--set", "runtime.device=cpu", "--set", "optim.epochs=1", "--set", "data.size=32"]
    tiny += ["--set", "data.frames=2", "--set", "model.size=tiny", "--set", "runtime.workers=0"]
    tiny += ["--set", "classifier.bootstrap=30"]
    settings = {"PHANTOM": "--size 32 --patients 8,4,4", "BENCH": "0", "LOSSES": "[mse,mse+wcl]"}  # 2 suffice
    spent = run_script("gpu_table3.sh", str(out), "[0,1]", "device", *tiny, LIMIT_S="1", **settings)
    assert spent.returncode == 124
    line = r"gpu_table3.sh: LIMIT_S=1 spent before the experiment \(after \d+ s\)\n"
    assert re.fullmatch(line, spent.stderr)
    phantom = (out / "phantom" / "manifest.csv").stat().st_mtime_ns
    assert not (out / "table3").exists()
    done = run_script("gpu_table3.sh", str(out), "[0,1]", "device", *tiny, **settings)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "phantom" / "manifest.csv").stat().st_mtime_ns == phantom  # the first call's, kept
    assert re.fullmatch(r"table3 device seeds \[0,1\]: \d+ s wall\n", (out / "table3_wall.txt").read_text())
    for seed in (0, 1):  # one seed's three cells at a time
        group = ", ".join(f"LUS/{loss}/seed-{seed}" for loss in ("mse", "mse+wcl"))
        assert f"side by side {group} |" in done.stdout
    results = json.loads((out / "table3" / "results.json").read_text())
    assert sorted({cell["seed"] for cell in results["cells"]}) == [0, 1]
    with tarfile.open(out / "results-small.tgz") as bundle:
        names = set(bundle.getnames())
    assert {"table3/results.json", "table3/REPORT.md", "table3_wall.txt", "bench.jsonl"} <= names
    assert "table3/LUS/mse+wcl/seed-0/encoder/metrics.csv" in names
    assert not any("checkpoints" in name or name.endswith(".safetensors") for name in names)
    config = yaml.safe_load((out / "table3/LUS/mse/seed-0/encoder/config.yaml").read_text())
    assert config["data"]["device_data"] is True


def test_gpu_table3_script_refuses_an_unknown_path_before_any_work(tmp_path: Path) -> None:
    done = run_script("gpu_table3.sh", str(tmp_path / "t3"), "[0]", "gpu")
    assert done.returncode == 2
    assert done.stderr.strip() == "PATH must be loader, device or device-graph, got gpu"
    assert not (tmp_path / "t3").exists()


def test_gpu_scripts_stop_in_one_line_naming_a_module_that_does_not_import() -> None:
    done = subprocess.run(
        ["bash", "-c", "source benchmarks/gpu_env.sh && learner_needs learner.cli no_such_module_here"],
        capture_output=True, text=True, cwd=ROOT, env=os.environ | {"PYTHON": sys.executable}, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("cannot import no_such_module_here (No module named 'no_such_module_here')")
    assert "benchmarks/gpu_wheels.sh" in line


def a_wheel(folder: Path, module: str, text: str = "VALUE = 42\n") -> Path:
    """A pure-Python wheel of one module, as pip installs it: the module and its dist-info."""
    wheel = folder / f"{module}-1.0-py3-none-any.whl"
    info = f"{module}-1.0.dist-info"
    files = {
        f"{module}.py": text,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        archive.writestr(f"{info}/RECORD", "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]))
    return wheel


def source_gpu_env(folder: Path, then: str) -> subprocess.CompletedProcess[str]:
    """``source benchmarks/gpu_env.sh && THEN`` in ``folder`` (where ``.whl/`` is looked for), with an
    interpreter that lacks what the GPU image lacks: a stand-in for this one whose check for those
    modules fails, as on the image, so the carried wheels are installed."""
    python = folder / "python"
    python.write_text(
        "#!/bin/bash\n"
        'if [ "$1" = -c ] && [[ "$2" == *find_spec* ]]; then exit 1; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    script = f"source {ROOT / 'benchmarks' / 'gpu_env.sh'} && {then}"
    environ = os.environ | {"PYTHON": str(python)}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=folder, env=environ,
                          timeout=300, check=False)  # fmt: skip


def test_gpu_env_installs_the_carried_wheels_where_the_interpreter_lacks_them(tmp_path: Path) -> None:
    (tmp_path / ".whl").mkdir()
    a_wheel(tmp_path / ".whl", "carried_here")
    done = source_gpu_env(
        tmp_path, "learner_needs carried_here && \"$PY\" -c 'import carried_here as m; print(m.VALUE)'"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


def test_gpu_env_leaves_an_interpreter_that_has_every_module_as_it_is(tmp_path: Path) -> None:
    (tmp_path / ".whl").mkdir()
    a_wheel(tmp_path / ".whl", "carried_here")
    script = f"source {ROOT / 'benchmarks' / 'gpu_env.sh'} && learner_needs carried_here"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False,
                          env=os.environ | {"PYTHON": sys.executable}, timeout=300)  # fmt: skip
    assert done.returncode != 0  # this one has pydantic, MONAI, ...: the wheels were not installed
    assert done.stderr.startswith("cannot import carried_here")


def test_gpu_env_says_in_one_line_that_the_carried_wheels_did_not_install(tmp_path: Path) -> None:
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    done = source_gpu_env(tmp_path, "learner_needs broken")
    assert done.returncode != 0
    reported, refused = done.stderr.strip().splitlines()
    assert reported.startswith(f"gpu_env.sh: pip could not install .whl/*.whl for {tmp_path / 'python'}: ")
    assert refused.startswith("cannot import broken (No module named 'broken')")


@pytest.fixture
def gpu_path(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/gpu_path.py`` imported in-process."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("gpu_path")


def check_figures(**forms: dict[str, Any]) -> dict[str, Any]:
    """gpu_check's figures with these forms (``status`` ok unless given) and no host sync."""
    return {"host_syncs": "none", "forms": {name: {"status": "ok"} | form for name, form in forms.items()}}


AGREES = {"agree": True, "loss_sums": [1.0, 1.0]}
EAGER = {"step_ms": 20.0}
GRAPH = {"step_ms": 9.0, "replay_check": AGREES}


@pytest.mark.parametrize(
    ("figures", "path", "why"),
    [
        ({}, "loader", "eager not run: no figures"),
        (check_figures(eager={"status": "error", "error": "RuntimeError: boom"}), "loader", "boom"),
        (check_figures(eager=EAGER) | {"host_syncs": "synchronizing op"}, "device", "synchronizing op"),
        (check_figures(eager=EAGER, graph={"status": "skipped", "reason": "CUDA only"}), "device",
         "graph skipped: CUDA only"),
        (check_figures(eager=EAGER, graph=GRAPH | {"replay_check": {"agree": False}}), "device", "disagree"),
        (check_figures(eager=EAGER, graph=GRAPH | {"step_ms": 21.0}), "device",
         "no faster: graph 21.00 ms/step against eager 20.00"),
        (check_figures(eager=EAGER, graph=GRAPH), "device-graph",
         "graph 9.00 ms/step against eager 20.00; the replay agrees"),
        (check_figures(eager=EAGER, graph=GRAPH, cells={"step_ms": 8.0}, cells_graph={"step_ms": 8.5}),
         "device", "no faster: cells_graph 8.50 ms/step against cells 8.00"),
    ],
)  # fmt: skip
def test_gpu_path_takes_the_recorded_step_only_where_it_agrees_and_is_faster(
    gpu_path: ModuleType, figures: dict[str, Any], path: str, why: str
) -> None:
    chosen, reason = gpu_path.choose_path(figures)
    assert chosen == path
    assert why in reason


@pytest.mark.slow  # the tiny check, then a failed device-graph Table 3 and a tiny device one on CPU (~40 s)
def test_gpu_window_checks_chooses_and_falls_back_to_the_device_path_where_device_graph_fails(
    tmp_path: Path,
) -> None:
    """``benchmarks/gpu_window.sh`` as a GPU window runs it, tiny and on CPU: the check, the path chosen
    (``device``: the recorded forms need CUDA) and overridden to ``device-graph`` (``GPU_PATH``), which
    fails at once on a CPU and is bundled all the same, then the device path in the time left, in the same
    work folder; at most 8 files come back (the run tool's limit)."""
    out, work = tmp_path / "out", tmp_path / "work"
    tiny = ["--set", "runtime.device=cpu", "--set", "optim.epochs=1", "--set", "data.size=32"]
    tiny += ["--set", "data.frames=2", "--set", "model.size=tiny", "--set", "runtime.workers=0"]
    tiny += ["--set", "classifier.bootstrap=30"]
    settings = {"PHANTOM": "--size 32 --patients 8,4,4", "CHECK_OPTIONS": "--device cpu --tiny",
                "WORK": str(work), "GPU_PATH": "device-graph", "LOSSES": "[mse]"}  # fmt: skip
    done = run_script("gpu_window.sh", str(out), "[0]", *tiny, **settings)
    assert done.returncode == 0, done.stderr[-3000:]
    chosen, overridden, fallback = (out / "path.txt").read_text().splitlines()
    assert re.fullmatch(r"gpu_window\.sh: path device after \d+ s: graph skipped: CUDA only", chosen)
    assert overridden == "gpu_window.sh: path device-graph (GPU_PATH=device-graph)"
    assert re.fullmatch(
        r"gpu_window\.sh: device-graph failed \(exit 2\); the device path with the \d+ s left", fallback
    )
    walls = {}
    for path in ("device-graph", "device"):
        with tarfile.open(out / f"results-small-{path}.tgz") as bundle:
            wall = bundle.extractfile("table3_wall.txt")
            assert wall is not None
            walls[path] = wall.read().decode()
    assert re.fullmatch(
        r"table3 device-graph seeds \[0\]: failed \(exit 2\) after \d+ s, 0 encoders finished\n",
        walls["device-graph"],
    )
    assert re.fullmatch(r"table3 device seeds \[0\]: \d+ s wall\n", walls["device"])
    with tarfile.open(out / "results-small-device.tgz") as bundle:
        assert "table3/results.json" in bundle.getnames()
    assert not (work.parent / "work-device").exists()  # the fallback went on in the same work folder
    returned = [f for f in out.rglob("*") if f.is_file()]  # what the run tool brings back: 8 files, 2 deep
    assert len(returned) <= 8, returned
    assert all(len(f.relative_to(out).parts) <= 3 for f in returned)
    record = json.loads((out / "check" / "gpu_check.jsonl").read_text().splitlines()[-1])
    assert record["settings"]["forms"] == ["eager", "graph", "cells", "cells_graph"]
