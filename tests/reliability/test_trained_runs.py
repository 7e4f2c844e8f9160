"""Bad inputs that need a trained encoder and classifier (``learner predict``), damaged checkpoints, the
cache report after corruption, ``--skip-bad`` with a decompression bomb, and a full disk while a checkpoint
is written."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import assert_refused, cache, good_rows, png_with_rows, still, write_manifest
from PIL import Image

Cli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, make_tiny_pretrain_config: Callable[..., Any]) -> Path:
    """A tiny encoder run (``encoder/``) and its classifier (``classifier/``) on the tiny LUS cohort."""
    from learner.config import apply_overrides
    from learner.data.manifest import load_manifest
    from learner.data.scales import scale_from_config
    from learner.experiments.classify import run_classification
    from learner.training.pretrain import pretrain

    root = tmp_path_factory.mktemp("trained")
    config = make_tiny_pretrain_config(**{"optim.epochs": 1})
    pretrain(config, root / "encoder")
    config = apply_overrides(config, {"classifier.epochs": 3, "classifier.bootstrap": 0})
    manifest = load_manifest(config.data.manifest, scale_from_config(config.data))
    run_classification(root / "encoder", manifest, config, root / "classifier")
    return root


def _predict(trained: Path, earlier: Path, later: Path) -> list[str]:
    return ["predict", str(earlier), str(later), "--encoder", str(trained / "encoder"),
            "--classifier", str(trained / "classifier")]  # fmt: skip


def _bomb(path: Path) -> Path:
    Image.new("1", (20000, 20000)).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "write", "culprit"),
    [
        ("bomb.png", _bomb, "DecompressionBombError"),
        ("pipe.mp4", lambda path: os.mkfifo(path), "named pipe"),
        ("short.png", lambda path: png_with_rows(path, rows_written=8), "truncated"),
    ],
)
def test_predict_refuses_a_bad_scan_in_one_line(
    trained: Path, tmp_path: Path, cli: Cli, name: str, write: Callable[[Path], Any], culprit: str
) -> None:
    write(tmp_path / name)
    good = still(tmp_path / "good.png", size=32)
    code, out, err = cli(_predict(trained, tmp_path / name, good))
    assert name in assert_refused(code, out, err, culprit)


def _damage(run: Path) -> dict[str, Callable[[], str]]:
    """Ways to break the encoder's best checkpoint; each returns what the error must name."""
    best = run / "checkpoints" / "best"

    def missing() -> str:
        shutil.rmtree(best)
        return "checkpoints/best"

    def no_weights() -> str:
        (best / "model.safetensors").unlink()
        return "model.safetensors"

    def bad_json() -> str:
        (best / "meta.json").write_text("{not json")
        return "meta.json"

    def other_version() -> str:
        text = (best / "meta.json").read_text().replace('"schema_version": 1', '"schema_version": 99')
        (best / "meta.json").write_text(text)
        return "schema_version"

    def classifier_json() -> str:
        (run.parent / "classifier" / "classifier" / "classifier.json").write_bytes(b"\x00\xff garbage")
        return "classifier.json"

    def classifier_weights() -> str:
        (run.parent / "classifier" / "classifier" / "classifier.safetensors").write_bytes(b"garbage")
        return "classifier.safetensors"

    return {"missing": missing, "no weights": no_weights, "bad json": bad_json,
            "other version": other_version, "classifier json": classifier_json,
            "classifier weights": classifier_weights}  # fmt: skip


DAMAGES = ["missing", "no weights", "bad json", "other version", "classifier json", "classifier weights"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_predict_names_a_damaged_checkpoint(
    trained: Path, tmp_path: Path, cli: Cli, listing: Callable[[Path], list[str]], damage: str
) -> None:
    shutil.copytree(trained, tmp_path / "runs")
    culprit = _damage(tmp_path / "runs" / "encoder")[damage]()
    scans = [still(tmp_path / f"s{i}.png", seed=i, size=32) for i in range(2)]
    before = listing(tmp_path)
    code, out, err = cli(_predict(tmp_path / "runs", *scans))
    assert_refused(code, out, err, culprit)
    assert listing(tmp_path) == before


def test_skip_bad_skips_a_decompression_bomb_by_name(tmp_path: Path, cli: Cli) -> None:
    rows = good_rows(tmp_path)
    rows[0][2] = _bomb(tmp_path / "bomb.png").name
    code, out, err = cli(cache(write_manifest(tmp_path / "m.csv", rows), "--skip-bad"))
    assert "Traceback" not in err
    assert code == 0
    assert "cache: 7 built, 0 reused, 1 skipped, 0 rebuilt (corrupt)" in out
    assert f"skipped {rows[0][1]}: " in out
    assert "bomb.png" in out


def test_data_cache_rebuilds_and_reports_corrupt_entries(tmp_path: Path, cli: Cli) -> None:
    argv = cache(write_manifest(tmp_path / "m.csv", good_rows(tmp_path)))
    assert cli(argv)[0] == 0
    entries = sorted((tmp_path / ".learner-cache").iterdir())
    entries[0].write_bytes(b"")  # the zero-byte entry that used to end in a bare "Aborted."
    entries[1].write_bytes(entries[1].read_bytes()[:-3])
    code, out, err = cli(argv)
    assert (code, "Aborted" in out + err) == (0, False)
    assert "cache: 0 built, 6 reused, 0 skipped, 2 rebuilt (corrupt)" in out
    assert "cache: 0 built, 8 reused, 0 skipped, 0 rebuilt (corrupt)" in cli(argv)[1]


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A child-process set-up: writes past ``limit`` bytes fail with EFBIG, as writes to a full disk fail."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited by the exec'd interpreter
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.mark.slow
def test_a_full_disk_while_writing_is_one_line_naming_the_file_and_keeps_the_old_one(
    tmp_path: Path, listing: Callable[[Path], list[str]]
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", good_rows(tmp_path, patients=40))
    out = tmp_path / "split.csv"
    out.write_text("the previous split\n")
    before = listing(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "learner", "data", "split", str(manifest), "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, preexec_fn=_file_size_limit(1024),
    )  # fmt: skip
    line = assert_refused(done.returncode, done.stdout, done.stderr, f"{out}: cannot write: File too large")
    assert out.read_text() == "the previous split\n", line
    assert listing(tmp_path) == before  # no temporary file left beside it


# ---- issue 21, round 3: OS errors of predict --out, a full disk at a checkpoint, a killed --force ----
def _pairs_csv(folder: Path) -> Path:
    for name, seed in (("a.png", 0), ("b.png", 1)):
        still(folder / name, seed=seed, size=32)
    (folder / "pairs.csv").write_text("earlier,later\na.png,b.png\n")
    return folder / "pairs.csv"


@pytest.mark.parametrize(
    ("out", "culprit"),
    [(".", "--out: . is a folder"), ("x" * 300 + ".csv", "File name too long"), ("locked/p.csv", "locked")],
    ids=["the current folder (EBUSY once)", "a 300-character name", "a folder no one may enter"],
)
def test_predict_refuses_an_unwritable_out_in_one_line_before_any_work(
    trained: Path,
    tmp_path: Path,
    cli: Cli,
    listing: Callable[[Path], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    out: str,
    culprit: str,
) -> None:
    from permissions import as_a_user

    monkeypatch.chdir(tmp_path)
    pairs = _pairs_csv(tmp_path)
    (tmp_path / "locked").mkdir(mode=0)
    before = listing(tmp_path)
    argv = ["predict", "--pairs", str(pairs), "--encoder", str(trained / "encoder"),
            "--classifier", str(trained / "classifier"), "--out", out]  # fmt: skip
    with as_a_user():
        code, stdout, err = cli(argv)
    assert_refused(code, stdout, err, culprit)
    assert listing(tmp_path) == before


TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 3871808 vs 3871696"
"""What torch.save raises when the disk fills under it (torch 2.x), and all it says."""


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk is full: torch.save into a file fails as torch reports it, and so does any other write of
    a checkpoint's files (the bytes written again through Python: ENOSPC)."""
    import torch

    from learner.training import checkpoint

    save = torch.save

    def torch_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, str | os.PathLike):
            raise RuntimeError(TORCH_FULL_DISK)
        save(obj, f, *args, **kwargs)

    def write_file(path: Path, data: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(checkpoint, "_write_file", write_file, raising=False)


@pytest.mark.slow
@pytest.mark.usefixtures("full_disk")
def test_a_full_disk_during_a_resume_is_one_line_that_says_so_and_keeps_the_checkpoint(
    trained: Path, tmp_path: Path, cli: Cli
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained / "encoder", run)
    last = (run / "checkpoints" / "last" / "meta.json").read_text()
    code, out, err = cli(["pretrain", "--resume", str(run), "--set", "optim.epochs=2"])
    line = assert_refused(
        code, out, err, "checkpoints/last: no space left on device while writing train_state.pt"
    )
    assert "inline_container" not in line
    assert line.endswith("; the previous checkpoint is kept")
    assert (run / "checkpoints" / "last" / "meta.json").read_text() == last
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.usefixtures("full_disk")
def test_a_full_disk_at_the_first_checkpoint_claims_no_previous_one(
    tmp_path: Path, cli: Cli, make_tiny_pretrain_config: Callable[..., Any]
) -> None:
    (tmp_path / "c.yaml").write_text(make_tiny_pretrain_config(**{"optim.epochs": 1}).to_yaml())
    code, out, err = cli(["pretrain", "--out", str(tmp_path / "run"), "--config", str(tmp_path / "c.yaml")])
    line = assert_refused(code, out, err, "no space left on device while writing train_state.pt")
    assert "previous" not in line  # there was none
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # the run never started: removed


def _siblings(folder: Path, name: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{name}."))


@pytest.mark.slow
def test_a_force_killed_before_its_new_run_started_keeps_the_previous_run_names_it_then_puts_it_back(
    trained: Path,
    tmp_path: Path,
    cli: Cli,
    make_tiny_pretrain_config: Callable[..., Any],
    request: pytest.FixtureRequest,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained / "encoder", run)
    previous = (run / "metrics.json").read_text()
    (tmp_path / "c.yaml").write_text(make_tiny_pretrain_config(**{"optim.epochs": 1, "seed": 3}).to_yaml())
    argv = ["pretrain", "--out", str(run), "--config", str(tmp_path / "c.yaml")]
    killed = subprocess.run(
        [sys.executable, "-m", "learner", *argv, "--force"], capture_output=True, text=True, timeout=300,
        check=False, env=os.environ | {"LEARNER_FAULT": "step:1", "OMP_NUM_THREADS": "1",
                                       "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]  # kill -9 after the first step
    (aside,) = _siblings(tmp_path, "run")  # the previous run, whole, in the hidden sibling
    assert (aside / "metrics.json").read_text() == previous
    assert not (run / "checkpoints").exists()  # the killed run had not started

    code, out, err = cli(argv)  # the next start names it in one line, and deletes nothing
    assert_refused(code, out, err, "not empty")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ") and str(aside) in line]
    assert len(warnings) == 1, err
    assert _siblings(tmp_path, "run") == [aside]

    request.getfixturevalue("full_disk")  # a --force that fails before its run starts keeps the previous one
    code, out, err = cli([*argv, "--force"])
    assert_refused(code, out, err, "no space left on device")
    assert f"put back the previous run from {aside}" in err
    assert (run / "metrics.json").read_text() == previous
    assert _siblings(tmp_path, "run") == []


@pytest.mark.slow
@pytest.mark.usefixtures("full_disk")
def test_a_force_of_the_current_folder_sets_the_previous_run_beside_it_and_puts_it_back(
    trained: Path,
    tmp_path: Path,
    cli: Cli,
    make_tiny_pretrain_config: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    listing: Callable[[Path], list[str]],
) -> None:
    """``--out . --force`` in a run folder: the hidden sibling goes beside it, not into it (once EINVAL,
    with the previous run's files split between the folder and a sibling inside it)."""
    run = tmp_path / "run"
    shutil.copytree(trained / "encoder", run)
    (tmp_path / "c.yaml").write_text(make_tiny_pretrain_config(**{"optim.epochs": 1}).to_yaml())
    before = listing(tmp_path)
    monkeypatch.chdir(run)
    code, out, err = cli(["pretrain", "--out", ".", "--force", "--config", str(tmp_path / "c.yaml")])
    assert_refused(code, out, err, "no space left on device")  # the new run fails before it starts
    assert listing(tmp_path) == before  # the previous run is back, whole, and nothing is left beside it


# ---- issue 21, audit: --resume after config.yaml was edited (once trained on under the new settings) ----
def _edit_config(run: Path, section: str, key: str, change: Callable[[Any], Any]) -> None:
    import yaml

    path = run / "config.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw[section][key] = change(raw[section][key])
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def test_a_resume_after_config_yaml_was_edited_is_refused_and_touches_nothing(
    trained: Path, tmp_path: Path, cli: Cli, listing: Callable[[Path], list[str]]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained / "encoder", run)
    _edit_config(run, "data", "size", lambda size: size + 16)  # e.g. data.size 32 → 48
    before = listing(tmp_path)
    code, out, err = cli(["pretrain", "--resume", str(run), "--set", "optim.epochs=2"])
    line = assert_refused(code, out, err, "differs from the config its last checkpoint was trained with")
    assert "(data.size " in line
    assert listing(tmp_path) == before  # no resume-N.json either


def test_a_resume_may_find_more_epochs_in_config_yaml_only_by_a_recorded_extension(
    trained: Path, tmp_path: Path
) -> None:
    """An extension writes ``config.yaml`` (and ``run.json["extensions"]``) before its first checkpoint: a
    kill in between leaves more epochs there than in the checkpoint, which a resume accepts; the same
    edit by hand is refused."""
    import json

    from learner.errors import RunDirError
    from learner.runs import check_run_dir

    run = tmp_path / "run"
    shutil.copytree(trained / "encoder", run)
    _edit_config(run, "optim", "epochs", lambda epochs: epochs + 2)
    with pytest.raises(RunDirError, match=r"\(optim\.epochs 1 → 3\)"):
        check_run_dir(run, resume=True, kind="pretraining")
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["extensions"] = [{"from_epochs": 1, "to_epochs": 3, "at_step": 4}]
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    check_run_dir(run, resume=True, kind="pretraining")
