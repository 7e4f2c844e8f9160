"""A pretraining in MLflow, live and through ``learner track`` (the same run from its files), a missing
tracker package as one line before any work, and the MLflow UI command of docs/training.md: started on
127.0.0.1, answering with its page, stopped by PID."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_training_kill import killed_pretraining

from learner import api
from learner.config import Config
from learner.training import loggers
from learner.training.tracker import MlflowTracker

# found, not imported: importing MLflow at collection costs every test process about a second
pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")

CliRun = Callable[[list[str]], tuple[int, str, str]]
TRAINING_DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


@pytest.fixture(scope="module")
def tracked_pretraining(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny pretraining (2 epochs) run with ``runtime.logger=mlflow``; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    api.pretrain(make_tiny_pretrain_config(**{"runtime.logger": "mlflow"}), out)
    return out


def _only_run(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("learner").experiment_id])
    return client, run


@pytest.mark.slow
def test_a_pretraining_records_its_epochs_outcome_and_curves(
    tracked_pretraining: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, run = _only_run(tracked_pretraining, monkeypatch)
    assert (run.info.status, run.data.tags["learner.kind"]) == ("FINISHED", "pretraining")
    epochs = pd.read_csv(tracked_pretraining / "metrics.csv")
    for column in ("train_loss", "val_mae", "lr"):
        history = sorted(client.get_metric_history(run.info.run_id, column), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == list(zip(epochs["epoch"], epochs[column], strict=True))
    outcome = json.loads((tracked_pretraining / "metrics.json").read_text())
    assert run.data.metrics["best.val_mae"] == outcome["best"]["val_mae"]
    assert run.data.metrics["last.train_loss"] == outcome["last"]["train_loss"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "training_curves.png"}


@pytest.mark.slow
def test_learner_track_records_the_same_run_from_its_files(
    tracked_pretraining: Path, tmp_path: Path, cli: CliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(tracked_pretraining, copy, ignore=shutil.ignore_patterns("mlruns"))
    for _ in range(2):  # twice: replaced, never doubled
        code, stdout, stderr = cli(["track", str(copy)])  # the run's own logger: mlflow
        assert code == 0, stderr
        assert "tracked: pretraining as 1 mlflow run(s)" in stdout
    _, live = _only_run(tracked_pretraining, monkeypatch)
    client, backfilled = _only_run(copy, monkeypatch)
    assert backfilled.data.metrics == live.data.metrics
    assert backfilled.data.params == live.data.params
    assert len(client.get_metric_history(backfilled.info.run_id, "val_mae")) == 2


@pytest.mark.slow
def test_a_missing_tracker_package_is_one_line_before_any_work(
    tracked_pretraining: Path, tmp_path: Path, cli: CliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(tracked_pretraining, copy, ignore=shutil.ignore_patterns("mlruns"))
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    code, _, stderr = cli(["track", str(copy), "--logger", "tensorboard"])
    assert code != 0
    needs = "runtime.logger=tensorboard needs the tensorboard package: pip install 'learner[tensorboard]'"
    assert stderr == f"error: {needs}\n"
    assert not (copy / "tensorboard").exists()
    code, _, stderr = cli(["track", str(copy), "--logger", "csv"])
    assert stderr == "error: --logger 'csv': choose one of tensorboard, mlflow\n"


def test_a_grids_stage_keeps_no_store_of_its_own(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_tiny_pretrain_config(**{"runtime.logger": "mlflow"})
    alone = loggers.open_loggers("mlflow", tmp_path / "alone", config)
    assert [type(sink).__name__ for sink in alone] == ["CsvLogger", "TrackerLogger"]
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "run.json").write_text(json.dumps({"kind": "experiment"}))
    stage = grid / "LUS" / "mse" / "seed-0" / "encoder"
    assert [type(sink).__name__ for sink in loggers.open_loggers("mlflow", stage, config)] == ["CsvLogger"]
    assert not (stage / "mlruns").exists()


def _tracked_epochs(run_dir: Path, logger: str, column: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The (step, value) history of ``column`` in the run's tracker run, in logging order."""
    if logger == "mlflow":
        client, run = _only_run(run_dir, monkeypatch)
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, column)]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, make_ndarray(e.tensor_proto).item()) for e in events.Tensors(column)]


# 2 steps per epoch; each kill leaves the tracker and the checkpoint's history apart
RESUMED_AFTER = [
    # after epoch 2's checkpoint, before its row reached the sinks: the tracker lacks epoch 2
    pytest.param("mlflow", 3, 1, "checkpoint-saved:2", id="mlflow-saved-not-logged"),
    # mid-epoch 4 with checkpoints every 2 epochs: epoch 3 logged but not saved, so trained again
    pytest.param("mlflow", 4, 2, "step:7", id="mlflow-logged-not-saved"),
    pytest.param("tensorboard", 4, 2, "step:7", id="tensorboard-logged-not-saved"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("logger", "epochs", "every", "fault"), RESUMED_AFTER)
def test_a_resumed_pretraining_tracks_exactly_the_epochs_of_metrics_csv(
    logger: str,
    epochs: int,
    every: int,
    fault: str,
    make_tiny_pretrain_config: Callable[..., Config],
    cli: CliRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    """A kill between a checkpoint and the tracker (either way round), then ``--resume``: the tracker run
    holds every epoch of metrics.csv once, with its numbers, never one lost or logged twice."""
    pytest.importorskip(logger)
    run = tmp_path / "run"
    config = make_tiny_pretrain_config(
        **{"runtime.logger": logger, "optim.epochs": epochs, "runtime.checkpoint_every": every}
    )
    killed_pretraining(config, run, fault)
    code, _, err = cli(["pretrain", "--resume", str(run)])
    assert code == 0, err
    table = pd.read_csv(run / "metrics.csv")
    assert table["epoch"].tolist() == list(range(1, epochs + 1))
    for column in ("train_loss", "val_mae", "lr"):
        expected = list(zip(table["epoch"], table[column], strict=True))
        assert _tracked_epochs(run, logger, column, monkeypatch) == expected, column
    if logger == "mlflow":
        _, tracked = _only_run(run, monkeypatch)
        assert tracked.info.status == "FINISHED"
        assert tracked.data.metrics["last.val_mae"] == table["val_mae"].iloc[-1]


def _documented_ui_command() -> str:
    """The MLflow UI line of docs/training.md, as a user would paste it."""
    (line,) = [
        line for line in TRAINING_DOC.read_text(encoding="utf-8").splitlines() if " mlflow ui " in line
    ]
    return line.strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode("utf-8", "replace")


@pytest.mark.slow
def test_the_documented_mlflow_ui_serves_a_store_and_stops_by_pid(tmp_path: Path) -> None:
    mlflow_dir = Path(importlib.util.find_spec("mlflow").origin).parent  # type: ignore[union-attr, arg-type]
    if importlib.util.find_spec("flask") is None or not (mlflow_dir / "server/js/build/index.html").is_file():
        pytest.skip("the MLflow UI needs the full mlflow package: pip install 'learner[mlflow]'")
    MlflowTracker.open(tmp_path, ".", "run", "pretraining", {"loss.name": "mse"}, replace=True).close()

    command, port = _documented_ui_command(), _free_port()
    assert command.startswith("MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN_DIR/mlruns ")
    words = shlex.split(
        command.replace("RUN_DIR/mlruns", str(tmp_path / "mlruns")).replace("5000", str(port))
    )
    environment = dict(word.split("=", 1) for word in words[:1])
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    executable = shutil.which(words[1], path=path)
    assert executable is not None
    log = (tmp_path / "ui.log").open("w")
    server = subprocess.Popen(
        [executable, *words[2:]],
        env=os.environ | environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the PID stops the server and its workers
    )
    try:
        deadline, page = time.monotonic() + 120, None
        while page is None and time.monotonic() < deadline and server.poll() is None:
            try:
                page = _get(f"http://127.0.0.1:{port}/")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert page is not None, (tmp_path / "ui.log").read_text()
        status, body = page
        assert status == 200
        assert "<title>MLflow</title>" in body  # the UI itself, not the API-only server of mlflow-skinny
        status, listing = _get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10")
        assert status == 200
        assert "learner" in [e["name"] for e in json.loads(listing)["experiments"]]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
    with pytest.raises(urllib.error.URLError):
        _get(f"http://127.0.0.1:{port}/")
