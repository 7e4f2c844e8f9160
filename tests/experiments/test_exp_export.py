"""``learner export``: onnxruntime and TorchScript give PyTorch's numbers (1e-4) on a real scan and on the
test pairs of the classify stage; the preprocessing record matches the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from learner.config import DatasetSpec
from learner.data.datasets import clips_from_frames
from learner.data.manifest import load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.scales import CLASS_NAMES, get_scale
from learner.evaluation.embed import EmbeddingTable
from learner.experiments.results import ExperimentResult

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def exported(tiny_table3: ExperimentResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the grid cell, the export folder) of the LUS MSE+wCL cell, exported through the CLI."""
    from learner.cli import run

    cell = tiny_table3.out_dir / "LUS" / "mse+wcl" / "seed-0"
    out = tmp_path_factory.mktemp("export")
    assert (
        run(["export", str(cell / "classifier"), "--encoder", str(cell / "encoder"), "--out", str(out)]) == 0
    )
    return cell, out


def test_encoder_onnx_and_torchscript_equal_pytorch_on_a_real_scan(
    exported: tuple[Path, Path], tiny_datasets: list[DatasetSpec]
) -> None:
    cell, out = exported
    record = json.loads((out / "preprocessing.json").read_text())
    table = EmbeddingTable.load(next((cell / "encoder" / "embeddings").glob("*.npz")))
    manifest = load_manifest(tiny_datasets[0].manifest, get_scale("sf"))
    scans = manifest.records[:3]
    # the documented preprocessing, by hand from the record: size, crop, T centre frames, pixel / 255
    pre = Preprocessor(
        size=record["pixels"]["size"],
        channels=1,
        crop=record["pixels"]["crop"],
        max_cached_frames=record["frames"]["max_cached_frames"],
    )
    frames, channels = record["frames"]["count"], record["pixels"]["channels"]
    clips = torch.cat([clips_from_frames(pre.load(r.path), frames, 1, channels) for r in scans]).numpy()
    assert list(clips.shape[1:]) == record["input"]["shape"][1:]
    rows = [table.scan_ids.index(r.scan_id) for r in scans]
    session = ort.InferenceSession(str(out / "encoder.onnx"))
    embedding, score = session.run(None, {"clips": clips})
    np.testing.assert_allclose(embedding, table.embeddings[rows], atol=1e-4)  # the classify stage's own
    np.testing.assert_allclose(score, table.scores[rows], atol=1e-4 * max(1.0, np.abs(table.scores).max()))
    scripted = torch.jit.load(str(out / "encoder.pt"))
    with torch.no_grad():
        ts_embedding, _ = scripted(torch.from_numpy(clips))
    np.testing.assert_allclose(ts_embedding.numpy(), embedding, atol=1e-4)


def test_pair_classifier_onnx_gives_the_classify_stage_probabilities(exported: tuple[Path, Path]) -> None:
    cell, out = exported
    table = EmbeddingTable.load(next((cell / "encoder" / "embeddings").glob("*.npz")))
    predictions = pd.read_csv(
        cell / "classifier" / "predictions.csv", dtype={"first_scan_id": str, "second_scan_id": str}
    )
    index = {scan_id: k for k, scan_id in enumerate(table.scan_ids)}
    earlier = table.embeddings[[index[s] for s in predictions["first_scan_id"]]]
    later = table.embeddings[[index[s] for s in predictions["second_scan_id"]]]
    session = ort.InferenceSession(str(out / "pair_classifier.onnx"))
    (probabilities,) = session.run(None, {"earlier": earlier, "later": later})
    expected = predictions[[f"p_{name}" for name in CLASS_NAMES]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    scripted = torch.jit.load(str(out / "pair_classifier.pt"))
    with torch.no_grad():
        ts = scripted(torch.from_numpy(earlier), torch.from_numpy(later)).numpy()
    np.testing.assert_allclose(ts, expected, atol=1e-4)


def test_preprocessing_record_describes_the_run(exported: tuple[Path, Path]) -> None:
    cell, out = exported
    record = json.loads((out / "preprocessing.json").read_text())
    meta = json.loads((cell / "encoder" / "checkpoints" / "best" / "meta.json").read_text())
    config = meta["config"]["data"]
    assert record["frames"]["count"] == config["frames"]
    assert record["pixels"]["size"] == config["size"]
    assert record["pixels"]["crop"] == config["crop"]
    assert record["score_scale"]["name"] == "sf"
    assert record["outputs"]["probabilities"]["classes"] == list(CLASS_NAMES)
    assert record["score_standardisation"]["mean"] == pytest.approx(meta["score_standardisation"]["mean"])
    assert "TSN centre frames" in (out / "PREPROCESSING.md").read_text()


@pytest.mark.parametrize(
    ("backbone", "named", "not_first"),
    [
        (
            "resnet18_3d",
            "3-D bounding box (slices, rows, columns) of the voxels above 0.1 × the 99th",
            "vary",
        ),
        ("tsm_resnet18", "pixels that vary over time (temporal std > 3) and are brighter than 12", "3-D"),
    ],
)
def test_preprocessing_record_names_the_crop_the_encoders_inputs_take(
    backbone: str, named: str, not_first: str
) -> None:
    """A 3-D encoder's volumes take the volume box (Preprocessor.volume_box), not the 2-D fan crop of
    8-bit clips; the steps say so, and name the other path after them."""
    from learner.config import Config
    from learner.evaluation.export import preprocessing_record, preprocessing_steps
    from learner.losses.regression import ScoreStandardiser
    from learner.training.checkpoint import CheckpointMeta, EncoderMeta

    meta = CheckpointMeta(Config(), ScoreStandardiser(mean=1.0, std=2.0), EncoderMeta(backbone, 4, 1, 16))
    record = preprocessing_record(meta, 1, "0" * 64)
    steps = "\n".join(preprocessing_steps(record))
    crop_step = next(line for line in steps.splitlines() if "Crop" in line)
    assert named in crop_step
    assert not_first not in crop_step
    assert not_first in steps.split("picks the crop and the intensity")[1]
    assert record["pixels"]["kind"] == ("volumes" if backbone == "resnet18_3d" else "frames")


@pytest.mark.parametrize(
    ("scale", "rule"),
    [
        ("sf", {"bins": [180.0, 275.0, 430.0], "edge_belongs_to": ["upper", "lower", "lower"]}),
        ("mmse_binned", {"bins": [17.0, 23.0], "edge_belongs_to": ["lower", "lower"]}),
        ("mmse", {"threshold": 2.0}),
    ],
)
def test_the_exported_change_rule_reproduces_the_labels(scale: str, rule: dict[str, object]) -> None:
    """A consumer of ``preprocessing.json`` gets each edge's side, so it can label S/F 180 as the paper
    does (in 180–275, not < 180)."""
    from learner.config import Config
    from learner.evaluation.export import preprocessing_record
    from learner.losses.regression import ScoreStandardiser
    from learner.training.checkpoint import CheckpointMeta, EncoderMeta

    config = Config().model_copy(update={"data": Config().data.model_copy(update={"scale": scale})})
    meta = CheckpointMeta(config, ScoreStandardiser(mean=1.0, std=2.0), EncoderMeta("tsm_resnet18", 4, 1, 16))
    written = json.loads(json.dumps(preprocessing_record(meta, 1, "0" * 64)))["score_scale"]["change_rule"]
    assert written == rule
    if "bins" in written:  # the record alone reproduces the scale's bins
        edges, sides = written["bins"], written["edge_belongs_to"]
        scores = [e + d for e in edges for d in (-0.1, 0.0, 0.1)]
        from_record = [
            sum(s > e or (s == e and side == "upper") for e, side in zip(edges, sides, strict=True))
            for s in scores
        ]
        assert from_record == get_scale(scale).bin_of(scores).tolist()


def test_export_of_a_folder_without_a_recorded_encoder_is_a_one_line_error(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    code, _, err = cli(["export", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert err.startswith(f"error: {tmp_path}: not a classification run with a recorded encoder")
