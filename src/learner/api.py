"""``learner.api``: the pipeline from Python, typed. Every ``learner`` command has one function here that
returns the typed record the command writes, and the command calls it (no second implementation;
:data:`COMMANDS` maps each command to its function):

=====================  =================================================================================
``load_config``        a :class:`~learner.config.Config` from defaults, a YAML file / bundled name, overrides
``show_config``        ``config show``: the resolved config as commented YAML
``write_config_docs``  ``config docs``: the config reference (Markdown) → its path
``check_manifest``     ``data check``: a manifest validated, split and summarised → :class:`ManifestCheck`
``split_manifest``     ``data split``: a patient-level split column → the written ``Manifest``
``convert_adni``       ``data adni``: ADNIMERGE + images → a manifest; ``AdniReport``
``build_cache``        ``data cache``: every scan decoded once into the cache → ``CacheReport``
``phantom_lus``        ``phantom lus``: the LUS phantom cohort → its ``manifest.csv``
``phantom_mri``        ``phantom mri``: the MRI phantom cohort → its ``ADNIMERGE.csv``
``phantom_preview``    ``phantom preview``: the phantoms' preview → the PNG
``convert_weights``    ``weights convert``: a weights file → an ``--init`` file; :class:`ConvertedWeights`
``pretrain``           Algorithm 1 into a run directory → ``PretrainResult``
``embed``              the frozen encoder on every scan → ``EmbeddingTable``
``classify``           the health-change classifier → ``ClassificationResult``
``predict``            one pair of scans → ``Prediction``
``predict_pairs``      ``predict --pairs``: every pair of a CSV → a table, one row per pair
``export``             TorchScript / ONNX and the preprocessing → ``ExportedModels``; a model folder →
                       ``ExportedFolder``
``load_model``         a model folder rebuilt for predict, embed and ``model.init`` → ``LoadedModel``
``table3``             the Table 3 grid and its report → ``ExperimentResult``
``ablation``           the Table 4 grid and its report → ``ExperimentResult``
``sweep``              a sweep of named settings and its report → ``ExperimentResult``
``ceiling``            the ceiling study and its report → ``CeilingResult``
``demo``               Table 3 on the phantom cohorts, with its report → ``DemoResult``
``report``             ``REPORT.md`` of any finished run → its path
``track``              a finished run or grid recorded in MLflow / TensorBoard from its files → ``TrackedRun``
=====================  =================================================================================

``device`` defaults to ``auto`` (CUDA when visible) everywhere, as on the command line. The pipeline is
imported inside each function, so that ``import learner.api`` (and ``learner --help``) stays fast. See
``docs/python.md`` for a worked example.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from learner.config import (
    Config,
    DatasetSpec,
    Experiment,
    ExperimentConfig,
    apply_overrides,
    check_custom_scale,
    load_experiment,
)
from learner.config import load_config as _load_config
from learner.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from learner.config import ModelSize
    from learner.data.adni import AdniReport
    from learner.data.cache import CacheReport
    from learner.data.manifest import Manifest
    from learner.data.scales import ScoreScale
    from learner.evaluation.embed import EmbeddingTable
    from learner.evaluation.export import ExportedModels
    from learner.evaluation.model_folder import ExportedFolder, LoadedModel
    from learner.evaluation.predict import Prediction
    from learner.experiments.ceiling import CeilingResult
    from learner.experiments.classify import ClassificationResult
    from learner.experiments.demo import DemoResult
    from learner.experiments.results import ExperimentResult
    from learner.experiments.tracking import TrackedRun
    from learner.timing import Mark, Timing
    from learner.training.pretrain import PretrainResult

PathLike = str | os.PathLike[str]
ConfigSource = Config | PathLike | None
"""A config object, a YAML file or bundled config name (``"demo"``, ``"lus"``, ...), or None (defaults)."""
ExperimentSource = Experiment | ConfigSource
"""An :class:`~learner.config.Experiment` (run settings and grid), or a :data:`ConfigSource` whose YAML file
may give the grid in its ``experiment:`` section (a ``Config`` object: the default grid)."""

__all__ = [
    "COMMANDS",
    "ConvertedWeights",
    "ManifestCheck",
    "ablation",
    "build_cache",
    "ceiling",
    "check_manifest",
    "classify",
    "convert_adni",
    "convert_weights",
    "demo",
    "embed",
    "export",
    "load_config",
    "load_model",
    "phantom_lus",
    "phantom_mri",
    "phantom_preview",
    "predict",
    "predict_pairs",
    "pretrain",
    "report",
    "show_config",
    "split_manifest",
    "sweep",
    "table3",
    "track",
    "write_config_docs",
]
"""The facade; its types come from the modules named in each function's return annotation."""


# --- configuration ------------------------------------------------------------------------------------


def load_config(source: ConfigSource = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """``source`` (see :data:`ConfigSource`) with dotted ``overrides`` (``{"optim.epochs": 5}``) applied.

    Raises:
        ConfigError: a bad file, key or value (one line naming it).
    """
    config = source if isinstance(source, Config) else _load_config(source, [])
    return apply_overrides(config, dict(overrides)) if overrides else config


def show_config(source: PathLike | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()) -> str:
    """``learner config show``: the resolved config (defaults ← ``source`` ← ``overrides``) as YAML with each
    key's description above it; with the experiment grid (``experiment:``) when the file has one or an
    override names it. ``overrides`` are ``key=value`` strings (``--set``) or a dotted mapping."""
    from learner.config import read_config_file, resolve_config_path
    from learner.config_reference import commented_yaml

    sets = _override_items(overrides)
    experiment = load_experiment(source, sets)
    raw = read_config_file(resolve_config_path(source)) if source else None  # with its base: chain
    has_grid = (isinstance(raw, dict) and "experiment" in raw) or any(
        item.startswith("experiment.") for item in sets
    )
    return commented_yaml(experiment if has_grid else experiment.config)


def write_config_docs(out: PathLike = Path("docs") / "config.md") -> Path:
    """``learner config docs``: write the config reference (every key, type, default, description) to
    ``out`` and return its path."""
    from learner.atomic import write_text
    from learner.config_reference import reference_markdown

    return write_text(out, reference_markdown())


# --- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestCheck:
    """What ``learner data check`` shows: the validated manifest with its split (the manifest's own, or the
    one ``learner data split`` would make), the score scale and its fit warnings."""

    manifest: Manifest
    """The validated manifest, with the split applied unless :attr:`split_error`."""
    scale: ScoreScale
    config: Config
    """The settings it was checked with (score scale, split, pairs, seed)."""
    warnings: list[str]
    """The score scale's warnings about the scores (e.g. values outside its range)."""
    split_from_file: bool
    """The split is the manifest's own complete ``split`` column (else the one ``data split`` would make)."""
    split_error: str | None = None
    """Why no split could be made with ``data.split`` (the manifest itself is fine), or None."""

    def pairs(self) -> dict[str, pd.DataFrame]:
        """The pair sets a classification run draws from this split, per split (train, val, test)."""
        from learner.data.manifest import SPLITS
        from learner.data.pairs import split_pairs

        records = {name: self.manifest.by_split(name) for name in SPLITS}
        pairs, _ = split_pairs(records, self.scale, self.config.data.pairs, self.config.seed)
        return pairs


def check_manifest(
    manifest: Manifest | PathLike,
    *,
    config: ConfigSource = None,
    overrides: Mapping[str, Any] | None = None,
    scale: str | None = None,
    data_root: PathLike | None = None,
) -> ManifestCheck:
    """``learner data check``: validate ``manifest`` and split it by patient as a run would.

    Raises:
        ManifestError: the manifest has problems (``problems`` lists them, one per row).
    """
    from learner.data.scales import scale_from_config
    from learner.data.splits import resolve_splits
    from learner.errors import LearnerError

    settings = _settings(config, overrides, {"data.scale": scale, "runtime.data_root": data_root})
    score_scale = scale_from_config(check_custom_scale(settings).data)
    loaded = _manifest(manifest, settings)
    warnings = score_scale.fit_warnings([record.score for record in loaded.records])
    try:
        splits, from_file = resolve_splits(loaded, settings.data.split, settings.seed)
    except LearnerError as exc:  # the manifest is fine; only the split settings do not fit it
        return ManifestCheck(loaded, score_scale, settings, warnings, False, str(exc))
    return ManifestCheck(loaded.with_splits(splits), score_scale, settings, warnings, from_file)


def split_manifest(
    manifest: Manifest | PathLike,
    out: PathLike,
    *,
    config: ConfigSource = None,
    overrides: Mapping[str, Any] | None = None,
    ratios: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    stratify: bool | None = None,
    seed: int | None = None,
    test_min_visits: int | None = None,
    scale: str | None = None,
) -> Manifest:
    """``learner data split``: assign every patient to train, val or test (``ratios`` or exact patient
    ``counts``, default ``data.split``) and write the manifest with its split column to ``out``."""
    from learner.data.manifest import write_manifest
    from learner.data.splits import assign_splits

    if ratios is not None and counts is not None:
        raise ConfigError("give ratios or counts, not both")
    keys: dict[str, Any] = {
        "data.scale": scale,
        "seed": seed,
        "data.split.stratify": stratify,
        "data.split.test_min_visits": test_min_visits,
    }
    if ratios is not None:  # either clears the config's other one (learner.config._set_dotted)
        keys["data.split.ratios"] = list(ratios)
    if counts is not None:
        keys["data.split.counts"] = list(counts)
    settings = check_custom_scale(_settings(config, overrides, keys))
    loaded = _manifest(manifest, settings)
    assigned = loaded.with_splits(assign_splits(loaded, settings.data.split, settings.seed))
    write_manifest(assigned, out)
    return assigned


def convert_adni(
    adnimerge: PathLike,
    images: PathLike,
    out: PathLike,
    *,
    min_visits: int = 1,
    max_visits: int | None = None,
) -> AdniReport:
    """``learner data adni``: an ADNIMERGE table and a folder of MRI files → a manifest (mmse scale) at
    ``out``. ``min_visits`` drops patients with fewer scored visits with an image, ``max_visits`` keeps each
    patient's first visits in time order; the defaults keep all, the paper's cohort (Section 2.1) is
    ``min_visits=2, max_visits=3``. The report counts what they drop."""
    from learner.data.adni import adnimerge_to_manifest

    return adnimerge_to_manifest(adnimerge, images, out, min_visits=min_visits, max_visits=max_visits)


def build_cache(
    manifest: Manifest | PathLike,
    *,
    config: ConfigSource = None,
    overrides: Mapping[str, Any] | None = None,
    scale: str | None = None,
    workers: int | None = None,
    skip_bad: bool | None = None,
    data_root: PathLike | None = None,
) -> CacheReport:
    """``learner data cache``: decode every scan of ``manifest`` once into the cache (``runtime.cache_dir``)
    so that training reads arrays; ``skip_bad`` (``data.skip_bad_scans``) skips unreadable scans."""
    from learner.data.cache import build_cache as _build_cache

    keys = {
        "data.scale": scale,
        "data.skip_bad_scans": skip_bad,
        "runtime.workers": workers,
        "runtime.data_root": data_root,
    }
    settings = check_custom_scale(_settings(config, overrides, keys))
    loaded = _manifest(manifest, settings)
    return _build_cache(
        loaded,
        settings.data,
        settings.runtime.workers,
        settings.data.skip_bad_scans,
        cache_dir=settings.runtime.cache_dir,
    )


def phantom_lus(
    out_dir: PathLike,
    *,
    patients: tuple[int, int, int] = (160, 44, 17),
    seed: int = 0,
    frames: int = 16,
    size: int = 64,
    workers: int = 2,
    longitudinal: bool = False,
) -> Path:
    """``learner phantom lus``: phantom lung-ultrasound clips, ``manifest.csv`` (sf scale) and
    ``ground_truth.csv`` in ``out_dir`` (a complete cohort with the same arguments is reused); returns the
    manifest's path."""
    from learner.config import check_seed
    from learner.data.phantom.lus import generate_lus_cohort

    return generate_lus_cohort(
        out_dir,
        patients=patients,
        seed=check_seed(seed),
        frames=frames,
        size=size,
        workers=workers,
        longitudinal=longitudinal,
    )


def phantom_mri(
    out_dir: PathLike,
    *,
    patients: tuple[int, int, int] = (320, 160, 159),
    seed: int = 0,
    size: int = 48,
    workers: int = 2,
) -> Path:
    """``learner phantom mri``: phantom brain MRI volumes (NIfTI), ``ADNIMERGE.csv`` and ``ground_truth.csv``
    in ``out_dir`` (only the total of ``patients`` is used); returns the ADNIMERGE table's path."""
    from learner.config import check_seed
    from learner.data.phantom.mri import generate_mri_cohort

    return generate_mri_cohort(out_dir, patients=patients, seed=check_seed(seed), size=size, workers=workers)


def phantom_preview(out_png: PathLike, *, seed: int = 0) -> Path:
    """``learner phantom preview``: LUS frames across severity and patients and MRI slices across atrophy,
    drawn into ``out_png``."""
    from learner.config import check_seed
    from learner.data.phantom.preview import render_preview

    return render_preview(out_png, seed=check_seed(seed))


# --- models -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertedWeights:
    """What ``learner weights convert`` wrote: the ``--init`` file and the encoder it matches."""

    path: Path
    tensors: int
    """Tensors in the encoder's state dict (all written)."""
    backbone: str
    size: ModelSize
    channels: int


def convert_weights(
    source: PathLike,
    target: PathLike,
    *,
    config: ConfigSource = None,
    overrides: Mapping[str, Any] | None = None,
    backbone: str | None = None,
    channels: int | None = None,
    input_norm: str = "auto",
    force: bool = False,
) -> ConvertedWeights:
    """``learner weights convert``: a weights file (``.pth``/``.pt`` or ``.safetensors``) in a known layout
    (torchvision or MedicalNet ResNet-18, MONAI ViT / UNETR, MONAI Swin / SwinUNETR) → the safetensors
    ``target`` that ``model.init`` reads, checked against the encoder of the config (``model.backbone``,
    ``model.size``, ``data.channels``, ``data.size``, ``data.frames``).

    ``input_norm`` is the source's input standardisation, folded into the first layer: ``"auto"`` (the
    layout's: ImageNet for torchvision, none otherwise), ``"none"``, ``"imagenet"`` or
    ``"M1,M2,M3/S1,S2,S3"``. ``target``'s metadata records the steps taken
    (:func:`learner.models.weights.conversion_record`). An existing ``target`` is replaced only with
    ``force``, and ``source`` never (:func:`learner.atomic.check_outputs`).

    Raises:
        ConfigError: ``input_norm`` is none of those.
        OutputError: ``target`` exists (without ``force``), is ``source`` or cannot be written.
        CheckpointError: ``target`` is not ``.safetensors`` or ``source`` does not fit the encoder.
    """
    from learner.atomic import check_outputs, usable_file
    from learner.models.layouts import parse_input_norm
    from learner.models.registry import build_encoder
    from learner.models.weights import convert_weights as _convert_weights

    try:
        norm = parse_input_norm(input_norm)
    except ValueError as exc:
        raise ConfigError(f"--input-norm: {exc}") from None
    check_outputs([usable_file(target, "DST")], force=force, inputs={"SRC": source}, what="DST")
    settings = _settings(config, overrides, {"model.backbone": backbone, "data.channels": channels})
    model_cfg = settings.model.model_copy(update={"init": None})
    encoder = build_encoder(
        model_cfg, settings.data.channels, img_size=settings.data.size, frames=settings.data.frames
    )
    path = _convert_weights(source, target, encoder, input_norm=norm)
    return ConvertedWeights(
        path, len(encoder.state_dict()), model_cfg.backbone, model_cfg.size, settings.data.channels
    )


# --- training and evaluation --------------------------------------------------------------------------


def pretrain(
    config: ConfigSource,
    out: PathLike,
    *,
    manifest: PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
) -> PretrainResult:
    """Pretrain an encoder (Algorithm 1) into the run directory ``out``; ``manifest`` sets ``data.manifest``.

    Raises:
        ConfigError, ManifestError, RunDirError: bad input, named in one line.
    """
    from learner.training.pretrain import pretrain as _pretrain

    extra = {"data.manifest": str(manifest)} if manifest is not None else {}
    settings = load_config(config, {**(overrides or {}), **extra})
    return _pretrain(settings if resume else check_custom_scale(settings), out, resume=resume, force=force)


def embed(
    run: PathLike,
    manifest: Manifest | PathLike | None = None,
    *,
    which: str = "best",
    clips_per_scan: int = 1,
    device: str = "auto",
    skip_bad: bool | None = None,
) -> EmbeddingTable:
    """Every scan of ``manifest`` (default: the run's ``data.manifest``) through the frozen encoder of the
    pretraining run ``run``; cached in ``run/embeddings``. ``skip_bad`` leaves unreadable scans out
    (default: the run's ``data.skip_bad_scans``)."""
    from learner.evaluation.embed import embed_scans
    from learner.runs import load_run_config
    from learner.training.device import resolve_device

    config = load_run_config(run)
    loaded = _manifest(manifest, config)
    skip = config.data.skip_bad_scans if skip_bad is None else skip_bad
    return embed_scans(
        run,
        loaded,
        which=which,
        clips_per_scan=clips_per_scan,
        device=str(resolve_device(device)),
        skip_bad=skip,
    )


def classify(
    encoder_run: PathLike,
    out: PathLike,
    *,
    manifest: Manifest | PathLike | None = None,
    config: ConfigSource = None,
    overrides: Mapping[str, Any] | None = None,
    which: str = "best",
    device: str = "auto",
    force: bool = False,
) -> ClassificationResult:
    """Fit and test the improved / stable / deteriorated classifier on the frozen encoder of
    ``encoder_run`` into ``out``. ``config`` defaults to the encoder run's own."""
    from learner.experiments.classify import run_classification
    from learner.runs import load_run_config
    from learner.training.device import resolve_device

    base = load_run_config(encoder_run) if config is None else load_config(config)
    settings = load_config(base, overrides)
    loaded = _manifest(manifest, settings)
    return run_classification(
        encoder_run, loaded, settings, out, which=which, device=str(resolve_device(device)), force=force
    )


def predict(
    encoder_run: PathLike,
    classifier: PathLike,
    earlier: PathLike,
    later: PathLike,
    *,
    which: str = "best",
    device: str = "auto",
) -> Prediction:
    """Did the patient improve, stay stable or deteriorate from scan ``earlier`` to scan ``later``?
    (:class:`learner.evaluation.predict.Predictor` loads the models once for many pairs.)"""
    from learner.evaluation.predict import predict_pair
    from learner.training.device import resolve_device

    return predict_pair(
        encoder_run, classifier, earlier, later, which=which, device=str(resolve_device(device))
    )


def predict_pairs(
    encoder_run: PathLike,
    classifier: PathLike,
    pairs: PathLike,
    *,
    which: str = "best",
    device: str = "auto",
) -> pd.DataFrame:
    """``learner predict --pairs``: every pair of the CSV ``pairs`` (columns ``earlier``, ``later``: scan
    paths relative to the CSV; other columns are kept) → one row each with ``prediction``, ``p_<class>``,
    ``score_earlier``, ``score_later`` and ``distance``, in file order."""
    from learner.evaluation.predict import predict_pairs as _predict_pairs
    from learner.training.device import resolve_device

    return _predict_pairs(encoder_run, classifier, pairs, which=which, device=str(resolve_device(device)))


ExportFormat = Literal["onnx", "torchscript", "folder"]
"""``learner export --format``: ``onnx`` (TorchScript and ONNX graphs; TorchScript only with ``onnx=False``),
``torchscript`` (TorchScript graphs only) or ``folder`` (a model folder for :func:`load_model`)."""


@overload
def export(
    run: PathLike,
    out: PathLike,
    *,
    encoder: PathLike | None = None,
    onnx: bool = True,
    which: str = "best",
    format: Literal["onnx", "torchscript"] = "onnx",
    force: bool = False,
) -> ExportedModels: ...


@overload
def export(
    run: PathLike,
    out: PathLike,
    *,
    encoder: PathLike | None = None,
    onnx: bool = True,
    which: str = "best",
    format: Literal["folder"],
    force: bool = False,
) -> ExportedFolder: ...


def export(
    run: PathLike,
    out: PathLike,
    *,
    encoder: PathLike | None = None,
    onnx: bool = True,
    which: str = "best",
    format: ExportFormat = "onnx",
    force: bool = False,
) -> ExportedModels | ExportedFolder:
    """``learner export``: the encoder and pair classifier of ``run`` (a classification run or a grid cell;
    ``encoder`` defaults to the pretraining run it records) in ``out``: as TorchScript and, with ``onnx``,
    ONNX, with the preprocessing files beside them; or (``format="folder"``) as a model folder with its
    model card, which :func:`load_model` reads.

    What ``out`` already holds is replaced only with ``force``: for the graphs, any of the files to write;
    for a model folder, a non-empty folder that is not a model folder (an earlier export is replaced).

    Raises:
        OutputError: ``out`` holds what would be replaced (without ``force``) or lies inside an input.
    """
    from learner.evaluation.export import export_run, locate_runs

    if format not in ("onnx", "torchscript", "folder"):
        raise ConfigError(f"unknown export format {format!r}; available: folder, onnx, torchscript")
    encoder_run, classifier = locate_runs(run, encoder)
    if format == "folder":
        from learner.evaluation.model_folder import export_model_folder
        from learner.report.model_card import model_card

        card = model_card(encoder_run, classifier, which=which)
        return export_model_folder(encoder_run, classifier, out, which=which, card=card, force=force)
    graphs = onnx and format == "onnx"
    return export_run(encoder_run, classifier, out, which=which, onnx=graphs, force=force)


def load_model(folder: PathLike, *, device: str = "auto") -> LoadedModel:
    """A model folder (``learner export --format folder``) rebuilt on ``device``: ``predict`` a pair of
    scans (the answer ``learner predict`` gives on the original runs), ``embed`` a manifest, or start a
    pretraining from its encoder with ``model.init`` set to the folder. Reads JSON and safetensors only;
    nothing is downloaded.

    Raises:
        RunDirError, ConfigError, CheckpointError: a missing or incomplete folder, a bad ``config.json``,
            or weights that changed or do not fit (one line naming the file).
    """
    from learner.evaluation.model_folder import load_model as _load_model
    from learner.training.device import resolve_device

    return _load_model(folder, device=str(resolve_device(device)))


# --- experiments and reports --------------------------------------------------------------------------


def table3(
    out: PathLike,
    *,
    config: ExperimentSource = None,
    datasets: Sequence[DatasetSpec] | None = None,
    losses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
) -> ExperimentResult:
    """Table 3 (dataset × loss × seed: pretrain → embed → classify) into ``out``; ``datasets``, ``losses``
    and ``seeds`` replace the grid's axes (default: the experiment config's, which a YAML ``config`` may
    give in its ``experiment:`` section). Writes the report (``REPORT.md``, ``table3.md``) and the whole
    run's wall time per stage (``results.timing``) as the CLI does."""
    from learner.experiments.table3 import run_table3

    experiment = _experiment(config, overrides, datasets=datasets, losses=losses, seeds=seeds)
    return _reported_grid(lambda: run_table3(experiment, out, resume=resume, force=force))


def ablation(
    out: PathLike,
    *,
    config: ExperimentSource = None,
    datasets: Sequence[DatasetSpec] | None = None,
    backbones: Sequence[str] | None = None,
    combines: Sequence[str] | None = None,
    classifiers: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
) -> ExperimentResult:
    """Table 4 (backbone × combine × loss × classifier on every dataset and seed) into ``out``; the
    arguments replace the grid's axes as in :func:`table3`. Writes the report (``REPORT.md``,
    ``table4.md``) and ``results.timing``."""
    from learner.experiments.ablation import run_ablation

    axes = {"datasets": datasets, "backbones": backbones, "combines": combines, "classifiers": classifiers}
    experiment = _experiment(config, overrides, **axes, losses=losses, seeds=seeds)
    return _reported_grid(lambda: run_ablation(experiment, out, resume=resume, force=force))


def sweep(
    out: PathLike,
    *,
    config: ExperimentSource = None,
    datasets: Sequence[DatasetSpec] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    losses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
) -> ExperimentResult:
    """A sweep (dataset × named setting × loss × seed) into ``out``; ``settings`` (name → dotted overrides,
    e.g. ``{"small": {"data.size": 32}}``) are added to the grid's, replacing those of the same name; the
    other arguments replace the grid's axes as in :func:`table3`. Writes the report (``REPORT.md``,
    ``sweep.md``) and ``results.timing``."""
    from learner.experiments.sweep import run_sweep

    experiment = _experiment(config, overrides, datasets=datasets, losses=losses, seeds=seeds)
    if settings:
        named = experiment.grid.settings | {name: dict(keys) for name, keys in settings.items()}
        experiment = _with_grid(experiment, {"settings": named})
    return _reported_grid(lambda: run_sweep(experiment, out, resume=resume, force=force))


def ceiling(
    manifest: PathLike,
    out: PathLike,
    *,
    config: ConfigSource = None,
    overrides: Mapping[str, Any] | None = None,
    scale: str | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    frames: int | None = None,
    size: int | None = None,
    force: bool = False,
) -> CeilingResult:
    """``learner experiment ceiling``: how far Fig. 1's ρ against |Δ latent| can go on the test
    intra-patient pairs of ``manifest`` (a phantom manifest with a latent column): an oracle, a random-init
    encoder, raw pixels and hand features. Writes ``out/metrics.json`` and the report."""
    from learner.experiments.ceiling import run_ceiling
    from learner.report import write_report

    keys = {
        "data.manifest": manifest,
        "data.scale": scale,
        "seed": seed,
        "optim.epochs": epochs,
        "data.frames": frames,
        "data.size": size,
    }
    result = run_ceiling(_settings(config, overrides, keys), out, force=force)
    write_report(result.out_dir)
    return result


def demo(
    out: PathLike = Path("runs/demo"),
    *,
    dataset: str = "lus",
    full: bool = False,
    force: bool = False,
    longitudinal: bool = False,
) -> DemoResult:
    """``learner demo``: generate (or reuse) the phantom cohort(s) in ``out`` and run (or continue) Table 3
    on them (``dataset``: lus, mri or both; ``full``: paper-scale settings; ``longitudinal``: LUS train and
    val patients on several days too), with its report; ``timing`` is the whole run's (cohorts and report
    included), also stored in ``results.json``."""
    from learner.experiments.demo import run_demo
    from learner.timing import CLOCK

    started = CLOCK.mark()
    result = run_demo(out, dataset=dataset, full=full, force=force, longitudinal=longitudinal)
    experiment, timing = _report_and_time(result.experiment, started)
    return replace(result, experiment=experiment, timing=timing)


def report(run_dir: PathLike) -> Path:
    """``learner report``: write ``run_dir/REPORT.md`` for a finished experiment, classification or
    pretraining run and return its path."""
    from learner.report import write_report

    return write_report(run_dir)


def track(run_dir: PathLike, *, logger: str | None = None) -> TrackedRun:
    """``learner track``: record a finished pretraining, classification or experiment grid in a tracker from
    its files (``metrics.csv``, ``metrics.json``, ``results.json``), so that nothing is rerun; a grid becomes
    a parent run with one nested run per cell. ``logger`` (``mlflow`` or ``tensorboard``) defaults to the
    run's own ``runtime.logger``, else ``mlflow``; the store is the run's own (``run_dir/mlruns`` or
    ``run_dir/tensorboard``) and what it held for the run is replaced."""
    from learner.experiments.tracking import track_run

    return track_run(run_dir, logger)


def _reported_grid(run: Callable[[], ExperimentResult]) -> ExperimentResult:
    from learner.timing import CLOCK

    started = CLOCK.mark()
    return _report_and_time(run(), started)[0]


def _report_and_time(result: ExperimentResult, started: Mark) -> tuple[ExperimentResult, Timing]:
    """Write the report of a finished grid (timed as the stage ``report``) and store the wall time per
    stage since ``started`` in its ``results.json`` and its returned results."""
    from learner.experiments.grid import record_timing
    from learner.experiments.tracking import track_outputs
    from learner.report import write_report
    from learner.timing import CLOCK, stage

    with stage("report"):
        write_report(result.out_dir)
    timing = CLOCK.since(started)
    record_timing(result.out_dir, timing)
    track_outputs(result.out_dir)  # the grid's files as artifacts of its tracker run (runtime.logger)
    return replace(result, results=result.results.model_copy(update={"timing": timing})), timing


def _experiment(
    config: ExperimentSource, overrides: Mapping[str, Any] | None, **axes: Sequence[Any] | None
) -> Experiment:
    """The experiment of ``config`` with ``overrides`` on its run settings and the given ``axes`` replacing
    its grid's."""
    if isinstance(config, Experiment):
        experiment = config
    elif isinstance(config, Config):
        experiment = Experiment(config, ExperimentConfig())
    else:
        experiment = load_experiment(config, [])
    experiment = Experiment(load_config(experiment.config, overrides), experiment.grid)
    return _with_grid(experiment, {key: list(value) for key, value in axes.items() if value is not None})


def _with_grid(experiment: Experiment, update: Mapping[str, Any]) -> Experiment:
    if not update:
        return experiment
    grid = experiment.grid.model_dump() | dict(update)
    return Experiment(experiment.config, ExperimentConfig.model_validate(grid))


def _settings(config: ConfigSource, overrides: Mapping[str, Any] | None, keys: Mapping[str, Any]) -> Config:
    """``config`` ← ``overrides`` ← the given (not None) dotted ``keys`` of a function's own options."""
    given = {key: str(value) if isinstance(value, os.PathLike) else value for key, value in keys.items()}
    return load_config(config, {**(overrides or {}), **{k: v for k, v in given.items() if v is not None}})


def _override_items(overrides: Sequence[str] | Mapping[str, Any]) -> list[str]:
    """``key=value`` strings as ``--set`` takes them; a mapping's values as JSON (a YAML subset)."""
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    return list(overrides)


def _manifest(manifest: Manifest | PathLike | None, config: Config) -> Manifest:
    from learner.data.manifest import Manifest, load_manifest
    from learner.data.scales import scale_from_config

    if isinstance(manifest, Manifest):
        return manifest
    source = manifest if manifest is not None else config.data.manifest
    if source is None:
        raise ConfigError("no manifest: pass manifest= or set data.manifest")
    return load_manifest(source, scale_from_config(config.data), data_root=config.runtime.data_root)


COMMANDS: dict[str, Callable[..., Any]] = {
    "data check": check_manifest,
    "data split": split_manifest,
    "data adni": convert_adni,
    "data cache": build_cache,
    "phantom lus": phantom_lus,
    "phantom mri": phantom_mri,
    "phantom preview": phantom_preview,
    "pretrain": pretrain,
    "weights convert": convert_weights,
    "embed": embed,
    "classify": classify,
    "predict": predict,
    "export": export,
    "experiment table3": table3,
    "experiment ablation": ablation,
    "experiment sweep": sweep,
    "experiment ceiling": ceiling,
    "demo": demo,
    "report": report,
    "track": track,
    "config show": show_config,
    "config docs": write_config_docs,
}
"""Every ``learner`` command (its path below ``learner``) → the function here that it calls."""
