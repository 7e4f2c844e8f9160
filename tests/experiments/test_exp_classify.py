"""The classify stage on a pretrained tiny encoder: both combine modes, both heads, pair tables, metrics."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from learner.config import Config, DatasetSpec, apply_overrides
from learner.data.manifest import load_manifest
from learner.data.scales import get_scale
from learner.errors import RunDirError, ScanReadError
from learner.evaluation.change_posterior import ChangeCalibration, change_posterior
from learner.experiments.answers import ANSWERS, untrained_head
from learner.experiments.classify import run_classification
from learner.experiments.results import ExperimentResult
from learner.training.checkpoint import checkpoint_fingerprint
from learner.training.pretrain import pretrain

IDS = {c: str for c in ("first_scan_id", "second_scan_id", "first_patient_id", "second_patient_id")}


@pytest.mark.parametrize(("combine", "head"), [("difference", "mlp"), ("concatenate", "mlp_large")])
def test_classification_run(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
    combine: str,
    head: str,
) -> None:
    encoder = tiny_table3.out_dir / "LUS" / "mse+wcl" / "seed-0" / "encoder"
    manifest = load_manifest(tiny_datasets[0].manifest, get_scale("sf"))
    config = apply_overrides(tiny_experiment_config, {"classifier.combine": combine, "classifier.head": head})
    result = run_classification(encoder, manifest, config, tmp_path / "cls")

    dim = result.embeddings.embeddings.shape[1]
    assert result.classifier.meta.in_dim == (dim if combine == "difference" else 2 * dim)
    assert result.classifier.meta.kind == head
    assert result.classifier.meta.encoder_fingerprint == checkpoint_fingerprint(
        encoder / "checkpoints" / "best"
    )

    splits = pd.read_csv(encoder / "splits.csv", dtype=str).set_index("patient_id")["split"]
    pairs = {
        s: pd.read_csv(tmp_path / "cls" / "pairs" / f"{s}.csv", dtype=IDS) for s in ("train", "val", "test")
    }
    for split in ("train", "val"):  # inter-patient pairs of that split only
        table = pairs[split]
        assert (table["first_patient_id"] != table["second_patient_id"]).all()
        assert set(splits[table["first_patient_id"]]) == {split} == set(splits[table["second_patient_id"]])
    test = pairs["test"]  # intra-patient, earlier visit first, same site
    visits = {r.scan_id: r.visit_order for r in manifest.records}
    assert (test["first_patient_id"] == test["second_patient_id"]).all()
    assert all(
        visits[a] < visits[b] for a, b in zip(test["first_scan_id"], test["second_scan_id"], strict=True)
    )
    assert set(splits[test["first_patient_id"]]) == {"test"}

    metrics = json.loads((tmp_path / "cls" / "metrics.json").read_text())
    for split, table in pairs.items():
        counts = table["label_name"].value_counts()
        assert metrics["pair_counts"][split] == {
            k: int(counts.get(k, 0)) for k in metrics["pair_counts"][split]
        }
    predictions = pd.read_csv(tmp_path / "cls" / "predictions.csv")
    truth, predicted = predictions["label"].to_numpy(), predictions["predicted"].to_numpy()
    probabilities = predictions[["p_deteriorated", "p_stable", "p_improved"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), predicted)
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert metrics["test"]["macro_f1"] == pytest.approx(
        f1_score(truth, predicted, labels=np.unique(truth), average="macro")
    )
    assert metrics["test"]["confusion"] == confusion_matrix(truth, predicted, labels=[0, 1, 2]).tolist()
    low, high = metrics["test"]["ci"]["accuracy"]
    assert 0.0 <= low <= high <= 1.0
    assert metrics["test"]["n_patients"] == test["first_patient_id"].nunique()

    # the regressor's own answer: its predicted S/F of both scans, through the paper's four S/F bins by hand
    score = dict(zip(result.embeddings.scan_ids, result.embeddings.scores.astype(float), strict=True))
    bins = [180.0, 275.0, 430.0]  # ≤ 180, 180-275, 275-430, > 430 (Section 2.1); higher is better
    moved = [
        np.sign(np.searchsorted(bins, score[b]) - np.searchsorted(bins, score[a]))
        for a, b in zip(test["first_scan_id"], test["second_scan_id"], strict=True)
    ]
    answer = np.asarray(moved, dtype=np.int64) + 1  # 0 deteriorated, 1 stable, 2 improved
    answers = metrics["answers"]
    # the tiny LUS cohort's val patients have one visit each: no change model, so no calibrated answer
    assert sorted(answers) == sorted(set(ANSWERS) - {"delta_score_calibrated"})
    delta = answers["delta_score"]
    assert delta["accuracy"] == pytest.approx(accuracy_score(test["label"], answer))
    assert delta["macro_f1"] == pytest.approx(
        f1_score(test["label"], answer, labels=np.unique(test["label"]), average="macro")
    )
    assert delta["n"] == len(test)
    # with the val-calibrated margin: stable wherever the predicted scores differ by less than it
    margin = answers["delta_score_margin"]["margin"]
    gap = np.abs(
        [score[b] - score[a] for a, b in zip(test["first_scan_id"], test["second_scan_id"], strict=True)]
    )
    held = np.where(gap < margin, 1, answer)
    assert answers["delta_score_margin"]["accuracy"] == pytest.approx(accuracy_score(test["label"], held))
    # EM and BBSE: the classifier's test probabilities times prior / train prior, argmax
    train_prior = np.bincount(pairs["train"]["label"], minlength=3) / len(pairs["train"])
    for name in ("classifier_em", "classifier_bbse"):
        prior = np.asarray(answers[name]["prior"])
        assert prior.sum() == pytest.approx(1.0)
        adapted = (probabilities * prior / train_prior).argmax(axis=1)
        assert answers[name]["accuracy"] == pytest.approx(accuracy_score(truth, adapted))
        assert answers[name]["macro_f1"] == pytest.approx(
            f1_score(truth, adapted, labels=np.unique(truth), average="macro")
        )


def test_the_calibrated_answer_fits_the_val_visits(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
) -> None:
    """The MRI cohort's val patients have repeat visits: the level line over the val scans and the change
    line over their consecutive visit pairs, by hand, give the recorded model and the test answer."""
    encoder = tiny_table3.out_dir / "MRI" / "mse" / "seed-0" / "encoder"
    scale = get_scale("mmse")
    manifest = load_manifest(tiny_datasets[1].manifest, scale)
    result = run_classification(encoder, manifest, tiny_experiment_config, tmp_path / "cls")
    answer = result.metrics["answers"]["delta_score_calibrated"]
    predicted = dict(zip(result.embeddings.scan_ids, result.embeddings.scores.astype(float), strict=True))
    splits = pd.read_csv(encoder / "splits.csv", dtype=str).set_index("patient_id")["split"]
    val = [r for r in manifest.records if splits[r.patient_id] == "val"]
    slope, intercept = np.polyfit([predicted[r.scan_id] for r in val], [r.score for r in val], 1)
    by_patient: dict[str, list] = {}
    for record in sorted(val, key=lambda r: r.visit_order):
        by_patient.setdefault(record.patient_id, []).append(record)
    visits = [(a, b) for scans in by_patient.values() for a, b in itertools.pairwise(scans)]
    change_slope, change_intercept = np.polyfit(
        [predicted[b.scan_id] - predicted[a.scan_id] for a, b in visits],
        [b.score - a.score for a, b in visits],
        1,
    )
    model = answer["calibration"]
    assert model["n_scans"] == len(val)
    assert model["n_pairs"] == len(visits)
    assert (model["level_slope"], model["level_intercept"]) == pytest.approx((slope, intercept))
    assert (model["change_slope"], model["change_intercept"]) == pytest.approx(
        (change_slope, change_intercept)
    )
    test = pd.read_csv(tmp_path / "cls" / "pairs" / "test.csv", dtype=IDS)
    earlier = test["first_scan_id"].map(predicted).to_numpy()
    later = test["second_scan_id"].map(predicted).to_numpy()
    labels = change_posterior(scale, ChangeCalibration(**model), earlier, later).argmax(axis=1)
    assert answer["accuracy"] == pytest.approx(accuracy_score(test["label"], labels))
    assert answer["macro_f1"] == pytest.approx(
        f1_score(test["label"], labels, labels=np.unique(test["label"]), average="macro")
    )


def test_the_calibrated_answer_fits_the_val_visits_paired_like_the_test_visits(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
) -> None:
    """data.pairs.intra=all pairs every two visits of a test patient; the change model is then fitted on
    every two visits of a val patient too, the non-consecutive ones included."""
    encoder = tiny_table3.out_dir / "MRI" / "mse" / "seed-0" / "encoder"
    scale = get_scale("mmse")
    manifest = load_manifest(tiny_datasets[1].manifest, scale)
    config = apply_overrides(tiny_experiment_config, {"data.pairs.intra": "all"})
    result = run_classification(encoder, manifest, config, tmp_path / "cls")
    splits = pd.read_csv(encoder / "splits.csv", dtype=str).set_index("patient_id")["split"]
    val = [r for r in manifest.records if splits[r.patient_id] == "val"]
    # by hand: two scans of one patient and site, from an earlier and a later visit (consecutive: the next)
    visits: dict[tuple[str, str | None], set[float]] = {}
    for record in val:
        visits.setdefault((record.patient_id, record.site), set()).add(record.visit_order)
    order = {track: sorted(orders) for track, orders in visits.items()}
    gaps = [
        order[track].index(b.visit_order) - order[track].index(a.visit_order)
        for a, b in itertools.product(val, val)
        if (track := (a.patient_id, a.site)) == (b.patient_id, b.site)
    ]
    every, consecutive = sum(gap > 0 for gap in gaps), sum(gap == 1 for gap in gaps)
    assert every > consecutive
    assert result.metrics["answers"]["delta_score_calibrated"]["calibration"]["n_pairs"] == every


@pytest.mark.parametrize(
    ("overrides", "trained"),
    [
        ({"loss.name": "mse"}, True),
        ({"loss.name": "mse+wcl"}, True),
        ({"loss.name": "mse+cl", "loss.lam": 0.0, "loss.within_patient": 0.5}, True),
        ({"loss.name": "cl"}, False),
        ({"loss.name": "rnc"}, False),
        ({"loss.name": "supcon_bins"}, False),
        ({"loss.name": "vicreg"}, False),
        ({"loss.name": "mse+wcl", "loss.lam": 0.0}, False),
    ],
)
def test_whether_the_encoders_objective_trained_its_regression_head(
    overrides: dict[str, object], trained: bool
) -> None:
    """The head is trained by a positive weight on MSE or on the within-patient term (registry's weights)."""
    reason = untrained_head(apply_overrides(Config(), overrides))
    assert (reason is None) == trained
    if not trained:
        assert f"loss.name={overrides['loss.name']}" in str(reason)


def test_an_encoder_without_a_regression_objective_has_no_delta_score_answers(
    tmp_path: Path,
    make_tiny_pretrain_config: Callable[..., Config],
    tiny_experiment_config: Config,
    tiny_lus_manifest: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An encoder pretrained with CL alone: its head never trained, so the Δ-score rows are left out (one log
    line) and the classifier's and the prior-adapted answers remain."""
    pretrain(make_tiny_pretrain_config(**{"loss.name": "cl", "optim.epochs": 1}), tmp_path / "enc")
    manifest = load_manifest(tiny_lus_manifest, get_scale("sf"))
    with caplog.at_level("INFO", logger="learner.experiments.answers"):
        result = run_classification(tmp_path / "enc", manifest, tiny_experiment_config, tmp_path / "cls")
    assert sorted(result.metrics["answers"]) == ["classifier_bbse", "classifier_em"]
    said = [r.getMessage() for r in caplog.records if r.name == "learner.experiments.answers"]
    assert said == [
        "no 'Δ predicted score' rows: the encoder's objective loss.name=cl has no MSE term, so its "
        "regression head answers with initial weights"
    ]


def test_refuses_a_non_empty_out_dir(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
) -> None:
    encoder = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "keep.txt").write_text("x")
    manifest = load_manifest(tiny_datasets[0].manifest, get_scale("sf"))
    with pytest.raises(RunDirError, match="not empty"):
        run_classification(encoder, manifest, tiny_experiment_config, tmp_path / "cls")


def test_a_class_without_training_pairs_drops_only_the_prior_adapted_rows(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
    caplog: pytest.LogCaptureFixture,
) -> None:
    encoder = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    manifest = load_manifest(tiny_datasets[0].manifest, get_scale("sf"))
    config = apply_overrides(tiny_experiment_config, {"data.pairs.class_mix": [0.0, 0.5, 0.5]})
    with caplog.at_level("WARNING", logger="learner"):
        result = run_classification(encoder, manifest, config, tmp_path / "cls")
    assert result.metrics["pair_counts"]["train"]["deteriorated"] == 0  # the stated mix was drawn
    assert sorted(result.metrics["answers"]) == ["delta_score", "delta_score_margin"]
    assert "no prior-adapted rows" in caplog.text


def test_a_bad_scan_that_stops_classification_says_how_to_skip_it(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_experiment_config: Config,
    tiny_lus_with_a_bad_scan: tuple[Path, Path],
) -> None:
    """classify has no --skip-bad flag: the one line names the file and the --set that skips it."""
    path, broken = tiny_lus_with_a_bad_scan
    encoder = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    manifest = load_manifest(path, get_scale("sf"))
    with pytest.raises(ScanReadError) as raised:
        run_classification(encoder, manifest, tiny_experiment_config, tmp_path / "cls")
    assert str(raised.value).startswith(f"{broken}: ")
    assert str(raised.value).endswith(
        "; fix or drop that manifest row, or skip bad scans with --set data.skip_bad_scans=true"
    )
