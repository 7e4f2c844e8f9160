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
