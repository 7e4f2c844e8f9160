"""Typed results of the experiment grids (Tables 3 and 4, Fig. 1, Section 3) and their one JSON form.

An experiment's ``results.json`` holds one :data:`Results`: a :class:`Table3Results`, an
:class:`AblationResults` or a :class:`SweepResults`, told apart by their ``kind``. Every record here is a
frozen pydantic model, so the only (de)serialiser is pydantic's: :meth:`Record.to_json` writes a record,
:func:`load_results` reads a ``results.json`` back (one line naming the file when it is not one), and
dictionaries exist only at that file boundary. Each kind holds one :class:`Cell` per finished grid cell (one
seed of one :class:`GridKey`) and one :class:`SummaryRow` per grid key (mean ± std over seeds); Table 3 adds
the paired comparisons with the baseline objective and the Fig. 1 panels, the ablation its axes, the sweep
its settings and Fig. 1's ρ per cell.

A row of the grid (:class:`Keyed`) writes its key's axes as its own first fields, the way the tables list
them. The stage records a cell is built from (pretraining's ``metrics.json["best"]``, Fig. 1's
:meth:`learner.evaluation.embedding_analysis.DistanceAnalysis.to_metrics`) are carried as those stages wrote
them.

NaN (an undefined interval, a Pearson r of a constant prediction) is written as ``null`` and read back as
NaN (:data:`Number`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    computed_field,
    model_serializer,
    model_validator,
)

from learner.errors import RunDirError
from learner.evaluation.metrics import PairedDifference
from learner.layout import RunLayout
from learner.timing import Timing

METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1")
"""The test-pair metrics every cell reports and every summary averages."""

GRID_AXES: tuple[str, ...] = ("dataset", "setting", "backbone", "combine", "loss", "classifier")
"""The axes a grid key may have, in the order rows and files list them (Table 4's column order; ``setting``
is the sweep's)."""


def json_number(value: float | None) -> float:
    """A float read from JSON (or a stage record): ``null`` (written for NaN) back to NaN."""
    return math.nan if value is None else float(value)


def _nan_for_null(value: object) -> object:
    return math.nan if value is None else value


def _nan_for_nulls(value: object) -> object:
    if isinstance(value, Mapping):
        return {name: _nan_for_null(item) for name, item in value.items()}
    return value


Number = Annotated[float, BeforeValidator(_nan_for_null)]
"""A float that may be undefined: NaN in memory, ``null`` in ``results.json``."""

Interval = tuple[Number, Number]
"""A 95% interval (low, high); NaN bounds when undefined."""

Scalar = bool | int | float | str | None
"""A value of a stage's own metrics record (``null`` in JSON is None)."""

Difference = Annotated[PairedDifference, BeforeValidator(_nan_for_nulls)]
"""A paired difference over seeds (:func:`learner.evaluation.metrics.paired_difference_ci`) as stored."""


class Record(BaseModel):
    """A frozen record of ``results.json``: pydantic validates it on the way in and writes it out."""

    model_config = ConfigDict(frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values (NaN → ``null``, tuples → lists), for ``atomic.write_json``."""
        record: dict[str, Any] = json.loads(self.model_dump_json())  # pydantic's JSON mode writes NaN as null
        return record


class GridKey(Record):
    """Where a row sits in the grid; an axis the experiment does not vary is None (left out of the JSON)."""

    dataset: str
    loss: str
    setting: str | None = None
    backbone: str | None = None
    combine: str | None = None
    classifier: str | None = None

    @property
    def variant(self) -> tuple[str, str] | None:
        """``(combine, classifier)`` of an ablation row (one of its cell's classifier variants), else None."""
        return None if self.combine is None else (self.combine, str(self.classifier))

    def axes(self) -> dict[str, str]:
        """The axes the experiment varies, in :data:`GRID_AXES` order."""
        return {axis: value for axis in GRID_AXES if (value := getattr(self, axis)) is not None}

    @model_serializer(mode="plain")
    def _varied_axes(self) -> dict[str, str]:
        return self.axes()


class Keyed(Record):
    """A row of the grid: its :class:`GridKey`'s axes are written as the row's own first fields."""

    key: GridKey

    @model_validator(mode="before")
    @classmethod
    def _gather_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "key" not in data:
            row = {name: value for name, value in data.items() if name not in GRID_AXES}
            return row | {"key": {axis: data[axis] for axis in GRID_AXES if axis in data}}
        return data

    @model_serializer(mode="wrap")
    def _spread_key(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        row: dict[str, Any] = handler(self)
        return {**row.pop("key"), **row}


class PairAnswer(Record):
    """The test metrics (fractions) of one answer to a cell's test pairs other than its pair classifier's,
    with 95% patient-bootstrap intervals: the pretrained regressor's own answer, or the classifier adapted to
    the test prior (:data:`learner.experiments.answers.ANSWERS`). Read from a classification's
    ``metrics.json`` test entry as well (its other fields are ignored)."""

    accuracy: Number
    macro_f1: Number
    weighted_f1: Number
    ci: dict[str, Interval]


class Cell(Keyed):
    """One finished cell (one seed of one grid key): its test metrics with 95% patient-bootstrap intervals
    (``ci``: metric → (low, high)), its encoder's val-split regression quality (pretraining's
    ``metrics.json["best"]`` row), the class balance of every pair set, and the measured wall time of its
    pretraining (:class:`learner.experiments.stages.EncoderStage`; None when not measured, and only the part
    after the resume when ``pretrain_resumed``). ``encoder_dir`` is None when the encoder is the cell's own
    (``<dir>/encoder``), else the folder of the encoder it reuses (see :attr:`encoder_folder`)."""

    seed: int
    dir: str
    clips_per_scan: int
    accuracy: Number
    macro_f1: Number
    weighted_f1: Number
    ci: dict[str, Interval]
    n_test_pairs: int
    regression: dict[str, Scalar]
    pair_counts: dict[str, dict[str, int]]
    encoder_fingerprint: str
    pretrain_seconds: float | None = None
    pretrain_resumed: bool = False
    encoder_dir: str | None = Field(default=None, exclude_if=lambda folder: folder is None)
    """Written only when the encoder is another cell's, so grids without shared encoders keep their format."""
    answers: dict[str, PairAnswer] = Field(default_factory=dict)
    """Other answers to the same test pairs, by :data:`learner.experiments.answers.ANSWERS` name."""

    @property
    def classification_folder(self) -> Path:
        """The cell's classification stage, relative to the experiment: ``<dir>/classifier``, or
        ``<dir>/classify-<combine>-<head>`` for one classifier variant of an ablation cell."""
        return RunLayout(self.dir).classification(variant=self.key.variant).root

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
        return {**self.key.axes(), "seed": self.seed}


class MeanStd(Record):
    """Mean and sample standard deviation (ddof 1; 0 for one seed) of a metric over seeds."""

    mean: Number
    std: Number

    @classmethod
    def over(cls, values: Sequence[float]) -> MeanStd:
        """Mean and sample std (ddof 1; 0 for one value) of a number over seeds (float64)."""
        array = np.asarray(values, dtype=np.float64)
        return cls(mean=float(array.mean()), std=float(array.std(ddof=1)) if len(array) > 1 else 0.0)


class SummaryRow(Keyed):
    """One row of the paper's table: a grid key, its number of seeds and each of :data:`METRICS` over them."""

    n_seeds: int
    accuracy: MeanStd
    macro_f1: MeanStd
    weighted_f1: MeanStd
    answers: dict[str, dict[str, MeanStd]] = Field(default_factory=dict)
    """The same metrics of every other answer (:class:`PairAnswer`) that each seed has, by name."""

    @property
    def stats(self) -> dict[str, MeanStd]:
        """Each of :data:`METRICS` → its mean ± std over the seeds."""
        return {name: getattr(self, name) for name in METRICS}


class DatasetSummary(Record):
    """A dataset column: its spec, its size, PHANTOM or REAL, and the generator's record of a phantom."""

    name: str
    manifest: str
    scale: str
    scans: int
    patients: int
    data_source: str
    phantom: dict[str, Any] | None


class Figure(Record):
    """One Fig. 1 image of one dataset: the file (in the experiment folder), the seed its cells share, per
    objective the panel's Spearman ρ record (:meth:`DistanceAnalysis.to_metrics`), and the same record of
    each reference embedding (:mod:`learner.evaluation.reference_embeddings`) of the same pairs."""

    png: str
    seed: int
    panels: Mapping[str, Mapping[str, Scalar]]
    references: Mapping[str, Mapping[str, Scalar]] = Field(default_factory=dict)


class Correlation(Record):
    """Fig. 1's statistic of one encoder against one target: Spearman ρ between the cosine distance and the
    |Δ target| of the test intra-patient pairs, with its 95% patient-bootstrap interval."""

    rho: Number
    ci_low: Number
    ci_high: Number
    n_pairs: int


class SweepCell(Keyed):
    """The sweep's extra numbers of one cell (one seed): Fig. 1's ρ per target (``score``, and ``latent``
    on a phantom cohort); ``encoders_of``: the setting whose encoder the cell reuses (it changes only the
    classifier), None for its own."""

    seed: int
    correlations: dict[str, Correlation]
    encoders_of: str | None = None


class SweepRow(Keyed):
    """One row of ``sweep.md``: a (dataset, setting, loss) over its seeds.

    ``rho`` (target → mean ± std over seeds of Spearman ρ) with ``rho_ci`` (target → the 95%
    patient-bootstrap interval of the lowest seed, ``ci_seed``, as Fig. 1 shows it); intra-patient
    ``macro_f1``; the encoders' best val MAE and the predict-the-train-mean ``baseline_mae`` (score units);
    ``pretrain_seconds`` (None when a cell's time was not measured); ``resumed``: a cell's time covers only
    the part after a resume; ``encoders_of``: the setting whose encoders the row reuses (its seconds are
    that setting's, spent once), None when it pretrained its own.
    """

    n_seeds: int
    ci_seed: int
    rho: dict[str, MeanStd]
    rho_ci: dict[str, Interval]
    macro_f1: MeanStd
    val_mae: MeanStd
    baseline_mae: MeanStd
    pretrain_seconds: MeanStd | None
    resumed: bool
    encoders_of: str | None = None
    delta_macro_f1: MeanStd | None = None
    """Macro-F1 of the regressor's own answer (:class:`PairAnswer`), when every seed has one."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mae_reduction(self) -> float:
        """1 − val MAE / baseline MAE of the seed means (0.25: the encoders' error is 25% lower)."""
        return 1.0 - self.val_mae.mean / self.baseline_mae.mean if self.baseline_mae.mean else math.nan


class Sweep(Record):
    """What a sweep adds to its results: its named settings (name → dotted config overrides), the per-cell
    correlations and the rows of ``sweep.md``."""

    settings: dict[str, dict[str, Any]]
    cells: list[SweepCell]
    rows: list[SweepRow]


Comparisons = dict[str, dict[str, dict[str, Difference]]]
"""dataset → loss → metric → the paired difference (loss − baseline) over seeds."""


class GridResults(Record):
    """What every experiment grid computed: its datasets, axes, cells and summary rows, and ``timing``, the
    wall time per stage of the run that wrote the file (only that invocation: a resumed run's earlier work is
    not in it)."""

    datasets: list[DatasetSummary]
    losses: list[str]
    seeds: list[int]
    cells: list[Cell]
    summary: list[SummaryRow]
    timing: Timing | None = None


class Table3Results(GridResults):
    """Table 3 and Fig. 1: ``comparisons`` with ``baseline_loss``, and ``figures`` (dataset → target →
    :class:`Figure`)."""

    kind: Literal["table3"] = "table3"
    baseline_loss: str
    comparisons: Comparisons
    figures: dict[str, dict[str, Figure]]


class AblationResults(GridResults):
    """Table 4: the ablation's own axes besides the losses and seeds."""

    kind: Literal["ablation"] = "ablation"
    backbones: list[str]
    combines: list[str]
    classifiers: list[str]


class SweepResults(GridResults):
    """A sweep: its settings and Fig. 1's ρ per cell and row (:class:`Sweep`)."""

    kind: Literal["sweep"] = "sweep"
    sweep: Sweep


Results = Annotated[Table3Results | AblationResults | SweepResults, Field(discriminator="kind")]
"""The content of an experiment's ``results.json``, one type per kind of experiment."""

_RESULTS: TypeAdapter[Table3Results | AblationResults | SweepResults] = TypeAdapter(Results)


def load_results(path: str | os.PathLike[str]) -> Results:
    """Read an experiment's ``results.json``.

    Raises:
        RunDirError: the file is not JSON or not the results of this version's experiments (one line that
            names the file and the first problem).
    """
    try:
        return _RESULTS.validate_python(json.loads(Path(path).read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise RunDirError(
            f"{path}: not the results of an experiment of this version ({where}: {first['msg']}); "
            "rerun the experiment"
        ) from None


@dataclass(frozen=True)
class ExperimentResult:
    """A finished experiment grid: its run directory and its results (the report renders its table)."""

    out_dir: Path
    results: Results
