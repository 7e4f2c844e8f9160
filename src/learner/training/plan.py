"""Everything a pretraining needs checked before it starts: :func:`plan_pretraining`.

It reads the config, the run directory's state, the manifest and its split, and builds the model and the
objective once, decoding nothing and writing nothing; any problem is a one-line :class:`LearnerError`.
:func:`learner.training.pretrain.pretrain` runs it before it creates the run directory or decodes a scan,
and ``--dry-run`` can print what it returns.

**The test split stays unseen, also through ``model.init``.** A run that starts from another learner run
(a self-supervised stage, a previous fine-tune) inherits what that run trained on. When the two splits
differ (another seed without a manifest split column, another ``data.split``), the start may have trained
on scans of this run's test patients, and the intra-patient test pairs would no longer be unseen.
:func:`check_init_split` refuses that before any work.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from learner.config import Config
from learner.data.manifest import Manifest, load_manifest
from learner.data.patient_batches import PIECE, longitudinal_tracks
from learner.data.scales import scale_from_config
from learner.data.scan_kinds import kind_of_record
from learner.data.splits import read_splits, resolve_splits
from learner.errors import CheckpointError, ConfigError, LearnerError
from learner.layout import RunLayout
from learner.losses.registry import ScoreLabels, build_objective, build_view_objective
from learner.losses.regression import ScoreStandardiser
from learner.models.encoder import IN_CHANNELS, SIZES
from learner.models.registry import build_encoder, build_regressor
from learner.models.weights import conversion_record, init_weights_file
from learner.runs import check_inputs_outside, check_run_dir
from learner.training import compiled
from learner.training.device import resolve_device, runs_on_cuda
from learner.training.loaders import batch_exceeds
from learner.training.loggers import check_logger
from learner.training.names import check_names
from learner.training.resume import check_resumable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainPlan:
    """A pretraining that can start: its config, where it writes, and the manifest with the split applied.

    Attributes:
        config: the run's config (``data.manifest`` set).
        run_dir: the run directory (created or reopened only when the run starts).
        resume: continue ``run_dir`` from its checkpoints; force: wipe it first.
        manifest: the validated manifest, every record's ``split`` set.
        split_from_file: the split is the manifest's own column (else made with ``config.seed``).
        scans: scans per split before decoding (``train``, ``val``, ``test``); a self-supervised run trains
            on ``train`` + ``val``.
        steps_per_epoch: optimiser updates per epoch if no scan is skipped.
    """

    config: Config
    run_dir: Path
    resume: bool
    force: bool
    manifest: Manifest
    split_from_file: bool
    scans: dict[str, int]
    steps_per_epoch: int

    @property
    def splits(self) -> dict[str, str]:
        """Patient → split."""
        return {r.patient_id: str(r.split) for r in self.manifest.records}


def plan_pretraining(
    config: Config,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    force: bool = False,
    world_size: int = 1,
) -> PretrainPlan:
    """Check a pretraining before any work: registry names, device, run directory (and, with ``resume``,
    that only ``runtime`` changed), manifest, split, batch size, model and objective.

    Raises:
        ConfigError, ManifestError, RunDirError, CheckpointError: one line naming the key, file or row.
    """
    check_names(config)
    resolve_device(config.runtime.device)
    check_logger(config.runtime.logger)
    root = Path(run_dir)
    check_run_dir(root, resume=resume, force=force, kind="pretraining")
    if resume:
        check_resumable(config, root)
    if config.data.manifest is None:
        raise ConfigError("data.manifest is not set; pass --manifest or set data.manifest")
    manifest = load_manifest(
        config.data.manifest, scale_from_config(config.data), data_root=config.runtime.data_root
    )
    if force:
        init = [config.model.init] if config.model.init is not None else []
        check_inputs_outside(root, [manifest.source, *(r.path for r in manifest.records), *init])
    plan = check_pretraining(config, manifest, world_size=world_size)
    return replace(plan, run_dir=root, resume=resume, force=force)


def check_pretraining(
    config: Config, manifest: Manifest, *, world_size: int = 1, build_model: bool = True
) -> PretrainPlan:
    """The checks of :func:`plan_pretraining` that need no run directory, on a loaded ``manifest`` (an
    experiment grid runs them for every cell before its first pretraining; ``build_model=False`` skips
    building a model another cell already built). ``run_dir`` of the result is empty.

    Raises:
        ConfigError, ManifestError, CheckpointError: one line naming the key, file or row.
    """
    check_names(config)
    data, optim = config.data, config.optim
    scale = scale_from_config(data)
    splits, from_file = resolve_splits(manifest, data.split, config.seed)
    check_init_split(config.model.init, splits)
    manifest = manifest.with_splits(splits)
    scans = {split: len(manifest.by_split(split)) for split in ("train", "val", "test")}
    for split in ("train", "val"):
        if not scans[split]:
            raise ConfigError(f"{manifest.source}: the {split} split has no scans (data.split)")
    self_supervised = build_view_objective(config.loss) is not None
    train_scans = scans["train"] + scans["val"] * self_supervised
    if optim.batch_size % world_size:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} must divide evenly over {world_size} processes"
        )
    if config.data.device_data:
        check_device_data(config, world_size)
    if config.runtime.cuda_graph:
        check_cuda_graph(config)
    check_compile(config)
    batches = train_scans // optim.batch_size
    if batches == 0:
        raise batch_exceeds(optim.batch_size, train_scans)
    warn_about_kinds(manifest, data.frames)
    if not self_supervised:  # its terms' settings (bins, margins) are checked against the scale here
        scores = [r.score for r in manifest.by_split("train")]
        if len(set(scores)) == 1:
            raise LearnerError(
                f"{manifest.source}: every one of the {len(scores)} train scans has the score {scores[0]:g}: "
                "there is nothing to regress (check the score column, or pretrain with --loss vicreg)"
            )
        build_objective(config.loss, ScoreLabels(ScoreStandardiser.fit(scores), scale.class_edges()))
        if config.loss.within_patient > 0:
            check_within_patient(config, manifest, world_size)
    elif config.loss.within_patient > 0:
        raise ConfigError(
            f"loss.within_patient acts on the score head, which loss.name={config.loss.name} does not train"
        )
    if build_model:
        build_model_and_init(config)  # model.* and model.init, before decoding
    return PretrainPlan(
        config=config,
        run_dir=Path(),
        resume=False,
        force=False,
        manifest=manifest,
        split_from_file=from_file,
        scans=scans,
        steps_per_epoch=min(batches, optim.max_steps_per_epoch or batches),
    )


def build_model_and_init(config: Config) -> None:
    """Build the regressor and load ``model.init``. Weights that fit another ``model.size`` or
    ``data.channels`` (converted, or trained, for it) are refused naming the setting that fits them:
    the shape list alone (``100 shape mismatches (bn1.bias (16,) vs (64,), …)``) does not say what to set.

    Raises:
        CheckpointError, ConfigError: one line naming the key or file.
    """
    model, data = config.model, config.data
    try:
        build_regressor(model, data.channels, data.size, frames=data.frames)
    except CheckpointError:
        if model.init is None or (fits := init_fits(config)) is None:
            raise
        run = {"model.size": model.size, "data.channels": data.channels}
        made = "trained with" if model.init.is_dir() else "its weights fit"
        made = "converted for" if conversion_record(init_weights_file(model.init)) else made
        sets = " ".join(f"--set {key}={value}" for key, value in fits.items())
        raise CheckpointError(
            f"{model.init}: {made} {', '.join(f'{k}={v}' for k, v in fits.items())}; this run has "
            f"{', '.join(f'{k}={run[k]}' for k in fits)} (set {sets})"
        ) from None


def init_fits(config: Config) -> dict[str, object] | None:
    """The ``model.size`` and ``data.channels`` that differ from ``config``'s and that ``model.init`` loads
    into (the fewest changed first), or None when no such setting takes it."""
    model, data = config.model, config.data
    run = (model.size, data.channels)
    others = sorted(
        ((size, channels) for size in SIZES for channels in IN_CHANNELS if (size, channels) != run),
        key=lambda other: (other[0] != run[0]) + (other[1] != run[1]),
    )
    for size, channels in others:
        try:
            build_encoder(
                model.model_copy(update={"size": size}), channels, img_size=data.size, frames=data.frames
            )
        except LearnerError:
            continue
        settings = {"model.size": (size, run[0]), "data.channels": (channels, run[1])}
        return {key: new for key, (new, old) in settings.items() if new != old}
    return None


def check_within_patient(config: Config, manifest: Manifest, world_size: int) -> None:
    """``loss.within_patient`` needs train patients scanned on 2+ visits (at one site) and local batches of
    whole visit pairs (:class:`~learner.data.patient_batches.PatientBatchSampler`).

    Raises:
        ConfigError: no such train patient, or a local batch that is not a multiple of the pair size.
    """
    local = config.optim.batch_size // world_size
    if local % PIECE:
        raise ConfigError(
            f"loss.within_patient needs local batches of whole visit pairs: optim.batch_size / processes = "
            f"{local} is not a multiple of {PIECE}"
        )
    if not longitudinal_tracks(manifest.by_split("train")):
        raise ConfigError(
            f"loss.within_patient: no train patient of {manifest.source} has scans of 2+ visits at one "
            "site, so the term would have nothing to learn from; it needs a longitudinal cohort "
            "(e.g. learner phantom lus --longitudinal)"
        )


def check_device_data(config: Config, world_size: int) -> None:
    """Refuse ``data.device_data`` where its train batches cannot be made on the device.

    Raises:
        ConfigError: several processes, ``data.sampling=resample`` or ``loss.within_patient`` (each named
            with what to change).
    """
    if world_size > 1:
        raise ConfigError(
            f"data.device_data runs in one process, got {world_size}; start one process, or set "
            "data.device_data=false"
        )
    if config.data.sampling != "segments":
        raise ConfigError(
            f"data.device_data needs data.sampling=segments, got {config.data.sampling}; set "
            "data.device_data=false to resample scans"
        )
    if config.loss.within_patient > 0:
        raise ConfigError(
            "data.device_data draws batches of random scans, not the visit pairs of loss.within_patient; "
            "set data.device_data=false or loss.within_patient=0"
        )


def check_cuda_graph(config: Config) -> None:
    """Refuse ``runtime.cuda_graph`` where the step cannot be recorded as a CUDA graph
    (:mod:`learner.training.step_graph`); fp16 loss scaling is refused once the device is known
    (:func:`~learner.training.device_epoch.start_device_run`).

    Raises:
        ConfigError: the loader path (``data.device_data=false``), a run without CUDA, a cross-batch
            memory (``loss.memory``: its references grow and are rebound every step), or a
            ``runtime.compile`` mode that records CUDA graphs itself, each named with what to change.
    """
    if not config.data.device_data:
        raise ConfigError(
            "runtime.cuda_graph records the step of the device-data path; set data.device_data=true or "
            "runtime.cuda_graph=false"
        )
    if not runs_on_cuda(config.runtime.device):
        raise ConfigError(
            "runtime.cuda_graph needs a CUDA device (runtime.device=cuda, or auto where one is visible), got "
            f"runtime.device={config.runtime.device} here; set runtime.cuda_graph=false"
        )
    if config.loss.memory > 0:
        raise ConfigError(
            f"runtime.cuda_graph: loss.memory={config.loss.memory} rebinds its references every step, which "
            "a recorded step cannot follow; set loss.memory=0 or runtime.cuda_graph=false"
        )
    if config.runtime.compile in compiled.GRAPH_MODES:
        raise ConfigError(
            f"runtime.compile={config.runtime.compile} records CUDA graphs of its own, which "
            "runtime.cuda_graph cannot record inside its graph; set runtime.compile=default (or "
            "max-autotune-no-cudagraphs) or runtime.cuda_graph=false"
        )


def check_compile(config: Config) -> None:
    """Refuse ``runtime.compile`` where Inductor cannot build its kernels (:mod:`learner.training.compiled`):
    C++ on a CPU (the compiler of ``$CXX``, else ``g++``, as Inductor picks it), Triton on a GPU.

    Raises:
        ConfigError: one line naming what is missing and what to change.
    """
    if config.runtime.compile == "off" or compiled.BACKEND != "inductor":
        return
    if runs_on_cuda(config.runtime.device):
        if not triton_installed():
            raise ConfigError(
                f"runtime.compile={config.runtime.compile} on a GPU needs triton (torch's CUDA wheels bring "
                "it); install it or set runtime.compile=off"
            )
    elif shutil.which(compiler := os.environ.get("CXX", "g++")) is None:
        raise ConfigError(
            f"runtime.compile={config.runtime.compile} on a CPU needs a C++ compiler: {compiler} is not on "
            "PATH; install g++ (or set CXX) or set runtime.compile=off"
        )


def triton_installed() -> bool:
    """Whether ``triton`` (Inductor's GPU kernel language) can be imported, without importing it."""
    return importlib.util.find_spec("triton") is not None


def check_init_split(init: str | os.PathLike[str] | None, splits: Mapping[str, str]) -> None:
    """Refuse a ``model.init`` run that trained on a test patient of ``splits`` (patient → split).

    ``init`` may be a learner run or one of its checkpoint folders (``RUN/checkpoints/best``); the run's
    ``splits.csv`` names what it saw. Train and val patients count as seen: a supervised run fitted the
    one and selected its checkpoint on the other, a self-supervised run (``--loss vicreg``) trains on
    both. A weights file from elsewhere carries no split and is not checked.

    Raises:
        ConfigError: one line naming the run, how many test patients it saw and the first few.
    """
    run = _init_run(init)
    if run is None:
        return
    seen = read_splits(run)
    leaked = sorted(p for p, split in seen.items() if split in ("train", "val") and splits.get(p) == "test")
    if leaked:
        listed = ", ".join(leaked[:5]) + (", ..." if len(leaked) > 5 else "")
        raise ConfigError(
            f"model.init: {run} trained on {len(leaked)} patient(s) that are test patients of this run's "
            f"split ({listed}); start from a run made with the same split (the same seed and data.split, "
            "or a manifest split column)"
        )


def _init_run(init: str | os.PathLike[str] | None) -> Path | None:
    """The learner run a ``model.init`` path comes from: the run itself or the run above its checkpoint
    folder; None for a file or a folder that is not from a run."""
    if init is None:
        return None
    path = Path(init)
    if not path.is_dir():
        return None
    above = path.parent.parent  # the run whose checkpoints/<which> ``path`` may be
    candidates = [path, above] if RunLayout(above).checkpoint(path.name) == path else [path]
    return next((run for run in candidates if RunLayout(run).splits.is_file()), None)


def warn_about_kinds(manifest: Manifest, frames: int) -> None:
    """Warn where the kinds of scan (:func:`learner.data.scan_kinds.kind_of_record`) and ``data.frames``
    disagree: still images with several frames (each clip T copies of one image), or volumes beside clips
    or images (one encoder then reads slices and frames in time as one kind of input)."""
    kinds = Counter(kind_of_record(record) for record in manifest.records)
    if kinds["image"] and frames > 1:
        log.warning(
            "%s: %d scan(s) are still images (an image file, a single-frame DICOM or modality image): with "
            "data.frames=%d every clip is %d copies of one image; set data.frames=1 (the TSM encoder then "
            "runs as a plain 2-D ResNet-18)",
            manifest.source,
            kinds["image"],
            frames,
            frames,
        )
    known = {kind: count for kind, count in kinds.items() if kind is not None}
    if "volume" in known and len(known) > 1:
        counted = ", ".join(f"{count} {kind}" for kind, count in sorted(known.items()))
        log.warning(
            "%s: the scans mix volumes with other kinds (%s): one encoder would take a volume's slices and "
            "a clip's frames for the same kind of input; check the paths, or train one encoder per kind",
            manifest.source,
            counted,
        )
