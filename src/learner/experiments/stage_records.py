"""A grid stage's record, ``complete.json`` (:attr:`learner.layout.RunLayout.complete`), and when a request
may reuse it (:mod:`learner.experiments.stages` runs the stages).

A stage records what it was computed with (:class:`StageIdentity`): the digest of its config
(:func:`config_digest`, its paths counting only as set), its paths (relative to the stage folder and
absolute: :func:`learner.runs.portable_paths`) and the sha256 of its manifest's bytes
(:func:`manifest_digest`). A request reuses a complete stage (:func:`completed`) only when the digest is
its own, each path names the same file by either form (so that neither how a path is spelled, relative or
absolute, from any working directory, nor a move of the grid with or without its data matters) and the
manifest's content is unchanged; anything else is a one-line :class:`~learner.errors.RunDirError` naming
the stage, and so is a damaged record (naming the file), before any work. An interrupted pretraining stage
continues only with exactly the config it started with and on the manifest content the grid recorded when
it started (:func:`check_interrupted_encoder`).

**Records of an earlier version** kept only a digest of the config with its paths as given: such a record
matches when the paths are given as they were then, or as absolute paths; its manifest's content cannot be
checked, which a warning says once per manifest.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from learner.config import PATH_KEYS, Config
from learner.errors import LearnerError, RunDirError
from learner.experiments.results import METRICS, Record
from learner.layout import ENCODER_STAGE, RunLayout
from learner.runs import changed_path, load_run_config, portable_paths, with_absolute_paths
from learner.training.resume import check_resumable

log = logging.getLogger(__name__)

RESULT_PATHS = tuple(key for key in PATH_KEYS if not key.startswith("runtime."))
"""The config's paths that decide a stage's results (``runtime.cache_dir`` does not)."""


class StageIdentity(Record):
    """What a stage record says its stage was computed with (:meth:`of`); ``paths`` and ``manifest_sha256``
    are None in a record of an earlier version, which kept only a digest of its paths as given."""

    config_digest: str
    paths: dict[str, dict[str, str]] | None = None
    manifest_sha256: str | None = None

    @classmethod
    def of(cls, config: Config, directory: Path) -> StageIdentity:
        """The identity of the stage ``config`` computes in ``directory``, taken before it runs."""
        paths = portable_paths(config, directory, RESULT_PATHS)
        manifest = manifest_digest(config.data.manifest)
        return cls(config_digest=config_digest(config), paths=paths, manifest_sha256=manifest)


class EncoderStage(StageIdentity):
    """``complete.json`` of a pretraining stage: its identity, the fingerprint of ``checkpoints/best``,
    pretraining's ``metrics.json`` (best/last val MAE, RMSE, r and the predict-the-mean baseline), and the
    measured wall time of the :func:`learner.training.pretrain.pretrain` call that finished it
    (``seconds``; ``resumed``: that call continued an interrupted run, so the time before the interruption
    is not in it)."""

    fingerprint: str
    metrics: dict[str, Any]
    seconds: float | None
    resumed: bool


class ClassifierStage(StageIdentity):
    """``complete.json`` of a classification stage: its identity and the stage's ``metrics.json``."""

    metrics: dict[str, Any]


StageRecord = TypeVar("StageRecord", EncoderStage, ClassifierStage)


def config_digest(config: Config) -> str:
    """Hash of everything in ``config`` that changes results (all but ``runtime``), a set path counting only
    as set: a stage record keeps its paths apart (:func:`learner.runs.portable_paths`), so that neither
    their spelling nor a move of the grid changes the digest."""
    settings = config.result_settings()
    for key in RESULT_PATHS:
        section, name = key.split(".")
        if settings[section][name] is not None:
            settings[section][name] = "<path>"
    return _digest(settings)


def pretraining_digest(config: Config) -> str:
    """Hash of everything in ``config`` that changes its pretraining (:meth:`Config.pretraining_settings`),
    its paths made absolute: cells with equal digests would train the same encoder."""
    return _digest(with_absolute_paths(config).pretraining_settings())


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def manifest_digest(manifest: str | os.PathLike[str] | None) -> str | None:
    """sha256 of the bytes of the ``manifest`` file (None when unset), so that a stage computed on another
    content of the manifest at the same path (scores corrected, rows added) is never reused. Only the
    content counts: a plain copy (new mtime) has the same digest.

    Raises:
        RunDirError: the manifest cannot be read (naming it).
    """
    if manifest is None:
        return None
    path = Path(manifest).resolve()
    try:
        stat = path.stat()
        return _file_sha256(path, stat.st_size, stat.st_mtime_ns)
    except OSError as error:
        raise RunDirError(f"{manifest}: cannot read the manifest ({error.strerror})") from None


@functools.lru_cache(maxsize=64)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The sha256 of ``path``'s bytes; size and mtime only key the cache (every stage of a grid asks)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def completed(directory: Path, config: Config) -> EncoderStage | ClassifierStage | None:
    """The ``complete.json`` record of a finished stage (a pretraining stage in an ``encoder`` folder, else a
    classification stage), None when unfinished.

    Raises:
        RunDirError: the stage finished with another config, other files (paths) or another content of
            the manifest (reusing it would mix settings), or its record is damaged; one line naming the
            stage or the file.
    """
    if Path(directory).name == ENCODER_STAGE:
        return completed_stage(EncoderStage, directory, config)
    return completed_stage(ClassifierStage, directory, config)


def completed_stage(kind: type[StageRecord], directory: Path, config: Config) -> StageRecord | None:
    """:func:`completed` for a stage whose record is a ``kind``."""
    path = RunLayout(directory).complete
    if not os.path.lexists(path):
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _damaged(path, f"not readable JSON: {error}") from None
    if not isinstance(raw, dict):
        raise _damaged(path, f"a JSON {type(raw).__name__}, not an object")
    if "paths" in raw:
        same = raw.get("config_digest") == config_digest(config)
    else:  # an earlier version hashed its paths as given: as they are given now, or made absolute
        same = raw.get("config_digest") in {
            _digest(c.result_settings()) for c in (config, with_absolute_paths(config))
        }
    if not same:
        raise _another_config(directory, "")
    try:
        record = kind.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        problem = f"{'.'.join(str(part) for part in first['loc']) or 'the record'}: {first['msg']}"
        raise _damaged(path, f"{error.error_count()} problem(s), e.g. {problem}") from None
    if isinstance(record, ClassifierStage) and (missing := _missing_metrics(record.metrics)):
        raise _damaged(path, f"its metrics lack {missing}")
    current = portable_paths(config, directory, RESULT_PATHS)
    if record.paths is not None and (moved := changed_path(record.paths, current)):
        raise _another_config(directory, f" ({moved})")
    if _manifest_changed(config, record.manifest_sha256, f"finished stages such as {directory}"):
        raise RunDirError(
            f"{directory} was computed on another content of {config.data.manifest} (its sha256 "
            "differs); put the previous manifest back, or use a new output folder or --force to redo it"
        )
    return record


def check_interrupted_encoder(config: Config, directory: Path, manifest_sha256: str | None) -> None:
    """Refuse to continue the interrupted pretraining stage in ``directory`` unless ``config`` is exactly the
    one it started with (:func:`learner.training.resume.check_resumable`, never extended) and the manifest
    has the content it started on, ``manifest_sha256`` (the grid's record; None: a grid of an earlier
    version, warned about and not checked).

    Raises:
        RunDirError: naming the stage and the keys, or the stage and the manifest.
    """
    check_resumable(config, directory, extend=False)
    if _manifest_changed(config, manifest_sha256, f"the interrupted stage {directory}"):
        raise RunDirError(
            f"{directory}: this interrupted stage started on another content of {config.data.manifest} (it "
            "changed since the grid last ran); put the previous manifest back, or use a new output folder"
        )


_UNCHECKED: set[str] = set()
"""The manifests this process has warned about (:func:`_manifest_changed`)."""


def _manifest_changed(config: Config, recorded: str | None, what: str) -> bool:
    """Whether ``data.manifest``'s content differs from the ``recorded`` sha256 of the content ``what`` (the
    stages concerned) started on; None recorded (an earlier version) is not checked, and said once per
    manifest."""
    manifest = config.data.manifest
    if manifest is not None and recorded is None and str(manifest) not in _UNCHECKED:
        _UNCHECKED.add(str(manifest))
        log.warning(
            "%s: cannot check that its content is the one %s started on (written by an earlier version of "
            "learner, which recorded no fingerprint of it); continuing",
            manifest,
            what,
        )
    return manifest is not None and recorded is not None and recorded != manifest_digest(manifest)


def _another_config(directory: Path, detail: str) -> RunDirError:
    return RunDirError(
        f"{directory} was computed with another config{detail}; use a new output folder or --force to redo it"
    )


def _damaged(path: Path, problem: str) -> RunDirError:
    return RunDirError(
        f"{path}: not a stage record of this version ({problem}); move its stage folder ({path.parent}) "
        "out to compute the stage again, or use a new output folder"
    )


def _missing_metrics(metrics: dict[str, Any]) -> str | None:
    """The first entry that a classification stage's ``metrics`` lack of those
    :func:`learner.experiments.stages.cell_result` reads."""
    test = metrics.get("test")
    if not isinstance(test, dict):
        return "test"
    needed = [f"test.{name}" for name in (*METRICS, "ci", "n") if name not in test]
    return next(iter(needed + (["pair_counts"] if "pair_counts" not in metrics else [])), None)


def stage_where(root: Path, where: Path, config: Config) -> Path:
    """``where`` (relative to the grid ``root``), the folder of a new pretraining stage named by the digest of
    its ``config`` (``<name>-<digest>``), or the sibling folder (``<name>-*``) in which this grid already
    pretrains ``config``: one named when its paths were spelled otherwise, or before the grid moved (the
    stage's stored config, its paths resolved by :func:`learner.runs.load_run_config`, equals ``config``)."""
    if (root / where).exists():
        return where
    prefix = where.name.rsplit("-", 1)[0]
    wanted = with_absolute_paths(config).pretraining_settings()
    for candidate in sorted((root / where.parent).glob(f"{glob.escape(prefix)}-*")):
        try:
            stored = load_run_config(RunLayout(candidate).encoder().root)
        except LearnerError:  # not a stage folder, or one written by another version
            continue
        if stored.pretraining_settings() == wanted:
            return where.parent / candidate.name
    return where
