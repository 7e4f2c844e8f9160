"""``--dry-run``: what a command would do, from the config and the manifest alone, and a time estimate.

A plan reads the config, the manifest (CSV/Parquet, validated; one scan decoded to time it) and, for
``classify``, the encoder run's ``splits.csv``; it makes the patient split and the pairs exactly as the
command would (:func:`learner.data.splits.resolve_splits`, :func:`learner.data.pairs.split_pairs`) and writes
nothing.
This is the one place that plans commands (``learner pretrain | classify | experiment ... --dry-run``).

**Time estimate: measured on this machine.** :func:`~learner.experiments.step_cost.measure_cost` builds
the run's own model and objective (:func:`learner.training.pretrain.build_model_and_objective`) on the run's
device and thread count (:func:`learner.training.device.thread_count`) and times the toolkit's own training
loop (:func:`learner.training.epoch.train_one_epoch`) on synthetic clips of the run's shape (batch × T × C ×
size², two views for a self-supervised objective): a warm-up step on 4 clips, then an epoch of two steps
(the first also computes the contrastive gradient share, as every epoch's first step does) on the whole
batch, or on 4 clips scaled to the batch when a whole-batch step would take over 1.5 s; then a validation
batch, and the size of the checkpoints. About 2 s on 2 CPU cores at 32-64 px, a few seconds at 112 px × 8
frames; settings with the same model and batch shape are measured once per process.

The estimate scales that to the run: per pretraining ``start + epochs × (steps × step + first-step extra +
val clips × eval clip + checkpoints)``, steps per epoch as the loader makes them (``⌊train / batch⌋``, capped
by ``optim.max_steps_per_epoch``; a self-supervised stage trains on train + val scans, two views each);
classification embeds every scan ``classifier.clips_per_scan`` times and fits the pair MLP
(:data:`CLASSIFY_SECONDS`). Not measured: :data:`COMMAND_START_SECONDS` (importing the toolkit),
:data:`PRETRAIN_START_SECONDS` (loader processes, cache check, run folder, curves), the disk's speed
(:data:`~learner.experiments.step_cost.CHECKPOINT_BYTES_PER_SECOND`). Decoding the scans not in the cache
yet (first run only) is measured too: one of them is decoded and preprocessed, not cached, and the time
scaled by their number (:func:`scans_to_decode`; a real video takes about 1 s, a PNG a few ms, so no
constant fits both). Data loading and augmentation run in the loader processes beside the steps and are not
timed. The measurement holds for the machine's load when the dry run ran.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.data.cache import ScanCache, default_cache_root
from learner.data.manifest import Manifest, load_manifest
from learner.data.pairs import pair_class_counts, split_pairs
from learner.data.preprocess import Preprocessor
from learner.data.scales import scale_from_config
from learner.data.splits import read_splits, resolve_splits
from learner.errors import ConfigError, ScanReadError
from learner.experiments import grid as engine
from learner.experiments import stages
from learner.experiments.ablation import AXES as ABLATION_AXES
from learner.experiments.ablation import ablation_cells
from learner.experiments.launch import check_launcher
from learner.experiments.step_cost import StepCost, measure_cost
from learner.experiments.sweep import sweep_cells
from learner.experiments.table3 import table3_cells
from learner.layout import RunLayout
from learner.losses.registry import build_view_objective
from learner.training.names import check_names

COMMAND_START_SECONDS = 3.0
"""Starting a command: importing torch and the toolkit (measured: 2-4 s on 2 shared cores)."""
PRETRAIN_START_SECONDS = 2.5
"""Per pretraining besides its steps: loader processes, cache check, run folder, split, curves (measured:
2-3 s on 2 shared cores at 32 px)."""
CLASSIFY_SECONDS = 4.0
"""One classification besides embedding: pairs, the MLP, the patient bootstrap, its files (measured 2-5 s)."""
DECODE_SECONDS_PER_SCAN = 0.25
"""Decoding one scan when the sampled one cannot be read (the run itself will then refuse it): BENCHMARKS.md's
3.2-5.6 phantom clips/s."""
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DataPlan:
    """One split of one dataset: scans and patients per split, and pairs per class per pair set."""

    label: str
    origin: str
    scans: dict[str, int]
    patients: dict[str, int]
    pairs: dict[str, dict[str, int]]

    def render(self) -> str:
        """Two or more indented lines for the terminal."""
        per_split = ", ".join(f"{s} {self.scans[s]} ({self.patients[s]} patients)" for s in SPLIT_NAMES)
        lines = [f"  {self.label} (split: {self.origin}): scans {per_split}"]
        for split, counts in self.pairs.items():
            classes = ", ".join(f"{name} {n}" for name, n in counts.items())
            kind = "intra-patient" if split == "test" else "inter-patient"
            lines.append(f"    {split} {kind} pairs: {classes} ({sum(counts.values())})")
        return "\n".join(lines)


@dataclass(frozen=True)
class CellPlan:
    """One unit of work: its label and estimated seconds (pretraining None when it reuses an encoder;
    both None when ``done``: ``--resume`` finds it complete in the run directory and reuses it)."""

    label: str
    pretrain_seconds: float | None
    classify_seconds: float | None
    done: bool = False


@dataclass(frozen=True)
class Plan:
    """What a command would do: the resolved config, its cells, the data, and the scans to decode."""

    config_yaml: str
    cells: list[CellPlan]
    data: list[DataPlan]
    scans_to_decode: int
    decode_seconds: float = 0.0
    costs: Sequence[StepCost] = ()

    @property
    def seconds(self) -> float:
        """The estimate's total (see the module docstring): the command's start, the cells, decoding."""
        work = sum((c.pretrain_seconds or 0.0) + (c.classify_seconds or 0.0) for c in self.cells)
        return COMMAND_START_SECONDS + work + self.decode_seconds

    def render(self) -> str:
        """The dry run's report: config, cells, data, time estimate; ends by saying nothing was created."""
        cells = [
            f"  cell {k}/{len(self.cells)}: {c.label}"
            + ", done (reused by --resume)" * c.done
            + "".join(
                f", {what} ≈ {_duration(s)}"
                for what, s in (("pretrain", c.pretrain_seconds), ("classify", c.classify_seconds))
                if s is not None
            )
            for k, c in enumerate(self.cells, 1)
        ]
        return "\n".join(
            [
                "Resolved config:",
                self.config_yaml.rstrip("\n"),
                "",
                f"Cells ({len(self.cells)}):",
                *cells,
                "",
                "Data:",
                *(d.render() for d in self.data),
                "",
                *(cost.render() for cost in self.costs),
                f"Time estimate (measured at the settings above on this machine, load average {_load()}): "
                f"≈ {_duration(self.seconds)}, of which decoding the {self.scans_to_decode} scans not in the "
                f"cache ≈ {_duration(self.decode_seconds)}. A machine that gets busier with other jobs runs "
                "slower; see learner.experiments.dry_run.",
                "Dry run: nothing was created (one scan was decoded to time it, not cached).",
            ]
        )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ------------------------------------------------------------------------------------------ the model
def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # not every system reports one
        return "unknown"


def pretrain_seconds(config: Config, data: DataPlan, cost: StepCost | None = None) -> float:
    """Estimated pretraining time (module docstring): start-up, then each epoch's train steps (the first
    one's extra), validation clips and checkpoints, from ``cost`` (default: :func:`measure_cost`)."""
    cost = measure_cost(config) if cost is None else cost
    optim = config.optim
    two_views = build_view_objective(config.loss) is not None
    train = data.scans["train"] + data.scans["val"] * two_views  # self-supervised: train + val scans
    steps = train // optim.batch_size
    steps = min(steps, optim.max_steps_per_epoch or steps)
    val_clips = data.scans["val"] * (2 if two_views else 1)
    extra = cost.first_step_extra if "+" in config.loss.name else 0.0  # the share of a two-term objective
    epoch = steps * cost.train_step + extra + val_clips * cost.eval_clip + cost.checkpoint
    return PRETRAIN_START_SECONDS + cost.build + optim.epochs * epoch


def embed_seconds(config: Config, scans: int, cost: StepCost | None = None) -> float:
    """Estimated classification time: ``scans`` scans embedded ``classifier.clips_per_scan`` times each
    (eval clips from ``cost``, default :func:`measure_cost`), the model built once, and
    :data:`CLASSIFY_SECONDS` for the pairs, the MLP and the bootstrap."""
    cost = measure_cost(config) if cost is None else cost
    return cost.build + scans * config.classifier.clips_per_scan * cost.eval_clip + CLASSIFY_SECONDS


# ---------------------------------------------------------------------------------------- the data
def data_plan(
    label: str, manifest: Manifest, config: Config, splits: dict[str, str] | None = None
) -> DataPlan:
    """Scans, patients and pairs per split, made exactly as the command makes them (nothing decoded).

    Args:
        splits: patient → split (a classify run's ``splits.csv``); None: ``data.split`` with the seed.
    """
    if splits is None:
        splits, from_file = resolve_splits(manifest, config.data.split, config.seed)
        origin = "the manifest's" if from_file else f"made with seed {config.seed}"
    else:
        origin = "the encoder run's splits.csv"
    split_manifest = manifest.with_splits(splits)
    records = {split: split_manifest.by_split(split) for split in SPLIT_NAMES}
    pairs, _ = split_pairs(records, scale_from_config(config.data), config.data.pairs, config.seed)
    return DataPlan(
        label=label,
        origin=origin,
        scans={split: len(rows) for split, rows in records.items()},
        patients={split: len({r.patient_id for r in rows}) for split, rows in records.items()},
        pairs={split: pair_class_counts(frame) for split, frame in pairs.items()},
    )


def _manifest(config: Config) -> Manifest:
    if config.data.manifest is None:
        raise ConfigError("data.manifest is not set; pass --manifest or set data.manifest")
    return load_manifest(config.data.manifest, scale_from_config(config.data))


# ---------------------------------------------------------------------------------------- the plans
def plan_pretrain(config: Config) -> Plan:
    """``learner pretrain --dry-run``: one pretraining."""
    check_names(config)
    manifest = _manifest(config)
    data = data_plan(str(config.data.manifest), manifest, config)
    cell = CellPlan(f"pretrain {config.loss.name}, seed {config.seed}", pretrain_seconds(config, data), None)
    return Plan(config.to_yaml(), [cell], [data], *scans_to_decode(manifest, config), [measure_cost(config)])


def plan_classify(encoder_run: Path, manifest: Manifest, config: Config) -> Plan:
    """``learner classify --dry-run``: pairs from the encoder run's split, the scans embedded once."""
    data = data_plan(str(manifest.source), manifest, config, read_splits(encoder_run))
    seconds = embed_seconds(config, len(manifest.records))
    cell = CellPlan(f"classify on {encoder_run} ({config.classifier.head})", None, seconds)
    return Plan(config.to_yaml(), [cell], [data], 0, 0.0, [measure_cost(config)])


GridCell = tuple[str, str, DatasetSpec, Config, bool]
"""(cell label, encoder label: cells sharing it share one pretraining, dataset, the cell's config, done)."""


def _grid_cells(
    planned: Sequence[engine.PlannedCell], grid: ExperimentConfig, run_dir: Path | None
) -> list[GridCell]:
    """The runner's own cells (:class:`~learner.experiments.grid.PlannedCell`), one per classification;
    done when ``run_dir`` (given with ``--resume``) holds its encoder and classifier stages complete.

    Raises:
        RunDirError: a complete stage there was computed with another config (as the run itself would).
    """
    datasets = {d.name: d for d in grid.datasets}
    cells = []
    for cell in planned:
        owner = cell.shares or cell
        encoder_done = _complete(run_dir, RunLayout(owner.where).encoder().root, owner.encoder)
        for name, _, cfg in cell.classifiers:
            label = cell.where.as_posix() if len(cell.classifiers) == 1 else f"{cell.where.as_posix()}/{name}"
            done = encoder_done and _complete(run_dir, cell.where / name, cfg)
            cells.append((label, owner.where.as_posix(), datasets[cell.dataset], cfg, done))
    return cells


def _complete(run_dir: Path | None, stage: Path, config: Config) -> bool:
    return run_dir is not None and stages.completed(run_dir / stage, config) is not None


GRID_CELLS: dict[
    str, tuple[Sequence[str], Callable[[Config, ExperimentConfig], list[engine.PlannedCell]]]
] = {
    "table3": (("losses", "seeds"), table3_cells),
    "ablation": (ABLATION_AXES, ablation_cells),
    "sweep": (("losses", "seeds"), sweep_cells),
}
"""Experiment kind → (the grid axes that must be non-empty, its cells in the order the runner runs them)."""


def plan_experiment(kind: str, experiment: Experiment, resume_dir: Path | None = None) -> Plan:
    """``learner experiment KIND --dry-run``: every cell, the data of every distinct split, the cost; with
    ``resume_dir`` (``--resume``) the cells complete there are marked done and cost nothing."""
    check_launcher(experiment.config.runtime)  # as the real run does before any work
    axes, enumerate_cells = GRID_CELLS[kind]
    grid = engine.check_grid(experiment.grid, axes)
    # the stages' paths (model.init) matter only to match a resumed run's stages
    planned, inits = engine.init_stages(enumerate_cells(experiment.config, grid), grid, resume_dir or Path())
    cells = _grid_cells(planned, grid, resume_dir)
    manifests = {d.name: engine.dataset_manifest(experiment.config, d) for d in grid.datasets}
    data: dict[tuple[str, int, str, str], DataPlan] = {}
    plans, pretrained, measured = [], set(), []
    for init in inits:  # the self-supervised stages run first, one pretraining each
        stage = RunLayout(init.where).encoder().root
        label = f"{init.where.as_posix()} ({init.config.loss.name}, no scores)"
        if _complete(resume_dir, stage, init.config):
            plans.append(CellPlan(label, None, None, done=True))
            continue
        plan = data_plan(init.dataset, manifests[init.dataset], init.config)
        plans.append(CellPlan(label, pretrain_seconds(init.config, plan), None))
        measured.append(measure_cost(init.config))
    for label, encoder, dataset, cfg, done in cells:
        split_key = (
            dataset.name,
            cfg.seed,
            cfg.data.split.model_dump_json(),
            cfg.data.pairs.model_dump_json(),
        )
        if split_key not in data:
            data[split_key] = data_plan(f"{dataset.name}, seed {cfg.seed}", manifests[dataset.name], cfg)
        shared = encoder in pretrained
        pretrained.add(encoder)
        if done:
            plans.append(CellPlan(label, None, None, done=True))
            continue
        measured.append(measure_cost(cfg))
        plans.append(
            CellPlan(
                label,
                None if shared else pretrain_seconds(cfg, data[split_key]),
                embed_seconds(cfg, len(manifests[dataset.name].records)) if not shared else None,
            )
        )
    decoding = [scans_to_decode(m, experiment.config) for m in manifests.values()]
    costs = list(dict.fromkeys(measured))  # each distinct measurement once, in the order of the cells
    scans, seconds = sum(n for n, _ in decoding), sum(s for _, s in decoding)
    return Plan(experiment.to_yaml(), plans, list(data.values()), scans, seconds, costs)


def scans_to_decode(manifest: Manifest, config: Config) -> tuple[int, float]:
    """How many of the manifest's scans have no decoded entry in the cache yet (only those cost decoding;
    by entry name), and the seconds to decode them: the first of them decoded and preprocessed (not cached)
    and timed, × their number (:data:`DECODE_SECONDS_PER_SCAN` each when that one cannot be read)."""
    preprocessor = Preprocessor.from_config(config.data)
    cache = ScanCache(default_cache_root(manifest, config.runtime.cache_dir), preprocessor)
    missing = []
    for record in manifest.records:
        try:
            cached = cache.path_for(record).is_file()
        except ScanReadError:  # the file is missing: decoding it is what will fail
            cached = False
        if not cached:
            missing.append(record)
    if not missing:
        return 0, 0.0
    started = time.perf_counter()
    try:
        preprocessor.load(missing[0].path)
        per_scan = time.perf_counter() - started
    except ScanReadError:
        per_scan = DECODE_SECONDS_PER_SCAN
    return len(missing), len(missing) * per_scan
