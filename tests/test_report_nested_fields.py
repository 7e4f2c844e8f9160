"""`learner report` on a results file whose nested fields are missing or of another type or shape (an older
learner's file, or an edited one): one line naming the file and the key, exit 2, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Edit = Callable[[dict[str, Any]], None]

BEST = {"epoch": 2, "val_mae": 10.0, "baseline_mae": 20.0, "val_r": 0.7}
PRETRAINING: dict[str, Any] = {
    "kind": "pretraining", "data_source": "real", "best": BEST, "last": BEST, "train_mean": 25.0,
    "scans": {"train": 4, "val": 4, "skipped": 0},
}  # fmt: skip
SSL_BEST = {"epoch": 2, "val_loss": 1.5}
SELF_SUPERVISED: dict[str, Any] = {"kind": "pretraining", "data_source": "real", "best": SSL_BEST}

ANSWER = {
    "n": 6, "n_patients": 3, "accuracy": 0.5, "macro_f1": 0.4, "weighted_f1": 0.5,
    "ci": {"accuracy": [0.2, 0.9], "macro_f1": [0.1, 0.8]},
}  # fmt: skip
PER_CLASS = {
    n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for n in ("deteriorated", "stable")
}
CLASSIFICATION: dict[str, Any] = {
    "kind": "classification", "encoder_run": "enc", "manifest": "m.csv", "data_source": "real",
    "combine": "difference", "head": "mlp",
    "test": ANSWER | {"per_class": PER_CLASS, "confusion": [[0, 1, 0], [1, 2, 1], [0, 1, 0]]},
    "pair_counts": {"test": {"deteriorated": 1, "stable": 4, "improved": 1}},
    "answers": {"classifier_em": ANSWER},
}  # fmt: skip


def _set(dotted: str, value: Any) -> Edit:
    """An edit that sets (or, for ``...``, removes) one dotted key of the metrics."""

    def edit(metrics: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        for key in parents:
            metrics = metrics[key]
        if value is ...:
            del metrics[last]
        else:
            metrics[last] = value

    return edit


BAD = {
    # pretraining, a run that measured its val MAE
    "no baseline MAE": (PRETRAINING, _set("best", {"epoch": 2, "val_mae": 1.0}), "no 'best.baseline_mae'"),
    "val MAE as text": (PRETRAINING, _set("best.val_mae", "1.0"), "'best.val_mae' is a string"),
    "val MAE null": (PRETRAINING, _set("best.val_mae", None), "'best.val_mae' is null"),
    "val r as text": (PRETRAINING, _set("best.val_r", "x"), "'best.val_r' is a string"),
    "last not an object": (PRETRAINING, _set("last", [1]), "'last' is a list"),
    "last val MAE as text": (PRETRAINING, _set("last.val_mae", "x"), "'last.val_mae' is a string"),
    "train mean as text": (PRETRAINING, _set("train_mean", "x"), "'train_mean' is a string"),
    "scans a list": (PRETRAINING, _set("scans", [4, 4]), "'scans' is a list"),
    # pretraining, self-supervised
    "val loss as text": (SELF_SUPERVISED, _set("best.val_loss", "x"), "'best.val_loss' is a string"),
    "rank without std": (
        SELF_SUPERVISED,
        _set("best.val_effective_rank", 3.0),
        "no 'best.val_embedding_std'",
    ),
    # classification
    "empty interval": (CLASSIFICATION, _set("test.ci.accuracy", []), "'test.ci.accuracy' is a list of 0"),
    "interval of text": (
        CLASSIFICATION,
        _set("test.ci.accuracy", ["a", "b"]),
        "'test.ci.accuracy[0]' is a string",
    ),
    "other answer's interval": (
        CLASSIFICATION,
        _set("answers.classifier_em.ci.macro_f1", [0.1]),
        "'answers.classifier_em.ci.macro_f1' is a list of 1",
    ),
    "extra interval": (CLASSIFICATION, _set("test.ci.weighted_f1", 0.5), "'test.ci.weighted_f1' is a number"),
    "no test counts": (CLASSIFICATION, _set("pair_counts.test", {}), "no 'pair_counts.test.deteriorated'"),
    "count as text": (
        CLASSIFICATION,
        _set("pair_counts.test.stable", "4"),
        "'pair_counts.test.stable' is a string",
    ),
    "count as a fraction": (
        CLASSIFICATION,
        _set("pair_counts.test.stable", 4.5),
        "'pair_counts.test.stable' is a number, not a whole number",
    ),
    "no test pair": (
        CLASSIFICATION,
        _set("pair_counts.test", {"deteriorated": 0, "stable": 0, "improved": 0}),
        "'pair_counts.test' counts no pair",
    ),
    "train counts a list": (
        CLASSIFICATION,
        _set("pair_counts.train", [1, 2, 3]),
        "'pair_counts.train' is a list",
    ),
    "one short row": (CLASSIFICATION, _set("test.confusion", [[1, 2]]), "'test.confusion' is a list of 1"),
    "short row": (
        CLASSIFICATION,
        _set("test.confusion", [[0, 1, 0], [1, 2], [0, 1, 0]]),
        "'test.confusion[1]' is a list of 2",
    ),
    "confusion of text": (
        CLASSIFICATION,
        _set("test.confusion", [[0, 1, 0], [1, "2", 1], [0, 1, 0]]),
        "'test.confusion[1][1]' is a string",
    ),
    "per-class score as text": (
        CLASSIFICATION,
        _set("test.per_class.stable.recall", "x"),
        "'test.per_class.stable.recall' is a string",
    ),
    "per-class without support": (
        CLASSIFICATION,
        _set("test.per_class.stable.support", ...),
        "no 'test.per_class.stable.support'",
    ),
    "resamples a list": (CLASSIFICATION, _set("test.ci_resamples", []), "'test.ci_resamples' is a list"),
}


def _copy(metrics: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(metrics))  # its objects not shared (``best`` and ``last``)


def _write_run(folder: Path, metrics: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text("data:\n  manifest: m.csv\n")
    if metrics["kind"] == "pretraining" and "val_mae" in metrics["best"]:
        (folder / "val_predictions.csv").write_text(
            "scan_id,patient_id,score,predicted\na,P1,25,15\nb,P2,25,35\nc,P3,25,15\nd,P4,25,35\n"
        )


@pytest.mark.parametrize("base", ["pretraining", "self-supervised", "classification"])
def test_the_good_files_these_start_from_are_reported(tmp_path: Path, cli, base: str) -> None:
    metrics = {"pretraining": PRETRAINING, "self-supervised": SELF_SUPERVISED}.get(base, CLASSIFICATION)
    _write_run(tmp_path / "run", _copy(metrics))
    code, _, err = cli(["report", str(tmp_path / "run")])
    assert code == 0, err
    assert (tmp_path / "run" / "REPORT.md").is_file()


@pytest.mark.parametrize("form", list(BAD))
def test_a_bad_nested_field_is_one_line_naming_the_file_and_the_key(tmp_path: Path, cli, form: str) -> None:
    base, edit, problem = BAD[form]
    metrics = _copy(base)
    edit(metrics)
    run = tmp_path / "run"
    _write_run(run, metrics)
    code, out, err = cli(["report", str(run)])
    assert code == 2, err
    kind = metrics["kind"]
    prefix = f"error: {run / 'metrics.json'}: not a {kind} results file of this version ("
    assert err.startswith(prefix), err
    assert err.strip().count("\n") == 0, err
    assert problem in err, err
    assert "Traceback" not in out + err
    assert not (run / "REPORT.md").exists()


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("epoch,val_loss\n1,2.0\n", "train_loss"),
        ("epoch,train_loss,val_effective_rank\n1,2.0,3.0\n", "val_embedding_std"),
        ("epoch,train_loss,val_mae\n1,2.0,3.0\n", "baseline_mae"),
    ],
)
def test_a_metrics_csv_without_a_column_the_report_reads_is_one_line(
    tmp_path: Path, cli, header: str, column: str
) -> None:
    run = tmp_path / "run"
    _write_run(run, _copy(SELF_SUPERVISED))
    (run / "metrics.csv").write_text(header)
    code, _, err = cli(["report", str(run)])
    assert code == 2, err
    assert err.strip() == (
        f"error: {run / 'metrics.csv'}: not a pretraining results file of this version (no column {column!r})"
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mse", "vicreg"])
def test_the_files_pretraining_writes_pass_the_checks(
    make_tiny_pretrain_config: Callable[..., Any], tmp_path: Path, cli, loss: str
) -> None:
    """What the checks ask is what learner writes: a regression run's and a self-supervised run's report."""
    from learner.training.pretrain import pretrain

    run = tmp_path / loss
    pretrain(make_tiny_pretrain_config(**{"loss.name": loss}), run)
    code, _, err = cli(["report", str(run)])
    assert code == 0, err
    text = (run / "REPORT.md").read_text()
    assert "## Regression quality (best checkpoint, epoch " in text
    assert ("Self-supervised: best val loss" in text) == (loss == "vicreg")
