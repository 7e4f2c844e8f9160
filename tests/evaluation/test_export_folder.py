"""``learner export --format folder`` and ``learner.api.load_model``: the folder predicts what ``learner
predict`` says on the runs it comes from, embeds as ``learner embed`` does, starts a pretraining as
``model.init``; its model card's numbers are the classification run's ``metrics.json``; it holds
safetensors and text only; a broken folder is refused in one line naming the file."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from learner import api
from learner.config import Config, DatasetSpec
from learner.data.manifest import load_manifest
from learner.data.scales import CLASS_NAMES, get_scale
from learner.data.splits import read_splits
from learner.errors import CheckpointError, ConfigError, LearnerError, RunDirError
from learner.evaluation.metrics import small_sample_warnings
from learner.models.registry import build_encoder
from learner.training.checkpoint import init_record
from learner.training.plan import check_init_split


class Runs:
    """A tiny pretraining run, its classification run, the manifest and the exported model folder."""

    def __init__(self, root: Path, manifest: Path) -> None:
        self.encoder, self.classification, self.manifest = root / "encoder", root / "classify", manifest
        self.folder = root / "model"

    def test_pairs(self, count: int) -> list[tuple[Path, Path]]:
        """The scan files of the first ``count`` test pairs of the classification run."""
        predictions = pd.read_csv(self.classification / "predictions.csv", dtype=str)
        paths = {r.scan_id: r.path for r in load_manifest(self.manifest, get_scale("sf")).records}
        rows = predictions.head(count)
        return [
            (paths[a], paths[b]) for a, b in zip(rows["first_scan_id"], rows["second_scan_id"], strict=True)
        ]


pytestmark = pytest.mark.slow  # every test reads the trained runs of one module fixture (~20 s)


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
    make_tiny_pretrain_config: Callable[..., Config],
    tiny_lus: DatasetSpec,
) -> Runs:
    """Pretrain (2 × 2 steps) and classify on the tiny LUS cohort, then export the folder through the CLI."""
    from learner.cli import run

    found = Runs(tmp_path_factory.mktemp("folder-runs"), tiny_lus.manifest)
    config = make_tiny_pretrain_config(
        **{"classifier.epochs": 15, "classifier.patience": 5, "classifier.bootstrap": 30}
    )
    api.pretrain(config, found.encoder)
    api.classify(found.encoder, found.classification, device="cpu")
    command = ["export", str(found.classification), "--out", str(found.folder), "--format", "folder"]
    assert run(command) == 0
    return found


def test_the_folder_predicts_what_learner_predict_says_on_the_runs(
    runs: Runs, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    model = api.load_model(runs.folder, device="cpu")
    assert model.meta.scan_kinds == ("video",)  # what a prediction of another kind is warned against
    for earlier, later in runs.test_pairs(3):
        expected = api.predict(runs.encoder, runs.classification, earlier, later, device="cpu")
        got = model.predict(earlier, later)
        assert got.label == expected.label
        np.testing.assert_allclose(
            [got.probabilities[n] for n in CLASS_NAMES],
            [expected.probabilities[n] for n in CLASS_NAMES],
            rtol=0,
            atol=1e-6,
        )
        assert got.scores == pytest.approx(expected.scores, rel=1e-6)
        assert got.encoder_fingerprint == expected.encoder_fingerprint
    earlier, later = runs.test_pairs(1)[0]
    command = ["predict", "--encoder", str(runs.encoder), "--classifier", str(runs.classification)]
    code, out, _ = cli([*command, "--json", "--device", "cpu", str(earlier), str(later)])
    assert code == 0
    printed = json.loads(out)
    assert printed["prediction"] == model.predict(earlier, later).label
    assert printed["probabilities"] == pytest.approx(model.predict(earlier, later).probabilities, abs=1e-6)
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame(runs.test_pairs(3), columns=["earlier", "later"]).astype(str).to_csv(pairs, index=False)
    pd.testing.assert_frame_equal(
        model.predict_pairs(pairs), api.predict_pairs(runs.encoder, runs.classification, pairs, device="cpu")
    )


def test_a_recorded_change_model_travels_with_the_folder(runs: Runs, tmp_path: Path) -> None:
    """A classification whose val patients had repeat visits records a change model; the folder keeps it
    and its predictions carry the same score-change answer as ``learner predict`` on the runs."""
    assert (
        api.load_model(runs.folder, device="cpu").calibration is None
    )  # tiny LUS: one visit per val patient
    classification = tmp_path / "classify"
    shutil.copytree(runs.classification, classification)
    metrics_file = classification / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    model = {"level_intercept": 5.0, "level_slope": 0.9, "level_sd": 40.0, "change_intercept": 2.0,
             "change_slope": 0.6, "change_sd": 30.0, "n_scans": 12, "n_pairs": 6}  # fmt: skip
    metrics["answers"]["delta_score_calibrated"] = metrics["answers"]["delta_score"] | {"calibration": model}
    metrics_file.write_text(json.dumps(metrics))
    api.export(classification, tmp_path / "model", encoder=runs.encoder, format="folder")
    loaded = api.load_model(tmp_path / "model", device="cpu")
    assert loaded.calibration is not None
    assert loaded.calibration.as_dict() == model
    earlier, later = runs.test_pairs(1)[0]
    expected = api.predict(runs.encoder, classification, earlier, later, device="cpu")
    got = loaded.predict(earlier, later)
    assert expected.score_change is not None
    assert got.score_change == pytest.approx(expected.score_change, abs=1e-6)
    assert got.score_change_label == expected.score_change_label


def test_the_folder_embeds_as_the_encoder_run(runs: Runs, tmp_path: Path) -> None:
    model = api.load_model(runs.folder, device="cpu")
    table = model.embed(runs.manifest, cache_dir=tmp_path / "cache")
    expected = api.embed(runs.encoder, runs.manifest, device="cpu")
    assert table.scan_ids == expected.scan_ids
    assert table.fingerprint == expected.fingerprint
    np.testing.assert_allclose(table.embeddings, expected.embeddings, rtol=0, atol=1e-6)
    np.testing.assert_allclose(table.scores, expected.scores, rtol=1e-6)


def _card_row(card: str, name: str) -> list[str]:
    row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+", cell)]


def test_the_model_card_numbers_are_the_classification_runs_metrics(runs: Runs) -> None:
    card = (runs.folder / "README.md").read_text(encoding="utf-8")
    metrics = json.loads((runs.classification / "metrics.json").read_text(encoding="utf-8"))
    test = metrics["test"]
    _, accuracy, macro_f1, weighted_f1, pairs, patients = _card_row(card, "classifier")
    assert _numbers(accuracy) == [round(100 * v, 2) for v in [test["accuracy"], *test["ci"]["accuracy"]]]
    assert _numbers(macro_f1) == [round(100 * v, 2) for v in [test["macro_f1"], *test["ci"]["macro_f1"]]]
    assert _numbers(weighted_f1) == [round(100 * test["weighted_f1"], 2)]
    assert (int(pairs), int(patients)) == (test["n"], test["n_patients"])
    assert metrics["data_source"] == "phantom"
    assert "**Data source: PHANTOM.**" in card
    for warning in small_sample_warnings(test, metrics["pair_counts"]["test"]):
        assert warning in card  # the report's caveats
    counts = Counter(read_splits(runs.encoder).values())
    listed = ", ".join(f"{split} {counts[split]}" for split in ("train", "val", "test"))
    assert f"patients per split (the encoder run's `splits.csv`): {listed}" in card
    for split, by_class in metrics["pair_counts"].items():
        assert _card_row(card, split)[1:] == [str(by_class[n]) for n in CLASS_NAMES] + [
            str(sum(by_class.values()))
        ]


def test_the_folder_holds_safetensors_and_text_and_loads_without_unpickling(
    runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {path.name for path in runs.folder.iterdir()}
    assert names == {"config.json", "meta.json", "model.safetensors", "preprocessing.json", "README.md",
                     "splits.csv"}  # fmt: skip
    with safe_open(str(runs.folder / "model.safetensors"), "pt") as weights:
        assert weights.metadata() == {"format": "learner.model_folder/1"}
        keys = set(weights.keys())
    assert {key.split(".")[0] for key in keys} == {
        "encoder",
        "head",
        "pair_classifier",
        "score_standardisation",
    }

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", refuse)
    model = api.load_model(runs.folder, device="cpu")
    earlier, later = runs.test_pairs(1)[0]
    assert model.predict(earlier, later).label in CLASS_NAMES


def test_the_folder_starts_a_pretraining_as_model_init(runs: Runs) -> None:
    model = api.load_model(runs.folder, device="cpu")
    config = model.config
    started = build_encoder(
        config.model.model_copy(update={"init": runs.folder}),
        model.meta.encoder.in_channels,
        img_size=config.data.size,
        frames=config.data.frames,
    )
    for key, value in model.model.encoder.state_dict().items():
        torch.testing.assert_close(started.state_dict()[key], value, rtol=0, atol=0)
    assert init_record(runs.folder)["weights"] == str((runs.folder / "model.safetensors").resolve())
    trained = next(p for p, split in read_splits(runs.encoder).items() if split == "train")
    with pytest.raises(ConfigError, match="test patients of this run's split"):
        check_init_split(runs.folder, {trained: "test"})  # the test split stays unseen through the folder


def test_other_formats_still_export(runs: Runs, tmp_path: Path) -> None:
    exported = api.export(runs.classification, tmp_path / "ts", format="torchscript")
    assert set(exported.files) == {
        "encoder.pt",
        "pair_classifier.pt",
        "preprocessing.json",
        "PREPROCESSING.md",
    }
    folder = api.export(runs.classification, tmp_path / "folder", format="folder")
    assert folder.files["config.json"].is_file()
    with pytest.raises(RunDirError, match="a run directory"):
        api.export(runs.classification, runs.encoder, format="folder")


def _one_line(error: pytest.ExceptionInfo[LearnerError], file: Path) -> str:
    message = str(error.value)
    assert "\n" not in message
    assert str(file) in message
    return message


def test_a_broken_folder_is_refused_in_one_line_naming_the_file(runs: Runs, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(runs.folder, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(RunDirError) as missing:
        api.load_model(folder, device="cpu")
    _one_line(missing, folder / "model.safetensors")
    with pytest.raises(RunDirError) as absent:
        api.load_model(tmp_path / "nowhere", device="cpu")
    _one_line(absent, tmp_path / "nowhere")

    shutil.copy(runs.folder / "model.safetensors", folder / "model.safetensors")
    (folder / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError) as malformed:
        api.load_model(folder, device="cpu")
    _one_line(malformed, folder / "config.json")

    shutil.copy(runs.folder / "config.json", folder / "config.json")
    damaged = bytearray((folder / "model.safetensors").read_bytes())
    damaged[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError) as changed:
        api.load_model(folder, device="cpu")
    assert "checksum mismatch" in _one_line(changed, folder / "model.safetensors")


def _runs_copy(runs: Runs, root: Path) -> tuple[Path, Path]:
    """Private copies of the encoder and classification runs (an export that wrongly wrote into an input
    must not spoil the module's runs)."""
    encoder, classification = root / "encoder", root / "classify"
    shutil.copytree(runs.encoder, encoder, ignore=shutil.ignore_patterns("embeddings"))
    shutil.copytree(runs.classification, classification)
    return encoder, classification


def test_a_folder_of_the_users_is_written_into_only_with_force(
    runs: Runs, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """Absent, empty or an earlier model folder: written; a folder holding other files: refused, touching
    nothing, unless --force, which replaces the files of the model folder's names only."""
    mine = tmp_path / "mine"
    mine.mkdir()
    users = {"README.md": "my readme", "config.json": '{"mine": 1}', "splits.csv": "mine", "notes.txt": "n"}
    for name, text in users.items():
        (mine / name).write_text(text)
    command = ["export", str(runs.classification), "--out", str(mine), "--format", "folder"]
    code, _, err = cli(command)
    assert code == 2
    assert err.strip() == (
        f"error: model folder: {mine} holds files; pass --force to write into it (files of the same name "
        "are replaced) or choose another model folder"
    )
    assert {path.name: path.read_text() for path in mine.iterdir()} == users
    code, _, err = cli([*command, "--force"])
    assert code == 0, err
    assert (mine / "notes.txt").read_text() == "n"
    assert api.load_model(mine, device="cpu").clips_per_scan == 1
    code, _, err = cli(command)  # now a model folder: an earlier export, replaced without --force
    assert code == 0, err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["export", str(runs.classification), "--out", str(empty), "--format", "folder"])[0] == 0


def test_graph_files_are_replaced_only_with_force(
    runs: Runs, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    out = tmp_path / "graphs"
    out.mkdir()
    (out / "encoder.pt").write_bytes(b"my graph")
    (out / "notes.txt").write_text("n")
    command = ["export", str(runs.classification), "--out", str(out), "--format", "torchscript"]
    code, _, err = cli(command)
    assert code == 2
    assert err.strip() == (
        f"error: --out: {out / 'encoder.pt'} exists; pass --force to overwrite it or choose another --out"
    )
    assert sorted(path.name for path in out.iterdir()) == ["encoder.pt", "notes.txt"]  # checked first
    assert (out / "encoder.pt").read_bytes() == b"my graph"
    code, _, err = cli([*command, "--force"])
    assert code == 0, err
    assert (out / "encoder.pt").read_bytes() != b"my graph"
    assert (out / "notes.txt").read_text() == "n"


def test_an_export_into_an_input_is_refused_even_with_force(
    runs: Runs, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    encoder, classification = _runs_copy(runs, tmp_path)
    kept = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    base = ["export", str(classification), "--encoder", str(encoder), "--force", "--out"]
    checkpoint = encoder / "checkpoints" / "best"
    code, _, err = cli([*base, str(checkpoint), "--format", "folder"])
    assert code == 2
    assert err.startswith(f"error: model folder: {checkpoint} is the encoder checkpoint, an input of this")
    inside = classification / "classifier" / "graphs"
    code, _, err = cli([*base, str(inside), "--format", "torchscript"])
    assert code == 2
    assert err.startswith(f"error: --out: {inside / 'encoder.pt'} lies inside the classifier (")
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == kept


def test_the_recorded_encoder_is_found_from_any_working_directory(
    runs: Runs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    """`learner classify encoder --out classify` typed in the runs' folder records encoder_run "encoder";
    export (as the report) resolves the run's encoder_run_relative against the run folder, wherever it is
    started."""
    _, classification = _runs_copy(runs, tmp_path / "moved")
    metrics_file = classification / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    assert metrics["encoder_run_relative"] == "../encoder"
    metrics_file.write_text(json.dumps(metrics | {"encoder_run": "encoder"}))  # as typed in tmp/moved
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["export", str(classification), "--out", "graphs", "--format", "torchscript"])
    assert code == 0, err
    assert (tmp_path / "graphs" / "encoder.pt").is_file()


@pytest.fixture(scope="module")
def two_clips(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification run on the module's encoder with classifier.clips_per_scan = 2."""
    out = tmp_path_factory.mktemp("two-clips") / "classify"
    api.classify(runs.encoder, out, overrides={"classifier.clips_per_scan": 2}, device="cpu")
    return out


def test_the_classifier_folder_predicts_with_its_runs_clips_per_scan(
    runs: Runs, two_clips: Path, tmp_path: Path
) -> None:
    """classifier.json does not record K: the classifier/ folder takes it from the run around it, so both
    answer alike, and so does the model folder exported from the classifier/ folder."""
    known = pd.read_csv(two_clips / "predictions.csv", dtype={"first_scan_id": str, "second_scan_id": str})
    known = known.iloc[0]  # a test pair as the classify stage answered it
    paths = {r.scan_id: r.path for r in load_manifest(runs.manifest, get_scale("sf")).records}
    earlier, later = paths[known["first_scan_id"]], paths[known["second_scan_id"]]
    by_run = api.predict(runs.encoder, two_clips, earlier, later, device="cpu")
    by_folder = api.predict(runs.encoder, two_clips / "classifier", earlier, later, device="cpu")
    assert by_folder.probabilities == pytest.approx(by_run.probabilities, abs=1e-6)
    assert by_folder.scores == pytest.approx(by_run.scores, rel=1e-6)
    assert [by_folder.probabilities[n] for n in CLASS_NAMES] == pytest.approx(
        [known[f"p_{n}"] for n in CLASS_NAMES], abs=1e-4
    )
    folder = api.export(two_clips / "classifier", tmp_path / "model", encoder=runs.encoder, format="folder")
    record = json.loads((folder.path / "config.json").read_text())
    assert record["clips_per_scan"] == record["config"]["classifier"]["clips_per_scan"] == 2
    assert json.loads((folder.path / "preprocessing.json").read_text())["frames"]["clips_per_scan"] == 2
    assert "mean embedding of 2 clip(s) per scan" in (folder.path / "README.md").read_text()
    assert api.load_model(folder.path, device="cpu").predict(earlier, later).probabilities == pytest.approx(
        by_run.probabilities, abs=1e-6
    )


@pytest.mark.parametrize(("key", "value"), [("kind", "zzz"), ("hidden", [-1])])
def test_a_classifier_no_head_can_have_is_a_config_error_naming_the_file(
    runs: Runs, tmp_path: Path, key: str, value: object
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(runs.folder, folder)
    record = json.loads((folder / "config.json").read_text())
    record["classifier"][key] = value
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError) as error:
        api.load_model(folder, device="cpu")
    assert "classifier" in _one_line(error, folder / "config.json")
