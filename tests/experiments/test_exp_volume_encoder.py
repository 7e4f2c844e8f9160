"""A 3-D encoder end to end on the tiny MRI cohort: ``learner pretrain`` with ``resnet18_3d`` on volumes
resampled to the fixed grid, then ``embed``, ``classify`` and ``predict``, each seeing the same grid."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.config import DatasetSpec
from learner.data.manifest import load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.sampling import resample_volume
from learner.data.scales import get_scale
from learner.evaluation.embed import EmbeddingTable
from learner.training.checkpoint import load_regressor, read_meta

SETTINGS = {
    "data.scale": "mmse",
    "data.frames": 4,
    "data.size": 32,
    "data.sampling": "resample",
    "model.backbone": "resnet18_3d",
    "model.size": "tiny",
    "model.head_hidden": 16,
    "optim.batch_size": 4,
    "optim.epochs": 1,
    "optim.max_steps_per_epoch": 2,
    "classifier.epochs": 5,
    "classifier.bootstrap": 20,
    "runtime.workers": 0,
    "runtime.device": "cpu",
}


@pytest.mark.slow
def test_resnet18_3d_through_pretrain_embed_classify_and_predict(
    tiny_mri: DatasetSpec, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    run, classified = tmp_path / "encoder", tmp_path / "classifier"
    sets = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    assert cli(["pretrain", "--manifest", str(tiny_mri.manifest), "--out", str(run), *sets])[0] == 0
    meta = read_meta(run / "checkpoints" / "best")
    assert (meta.encoder.name, meta.encoder.embed_dim) == ("resnet18_3d", 128)

    code, _, err = cli(["embed", str(run), "--clips-per-scan", "2"])  # one grid: K clips would coincide
    assert code == 2
    assert "clips per scan 2 needs data.sampling=segments" in err
    assert cli(["embed", str(run)])[0] == 0
    table = EmbeddingTable.load(next((run / "embeddings").glob("*.npz")))
    # an independent clip: the scan preprocessed, resampled to 4 × 32 × 32 by SciPy-checked trilinear
    records = load_manifest(tiny_mri.manifest, get_scale("mmse")).records
    model, _ = load_regressor(run)
    first = records[0]
    volume = resample_volume(Preprocessor.from_config(meta.config.data).load(first.path), (4, 32, 32))
    clip = torch.from_numpy(volume / 255.0).float()[None, :, None]  # (1, T, C, H, W)
    with torch.no_grad():
        expected = model.encoder.eval()(clip)[0].numpy()
    np.testing.assert_allclose(table.embeddings[table.scan_ids.index(first.scan_id)], expected, atol=1e-4)

    code, _, err = cli(["classify", str(run), "--out", str(classified)])
    assert code == 0, err
    metrics = json.loads((classified / "metrics.json").read_text())
    assert metrics["test"]["n"] > 0

    patient = [r for r in records if r.patient_id == first.patient_id]
    args = ["predict", "--encoder", str(run), "--classifier", str(classified), "--json"]
    code, out, _ = cli([*args, str(patient[0].path), str(patient[1].path)])
    output = json.loads(out)
    rows = [table.scan_ids.index(r.scan_id) for r in patient[:2]]
    assert [output["predicted_scores"][side] for side in ("earlier", "later")] == pytest.approx(
        table.scores[rows].tolist(), rel=1e-4
    )
