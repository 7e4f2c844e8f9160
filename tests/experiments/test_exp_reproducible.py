"""What a training run's numbers promise, pinned by what can hold (docs/reproducibility.md), on the tiny
Table 3 (both phantom cohorts, MSE and MSE+wCL, seed 0, one thread):

(a) **Same machine, same software: bit-identical.** The run made twice in one test session gives the same
    ``results.json`` (every float, the encoders' weight hashes), ``table3.md`` and ``table3.csv``. This is the
    real guarantee, and it fails as soon as anything in the run is unseeded or order-dependent.
(b) **Another CPU: close.** float32 convolutions take other oneDNN / MKL kernels on another instruction set,
    a last-digit difference grows through training, and a classifier decision can flip. So only continuous
    figures are pinned across machines, within tolerances measured on two kernel sets (below), and the
    output formats are checked by their shape, not by numbers that a flipped decision moves.
(c) **Accuracy and F1** (ratios of pair counts, argmax outputs) are never pinned across machines: they are
    pinned exactly only on the machine the pins were taken on (:data:`PINNED_ON`), where a refactor that
    claims "no behaviour change" must leave every figure as it was; elsewhere that test skips, naming what
    differs.

**How the tolerances were measured.** The tiny Table 3 under every oneDNN ISA cap of the reference machine
(``ONEDNN_MAX_CPU_ISA`` = AVX512_CORE_AMX, AVX512_CORE_BF16, AVX512_CORE, AVX2, SSE41) and ATen's kernel level
(``ATEN_CPU_CAPABILITY`` = avx2, default, with and without the AVX2 cap): eight runs, four distinct kernel
sets. Largest deviation from the reference: val MAE 3.0e-4 relative (LUS MSE+wCL under AVX2), Spearman ρ
0.055 (one LUS panel: 0.118 → 0.173); an Intel Xeon with AMX (issue 25) gave LUS MSE val MAE 2.4e-5 relative
off. Accuracy moved by up to 0.2 and macro-F1 by up to 0.15 in the same runs: why (c) exists.
:data:`MAE_RTOL` is 10× the largest val-MAE deviation; :data:`RHO_ATOL` about 3× the largest ρ one (ρ moves in
steps: 0.009 per swapped pair of ranks on 11 LUS pairs, 0.1 on 5 MRI pairs).

History of the exact pins: first taken at commit c3bccaf before the back-half restructuring of issue 8
(unchanged to 1e-9 by it); re-pinned when the LUS phantom moved to generator 3, then when the fixture
started to run single-threaded (``tiny_table3`` in conftest.py).
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from learner.experiments.results import ExperimentResult

PINNED: dict[str, dict[str, float]] = {
    "LUS/mse": {
        "accuracy": 7 / 11, "macro_f1": 0.6904761904761905, "weighted_f1": 0.6969696969696969,
        "val_mae": 70.56001780668487, "rho_score": -0.5371291452680612, "rho_latent": 0.17272727272727276,
    },
    "LUS/mse+wcl": {
        "accuracy": 7 / 11, "macro_f1": 0.575, "weighted_f1": 0.6227272727272727,
        "val_mae": 70.56384192214033, "rho_score": -0.5371291452680612, "rho_latent": 0.11818181818181818,
    },
    "MRI/mse": {
        "accuracy": 0.4, "macro_f1": 0.2857142857142857, "weighted_f1": 0.45714285714285713,
        "val_mae": 3.7697737330227077, "rho_score": -0.15811388300841897, "rho_latent": -0.35909242322980395,
    },
    "MRI/mse+wcl": {
        "accuracy": 0.4, "macro_f1": 0.2857142857142857, "weighted_f1": 0.45714285714285713,
        "val_mae": 3.769215421413784, "rho_score": -0.15811388300841897, "rho_latent": -0.35909242322980395,
    },
}  # fmt: skip

PINNED_ON: dict[str, Any] = {
    "cpu": "AMD EPYC", "cpu_id": "AuthenticAMD 25 17 1",
    "caches": {"L1d": "32K", "L1i": "32K", "L2": "1024K", "L3": "32768K"},
    "isa_flags": [
        "avx", "avx2", "avx512_bf16", "avx512_bitalg", "avx512_vbmi2", "avx512_vnni", "avx512_vpopcntdq",
        "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512ifma", "avx512vbmi", "avx512vl", "f16c", "fma",
        "sse4_1", "sse4_2",
    ],
    "torch_cpu_capability": "AVX512", "onednn": "v3.12.0", "mkl": "2024.2", "torch": "2.13.0+cpu",
    "kernel_environment": {},
}  # fmt: skip
"""The machine and software the exact pins were taken on, as the encoder run's ``run.json`` records them."""

KERNEL_CHOICE = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR")
"""Environment variables that choose other kernels on the same CPU (thread counts do not: one thread here)."""

MAE_RTOL = 3e-3
RHO_ATOL = 0.15

ENCODER_RUN = Path("LUS", "mse", "seed-0", "encoder")
"""One encoder run of the tiny Table 3, whose ``run.json`` tells which machine made the numbers."""

VOLATILE = ("timing", "pretrain_seconds")
"""Wall times: the only entries of ``results.json`` that two identical runs may disagree on."""


def _measured(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for cell in results["cells"]:
        row = {name: cell[name] for name in ("accuracy", "macro_f1", "weighted_f1")}
        out[f"{cell['dataset']}/{cell['loss']}"] = row | {"val_mae": cell["regression"]["val_mae"]}
    for dataset, figure in results["figures"].items():
        for target, panels in figure.items():
            for loss, panel in panels["panels"].items():
                out[f"{dataset}/{loss}"][f"rho_{target}"] = panel["spearman_rho"]
    return out


def _results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def _without_wall_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_wall_times(item) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [_without_wall_times(item) for item in value]
    return value


def _kernel_fingerprint(run_dir: Path) -> dict[str, Any]:
    """The entries of :data:`PINNED_ON` as the run at ``run_dir`` recorded them."""
    record = json.loads((run_dir / "run.json").read_text())
    machine = record["machine"]
    fingerprint = {key: machine.get(key) for key in PINNED_ON if key in machine}
    fingerprint["torch"] = record["packages"]["torch"]
    fingerprint["kernel_environment"] = {
        key: value for key, value in machine["environment"].items() if key in KERNEL_CHOICE
    }
    return fingerprint


# (a) same machine: bit-identical --------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_table3_run_twice_is_bit_identical(
    tiny_table3: ExperimentResult, run_tiny_table3: Callable[[Path], ExperimentResult], tmp_path: Path
) -> None:
    again = run_tiny_table3(tmp_path / "again").out_dir
    first = tiny_table3.out_dir
    assert _without_wall_times(_results(again)) == _without_wall_times(_results(first))
    for name in ("table3.md", "table3.csv"):
        assert (again / name).read_text() == (first / name).read_text(), name


# (b) another machine: continuous figures within measured tolerances, formats by their shape ---------------


def test_tiny_table3_continuous_figures_are_close_to_the_pins(tiny_table3: ExperimentResult) -> None:
    measured = _measured(_results(tiny_table3.out_dir))
    assert set(measured) == set(PINNED)
    for key, expected in PINNED.items():
        got = measured[key]
        assert got["val_mae"] == pytest.approx(expected["val_mae"], rel=MAE_RTOL), key
        for rho in ("rho_score", "rho_latent"):
            assert got[rho] == pytest.approx(expected[rho], abs=RHO_ATOL), f"{key} {rho}"


def test_tiny_table3_counts_do_not_depend_on_the_machine(tiny_table3: ExperimentResult) -> None:
    """Pair counts and test sizes come from the cohort and the split, not from a model's decision."""
    cells = {f"{c['dataset']}/{c['loss']}": c for c in _results(tiny_table3.out_dir)["cells"]}
    assert {key: cell["n_test_pairs"] for key, cell in cells.items()} == {
        "LUS/mse": 11, "LUS/mse+wcl": 11, "MRI/mse": 5, "MRI/mse+wcl": 5
    }  # fmt: skip
    assert cells["LUS/mse"]["pair_counts"]["test"] == {"deteriorated": 0, "improved": 4, "stable": 7}
    for cell in cells.values():
        assert sum(cell["pair_counts"]["test"].values()) == cell["n_test_pairs"]
        correct = cell["accuracy"] * cell["n_test_pairs"]  # a whole number of pairs, whatever was decided
        assert correct == pytest.approx(round(correct))
        assert 0 <= correct <= cell["n_test_pairs"]
        assert 0.0 <= cell["macro_f1"] <= 1.0


def test_tiny_table3_output_formats_are_unchanged(tiny_table3: ExperimentResult) -> None:
    out = tiny_table3.out_dir
    on_disk = _results(out)
    assert sorted(on_disk) == [
        "baseline_loss", "cells", "comparisons", "datasets", "figures", "kind", "losses", "seeds", "summary",
        "timing",  # the wall time per stage (issue 11)
    ]  # fmt: skip
    # pretrain_*: the measured pretraining wall time, added with the sweep (issue 9)
    # answers: the regressor's own answers and the classifier adapted to the test prior (issue 20)
    assert sorted(on_disk["cells"][0]) == [
        "accuracy", "answers", "ci", "clips_per_scan", "dataset", "dir", "encoder_fingerprint", "loss",
        "macro_f1", "n_test_pairs", "pair_counts", "pretrain_resumed", "pretrain_seconds", "regression",
        "seed", "weighted_f1",
    ]  # fmt: skip
    answers = ["classifier_bbse", "classifier_em", "delta_score", "delta_score_margin"]
    assert sorted(on_disk["cells"][0]["answers"]) == answers  # LUS: no val visit pairs, no calibrated row
    calibrated = [
        "classifier_bbse",
        "classifier_em",
        "delta_score",
        "delta_score_calibrated",
        "delta_score_margin",
    ]
    assert sorted(on_disk["cells"][0]["answers"]["delta_score"]) == [
        "accuracy",
        "ci",
        "macro_f1",
        "weighted_f1",
    ]
    assert all(
        sorted(row["answers"]) == (calibrated if row["dataset"] == "MRI" else answers)
        for row in on_disk["summary"]
    )
    panel = on_disk["figures"]["LUS"]["latent"]["panels"]["mse"]
    assert sorted(panel) == [
        "alpha", "ci_high", "ci_low", "n_boot", "n_pairs", "n_patients", "spearman_rho", "target"
    ]  # fmt: skip
    lines = (out / "table3.md").read_text().splitlines()
    header = " | ".join(f"{d} {m}" for d in ("LUS", "MRI") for m in ("Accuracy", "macro-F1", "weighted-F1"))
    assert lines[:2] == [f"| Loss | {header} |", "|---|---|---|---|---|---|---|"]
    # one seed: no spread (issue 13 made a degenerate ± 0.00 read n/a)
    figure = r"\d{1,3}\.\d\d ± n/a"
    answers = [
        "Δ predicted score",
        "Δ predicted score, val margin",
        "Δ predicted score, calibrated",
        r"classifier \+ EM test prior \(transductive\)",
        r"classifier \+ BBSE test prior \(transductive\)",
    ]
    losses = ["MSE", r"MSE \+ wCL"]
    names = losses + [rf"\*{answer}, {loss}\*" for answer in answers for loss in losses]
    for line, name in zip(lines[2:14], names, strict=True):
        mri = rf"{figure} \| {figure} \| {figure}"
        lus = r"— \| — \| —" if "calibrated" in name else mri  # LUS has no val visit pairs
        assert re.fullmatch(rf"\| {name} \| {lus} \| {mri} \|", line), line
    columns = ["dataset", "loss", "n_seeds"] + [
        f"{metric}_{part}"
        for metric in ("accuracy", "macro_f1", "weighted_f1")
        for part in ("mean", "std", "diff_mean", "diff_low", "diff_high")
    ]
    assert list(pd.read_csv(out / "table3.csv").columns) == columns
    # runtime.vector_figures=false in the tiny config: no SVG or PDF copies
    assert sorted(p.name for p in out.glob("fig1_*")) == [
        "fig1_LUS_latent.png", "fig1_LUS_score.png", "fig1_MRI_latent.png", "fig1_MRI_score.png"
    ]  # fmt: skip


def test_every_run_records_the_machine_that_decides_its_last_digits(tiny_table3: ExperimentResult) -> None:
    machine = json.loads((tiny_table3.out_dir / ENCODER_RUN / "run.json").read_text())["machine"]
    assert machine["cpu"]
    assert machine["threads"] == 1  # the fixture's single thread, as the run saw it
    assert isinstance(machine["torch_cpu_capability"], str)
    assert machine["onednn"].startswith("v")
    assert "avx2" in machine["isa_flags"] or platform.machine() != "x86_64"
    assert isinstance(machine["environment"], dict)


# (c) exact pins, on the machine they were taken on --------------------------------------------------------


def test_tiny_table3_numbers_are_the_pinned_ones_on_their_machine(tiny_table3: ExperimentResult) -> None:
    fingerprint = _kernel_fingerprint(tiny_table3.out_dir / ENCODER_RUN)
    differing = ", ".join(sorted(key for key in PINNED_ON if fingerprint.get(key) != PINNED_ON[key]))
    if differing:
        pytest.skip(f"exact pins were taken on another machine or kernel set (differs: {differing})")
    measured = _measured(_results(tiny_table3.out_dir))
    for key, expected in PINNED.items():
        assert measured[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), key
