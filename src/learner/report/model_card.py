"""``README.md`` of a model folder (``learner export --format folder``): the model card.

Every number is read from the records of the runs the folder comes from, never typed: the classification
run's ``metrics.json`` gives the test intra-patient pairs with their 95% patient-bootstrap intervals, the
reference rows, the warnings, the encoder's regression quality and the class balance (the sections of that
run's ``REPORT.md``, :func:`learner.report.classification.classification_report`, opened by the same
PHANTOM / REAL banner); the pretraining run's ``splits.csv`` and ``metrics.json`` give the patients and
scans per split, its checkpoint's ``meta.json`` the encoder and the preprocessing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from learner.data.splits import read_splits
from learner.errors import RunDirError
from learner.evaluation.export import preprocessing_record, preprocessing_steps
from learner.layout import RunLayout
from learner.losses.registry import loss_label
from learner.report.classification import classification_report
from learner.report.sections import source_banner
from learner.training.checkpoint import CheckpointMeta, read_meta

SPLITS: tuple[str, ...] = ("train", "val", "test")

USE = """```python
from learner import api

model = api.load_model("path/to/this/folder")
prediction = model.predict("earlier.mp4", "later.mp4")  # label, probabilities, predicted scores
table = model.embed("manifest.csv")  # the frozen encoder's embedding of every scan
```

Pretraining or fine-tuning from this encoder: `learner pretrain --init path/to/this/folder` (`model.init`);
a run whose split makes a patient the encoder trained on a test patient is refused (`splits.csv`). Nothing
is downloaded; the weights are safetensors (`model.safetensors`), the rest JSON, CSV and Markdown.
"""


def model_card(
    encoder_run: str | os.PathLike[str], classification: str | os.PathLike[str], *, which: str = "best"
) -> str:
    """The model card of the encoder ``encoder_run`` (checkpoint ``which``) and the classifier of the
    classification run ``classification`` (or its ``classifier/`` folder), in Markdown.

    Raises:
        RunDirError: ``classification`` has no ``metrics.json`` of a classification run.
        CheckpointError: the encoder checkpoint is missing or malformed.
    """
    run_dir, metrics = _classification_metrics(Path(classification))
    meta = read_meta(RunLayout(encoder_run).checkpoint(which))
    sources, sections = classification_report(run_dir, metrics)
    record = preprocessing_record(meta, metrics["clips_per_scan"], metrics["encoder_fingerprint"])
    title = f"# LEARNER model: {meta.encoder.name}, {loss_label(meta.config.loss.name)}\n"
    return "\n".join(
        [
            title,
            source_banner(sources),
            "## Use\n\n" + USE,
            "## Trained on\n\n" + _trained_on(Path(encoder_run), metrics, meta, which),
            *sections,
            "\n".join(preprocessing_steps(record)),
        ]
    )


def _classification_metrics(folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the classification run, its ``metrics.json``) of a classification run or its ``classifier/``."""
    for run_dir in (folder, folder.parent):
        path = RunLayout(run_dir).metrics
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(metrics, dict) and metrics.get("kind") == "classification":
            return run_dir, metrics
    raise RunDirError(
        f"{RunLayout(folder).metrics}: no classification metrics; the model card's test results come from "
        "them: export a classification run (learner classify --out) or a grid cell"
    )


def _trained_on(encoder_run: Path, metrics: dict[str, Any], meta: CheckpointMeta, which: str) -> str:
    """What the encoder and the classifier learnt from, as the runs recorded it."""
    config = meta.config
    lines = [f"- manifest `{Path(metrics['manifest']).name}` ({metrics['data_source'].upper()} data)"]
    if RunLayout(encoder_run).splits.is_file():
        patients = Counter(read_splits(encoder_run).values())
        listed = ", ".join(f"{split} {patients.get(split, 0)}" for split in SPLITS)
        lines.append(f"- patients per split (the encoder run's `splits.csv`): {listed}")
    pretraining = _json_or_empty(RunLayout(encoder_run).metrics)
    scans = pretraining.get("scans")
    if isinstance(scans, dict) and scans:
        lines.append("- scans of the pretraining: " + ", ".join(f"{k} {v}" for k, v in scans.items()))
    test = metrics["test"]
    lines += [
        f"- test: {test['n']} intra-patient pairs of {test['n_patients']} patients (never seen in training)",
        f"- encoder: `{meta.encoder.name}` (model.size {config.model.size}, D = {meta.encoder.embed_dim}), "
        f"loss {loss_label(config.loss.name)}, {config.optim.epochs} epoch(s); the `{which}` checkpoint "
        f"(epoch {meta.epoch}), seed {config.seed}",
        f"- classifier: `{metrics['head']}` on the `{metrics['combine']}` of two embeddings, "
        f"{metrics['clips_per_scan']} clip(s) per scan, seed {metrics['seed']}",
        f"- input: {config.data.frames} frame(s) of {config.data.size} × {config.data.size}, "
        f"{meta.encoder.in_channels} channel(s); score scale `{config.data.scale}`",
    ]
    return "\n".join(lines) + "\n"


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
