"""Typed results of the experiment grids (Tables 3 and 4, Fig. 1, Section 3) and their one JSON form.

An experiment's ``results.json`` is :meth:`Results.to_json` of a :class:`Results`; everything that reads it
back (``learner report``) goes through :meth:`Results.from_json`, so dictionaries exist only at that file
boundary. A :class:`Results` holds one :class:`Cell` per finished grid cell (one seed of one
:class:`GridKey`), one :class:`SummaryRow` per grid key (mean ± std over seeds), and for Table 3 the paired
comparisons with the baseline objective and the Fig. 1 panels.

The stage records a cell is built from (pretraining's and the classifier's ``metrics.json``, Fig. 1's
:meth:`learner.evaluation.embedding_analysis.DistanceAnalysis.to_metrics`) are kept as those stages wrote
them: they are the stages' own file formats, carried through unchanged.

NaN (an undefined interval, a Pearson r of a constant prediction) is written as ``null``
(:func:`learner.atomic.write_json`) and read back as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from learner.evaluation.metrics import PairedDifference
from learner.layout import RunLayout
from learner.timing import Timing

METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1")
"""The test-pair metrics every cell reports and every summary averages."""

GRID_AXES: tuple[str, ...] = ("dataset", "setting", "backbone", "combine", "loss", "classifier")
"""The axes a grid key may have, in the order rows and files list them (Table 4's column order; ``setting``
is the sweep's)."""

OPTIONAL_AXES: tuple[str, ...] = ("backbones", "combines", "classifiers")
"""Grid axes only the ablation varies (Table 3 keeps the config's backbone, combine and classifier)."""

Scalar = float | int | str | None
"""A value of a stage's own metrics record (``null`` in JSON is None)."""


def json_number(value: float | None) -> float:
    """A float read from JSON (or a stage record): ``null`` (written for NaN) back to NaN."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class GridKey:
    """Where a row sits in the grid; an axis the experiment does not vary is None (left out of the JSON)."""

    dataset: str
    loss: str
    setting: str | None = None
    backbone: str | None = None
    combine: str | None = None
    classifier: str | None = None

    def to_json(self) -> dict[str, str]:
        """The axes the experiment varies, in :data:`GRID_AXES` order."""
        return {axis: value for axis in GRID_AXES if (value := getattr(self, axis)) is not None}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> GridKey:
        """The key of a ``cells`` or ``summary`` row of ``results.json``."""
        return cls(**{axis: row[axis] for axis in GRID_AXES if axis in row})


@dataclass(frozen=True)
class PairAnswer:
    """The test metrics (fractions) of one answer to a cell's test pairs other than its pair classifier's,
    with 95% patient-bootstrap intervals: the pretrained regressor's own answer, or the classifier adapted to
    the test prior (:data:`learner.experiments.classify.ANSWERS`)."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    ci: dict[str, tuple[float, float]]

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> PairAnswer:
        """From a classification's test metrics (``metrics.json``) or a ``results.json`` entry."""
        ci = {name: (json_number(low), json_number(high)) for name, (low, high) in row["ci"].items()}
        return cls(**{name: float(row[name]) for name in METRICS}, ci=ci)

    def to_json(self) -> dict[str, Any]:
        """An entry of a cell's ``answers`` in ``results.json``."""
        ci = {name: list(bounds) for name, bounds in self.ci.items()}
        return {**{name: getattr(self, name) for name in METRICS}, "ci": ci}


@dataclass(frozen=True)
class Cell:
    """One finished cell (one seed of one grid key): its test metrics with 95% patient-bootstrap intervals
    (``ci``: metric → (low, high)), its encoder's val-split regression quality (pretraining's
    ``metrics.json["best"]`` row), the class balance of every pair set, and the measured wall time of its
    pretraining (:class:`learner.experiments.stages.EncoderStage`; None when not measured, and only the part
    after the resume when ``pretrain_resumed``). ``encoder_dir`` is None when the encoder is the cell's own
    (``<dir>/encoder``), else the folder of the encoder it reuses (see :attr:`encoder_folder`)."""

    key: GridKey
    seed: int
    dir: str
    clips_per_scan: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    ci: dict[str, tuple[float, float]]
    n_test_pairs: int
    regression: dict[str, Scalar]
    pair_counts: dict[str, dict[str, int]]
    encoder_fingerprint: str
    pretrain_seconds: float | None = None
    pretrain_resumed: bool = False
    encoder_dir: str | None = None
    answers: dict[str, PairAnswer] = field(default_factory=dict)
    """Other answers to the same test pairs, by :data:`learner.experiments.classify.ANSWERS` name."""

    @property
    def classification_folder(self) -> Path:
        """The cell's classification stage, relative to the experiment: ``<dir>/classifier``, or
        ``<dir>/classify-<combine>-<head>`` for one classifier variant of an ablation cell."""
        variant = None if self.key.combine is None else (self.key.combine, str(self.key.classifier))
        return RunLayout(self.dir).classification(variant=variant).root

    @property
    def encoder_folder(self) -> str:
        """The cell's encoder run, relative to the experiment: ``<dir>/encoder``, or ``encoder_dir`` when
        the cell reuses another cell's encoder (a sweep setting that changes only the classifier)."""
        return self.encoder_dir or str(RunLayout(self.dir).encoder().root)

    def metric(self, name: str) -> float:
        """The test value of one of :data:`METRICS`."""
        return float(getattr(self, name))

    def coordinates(self) -> dict[str, str | int]:
        """The grid axes and the seed, as the reports' key columns."""
        return {**self.key.to_json(), "seed": self.seed}

    def to_json(self) -> dict[str, Any]:
        """A ``cells`` row of ``results.json`` (``encoder_dir`` only when the encoder is another cell's, so
        grids without shared encoders keep their format)."""
        row = {
            **self.coordinates(),
            "dir": self.dir,
            "clips_per_scan": self.clips_per_scan,
            **{name: self.metric(name) for name in METRICS},
            "ci": {name: list(bounds) for name, bounds in self.ci.items()},
            "n_test_pairs": self.n_test_pairs,
            "regression": self.regression,
            "pair_counts": self.pair_counts,
            "encoder_fingerprint": self.encoder_fingerprint,
            "pretrain_seconds": self.pretrain_seconds,
            "pretrain_resumed": self.pretrain_resumed,
        }
        if self.answers:
            row["answers"] = {name: answer.to_json() for name, answer in self.answers.items()}
        return row if self.encoder_dir is None else row | {"encoder_dir": self.encoder_dir}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Cell:
        """A cell from its ``results.json`` row."""
        typed = ("key", "ci", "answers")
        plain = {f.name: row[f.name] for f in fields(cls) if f.name not in typed and f.name in row}
        ci = {name: (json_number(low), json_number(high)) for name, (low, high) in row["ci"].items()}
        answers = {name: PairAnswer.from_json(answer) for name, answer in row.get("answers", {}).items()}
        return cls(key=GridKey.from_json(row), ci=ci, answers=answers, **plain)


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof 1; 0 for one seed) of a metric over seeds."""

    mean: float
    std: float

    @classmethod
    def over(cls, values: Sequence[float]) -> MeanStd:
        """Mean and sample std (ddof 1; 0 for one value) of a number over seeds (float64)."""
        array = np.asarray(values, dtype=np.float64)
        return cls(mean=float(array.mean()), std=float(array.std(ddof=1)) if len(array) > 1 else 0.0)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> MeanStd:
        """Read back :func:`dataclasses.asdict` of a mean ± std (``null`` → NaN)."""
        return cls(json_number(value["mean"]), json_number(value["std"]))


@dataclass(frozen=True)
class SummaryRow:
    """One row of the paper's table: a grid key, its number of seeds and each metric over them."""

    key: GridKey
    n_seeds: int
    stats: dict[str, MeanStd]
    answers: dict[str, dict[str, MeanStd]] = field(default_factory=dict)
    """The same metrics of every other answer (:class:`PairAnswer`) that each seed has, by name."""

    def to_json(self) -> dict[str, Any]:
        """A ``summary`` row of ``results.json``."""
        row = {**self.key.to_json(), "n_seeds": self.n_seeds} | {
            name: asdict(value) for name, value in self.stats.items()
        }
        if self.answers:
            row["answers"] = {
                answer: {name: asdict(value) for name, value in stats.items()}
                for answer, stats in self.answers.items()
            }
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> SummaryRow:
        """A summary row from ``results.json``."""
        stats = {name: MeanStd.from_json(row[name]) for name in METRICS}
        answers = {
            answer: {name: MeanStd.from_json(values[name]) for name in METRICS}
            for answer, values in row.get("answers", {}).items()
        }
        return cls(key=GridKey.from_json(row), n_seeds=row["n_seeds"], stats=stats, answers=answers)


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset column: its spec, its size, PHANTOM or REAL, and the generator's record of a phantom."""

    name: str
    manifest: str
    scale: str
    scans: int
    patients: int
    data_source: str
    phantom: dict[str, object] | None

    def to_json(self) -> dict[str, Any]:
        """A ``datasets`` entry of ``results.json``."""
        return asdict(self)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> DatasetSummary:
        """A dataset entry from ``results.json``."""
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Figure:
    """One Fig. 1 image of one dataset: the file (in the experiment folder), the seed its cells share, per
    objective the panel's Spearman ρ record (:meth:`DistanceAnalysis.to_metrics`), and the same record of
    each reference embedding (:mod:`learner.evaluation.reference_embeddings`) of the same pairs."""

    png: str
    seed: int
    panels: Mapping[str, Mapping[str, Scalar]]
    references: Mapping[str, Mapping[str, Scalar]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A ``figures[dataset][target]`` entry of ``results.json``."""
        return asdict(self)


@dataclass(frozen=True)
class Correlation:
    """Fig. 1's statistic of one encoder against one target: Spearman ρ between the cosine distance and the
    |Δ target| of the test intra-patient pairs, with its 95% patient-bootstrap interval."""

    rho: float
    ci_low: float
    ci_high: float
    n_pairs: int

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Correlation:
        """Read back :func:`dataclasses.asdict` of a correlation (``null`` → NaN)."""
        rho, low, high = (json_number(row[name]) for name in ("rho", "ci_low", "ci_high"))
        return cls(rho=rho, ci_low=low, ci_high=high, n_pairs=int(row["n_pairs"]))


@dataclass(frozen=True)
class SweepCell:
    """The sweep's extra numbers of one cell (one seed): Fig. 1's ρ per target (``score``, and ``latent``
    on a phantom cohort); ``encoders_of``: the setting whose encoder the cell reuses (it changes only the
    classifier), None for its own."""

    key: GridKey
    seed: int
    correlations: dict[str, Correlation]
    encoders_of: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A ``sweep.cells`` row of ``results.json``."""
        targets = {target: asdict(c) for target, c in self.correlations.items()}
        out = {**self.key.to_json(), "seed": self.seed, "correlations": targets}
        return out | {"encoders_of": self.encoders_of}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> SweepCell:
        """A sweep cell from its ``results.json`` row."""
        targets = {target: Correlation.from_json(c) for target, c in row["correlations"].items()}
        return cls(
            key=GridKey.from_json(row),
            seed=row["seed"],
            correlations=targets,
            encoders_of=row.get("encoders_of"),
        )


@dataclass(frozen=True)
class SweepRow:
    """One row of ``sweep.md``: a (dataset, setting, loss) over its seeds.

    ``rho`` (target → mean ± std over seeds of Spearman ρ) with ``rho_ci`` (target → the 95%
    patient-bootstrap interval of the lowest seed, ``ci_seed``, as Fig. 1 shows it); intra-patient
    ``macro_f1``; the encoders' best val MAE and the predict-the-train-mean ``baseline_mae`` (score units);
    ``pretrain_seconds`` (None when a cell's time was not measured); ``resumed``: a cell's time covers only
    the part after a resume; ``encoders_of``: the setting whose encoders the row reuses (its seconds are
    that setting's, spent once), None when it pretrained its own.
    """

    key: GridKey
    n_seeds: int
    ci_seed: int
    rho: dict[str, MeanStd]
    rho_ci: dict[str, tuple[float, float]]
    macro_f1: MeanStd
    val_mae: MeanStd
    baseline_mae: MeanStd
    pretrain_seconds: MeanStd | None
    resumed: bool
    encoders_of: str | None = None
    delta_macro_f1: MeanStd | None = None
    """Macro-F1 of the regressor's own answer (:class:`PairAnswer`), when every seed has one."""

    @property
    def mae_reduction(self) -> float:
        """1 − val MAE / baseline MAE of the seed means (0.25: the encoders' error is 25% lower)."""
        return 1.0 - self.val_mae.mean / self.baseline_mae.mean if self.baseline_mae.mean else math.nan

    def to_json(self) -> dict[str, Any]:
        """A ``sweep.rows`` row of ``results.json``."""
        out: dict[str, Any] = {**self.key.to_json(), "n_seeds": self.n_seeds, "ci_seed": self.ci_seed}
        out["rho"] = {target: asdict(v) for target, v in self.rho.items()}
        out["rho_ci"] = {target: list(bounds) for target, bounds in self.rho_ci.items()}
        for name in ("macro_f1", "delta_macro_f1", "val_mae", "baseline_mae", "pretrain_seconds"):
            value = getattr(self, name)
            out[name] = asdict(value) if value is not None else None
        out |= {"mae_reduction": self.mae_reduction, "resumed": self.resumed}
        return out | {"encoders_of": self.encoders_of}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> SweepRow:
        """A sweep row from ``results.json``."""
        seconds = row["pretrain_seconds"]
        return cls(
            key=GridKey.from_json(row),
            n_seeds=row["n_seeds"],
            ci_seed=row["ci_seed"],
            rho={target: MeanStd.from_json(v) for target, v in row["rho"].items()},
            rho_ci={t: (json_number(low), json_number(high)) for t, (low, high) in row["rho_ci"].items()},
            macro_f1=MeanStd.from_json(row["macro_f1"]),
            val_mae=MeanStd.from_json(row["val_mae"]),
            baseline_mae=MeanStd.from_json(row["baseline_mae"]),
            pretrain_seconds=None if seconds is None else MeanStd.from_json(seconds),
            resumed=row["resumed"],
            encoders_of=row.get("encoders_of"),
            delta_macro_f1=None
            if row.get("delta_macro_f1") is None
            else MeanStd.from_json(row["delta_macro_f1"]),
        )


@dataclass(frozen=True)
class Sweep:
    """What a sweep adds to :class:`Results`: its named settings (name → dotted config overrides), the
    per-cell correlations and the rows of ``sweep.md``."""

    settings: dict[str, dict[str, Any]]
    cells: list[SweepCell]
    rows: list[SweepRow]

    def to_json(self) -> dict[str, Any]:
        """The ``sweep`` entry of ``results.json``."""
        return {
            "settings": self.settings,
            "cells": [c.to_json() for c in self.cells],
            "rows": [r.to_json() for r in self.rows],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sweep:
        """Read back :meth:`to_json`."""
        return cls(
            settings={name: dict(keys) for name, keys in data["settings"].items()},
            cells=[SweepCell.from_json(c) for c in data["cells"]],
            rows=[SweepRow.from_json(r) for r in data["rows"]],
        )


Comparisons = dict[str, dict[str, dict[str, PairedDifference]]]
"""dataset → loss → metric → the paired difference (loss − baseline) over seeds."""


@dataclass(frozen=True)
class Results:
    """Everything an experiment grid computed (``results.json``).

    ``kind`` is ``table3``, ``ablation`` or ``sweep``. ``backbones``, ``combines`` and ``classifiers`` are
    the ablation's axes (None otherwise); ``baseline_loss``, ``comparisons`` and ``figures`` (dataset →
    target → :class:`Figure`) are Table 3's; ``sweep`` (:class:`Sweep`) is the sweep's. ``timing``: the wall
    time per stage of the run that wrote the file (only that invocation: a resumed run's earlier work is not
    in it; None in files written before it was measured).
    """

    kind: str
    datasets: list[DatasetSummary]
    losses: list[str]
    seeds: list[int]
    cells: list[Cell]
    summary: list[SummaryRow]
    backbones: list[str] | None = None
    combines: list[str] | None = None
    classifiers: list[str] | None = None
    baseline_loss: str | None = None
    comparisons: Comparisons | None = None
    figures: dict[str, dict[str, Figure]] | None = None
    sweep: Sweep | None = None
    timing: Timing | None = None

    def to_json(self) -> dict[str, Any]:
        """The content of ``results.json`` (only the fields of this kind of experiment)."""
        out: dict[str, Any] = {"kind": self.kind, "datasets": [d.to_json() for d in self.datasets]}
        out |= {axis: list(values) for axis in OPTIONAL_AXES if (values := getattr(self, axis)) is not None}
        out |= {"losses": list(self.losses), "seeds": list(self.seeds)}
        if self.baseline_loss is not None:
            out["baseline_loss"] = self.baseline_loss
        out |= {"cells": [c.to_json() for c in self.cells], "summary": [r.to_json() for r in self.summary]}
        if self.comparisons is not None:
            out["comparisons"] = {
                dataset: {
                    loss: {m: asdict(d) for m, d in by_metric.items()} for loss, by_metric in rows.items()
                }
                for dataset, rows in self.comparisons.items()
            }
        if self.figures is not None:
            out["figures"] = {
                dataset: {target: figure.to_json() for target, figure in targets.items()}
                for dataset, targets in self.figures.items()
            }
        if self.sweep is not None:
            out["sweep"] = self.sweep.to_json()
        if self.timing is not None:
            out["timing"] = self.timing.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Results:
        """Read back what :meth:`to_json` wrote (``json.loads`` of ``results.json``)."""
        comparisons = figures = None
        if "comparisons" in data:
            comparisons = {
                dataset: {
                    loss: {m: _difference(d) for m, d in by_metric.items()}
                    for loss, by_metric in rows.items()
                }
                for dataset, rows in data["comparisons"].items()
            }
        if "figures" in data:
            figures = {
                dataset: {target: Figure(**figure) for target, figure in targets.items()}
                for dataset, targets in data["figures"].items()
            }
        return cls(
            kind=data["kind"],
            datasets=[DatasetSummary.from_json(d) for d in data["datasets"]],
            losses=list(data["losses"]),
            seeds=list(data["seeds"]),
            cells=[Cell.from_json(c) for c in data["cells"]],
            summary=[SummaryRow.from_json(r) for r in data["summary"]],
            **{axis: list(data[axis]) for axis in OPTIONAL_AXES if axis in data},
            baseline_loss=data.get("baseline_loss"),
            comparisons=comparisons,
            figures=figures,
            sweep=Sweep.from_json(data["sweep"]) if "sweep" in data else None,
            timing=Timing.from_json(data["timing"]) if "timing" in data else None,
        )


def _difference(row: Mapping[str, Any]) -> PairedDifference:
    return PairedDifference(
        mean=json_number(row["mean"]),
        low=json_number(row["low"]),
        high=json_number(row["high"]),
        std=json_number(row["std"]),
        n=row["n"],
    )


@dataclass(frozen=True)
class ExperimentResult:
    """A finished experiment grid: its run directory, its :class:`Results` and the Markdown of its table
    (``table3.md`` or ``table4.md``)."""

    out_dir: Path
    results: Results
    table: str
