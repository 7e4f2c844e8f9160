"""Run directories: every command that produces results writes one.

Layout (every name is :class:`RunLayout`'s; no other module builds one)::

    RUN_DIR/
      config.yaml      the resolved Config
      run.json         seed, command line, start time, git commit, package versions, platform, and the
                       machine: CPU model, ISA flags, torch's CPU kernels, oneDNN / MKL versions, threads;
                       a resume adds resume-<n>.json beside it
      log.txt          the run's log (appended on --resume)
      metrics.json     final metrics (written atomically)
      metrics.csv      one row per epoch (rewritten atomically after each epoch)
      ...              checkpoints/, splits.csv, pairs/, classifier/, embeddings/, figures as each stage
                       adds them; an experiment grid: results.json and <cell>/{encoder,classifier}/

A non-empty directory is refused unless ``resume`` (continue it) or ``force`` (wipe it) is given; ``force``
only ever wipes a folder that holds a previous run (its ``config.yaml`` or ``run.json``), never other files.

**Portable paths.** ``config.yaml`` stores the paths of :data:`PATH_KEYS` relative to the run directory, and
``run.json["paths"]`` records each as it was typed and as an absolute path. :func:`load_run_config` resolves
them against the run directory, so a run works from any working directory and after being moved together
with its data; when the relative target is gone but the recorded absolute one exists (the run moved
without its data), the absolute one is used. A run directory without ``run.json["paths"]`` (written before
this rule) keeps its paths as stored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner import atomic
from learner.config import Config, apply_overrides, stored_config
from learner.environment import environment_record
from learner.errors import RunDirError

PATH_KEYS: tuple[str, ...] = ("data.manifest", "model.init", "runtime.cache_dir")
"""The config's file-system paths, stored relative to the run directory (see the module docstring)."""


@dataclass(frozen=True)
class RunLayout:
    """The name of every file and folder of a run directory: owned here, built nowhere else.

    Three kinds of run directory share it. A **pretraining run** (``learner pretrain``, a grid cell's encoder
    stage) holds ``checkpoints/{best,last}``, ``metrics.csv`` and ``metrics.json``; a **classification run**
    (``learner classify``, a grid cell's classification stage) holds ``classifier/`` and ``metrics.json``; an
    **experiment grid** holds ``results.json`` and one folder per cell (``<dataset>/.../seed-<k>``) with an
    encoder stage and one classification stage per classifier variant (:meth:`encoder`,
    :meth:`classification`). Every run directory holds ``config.yaml``, ``run.json`` and ``log.txt``.

    Paths only: nothing is created or read (:class:`RunDir` writes).
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        """``config.yaml``: the resolved config, paths relative to the run directory."""
        return self.root / "config.yaml"

    @property
    def record(self) -> Path:
        """``run.json``: seed, command line, versions, machine (:func:`environment_record`)."""
        return self.root / "run.json"

    def next_resume_record(self) -> Path:
        """``resume-<n>.json``: how and where the n-th ``--resume`` of this run started."""
        return self.root / f"resume-{len(list(self.root.glob('resume-*.json'))) + 1}.json"

    @property
    def log(self) -> Path:
        """``log.txt``: the run's log, appended on ``--resume``."""
        return self.root / "log.txt"

    @property
    def metrics(self) -> Path:
        """``metrics.json``: a pretraining's best/last rows or a classification's test metrics."""
        return self.root / "metrics.json"

    @property
    def epochs(self) -> Path:
        """``metrics.csv``: one row per pretraining epoch."""
        return self.root / "metrics.csv"

    @property
    def results(self) -> Path:
        """``results.json``: an experiment grid's cells, summary and figures."""
        return self.root / "results.json"

    @property
    def complete(self) -> Path:
        """``complete.json``: a grid stage's record, written last (the stage is never recomputed)."""
        return self.root / "complete.json"

    @property
    def splits(self) -> Path:
        """``splits.csv``: a pretraining run's patient → split (columns ``patient_id``, ``split``)."""
        return self.root / "splits.csv"

    @property
    def embeddings(self) -> Path:
        """``embeddings/``: a pretraining run's cached embedding tables, one per checkpoint and manifest."""
        return self.root / "embeddings"

    def pairs(self, split: str) -> Path:
        """``pairs/<split>.csv``: a classification run's pair table of one split."""
        return self.root / "pairs" / f"{split}.csv"

    @property
    def predictions(self) -> Path:
        """``predictions.csv``: a classification run's prediction per test pair."""
        return self.root / "predictions.csv"

    @property
    def classifier(self) -> Path:
        """``classifier/``: a classification run's fitted pair classifier."""
        return self.root / "classifier"

    def started(self) -> bool:
        """Whether the run holds something worth resuming: a ``last`` checkpoint of its own or of a grid
        cell's encoder, or a classification's metrics."""
        return self.metrics.is_file() or any(self.root.glob("**/checkpoints/last"))

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<which>``: a pretraining checkpoint folder (``best`` or ``last``)."""
        return self.root / "checkpoints" / which

    def encoder(self, cell: str | os.PathLike[str] = ".") -> RunLayout:
        """A grid cell's encoder stage (a pretraining run): ``<cell>/encoder``."""
        return RunLayout(self.root / cell / ENCODER_STAGE)

    def classification(
        self, cell: str | os.PathLike[str] = ".", variant: tuple[str, str] | None = None
    ) -> RunLayout:
        """A grid cell's classification stage (a classification run): ``<cell>/classifier``, or
        ``<cell>/classify-<combine>-<head>`` for the ``(combine, head)`` variant of an ablation grid."""
        return RunLayout(self.root / cell / classification_stage(variant))


ENCODER_STAGE = "encoder"
"""The folder of a grid cell's pretraining stage."""


def classification_stage(variant: tuple[str, str] | None = None) -> str:
    """The folder name of a grid cell's classification stage: ``classifier``, or
    ``classify-<combine>-<head>`` for one of several classifier variants (the ablation)."""
    return "classifier" if variant is None else f"classify-{variant[0]}-{variant[1]}"


@dataclass(frozen=True)
class RunDir:
    """A run directory opened for writing. Create with :func:`open_run_dir`."""

    path: Path
    config: Config

    @property
    def layout(self) -> RunLayout:
        """The names of this run directory's files and folders."""
        return RunLayout(self.path)

    def file(self, *parts: str) -> Path:
        """Path of a file inside the run directory (parent folders are created)."""
        target = self.path.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def record(self, **entries: Any) -> Path:
        """Add ``entries`` to ``run.json`` (e.g. ``init``: the weights the run started from)."""
        path = self.layout.record
        existing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return atomic.write_json(path, existing | entries)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Atomically write final metrics as JSON (:attr:`RunLayout.metrics`)."""
        return atomic.write_json(self.layout.metrics, metrics)


def check_run_dir(path: str | os.PathLike[str], *, resume: bool = False, force: bool = False) -> None:
    """Refuse what :func:`open_run_dir` would refuse, touching nothing: run it before any work.

    Raises :class:`OutputError` for a path that is (or lies under) a file or a folder that cannot be
    written (:func:`learner.atomic.usable_folder`), and :class:`RunDirError` for ``resume`` with ``force``, a
    non-empty directory without ``resume``/``force`` (or one holding no
    run with ``force``), and ``resume`` of a directory that holds no run.
    """
    root = atomic.usable_folder(path, "run directory")
    if resume and force:
        raise RunDirError("--resume and --force exclude each other")
    if resume:
        if not RunLayout(root).config.is_file():
            raise RunDirError(f"{root}: nothing to resume (no config.yaml)")
    elif root.exists() and any(root.iterdir()):
        if not force:
            raise RunDirError(f"{root} is not empty; pass --resume to continue it or --force to overwrite it")
        if not is_run_dir(root):
            raise RunDirError(
                f"{root} holds files but no learner run; --force only overwrites a run directory"
            )


def open_run_dir(
    path: str | os.PathLike[str], config: Config, *, resume: bool = False, force: bool = False
) -> RunDir:
    """Create (or reopen with ``resume``) a run directory and record config, seed and environment.

    Raises :class:`RunDirError` as :func:`check_run_dir` does.
    """
    root = Path(path)
    check_run_dir(root, resume=resume, force=force)
    if not resume and root.is_dir() and any(root.iterdir()):
        shutil.rmtree(root)  # --force, of a folder check_run_dir found to hold a run
    root.mkdir(parents=True, exist_ok=True)
    run = RunDir(root, config)
    if resume:
        atomic.write_json(run.layout.next_resume_record(), environment_record(config.seed))
    else:
        write_run_config(root, config)
        atomic.write_json(run.layout.record, environment_record(config.seed) | {"paths": path_record(config)})
    _attach_log(run.layout.log)
    return run


@contextmanager
def removed_unless_started(path: str | os.PathLike[str], *, new: bool) -> Iterator[None]:
    """Run the block; if it raises (or is interrupted) and ``new`` (the block opens a new run directory at
    ``path``) while the run has not started (:meth:`RunLayout.started`: nothing worth resuming yet), delete
    the run directory, so that a failed start leaves nothing behind."""
    try:
        yield
    except BaseException:
        root = Path(path)
        if new and root.is_dir() and is_run_dir(root) and not RunLayout(root).started():
            _detach_log(root)
            shutil.rmtree(root, ignore_errors=True)
        raise


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a learner run (what ``--force`` may wipe)."""
    root = Path(path)
    return RunLayout(root).config.is_file() or RunLayout(root).record.is_file()


def load_run_config(path: str | os.PathLike[str]) -> Config:
    """The resolved config stored in a run directory (upgraded if an older learner wrote it), its
    :data:`PATH_KEYS` resolved against the run directory (see the module docstring)."""
    import yaml

    root = Path(path)
    source = RunLayout(root).config
    if not source.is_file():
        raise RunDirError(f"{root} is not a run directory (no config.yaml)")
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    recorded = _recorded_paths(root)
    if recorded is not None:
        for key in PATH_KEYS:
            section, name = key.split(".")
            stored = (raw.get(section) or {}).get(name)
            if stored is not None:
                raw[section][name] = str(_resolve_stored(root, stored, recorded.get(key, {})))
    return stored_config(raw)


def write_run_config(root: Path, config: Config) -> Path:
    """``root/config.yaml``: ``config`` with its :data:`PATH_KEYS` relative to ``root``."""
    import yaml

    raw = config.model_dump(mode="json")
    for key, value in _set_paths(config).items():
        section, name = key.split(".")
        raw[section][name] = os.path.relpath(Path(value).resolve(), root.resolve())
    return atomic.write_text(RunLayout(root).config, yaml.safe_dump(raw, sort_keys=False))


def with_absolute_paths(config: Config) -> Config:
    """``config`` with its set :data:`PATH_KEYS` made absolute (relative ones against the working
    directory), so a run's config compares equal to the one :func:`load_run_config` reads back."""
    overrides = {key: str(Path(value).resolve()) for key, value in _set_paths(config).items()}
    return apply_overrides(config, overrides) if overrides else config


def _set_paths(config: Config) -> dict[str, str]:
    raw = config.model_dump(mode="json")
    pairs = ((key, raw[key.split(".")[0]][key.split(".")[1]]) for key in PATH_KEYS)
    return {key: value for key, value in pairs if value is not None}


def path_record(config: Config) -> dict[str, dict[str, str]]:
    """``run.json["paths"]``: each set path of :data:`PATH_KEYS` as typed and as an absolute path."""
    return {
        key: {"as_given": value, "absolute": str(Path(value).resolve())}
        for key, value in _set_paths(config).items()
    }


def _recorded_paths(root: Path) -> dict[str, dict[str, str]] | None:
    try:
        record = json.loads(RunLayout(root).record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    paths = record.get("paths") if isinstance(record, dict) else None
    return paths if isinstance(paths, dict) else None


def _resolve_stored(root: Path, stored: str, recorded: dict[str, str]) -> Path:
    """A stored path: relative to the run directory, or the recorded absolute one when only it exists."""
    candidate = Path(stored) if Path(stored).is_absolute() else (root / stored).resolve()
    absolute = recorded.get("absolute")
    if not candidate.exists() and absolute is not None and Path(absolute).exists():
        return Path(absolute)
    return candidate


def _detach_log(root: Path) -> None:
    """Close the log handlers of the run at ``root`` and of the runs inside it (before it is deleted)."""
    logger = logging.getLogger("learner")
    resolved = root.resolve()
    for handler in list(logger.handlers):
        owner = getattr(handler, "learner_run_dir", None)
        if owner is not None and (owner == resolved or resolved in owner.parents):
            logger.removeHandler(handler)
            handler.close()


def _attach_log(path: Path) -> None:
    """Send the ``learner`` logger to ``path`` (appended), keeping the logs of enclosing runs.

    An experiment grid opens one run directory per cell inside its own: a cell's messages go to the cell's
    log and to the experiment's, never to a sibling cell's (handlers of runs that do not contain this one
    are closed).
    """
    logger = logging.getLogger("learner")
    logger.setLevel(logging.INFO)
    run_root = path.parent.resolve()
    for handler in list(logger.handlers):
        owner = getattr(handler, "learner_run_dir", None)
        if owner is not None and (owner == run_root or owner not in run_root.parents):
            logger.removeHandler(handler)
            handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.learner_run_dir = run_root  # type: ignore[attr-defined]
    logger.addHandler(handler)
