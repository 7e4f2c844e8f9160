"""``learner predict`` on a known test pair: the same answer as the classify pipeline, JSON fields, errors."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learner.config import DatasetSpec
from learner.data.manifest import load_manifest
from learner.data.scales import CLASS_NAMES, get_scale
from learner.errors import CheckpointError, ScanReadError
from learner.evaluation.change_posterior import ChangeCalibration, change_posterior
from learner.evaluation.embed import EmbeddingTable
from learner.evaluation.predict import predict_pair
from learner.experiments.results import ExperimentResult


def _known_pair(
    tiny_table3: ExperimentResult, dataset: str, tiny_datasets: list[DatasetSpec]
) -> tuple[Path, pd.Series, dict]:
    cell = tiny_table3.out_dir / dataset / "mse+wcl" / "seed-0"
    first = pd.read_csv(
        cell / "classifier" / "predictions.csv", dtype={"first_scan_id": str, "second_scan_id": str}
    ).iloc[0]
    spec = next(d for d in tiny_datasets if d.name == dataset)
    paths = {r.scan_id: r.path for r in load_manifest(spec.manifest, get_scale(spec.scale)).records}
    return cell, first, paths


@pytest.mark.parametrize("dataset", ["LUS", "MRI"])
def test_prediction_equals_the_classify_pipeline(
    tiny_table3: ExperimentResult, tiny_datasets: list[DatasetSpec], dataset: str
) -> None:
    cell, row, paths = _known_pair(tiny_table3, dataset, tiny_datasets)
    result = predict_pair(
        cell / "encoder", cell / "classifier", paths[row["first_scan_id"]], paths[row["second_scan_id"]]
    )
    assert result.label == row["predicted_name"]
    expected = [row[f"p_{name}"] for name in CLASS_NAMES]
    np.testing.assert_allclose([result.probabilities[n] for n in CLASS_NAMES], expected, atol=1e-4)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    table = EmbeddingTable.load(next((cell / "encoder" / "embeddings").glob("*.npz")))
    rows = [table.scan_ids.index(row["first_scan_id"]), table.scan_ids.index(row["second_scan_id"])]
    np.testing.assert_allclose(
        [result.scores["earlier"], result.scores["later"]], table.scores[rows], rtol=1e-4
    )
    a, b = table.embeddings[rows].astype(np.float64)
    assert result.distance == pytest.approx(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-4)
    assert result.warnings == ()  # a scan of the kind the encoder trained on
    # the score-change answer: only the MRI cohort's val patients have the repeat visits a change model needs
    answers = json.loads((cell / "classifier" / "metrics.json").read_text())["answers"]
    if dataset == "LUS":
        assert "delta_score_calibrated" not in answers
        assert result.score_change is None
        assert result.score_change_label is None
        return
    model = ChangeCalibration(**answers["delta_score_calibrated"]["calibration"])
    expected = change_posterior(
        get_scale(spec_scale(tiny_datasets, dataset)), model, *table.scores[rows, None]
    )
    assert result.score_change is not None
    np.testing.assert_allclose([result.score_change[n] for n in CLASS_NAMES], expected[0], atol=0.02)
    assert sum(result.score_change.values()) == pytest.approx(1.0)
    assert result.to_json()["score_change_prediction"] == result.score_change_label


def spec_scale(datasets: list[DatasetSpec], name: str) -> str:
    return next(d.scale for d in datasets if d.name == name)


def test_cli_json_output(
    tiny_table3: ExperimentResult,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    cell, row, paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    args = ["predict", "--encoder", str(cell / "encoder"), "--classifier", str(cell / "classifier"), "--json"]
    code, out, _ = cli([*args, str(paths[row["first_scan_id"]]), str(paths[row["second_scan_id"]])])
    assert code == 0
    output = json.loads(out)
    assert set(output) >= {"prediction", "probabilities", "predicted_scores", "embedding_cosine_distance"}
    assert output["prediction"] == row["predicted_name"]
    assert set(output["probabilities"]) == set(CLASS_NAMES)
    assert set(output["predicted_scores"]) == {"earlier", "later"}


def test_a_scan_of_a_kind_the_encoder_never_saw_is_predicted_with_a_warning_naming_it(
    tiny_table3: ExperimentResult,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An MRI volume given to the LUS encoder, an LUS clip given to the MRI encoder: both are answered (the
    numbers mean nothing, and the warning says so), the warning in the log, the result and the JSON."""
    lus, lus_row, lus_paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    mri, mri_row, mri_paths = _known_pair(tiny_table3, "MRI", tiny_datasets)
    clip, volume = lus_paths[lus_row["first_scan_id"]], mri_paths[mri_row["first_scan_id"]]
    with caplog.at_level("WARNING", logger="learner"):
        for cell, earlier, later, stranger, kind, trained in (
            (lus, clip, volume, volume, "volume", "video"),
            (mri, volume, clip, clip, "video", "volume"),
        ):
            result = predict_pair(cell / "encoder", cell / "classifier", earlier, later)
            assert result.warnings == (
                f"{stranger}: a {kind}, but this encoder was trained on {trained} scans only: its predicted "
                "score and change for this scan have no meaning",
            )
            assert result.to_json()["warnings"] == list(result.warnings)
            assert result.to_row()["warnings"] == result.warnings[0]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"][-2:] == [
        f"{volume}: a volume, but this encoder was trained on video scans only: its predicted score and "
        "change for this scan have no meaning",
        f"{clip}: a video, but this encoder was trained on volume scans only: its predicted score and "
        "change for this scan have no meaning",
    ]
    args = ["predict", "--encoder", str(lus / "encoder"), "--classifier", str(lus / "classifier"), "--json"]
    code, out, err = cli([*args, str(clip), str(volume)])
    assert code == 0
    line = (
        f"{volume}: a volume, but this encoder was trained on video scans only: its predicted score and "
        "change for this scan have no meaning"
    )
    assert json.loads(out)["warnings"] == [line]
    assert f"warning: {line}" in err.splitlines()  # and on stderr, as every warning of a command


def test_a_classifier_of_another_encoder_is_refused(
    tiny_table3: ExperimentResult,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    cell, row, paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    other = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    scans = paths[row["first_scan_id"]], paths[row["second_scan_id"]]
    with pytest.raises(CheckpointError, match="trained on encoder"):
        predict_pair(other, cell / "classifier", *scans)
    code, _, err = cli(
        ["predict", "--encoder", str(other), "--classifier", str(cell / "classifier"), *map(str, scans)]
    )
    assert code == 2
    assert err.startswith("error: ")


def test_missing_and_unreadable_scans_are_named(
    tmp_path: Path, tiny_table3: ExperimentResult, tiny_datasets: list[DatasetSpec]
) -> None:
    cell, row, paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    good = paths[row["first_scan_id"]]
    with pytest.raises(ScanReadError, match=r"missing\.mp4"):
        predict_pair(cell / "encoder", cell / "classifier", good, tmp_path / "missing.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ScanReadError, match=r"broken\.mp4"):
        predict_pair(cell / "encoder", cell / "classifier", broken, good)


def _pairs_csv(tmp_path: Path, cell: Path, paths: dict) -> tuple[Path, pd.DataFrame]:
    """The first three test pairs of ``cell`` as a --pairs CSV (absolute paths, plus an extra column)."""
    known = pd.read_csv(
        cell / "classifier" / "predictions.csv", dtype={"first_scan_id": str, "second_scan_id": str}
    ).head(3)
    table = pd.DataFrame({
        "case": [f"case-{k}" for k in range(len(known))],
        "earlier": [str(paths[s]) for s in known["first_scan_id"]],
        "later": [str(paths[s]) for s in known["second_scan_id"]],
    })  # fmt: skip
    source = tmp_path / "pairs.csv"
    table.to_csv(source, index=False)
    return source, known


def test_predict_pairs_gives_one_row_per_pair_as_the_classify_pipeline_did(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    cell, _, paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    source, known = _pairs_csv(tmp_path, cell, paths)
    args = ["predict", "--encoder", str(cell / "encoder"), "--classifier", str(cell / "classifier")]
    code, out, err = cli([*args, "--pairs", str(source), "--out", str(tmp_path / "predicted.csv")])
    assert code == 0, err
    assert out.strip() == f"3 pair(s): {tmp_path / 'predicted.csv'}"
    predicted = pd.read_csv(tmp_path / "predicted.csv")
    assert predicted["case"].tolist() == ["case-0", "case-1", "case-2"]  # input columns kept, file order
    assert predicted["prediction"].tolist() == known["predicted_name"].tolist()
    for name in CLASS_NAMES:
        np.testing.assert_allclose(predicted[f"p_{name}"], known[f"p_{name}"], atol=1e-4)
    metrics = json.loads((cell / "classifier" / "metrics.json").read_text())
    test = metrics["test"]
    assert f"accuracy {test['accuracy']:.1%}, macro-F1 {test['macro_f1']:.1%}" in err  # the caveat
    assert f"on {test['n']} test pairs of {test['n_patients']} patients" in err
    # beside it, what needs no classifier, and in words what the classifier is below
    counts = metrics["pair_counts"]["test"]
    majority = max(counts, key=counts.get)
    share = counts[majority] / sum(counts.values())
    assert f"always {majority} {share:.1%} / " in err
    assert "uniform random 33.3% / " in err
    assert f"the encoder's own predicted scores {metrics['answers']['delta_score']['accuracy']:.1%} / " in err
    below_majority = test["accuracy"] < share
    assert (f"always {majority} (accuracy" in err.split("it is below")[-1]) == below_majority


def test_predict_pairs_names_the_row_of_a_bad_scan(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    cell, _, paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    source, _ = _pairs_csv(tmp_path, cell, paths)
    table = pd.read_csv(source)
    table.loc[1, "later"] = "gone.mp4"  # relative: to the CSV's folder
    table.to_csv(source, index=False)
    args = ["predict", "--encoder", str(cell / "encoder"), "--classifier", str(cell / "classifier")]
    code, _, err = cli([*args, "--pairs", str(source)])
    assert code == 2
    assert err.strip() == f"error: {source}: row 2: {tmp_path / 'gone.mp4'}: file not found"
    code, _, err = cli([*args, "--pairs", str(source), str(paths[next(iter(paths))])])
    assert (code, err.strip()) == (2, "error: give either EARLIER LATER or --pairs PAIRS.csv")


def test_a_header_only_pairs_file_is_refused_not_answered_with_nothing(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    cell = tiny_table3.out_dir / "LUS" / "mse" / "seed-0"
    source = tmp_path / "pairs.csv"
    source.write_text("earlier,later\n", encoding="utf-8")
    args = ["predict", "--encoder", str(cell / "encoder"), "--classifier", str(cell / "classifier")]
    code, out, err = cli([*args, "--pairs", str(source)])
    assert (code, out) == (2, "")
    assert err.strip() == f"error: {source}: no pairs (a header and no data rows)"


def test_predict_out_never_overwrites_an_input_and_an_existing_file_only_with_force(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    cell, row, paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    source, _ = _pairs_csv(tmp_path, cell, paths)
    kept = source.read_bytes()
    args = ["predict", "--encoder", str(cell / "encoder"), "--classifier", str(cell / "classifier")]
    for force in ([], ["--force"]):
        code, out, err = cli([*args, "--pairs", str(source), "--out", str(source), *force])
        assert (code, out) == (2, "")
        assert err.strip() == (
            f"error: --out: {source} is the --pairs CSV, an input of this command; choose another --out "
            "(--force never overwrites an input)"
        )
    assert source.read_bytes() == kept
    scans = [tmp_path / "day1.mp4", tmp_path / "day2.mp4"]  # copies: a failure must not touch the cohort
    for copy, scan_id in zip(scans, (row["first_scan_id"], row["second_scan_id"]), strict=True):
        shutil.copy(paths[scan_id], copy)
    code, _, err = cli([*args, *map(str, scans), "--out", str(scans[1]), "--force"])
    assert code == 2
    assert err.startswith(f"error: --out: {scans[1]} is LATER, an input of this command")
    assert scans[1].read_bytes() == paths[row["second_scan_id"]].read_bytes()
    mine = tmp_path / "mine.csv"
    mine.write_text("my notes\n")
    code, _, err = cli([*args, "--pairs", str(source), "--out", str(mine)])
    assert code == 2
    assert err.strip() == (
        f"error: --out: {mine} exists; pass --force to overwrite it or choose another --out"
    )
    assert mine.read_text() == "my notes\n"
    code, out, err = cli([*args, "--pairs", str(source), "--out", str(mine), "--force"])
    assert code == 0, err
    written = pd.read_csv(mine)
    assert written["case"].tolist() == ["case-0", "case-1", "case-2"]
    assert set(written["prediction"]) <= set(CLASS_NAMES)


def test_out_writes_a_single_pair_and_json_prints_every_pair(
    tmp_path: Path,
    tiny_table3: ExperimentResult,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    """No option is ignored: --out of one pair writes the row --pairs gives it, --json of --pairs prints
    the rows as a JSON list."""
    cell, _, paths = _known_pair(tiny_table3, "LUS", tiny_datasets)
    source, known = _pairs_csv(tmp_path, cell, paths)
    args = ["predict", "--encoder", str(cell / "encoder"), "--classifier", str(cell / "classifier")]
    code, out, err = cli([*args, "--pairs", str(source)])
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    first = table.iloc[0]
    single = tmp_path / "single.csv"
    code, out, err = cli([*args, first["earlier"], first["later"], "--out", str(single)])
    assert code == 0, err
    assert out.strip().endswith(f"1 pair(s): {single}")
    written = pd.read_csv(single)
    assert list(written.columns) == [c for c in table.columns if c != "case"]
    pd.testing.assert_series_equal(
        written.iloc[0], first.drop("case"), check_names=False, check_exact=False, atol=1e-6
    )
    code, out, err = cli([*args, "--pairs", str(source), "--json"])
    assert code == 0, err
    printed = json.loads(out)  # stdout holds the JSON only: the caveat goes to stderr
    assert [entry["case"] for entry in printed] == ["case-0", "case-1", "case-2"]
    assert [entry["prediction"] for entry in printed] == known["predicted_name"].tolist()
    assert printed[0]["p_stable"] == pytest.approx(first["p_stable"])
    assert "caveat: " in err
