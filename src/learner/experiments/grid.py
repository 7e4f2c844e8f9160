"""The grid engine behind Tables 3 and 4 (Section 3): the plan of cells, summaries over seeds, output files.

A grid cell is one config run through two resumable stages, pretraining and classification on the frozen
encoder (:mod:`learner.experiments.stages`). :mod:`learner.experiments.table3`,
:mod:`learner.experiments.sweep` and :mod:`learner.experiments.ablation` only say which cells exist and how
their folders are named; this module checks them all, runs the experiment and writes what it found.

**Checked first.** :func:`plan_grid` builds every cell's config, reads every manifest and checks the
output folder (and, on resume, every stage already in it) before :func:`execute` creates the run directory;
a new directory that fails before any cell saved a checkpoint is deleted again.

**Resumable.** Stages already complete are reused (:mod:`learner.experiments.stages`), so adding a loss,
seed or dataset to the grid and resuming computes only the new cells.

**Summary.** Cells sharing a grid key get mean ± sample std over seeds of accuracy, macro-F1 and
weighted-F1 (:func:`summarise`); the experiment writes its long-form CSV and ``results.json``
(:mod:`learner.experiments.results`) with :func:`write_outputs`; :mod:`learner.report` renders its table.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from learner import atomic
from learner.config import (
    ClassifierConfig,
    Config,
    DatasetSpec,
    Experiment,
    ExperimentConfig,
    LossConfig,
    PairConfig,
    apply_overrides,
)
from learner.data.manifest import Manifest, load_manifest
from learner.data.provenance import data_source, phantom_record
from learner.data.scales import scale_from_config
from learner.errors import ConfigError
from learner.experiments.results import (
    METRICS,
    Cell,
    DatasetSummary,
    ExperimentResult,
    GridKey,
    MeanStd,
    Results,
    SummaryRow,
    load_results,
)
from learner.experiments.stage_records import (
    check_interrupted_encoder,
    completed,
    manifest_digest,
    pretraining_digest,
    stage_where,
)
from learner.experiments.stages import CellJob, cell_config, ensure_encoder
from learner.experiments.tracking import track_init_stage
from learner.layout import RunLayout
from learner.losses.registry import build_view_objective, parse_loss_name
from learner.runs import (
    check_inputs_outside,
    check_run_dir,
    open_run_dir,
    read_record,
    removed_unless_started,
)
from learner.timing import CLOCK, Mark, Timing, stage
from learner.training.device import resolve_device
from learner.training.loggers import check_logger
from learner.training.plan import check_pretraining

log = logging.getLogger(__name__)


def announce(index: int, total: int, where: Path) -> None:
    """One progress line per cell in the experiment's log (and on stderr with ``-v``)."""
    log.info("cell %d/%d: %s", index, total, where.as_posix())


def collect_device(config: Config) -> str:
    """Where this process embeds: the config's device, except that when the cells ran elsewhere
    (``runtime.launcher`` not ``inline``) every stage is complete and nothing here needs CUDA."""
    requested = config.runtime.device if config.runtime.launcher == "inline" else "cpu"
    return str(resolve_device(requested))


def summarise(cells: Sequence[Cell]) -> list[SummaryRow]:
    """Mean, sample std (ddof 1; 0 for one seed) and n of every metric over the cells sharing a grid key."""
    groups: dict[GridKey, list[Cell]] = defaultdict(list)
    for cell in cells:
        groups[cell.key].append(cell)
    rows = []
    for key, members in groups.items():
        stats = {name: MeanStd.over([m.metric(name) for m in members]) for name in METRICS}
        answers = {  # an answer every seed has
            answer: {
                name: MeanStd.over([getattr(m.answers[answer], name) for m in members]) for name in METRICS
            }
            for answer in members[0].answers
            if all(answer in m.answers for m in members)
        }
        rows.append(SummaryRow(key=key, n_seeds=len(members), **stats, answers=answers))
    return rows


# ------------------------------------------------------------------------------------------ the grid
def check_grid(grid: ExperimentConfig, axes: Sequence[str] = ("losses", "seeds")) -> ExperimentConfig:
    """``grid``, validated before any work: datasets with unique names, every axis in ``axes`` non-empty,
    every loss name known.

    Raises:
        ConfigError: an empty axis, no dataset, two datasets sharing a name, or an unknown loss.
    """
    if not grid.datasets:
        raise ConfigError(
            "experiment.datasets is empty; list at least one {name, manifest, scale} or pass "
            "--dataset NAME=MANIFEST[@SCALE]"
        )
    names = [d.name for d in grid.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment.datasets: dataset names must be unique, got {names}")
    for axis in axes:
        if not getattr(grid, axis):
            raise ConfigError(f"experiment.{axis} is empty")
    for loss in grid.losses:
        parse_loss_name(loss)
    return grid


@dataclass(frozen=True)
class PlannedCell:
    """One cell of a grid before it runs: its folder (relative to the experiment), its pretraining config
    (``<where>/encoder``) and its classification stages (folder name under ``where``, grid key, config).

    Table 3 and the sweep have one classification stage per cell (``classifier``); the ablation has one
    per classifier variant, all on the same encoder. ``shares``: the earlier cell whose encoder this one
    reuses instead of pretraining its own (a sweep setting that changes only the classifier), else None."""

    dataset: str
    where: Path
    encoder: Config
    classifiers: tuple[tuple[str, GridKey, Config], ...]
    shares: PlannedCell | None = None


@dataclass(frozen=True)
class InitStage:
    """A self-supervised stage of a grid (``experiment.init``): a pretraining on the train and val scans of
    ``dataset``, without scores, in ``<where>/encoder``, whose encoder starts every cell planned with it."""

    dataset: str
    where: Path
    config: Config


@dataclass(frozen=True)
class GridPlan:
    """An experiment checked before any work (:func:`plan_grid`): settings, grid, every cell's config,
    the self-supervised stages that start them (none without ``experiment.init``), the datasets'
    manifests, the run directory's state, and which experiment it is (``kind``: ``table3``, ``ablation``,
    ``sweep``; recorded as ``run.json["grid"]``)."""

    config: Config
    grid: ExperimentConfig
    out_dir: Path
    resume: bool
    force: bool
    manifests: dict[str, Manifest]
    cells: tuple[PlannedCell, ...]
    device: str
    inits: tuple[InitStage, ...] = ()
    kind: str | None = None


INIT_FIXED: tuple[str, ...] = ("seed", "data.manifest", "data.scale", "data.split", "model", "loss.name")
"""Keys ``experiment.init_settings`` may not set: the stage shares them with the cells it starts (the split
above all: it must never see a test patient of theirs)."""


def init_stages(
    cells: Sequence[PlannedCell], grid: ExperimentConfig, root: Path
) -> tuple[tuple[PlannedCell, ...], tuple[InitStage, ...]]:
    """The self-supervised stage of every cell (``experiment.init``) and the cells started from it.

    A cell's stage is its encoder's config with the loss replaced by ``experiment.init`` (its other loss
    keys, the classifier and the pairs back at their defaults: a stage serves every objective and
    classifier) and ``experiment.init_settings`` applied; cells whose stages agree share one, in
    ``<dataset>/init-<name>/seed-<k>-<digest>``. Each cell's configs then get ``model.init`` = that stage's
    encoder run, whose split :func:`learner.training.plan.check_init_split` checks again when it starts.

    Raises:
        ConfigError: ``experiment.init`` is not a self-supervised objective, or ``init_settings`` sets a
            key the stage shares with the cells (:data:`INIT_FIXED`) or an invalid one.
    """
    name = grid.init
    if name is None:
        return tuple(cells), ()
    if build_view_objective(LossConfig(name=name)) is None:
        raise ConfigError(f"experiment.init: {name!r} is not a self-supervised objective (vicreg)")
    for key in grid.init_settings:
        if any(key == fixed or key.startswith(f"{fixed}.") for fixed in INIT_FIXED):
            raise ConfigError(f"experiment.init_settings: {key} is the cells' own (the stage shares it)")
    stages_by_digest: dict[str, InitStage] = {}
    started: dict[int, PlannedCell] = {}  # id of a planned cell → the same cell started from its stage
    for cell in cells:
        base = cell.encoder.model_copy(
            update={
                "loss": LossConfig(name=name),
                "classifier": ClassifierConfig(),
                "data": cell.encoder.data.model_copy(update={"pairs": PairConfig()}),
            }
        )
        try:
            config = apply_overrides(base, grid.init_settings)
        except ConfigError as exc:
            raise ConfigError(f"experiment.init_settings: {exc}") from None
        digest = pretraining_digest(config)
        if digest not in stages_by_digest:  # its folder, or the one an earlier run of the grid named it
            where = Path(cell.dataset) / f"init-{name}" / f"seed-{config.seed}-{digest[:8]}"
            stages_by_digest[digest] = InitStage(cell.dataset, stage_where(root, where, config), config)
        stage = stages_by_digest[digest]
        init = {"model.init": str(RunLayout(root).encoder(stage.where).root)}
        started[id(cell)] = replace(
            cell,
            encoder=apply_overrides(cell.encoder, init),
            classifiers=tuple((n, key, apply_overrides(cfg, init)) for n, key, cfg in cell.classifiers),
            shares=None if cell.shares is None else started[id(cell.shares)],
        )
    return tuple(started[id(cell)] for cell in cells), tuple(stages_by_digest.values())


def plan_grid(
    experiment: Experiment,
    out_dir: str | os.PathLike[str],
    cells: Callable[[Config, ExperimentConfig], Sequence[PlannedCell]],
    *,
    axes: Sequence[str] = ("losses", "seeds"),
    resume: bool = False,
    force: bool = False,
    kind: str | None = None,
) -> GridPlan:
    """Check an experiment (``kind``: ``table3``, ``ablation`` or ``sweep``) before it creates its run
    directory or decodes a scan: the grid's axes, every cell's config (built by ``cells``), every dataset's
    manifest, the device, the run directory and, with ``resume``, that it holds this kind of experiment and
    that every finished or interrupted stage in it was computed with the config and the manifest content
    asked for now (an interrupted pretraining: exactly, never extended).

    Raises:
        ConfigError, ManifestError, RunDirError: one line naming the key, file, row or stage folder.
    """
    config, grid = experiment.config, check_grid(experiment.grid, axes)
    check_logger(config.runtime.logger)  # the grid's tracker (runtime.logger) before any work
    root = Path(out_dir)
    unstarted = tuple(cells(config, grid))
    planned, inits = init_stages(unstarted, grid, root)
    manifests = {d.name: dataset_manifest(config, d) for d in grid.datasets}
    models: set[str] = set()
    pretrainings = [(c.dataset, c.encoder) for c in unstarted] + [(s.dataset, s.config) for s in inits]
    for dataset, settings in pretrainings:  # split, batch, objective and model of every pretraining first
        model = settings.model.model_dump_json() + f"{settings.data.channels}/{settings.data.size}"
        check_pretraining(settings, manifests[dataset], build_model=model not in models)
        if config.runtime.cells_side_by_side and not settings.data.device_data:
            raise ConfigError("runtime.cells_side_by_side needs data.device_data=true in every cell")
        models.add(model)
    device = collect_device(config)  # where the frozen encoders embed
    check_run_dir(root, resume=resume, force=force, kind="experiment", grid=kind)
    if force:
        check_inputs_outside(
            root, [path for m in manifests.values() for path in (m.source, *(r.path for r in m.records))]
        )
    if resume:  # a refused resume must fail here, before config.yaml is rewritten with settings never used
        digests = (read_record(root) or {}).get("manifests")  # the content the stages started on
        digests = digests if isinstance(digests, dict) else {}
        encoders = [(s.dataset, s.where, s.config) for s in inits]
        for dataset, where, settings in encoders + [(c.dataset, c.where, c.encoder) for c in planned]:
            stage = RunLayout(root).encoder(where)
            if completed(stage.root, settings) is None and stage.config.is_file():
                check_interrupted_encoder(settings, stage.root, digests.get(dataset))
        for cell in planned:
            for name, _, cfg in cell.classifiers:
                completed(root / cell.where / name, cfg)
    return GridPlan(config, grid, root, resume, force, manifests, planned, device, inits, kind)


def cell_jobs(plan: GridPlan, run_dir: Path) -> list[CellJob]:
    """The planned cells as self-contained jobs (what ``runtime.launcher`` hands to another process)."""
    jobs = []
    for cell in plan.cells:
        if cell.shares is not None:  # it shares another cell's encoder: the caller classifies it
            continue
        stages = tuple((name, cfg) for name, _, cfg in cell.classifiers)
        jobs.append(CellJob(run_dir, cell.where, cell.encoder, stages, plan.manifests[cell.dataset]))
    return jobs


def execute(plan: GridPlan, body: Callable[[Path], ExperimentResult]) -> ExperimentResult:
    """Open the experiment's run directory and run ``body(run_dir)``; a new directory is deleted again if
    ``body`` fails before any cell saved a checkpoint."""
    digests = {name: manifest_digest(manifest.source) for name, manifest in plan.manifests.items()}
    run_dir = open_experiment(
        plan.config,
        plan.grid,
        plan.out_dir,
        resume=plan.resume,
        force=plan.force,
        kind=plan.kind,
        manifests=digests,
    )
    with removed_unless_started(run_dir, new=not plan.resume):
        for init in plan.inits:  # here, before any cell is launched: every cell of a seed waits for it
            encoder_dir = RunLayout(run_dir).encoder(init.where).root
            ensure_encoder(init.config, encoder_dir, str(init.where))
            track_init_stage(run_dir, encoder_dir, init.config)  # runtime.logger; nothing for csv
        return body(run_dir)


def open_experiment(
    config: Config,
    grid: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool,
    force: bool,
    kind: str | None = None,
    manifests: Mapping[str, str | None] | None = None,
) -> Path:
    """The experiment's run directory (see :func:`learner.runs.open_run_dir`); its ``config.yaml`` holds the
    run settings and the grid (:class:`learner.config.Experiment`), rewritten on resume because the grid may
    have grown. ``run.json`` records which experiment it is (``grid``: ``kind``) and the sha256 of each
    dataset's manifest (``manifests``: the content its stages start on, updated once a resume passed its
    checks)."""
    run = open_run_dir(out_dir, config, resume=resume, force=force, kind="experiment")
    if resume:
        run.record_resume()
    recorded = read_record(run.path) or {}
    known = recorded["manifests"] if isinstance(recorded.get("manifests"), dict) else {}
    entries: dict[str, object] = {"manifests": {**known, **manifests}} if manifests else {}
    if kind is not None and "grid" not in recorded:  # a grid of an earlier version learns its kind here
        entries["grid"] = kind
    if entries:
        run.record(**entries)
    atomic.write_text(run.layout.config, Experiment(config, grid).to_yaml())
    return run.path


def dataset_manifest(config: Config, dataset: DatasetSpec) -> Manifest:
    """The validated manifest of a dataset column, read with the column's score scale."""
    scale = scale_from_config(cell_config(config, dataset).data)
    with stage("manifest"):
        return load_manifest(dataset.manifest, scale, data_root=config.runtime.data_root)


def describe_dataset(dataset: DatasetSpec, manifest: Manifest) -> DatasetSummary:
    """A dataset column as ``results.json`` lists it: spec, scan/patient counts, source, phantom record."""
    return DatasetSummary(
        name=dataset.name,
        manifest=str(dataset.manifest),
        scale=dataset.scale,
        scans=len(manifest.records),
        patients=len(manifest.patients()),
        data_source=data_source(manifest),
        phantom=phantom_record(manifest),
    )


def write_outputs(
    run_dir: Path, results: Results, long_form: pd.DataFrame, started: Mark
) -> ExperimentResult:
    """Write the long-form numbers (``table3.csv``, ``table4.csv`` or ``sweep.csv``: :meth:`RunLayout.table`)
    and ``results.json``, whose ``timing`` is the per-stage wall time since ``started`` (the experiment's
    start on :data:`CLOCK`)."""
    run = RunLayout(run_dir)
    with stage("outputs"), atomic.atomic_path(run.table(results.kind, ".csv")) as tmp:
        long_form.to_csv(tmp, index=False)
    results = results.model_copy(update={"timing": CLOCK.since(started)})
    atomic.write_json(run.results, results.to_json(), sort_keys=False)  # keeps the grid's orders
    return ExperimentResult(run_dir, results)


def record_timing(run_dir: Path, timing: Timing) -> None:
    """Replace the ``timing`` of ``run_dir/results.json``: a caller that did more than the experiment (the
    demo's cohorts, the CLI's report) records the whole run's stages."""
    path = RunLayout(run_dir).results
    timed = load_results(path).model_copy(update={"timing": timing})
    atomic.write_json(path, timed.to_json(), sort_keys=False)
