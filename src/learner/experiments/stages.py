"""One grid cell's two resumable stages (Section 3): pretraining, then classification on the frozen encoder.

A cell is one config (:func:`cell_config`). Each stage runs in its own folder: the encoder
(:func:`ensure_encoder`, :func:`learner.training.pretrain.pretrain`) in ``<cell>/encoder`` and the pair
classifier (:func:`ensure_classification`, :mod:`learner.experiments.classify`) in ``<cell>/classifier``.
:func:`run_cell` runs both in this process; :class:`CellJob` is the same work packed for another process (a
cluster job, :mod:`learner.experiments.launch`).

**Resumable.** A stage whose folder holds ``complete.json`` (:attr:`RunLayout.complete`, its stage record,
written last) is never recomputed; an interrupted pretraining continues from its last checkpoint, with
exactly the config it started with; an interrupted classification is redone (it is cheap). A complete stage
whose record does not match the request (config, paths, manifest content:
:mod:`learner.experiments.stage_records`, whose record types and digests this module re-exports) is an
error, never silently reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner import atomic
from learner.config import Config, DatasetSpec, apply_overrides
from learner.data.manifest import Manifest
from learner.evaluation.regression_quality import regression_quality
from learner.experiments.classify import run_classification
from learner.experiments.results import METRICS, Cell, GridKey
from learner.experiments.stage_records import ClassifierStage as ClassifierStage
from learner.experiments.stage_records import EncoderStage as EncoderStage
from learner.experiments.stage_records import StageIdentity, completed_stage
from learner.experiments.stage_records import completed as completed
from learner.experiments.stage_records import config_digest as config_digest
from learner.experiments.stage_records import pretraining_digest as pretraining_digest
from learner.experiments.tracking import track_cell
from learner.layout import RunLayout
from learner.timing import stage
from learner.training.checkpoint import checkpoint_fingerprint
from learner.training.device import resolve_device
from learner.training.faults import fault_point
from learner.training.names import check_names
from learner.training.pretrain import pretrain
from learner.training.resume import check_resumable
from learner.training.side_by_side import pretrain_side_by_side


def cell_config(base: Config, dataset: DatasetSpec, **keys: Any) -> Config:
    """The config of one grid cell: ``base`` pointed at ``dataset`` with dotted ``keys`` overridden, its
    registry names (backbone, loss, scale) checked so that a bad cell fails before any work.

    Raises:
        ConfigError: a bad key, value or name (one line naming the key).
    """
    cell = apply_overrides(
        base, {"data.manifest": str(dataset.manifest), "data.scale": dataset.scale, **keys}
    )
    check_names(cell)
    return cell


def ensure_encoder(config: Config, directory: Path, label: str | None = None) -> EncoderStage:
    """Pretrain into ``directory`` unless complete; continue an interrupted run from its last checkpoint.
    The pretraining is timed as the stage ``pretrain <label>`` (default: the directory)."""
    record = completed_stage(EncoderStage, directory, config)
    if record is not None:
        return record
    resume = RunLayout(directory).config.is_file()
    if resume:  # never extended: its record will say it was computed with the config asked for now
        check_resumable(config, directory, extend=False)
    occupied = _occupied(directory)
    identity = StageIdentity.of(config, directory)
    start = time.perf_counter()
    with stage(f"pretrain {label or directory}"):
        pretrain(config, directory, resume=resume, force=occupied and not resume)
    return record_encoder(identity, directory, time.perf_counter() - start, resumed=resume)


def ensure_encoders_side_by_side(encoders: Sequence[tuple[Config, Path, str]]) -> None:
    """Pretrain the new encoder stages of ``encoders`` ((config, folder, label) each; ``data.device_data``)
    side by side in this process (:func:`learner.training.side_by_side.pretrain_side_by_side`), each then
    recorded as :func:`ensure_encoder` records it, with the group's wall time as its ``seconds`` (they ran
    together). Complete stages, interrupted ones (resumed alone by :func:`ensure_encoder`) and a lone new
    one are left to :func:`ensure_encoder`."""
    new = [(config, directory, label) for config, directory, label in encoders if not _occupied(directory)]
    if len(new) < 2:
        return
    identities = [StageIdentity.of(config, directory) for config, directory, _ in new]
    start = time.perf_counter()
    with stage(f"pretrain side by side {', '.join(label for _, _, label in new)}"):
        pretrain_side_by_side([(config, directory) for config, directory, _ in new])
    seconds = time.perf_counter() - start
    for identity, (_, directory, _) in zip(identities, new, strict=True):
        record_encoder(identity, directory, seconds, resumed=False)


def _occupied(directory: Path) -> bool:
    """Something is in the stage folder: a run (complete or interrupted) or leftovers."""
    return directory.is_dir() and any(directory.iterdir())


def record_encoder(
    identity: StageIdentity, directory: Path, seconds: float, *, resumed: bool
) -> EncoderStage:
    """A finished pretraining in ``directory`` as its stage record (``identity``: taken before it ran),
    written to its ``complete.json`` (last: the stage is complete only once it exists); ``seconds``: the
    wall time of the call that finished it."""
    stage_dir = RunLayout(directory)
    finished = EncoderStage(
        **identity.model_dump(),
        fingerprint=checkpoint_fingerprint(stage_dir.checkpoint("best")),
        metrics=json.loads(stage_dir.metrics.read_text(encoding="utf-8")),
        seconds=seconds,
        resumed=resumed,
    )
    atomic.write_json(stage_dir.complete, finished.to_json())
    return finished


def ensure_classification(
    encoder_dir: Path,
    manifest: Manifest,
    config: Config,
    directory: Path,
    device: str,
    encoder_fingerprint: str | None = None,
) -> ClassifierStage:
    """Fit and test the classifier on ``encoder_dir`` into ``directory`` unless complete. Given the
    encoder's ``encoder_fingerprint``, a complete stage fitted on other encoder weights is redone (a sweep
    cell that now shares another cell's encoder; classifying takes seconds)."""
    record = completed_stage(ClassifierStage, directory, config)
    if record is not None and encoder_fingerprint in (None, record.metrics.get("encoder_fingerprint")):
        return record
    identity = StageIdentity.of(config, directory)
    with stage("classification"):
        result = run_classification(encoder_dir, manifest, config, directory, device=device, force=True)
    finished = ClassifierStage(**identity.model_dump(), metrics=result.metrics)
    atomic.write_json(RunLayout(directory).complete, finished.to_json())
    return finished


def cell_result(
    key: GridKey,
    seed: int,
    where: Path,
    clips_per_scan: int,
    encoder: EncoderStage,
    classified: ClassifierStage,
    encoder_dir: Path,
) -> Cell:
    """A finished cell from its two stage records: test metrics and CIs, pairs, and the regression quality
    of its encoder (``encoder_dir``: the best row, the last epoch's val MAE and the interval of its gain over
    the baseline, :func:`learner.evaluation.regression_quality.regression_quality`)."""
    test = classified.metrics["test"]
    return Cell(
        key=key,
        seed=seed,
        dir=str(where),
        clips_per_scan=clips_per_scan,
        **{name: test[name] for name in METRICS},
        ci=test["ci"],
        n_test_pairs=test["n"],
        regression=regression_quality(encoder_dir, seed=seed),
        pair_counts=classified.metrics["pair_counts"],
        encoder_fingerprint=encoder.fingerprint,
        pretrain_seconds=encoder.seconds,
        pretrain_resumed=encoder.resumed,
        answers=classified.metrics.get("answers", {}),
    )


def run_cell(
    run_dir: Path,
    where: Path,
    key: GridKey,
    config: Config,
    manifest: Manifest,
    device: str,
    encoder: tuple[Path, Config] | None = None,
) -> Cell:
    """One cell of a grid (Tables 3 and 4, the sweep): pretrain into ``run_dir/where/encoder`` and classify
    into the cell's classification stage (``run_dir/where/classifier``, or ``classify-<combine>-<head>`` for
    an ablation variant: :attr:`GridKey.variant`), each unless complete.

    ``encoder`` = (``cell``, its config): the encoder stage to pretrain under that config (unless complete)
    and classify on, when it is not this cell's own config: an ablation's classifier variants share their
    cell's encoder, and a sweep cell whose config differs from an earlier cell's only in keys the classify
    stage reads (:meth:`Config.pretraining_settings`) reuses ``run_dir/cell/encoder`` instead of pretraining
    the same encoder again. A cell on another cell's encoder records that folder as its ``encoder_dir``."""
    encoder_where, encoder_config = encoder or (where, config)
    grid = RunLayout(run_dir)
    encoder_dir = grid.encoder(encoder_where).root
    pretrained = ensure_encoder(encoder_config, encoder_dir, str(encoder_where))
    stage_dir = grid.classification(where, key.variant).root
    classified = ensure_classification(
        encoder_dir, manifest, config, stage_dir, device, pretrained.fingerprint
    )
    cell = cell_result(
        key, config.seed, where, config.classifier.clips_per_scan, pretrained, classified, encoder_dir
    )
    fault_point("cell")
    if encoder_where != where:
        cell = cell.model_copy(update={"encoder_dir": str(RunLayout(encoder_where).encoder().root)})
    track_cell(run_dir, cell, config)  # a nested run of the grid's (runtime.logger; nothing for csv)
    return cell


@dataclass(frozen=True)
class CellJob:
    """The stages of one grid cell, self-contained so that another process (a cluster job) can run them:
    pretrain ``encoder`` into ``run_dir/where/encoder``, then classify on it into ``run_dir/where/<name>``
    for each ``(name, config)`` of ``classifications``."""

    run_dir: Path
    where: Path
    encoder: Config
    classifications: tuple[tuple[str, Config], ...]
    manifest: Manifest

    def __call__(self) -> str:
        """Run the stages that are not complete yet (on the device the cell's config asks for, resolved
        where the job runs); returns the cell's folder."""
        encoder = self.encoder_dir
        ensure_encoder(self.encoder, encoder, str(self.where))
        device = str(resolve_device(self.encoder.runtime.device))
        for name, config in self.classifications:
            ensure_classification(encoder, self.manifest, config, self.run_dir / self.where / name, device)
        return str(self.where)

    @property
    def encoder_dir(self) -> Path:
        """The cell's encoder stage folder, ``run_dir/where/encoder``."""
        return RunLayout(self.run_dir / self.where).encoder().root
