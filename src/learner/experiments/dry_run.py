"""``--dry-run``: what a command would do, from the config and the manifest alone, and a rough time estimate.

A plan reads the config, the manifest (CSV/Parquet, validated, no scan decoded) and, for ``classify``, the
encoder run's ``splits.csv``; it makes the patient split and the pairs exactly as the command would
(:func:`learner.data.splits.resolve_splits`, :func:`learner.data.pairs.split_pairs`) and writes nothing.
This is the one place that plans commands (``learner pretrain | classify | experiment ... --dry-run``).

**Cost model (rough).** Pretraining costs, per epoch, ``(train clips + 0.3 × val clips) × T × size² × s``
seconds: ``s`` is the measured cost of one training frame-pixel (one pixel of one frame of one clip) of
tsm_resnet18 at paper size on 2 shared CPU cores, 1.7e-6 s, calibrated on the two runs measured in
``configs/small-cohort.yaml`` (66-75 s per 15-epoch pretraining of 154 train / 85 val clips at 64 px × 4
frames, and 1.0 s per epoch of 32 train + 10 val POCUS clips: both 1.7e-6 s at load average 1.5-3);
a validation clip (forward only) costs 0.3 of a training clip (measured ratio). ViT and Swin are scaled
by BENCHMARKS.md's relative step throughput (1.3 and 0.9 against 4.2 clips/s), the tiny and small sizes
by their measured cost against paper size (0.25, 0.75). Classification embeds every scan once per
encoder (a validation clip each); the pair MLP takes seconds and is left out. Decoding every scan once
into the cache (first run only) is ~0.25 s per scan (BENCHMARKS.md: 3.2-5.6 clips/s). The calibration
holds on a lightly loaded machine (load average up to ~3 on 2 cores); on one busy with other jobs runs
take far longer (measured: a 3-epoch pretraining of 26 + 13 clips at 64 px × 4 frames estimated at 2 s
took 11-29 s per epoch at load average 20, with start-up 77 s in all). A GPU is far faster and is not
modelled.
"""

from __future__ import annotations

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
from learner.experiments.sweep import sweep_cells
from learner.experiments.table3 import table3_cells
from learner.layout import RunLayout
from learner.training.names import check_names

TSM_SECONDS_PER_FRAME_PIXEL = 1.7e-6
"""tsm_resnet18, paper size, 2 shared CPU cores: calibrated on configs/small-cohort.yaml's measured runs."""
TRAIN_SECONDS_PER_FRAME_PIXEL: dict[str, float] = {
    "tsm_resnet18": TSM_SECONDS_PER_FRAME_PIXEL,
    "vit": TSM_SECONDS_PER_FRAME_PIXEL * 4.2 / 1.3,
    "swin": TSM_SECONDS_PER_FRAME_PIXEL * 4.2 / 0.9,
}
"""Backbone → seconds per training frame-pixel at paper size (ViT, Swin: BENCHMARKS.md's step ratios)."""
SIZE_FACTOR: dict[str, float] = {"tiny": 0.25, "small": 0.75, "paper": 1.0}
EVAL_FACTOR = 0.3
DECODE_SECONDS_PER_SCAN = 0.25
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

    @property
    def seconds(self) -> float:
        """The cost model's total (see the module docstring), decoding included."""
        work = sum((c.pretrain_seconds or 0.0) + (c.classify_seconds or 0.0) for c in self.cells)
        return work + self.scans_to_decode * DECODE_SECONDS_PER_SCAN

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
                "Time estimate (rough, 2 CPU cores; see learner.experiments.dry_run): "
                f"≈ {_duration(self.seconds)}, of which decoding the {self.scans_to_decode} scans not in the "
                f"cache ≈ {_duration(self.scans_to_decode * DECODE_SECONDS_PER_SCAN)}. "
                "Calibrated at load average ≤ 3; a machine busy with other jobs can take 10× longer or "
                "more; a GPU is far faster.",
                "Dry run: nothing was created or decoded.",
            ]
        )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# ------------------------------------------------------------------------------------------ the model
def frame_pixels(config: Config, clips: int) -> int:
    """Frame-pixels of ``clips`` clips: clips × T × size²."""
    return clips * config.data.frames * config.data.size**2


def seconds_per_frame_pixel(config: Config) -> float:
    """Training cost of one frame-pixel for the config's backbone and size (unknown backbone: the slowest)."""
    per_pixel = TRAIN_SECONDS_PER_FRAME_PIXEL.get(
        config.model.backbone, max(TRAIN_SECONDS_PER_FRAME_PIXEL.values())
    )
    return per_pixel * SIZE_FACTOR[config.model.size]


def pretrain_seconds(config: Config, data: DataPlan) -> float:
    """Estimated pretraining time: every epoch's train steps and validation pass (module docstring)."""
    optim = config.optim
    steps = data.scans["train"] // optim.batch_size
    steps = min(steps, optim.max_steps_per_epoch or steps)
    train = frame_pixels(config, steps * optim.batch_size)
    val = frame_pixels(config, data.scans["val"])
    return optim.epochs * (train + EVAL_FACTOR * val) * seconds_per_frame_pixel(config)


def embed_seconds(config: Config, scans: int) -> float:
    """Estimated time to embed ``scans`` scans (``classifier.clips_per_scan`` clips each) once."""
    clips = scans * config.classifier.clips_per_scan
    return EVAL_FACTOR * frame_pixels(config, clips) * seconds_per_frame_pixel(config)


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
    return Plan(config.to_yaml(), [cell], [data], uncached_scans(manifest, config))


def plan_classify(encoder_run: Path, manifest: Manifest, config: Config) -> Plan:
    """``learner classify --dry-run``: pairs from the encoder run's split, the scans embedded once."""
    data = data_plan(str(manifest.source), manifest, config, read_splits(encoder_run))
    seconds = embed_seconds(config, len(manifest.records))
    cell = CellPlan(f"classify on {encoder_run} ({config.classifier.head})", None, seconds)
    return Plan(config.to_yaml(), [cell], [data], 0)


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
    axes, enumerate_cells = GRID_CELLS[kind]
    grid = engine.check_grid(experiment.grid, axes)
    # the stages' paths (model.init) matter only to match a resumed run's stages
    planned, inits = engine.init_stages(enumerate_cells(experiment.config, grid), grid, resume_dir or Path())
    cells = _grid_cells(planned, grid, resume_dir)
    manifests = {d.name: engine.dataset_manifest(experiment.config, d) for d in grid.datasets}
    data: dict[tuple[str, int, str, str], DataPlan] = {}
    plans, pretrained = [], set()
    for init in inits:  # the self-supervised stages run first, one pretraining each
        stage = RunLayout(init.where).encoder().root
        label = f"{init.where.as_posix()} ({init.config.loss.name}, no scores)"
        if _complete(resume_dir, stage, init.config):
            plans.append(CellPlan(label, None, None, done=True))
            continue
        plan = data_plan(init.dataset, manifests[init.dataset], init.config)
        plans.append(CellPlan(label, pretrain_seconds(init.config, plan), None))
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
        plans.append(
            CellPlan(
                label,
                None if shared else pretrain_seconds(cfg, data[split_key]),
                embed_seconds(cfg, len(manifests[dataset.name].records)) if not shared else None,
            )
        )
    scans = sum(uncached_scans(m, experiment.config) for m in manifests.values())
    return Plan(experiment.to_yaml(), plans, list(data.values()), scans)


def uncached_scans(manifest: Manifest, config: Config) -> int:
    """How many of the manifest's scans have no decoded entry in the cache yet (only those cost decoding);
    by entry name, nothing is read."""
    cache = ScanCache(
        default_cache_root(manifest, config.runtime.cache_dir), Preprocessor.from_config(config.data)
    )
    missing = 0
    for record in manifest.records:
        try:
            missing += not cache.path_for(record).is_file()
        except ScanReadError:  # the file is missing: decoding it is what will fail
            missing += 1
    return missing
