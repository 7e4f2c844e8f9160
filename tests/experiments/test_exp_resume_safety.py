"""What a grid's ``--resume`` may reuse (issue 25): never a stage computed on another content of its manifest,
never an interrupted stage extended to other settings, never a grid of another experiment, never a damaged
stage record (refused in one line before any work); and however its paths are spelled, or wherever the grid
moved, the same grid resumes. Pretraining is the counting stand-in of conftest (``fake_pretrain``)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig, apply_overrides
from learner.errors import RunDirError
from learner.experiments import stages, sweep, table3
from learner.layout import RunLayout
from learner.runs import check_run_dir, open_run_dir

pytestmark = pytest.mark.slow  # grids through the engine, ~45 s together: the full suite, not the fast lane

CELL = Path("LUS") / "mse" / "seed-0"


def _manifest_copy(tiny_lus: DatasetSpec, target: Path) -> Path:
    """The tiny LUS manifest as a new file ``target``, its scan paths made absolute (so it reads anywhere)."""
    frame = pd.read_csv(tiny_lus.manifest, dtype=str)
    frame["path"] = [str(Path(tiny_lus.manifest).parent / path) for path in frame["path"]]
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(target, index=False)
    return target


def _shuffle_scores(manifest: Path) -> None:
    """Change the manifest's content at the same path: the same scans, their scores reversed."""
    frame = pd.read_csv(manifest, dtype=str)
    frame["score"] = list(reversed(frame["score"].tolist()))
    frame.to_csv(manifest, index=False)


def _table3(
    config: Config, manifest: str | Path, out: str | Path, *, resume: bool = False, **grid: Any
) -> Any:
    """Table 3 on one dataset column (``manifest``), MSE, seed 0."""
    axes = ExperimentConfig(
        datasets=[DatasetSpec(name="LUS", manifest=Path(manifest), scale="sf")],
        losses=["mse"],
        seeds=[0],
        **grid,
    )
    return table3.run_table3(Experiment(config, axes), out, resume=resume)


@pytest.mark.parametrize("init", [None, "vicreg"])
def test_a_manifest_whose_content_changed_is_refused_on_resume(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    init: str | None,
) -> None:
    manifest = _manifest_copy(tiny_lus, tmp_path / "m.csv")
    out = tmp_path / "t3"
    _table3(tiny_experiment_config, manifest, out, init=init)
    record = json.loads(RunLayout(out).encoder(CELL).complete.read_text())
    assert record["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    original = manifest.read_bytes()
    _shuffle_scores(manifest)

    with pytest.raises(RunDirError, match=rf"was computed on another content of {manifest}") as refused:
        _table3(tiny_experiment_config, manifest, out, resume=True, init=init)
    first_stage = "init-vicreg" if init else "mse"  # the init stage is checked first
    assert f"{out / 'LUS' / first_stage}" in str(refused.value)
    assert not list(out.glob("resume-*.json"))  # refused while planning
    manifest.unlink()
    manifest.write_bytes(original)  # the same content put back (a new file, a new mtime): resumable
    calls = len(fake_pretrain.calls)
    _table3(tiny_experiment_config, manifest, out, resume=True, init=init)
    assert len(fake_pretrain.calls) == calls


def test_an_interrupted_stage_on_a_changed_manifest_is_refused(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_lus: DatasetSpec
) -> None:
    manifest = _manifest_copy(tiny_lus, tmp_path / "m.csv")
    out = tmp_path / "t3"
    _table3(tiny_experiment_config, manifest, out)
    encoder = RunLayout(out).encoder(CELL)
    encoder.complete.unlink()  # killed during its pretraining: no record, no classification yet
    shutil.rmtree(out / CELL / "classifier")
    _shuffle_scores(manifest)
    with pytest.raises(RunDirError, match=r"this interrupted stage started on another content of .*m\.csv"):
        _table3(tiny_experiment_config, manifest, out, resume=True)
    assert fake_pretrain.calls[-1]["resume"] is False  # nothing was continued


def test_an_interrupted_grid_stage_is_never_extended(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_lus: DatasetSpec
) -> None:
    """``learner pretrain --resume`` may extend a run; a grid's stage may not: its record would say it was
    computed with the config of a fresh run of those epochs, which it was not."""
    out = tmp_path / "t3"
    _table3(tiny_experiment_config, tiny_lus.manifest, out)
    RunLayout(out).encoder(CELL).complete.unlink()
    shutil.rmtree(out / CELL / "classifier")
    more = apply_overrides(tiny_experiment_config, {"optim.epochs": 2})
    with pytest.raises(RunDirError) as refused:
        _table3(more, tiny_lus.manifest, out, resume=True)
    assert str(refused.value).startswith(
        f"{out / CELL / 'encoder'}: this interrupted stage started with another config (optim.epochs 1 → 2)"
    )
    assert len(fake_pretrain.calls) == 1
    with pytest.raises(RunDirError, match=r"optim\.epochs 1 → 2"):  # nor by a caller of the stage itself
        stages.ensure_encoder(
            stages.cell_config(more, tiny_lus, **{"loss.name": "mse"}), out / CELL / "encoder"
        )
    _table3(tiny_experiment_config, tiny_lus.manifest, out, resume=True)  # the settings it started with
    assert fake_pretrain.calls[-1]["resume"] is True


def test_a_grid_resumes_however_its_paths_are_spelled(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
) -> None:
    """``--out gv`` then ``--out /abs/gv``, the manifest relative then absolute: the same grid, and its init
    stage is found again (its folder is named by the settings with absolute paths)."""
    monkeypatch.chdir(tmp_path)
    _manifest_copy(tiny_lus, tmp_path / "data" / "m.csv")
    _table3(tiny_experiment_config, "data/m.csv", "gv", init="vicreg")
    calls = len(fake_pretrain.calls)
    _table3(tiny_experiment_config, tmp_path / "data" / "m.csv", tmp_path / "gv", resume=True, init="vicreg")
    monkeypatch.chdir(tmp_path / "data")
    _table3(tiny_experiment_config, "m.csv", "../gv", resume=True, init="vicreg")
    assert len(fake_pretrain.calls) == calls  # every stage reused
    assert len(list((tmp_path / "gv" / "LUS" / "init-vicreg").iterdir())) == 1


def test_a_grid_moved_with_or_without_its_data_resumes(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_lus: DatasetSpec
) -> None:
    project = tmp_path / "project"
    _manifest_copy(tiny_lus, project / "data" / "m.csv")
    _table3(tiny_experiment_config, project / "data" / "m.csv", project / "runs" / "t3")
    calls = len(fake_pretrain.calls)
    shutil.copytree(project, tmp_path / "moved")  # the grid with its data
    moved = tmp_path / "moved"
    _table3(tiny_experiment_config, moved / "data" / "m.csv", moved / "runs" / "t3", resume=True)
    shutil.copytree(project / "runs" / "t3", tmp_path / "alone")  # the grid alone, its data where it was
    _table3(tiny_experiment_config, project / "data" / "m.csv", tmp_path / "alone", resume=True)
    assert len(fake_pretrain.calls) == calls
    elsewhere = _manifest_copy(tiny_lus, tmp_path / "other" / "m.csv")  # the same bytes, another file
    with pytest.raises(RunDirError, match=r"computed with another config \(data\.manifest: "):
        _table3(tiny_experiment_config, elsewhere, tmp_path / "alone", resume=True)


def test_an_init_stage_named_otherwise_is_found_by_its_stored_config(
    tmp_path: Path, tiny_experiment_config: Config, tiny_lus: DatasetSpec
) -> None:
    """An init stage that an earlier version named by its paths as typed (or that moved) is the stage of the
    planned config when its stored config (paths resolved as a run folder's are) is that config."""
    from learner.experiments.stage_records import stage_where

    config = stages.cell_config(tiny_experiment_config, tiny_lus, **{"loss.name": "vicreg"})
    folder = tmp_path / "LUS" / "init-vicreg" / "seed-0-0123abcd"
    open_run_dir(RunLayout(folder).encoder().root, config)
    planned = Path("LUS") / "init-vicreg" / "seed-0-fedcba98"
    assert stage_where(tmp_path, planned, config) == Path("LUS") / "init-vicreg" / "seed-0-0123abcd"
    other = apply_overrides(config, {"optim.epochs": 5})
    assert stage_where(tmp_path, planned, other) == planned


def test_stage_records_of_an_earlier_version_still_resume(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A record without paths and manifest digest (the previous version's) matches on its digest of the
    paths as given; its manifest cannot be checked, which a warning says."""
    manifest = _manifest_copy(tiny_lus, tmp_path / "m.csv")
    out = tmp_path / "t3"
    _table3(tiny_experiment_config, manifest, out)
    spec = DatasetSpec(name="LUS", manifest=manifest)
    settings = stages.cell_config(
        tiny_experiment_config, spec, **{"loss.name": "mse", "seed": 0}
    ).result_settings()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    for path in out.rglob("complete.json"):
        record = json.loads(path.read_text())
        legacy = {key: value for key, value in record.items() if key not in ("paths", "manifest_sha256")}
        path.write_text(json.dumps(legacy | {"config_digest": digest}))
    run_json = RunLayout(out).record
    run_json.write_text(json.dumps({k: v for k, v in json.loads(run_json.read_text()).items()
                                    if k not in ("grid", "manifests")}))  # fmt: skip
    calls = len(fake_pretrain.calls)
    with caplog.at_level(logging.WARNING):
        _table3(tiny_experiment_config, manifest, out, resume=True)
    assert len(fake_pretrain.calls) == calls
    assert f"{manifest}: cannot check that its content is the one finished stages" in caplog.text
    assert json.loads(run_json.read_text())["grid"] == "table3"  # learnt from its results.json


def test_another_experiment_cannot_resume_a_grid(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "t3"
    _table3(tiny_experiment_config, tiny_lus.manifest, out)
    before = sorted(p.name for p in out.iterdir())
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0], settings={"base": {}})
    for _ in ("told by run.json", "told by results.json (a grid of an earlier version)"):
        with pytest.raises(RunDirError) as refused:
            sweep.run_sweep(Experiment(tiny_experiment_config, grid), out, resume=True)
        assert (
            str(refused.value)
            == f"{out} holds a table3 experiment; --resume here continues only a sweep experiment"
        )
        assert sorted(p.name for p in out.iterdir()) == before
        record = json.loads(RunLayout(out).record.read_text())
        RunLayout(out).record.write_text(json.dumps({k: v for k, v in record.items() if k != "grid"}))
    RunLayout(out).results.unlink()  # interrupted before its results: nothing tells, resumed (logged)
    with caplog.at_level(logging.INFO):
        check_run_dir(out, resume=True, kind="experiment", grid="sweep")
    assert "does not record which experiment it holds" in caplog.text


@pytest.mark.parametrize(
    ("stage", "damage"),
    [
        ("encoder", lambda record: []),
        ("classifier", lambda record: {k: v for k, v in record.items() if k != "metrics"}),
        ("classifier", lambda record: record | {"metrics": {}}),
        ("encoder", lambda record: "{"),
    ],
)
def test_a_damaged_stage_record_is_refused_before_any_work(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    stage: str,
    damage: Any,
    cli: Any,
) -> None:
    out = tmp_path / "t3"
    _table3(tiny_experiment_config, tiny_lus.manifest, out)
    path = out / CELL / stage / "complete.json"
    damaged = damage(json.loads(path.read_text()))
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    config_file = tmp_path / "experiment.yaml"
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0])
    config_file.write_text(Experiment(tiny_experiment_config, grid).to_yaml())
    run_json = RunLayout(out).record.read_text()
    code, _, err = cli(["experiment", "table3", "--out", str(out), "--config", str(config_file), "--resume"])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {path}: not a stage record of this version (")
    assert not list(out.glob("resume-*.json"))  # refused while planning
    assert RunLayout(out).record.read_text() == run_json
