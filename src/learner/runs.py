"""Run directories: every command that produces results writes one.

Layout (every name is :class:`learner.layout.RunLayout`'s; no other module builds one)::

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

A non-empty directory is refused unless ``resume`` (continue it) or ``force`` (replace it) is given; ``force``
only ever replaces a folder that holds a previous run (its ``config.yaml`` or ``run.json``) and nothing else:
a folder that also holds an entry no learner run writes there (the user's notes or folders,
:func:`learner.layout.written_by_runs`) is refused, naming it, and so is one that holds the run's own inputs
(:func:`check_inputs_outside`: the manifest, a scan, the weights it starts from, its ``--config`` file). The
previous run is not deleted at once: it is set aside in a hidden sibling (``.<name>.replaced-*``, a rename on
the same file system) and deleted only once the new run has started (:meth:`RunLayout.started`: it read its
inputs and saved something worth resuming) or finished; a new run that fails before that removes what it
wrote and puts the previous one back (:func:`removed_unless_started`; a folder it did not create, such as
one the user made or the target of a link given as the run directory, stays). Only a process killed
outright in between leaves the sibling, with the previous run intact in it (``.<name>.replacing-*`` while
the entries are still moving): the next command on that folder names it in a warning and never deletes it,
and a next ``--force`` first puts it back when the killed run had not started, as a failure would have
(:func:`set_aside_leftovers`).

**Owned.** The process that opens a run directory holds an exclusive lock on it (``flock`` on the folder)
until its :func:`removed_unless_started` block ends (or the process dies); a second process that opens the
same folder is refused in one line before it touches anything, and never deletes what the first one wrote.
A ``--resume`` that holds the lock deletes the hidden temporaries (``.<name>.*.tmp``) that atomic writes of
a killed process left at the top of the folder.
``run.json["kind"]`` records what the folder holds (:data:`RUN_KINDS`), and an experiment's
``run.json["grid"]`` which experiment (:func:`stored_grid`); ``--resume`` of another kind or experiment is
refused, and so is ``--resume`` of a run whose ``config.yaml`` was edited since its last checkpoint.

**Portable paths.** ``config.yaml`` stores the paths of :data:`learner.config.PATH_KEYS` relative to the run
directory, and ``run.json["paths"]`` records each as it was typed and as an absolute path.
:func:`load_run_config` resolves them against the run directory, and so does ``--config RUN_DIR/config.yaml``
(:func:`learner.config.resolve_run_paths`), so a run works, and reruns, from any working directory and after
being moved together with its data; when the relative target is gone but the recorded absolute one exists
(the run moved without its data), the absolute one is used. A run directory without ``run.json["paths"]``
(written before this rule) keeps its paths as stored. :func:`portable_paths` and :func:`changed_path` apply
the same rule to a record of the files a run used (an experiment grid's stage records).
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner import atomic
from learner.config import PATH_KEYS, Config, apply_overrides, config_from_dict, load_yaml, resolve_run_paths
from learner.environment import environment_record
from learner.errors import ConfigError, OutputError, RunDirError
from learner.layout import TEMPORARY_PATTERN, RunLayout, written_by_runs


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

    def record_resume(self) -> Path:
        """Write ``resume-<n>.json`` (how and where this ``--resume`` started), once the resume has passed
        its checks (a refused one, e.g. of a damaged checkpoint, leaves nothing behind)."""
        return atomic.write_json(self.layout.next_resume_record(), environment_record(self.config.seed))

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Atomically write final metrics as JSON (:attr:`RunLayout.metrics`)."""
        return atomic.write_json(self.layout.metrics, metrics)


RUN_KINDS = ("pretraining", "classification", "experiment", "ceiling")
"""What a run directory holds, recorded as ``run.json["kind"]`` when it is created."""
RESUMABLE_KINDS = ("pretraining", "experiment")
"""The kinds whose command has ``--resume`` (``classify`` and the ceiling study start again instead)."""


def check_run_dir(
    path: str | os.PathLike[str],
    *,
    resume: bool = False,
    force: bool = False,
    kind: str | None = None,
    grid: str | None = None,
) -> None:
    """Refuse what :func:`open_run_dir` would refuse, touching nothing: run it before any work.

    Raises :class:`OutputError` for a path that is (or lies under) a file or a folder that cannot be
    written (:func:`learner.atomic.usable_folder`), and :class:`RunDirError` for ``resume`` with ``force``, a
    non-empty directory without ``resume``/``force``, ``force`` of one holding no run or holding anything
    a run does not write (:func:`_foreign_entry`), and ``resume`` of a directory that holds no run, a run of
    another ``kind`` or, for an experiment, another ``grid`` (``table3``, ``ablation``, ``sweep``:
    :func:`stored_grid`).
    """
    root = atomic.usable_folder(path, "run directory")
    if resume and force:
        raise RunDirError("--resume and --force exclude each other")
    _report_set_aside(root, restoring=force)
    if resume:
        if not RunLayout(root).config.is_file():
            raise RunDirError(f"{root}: nothing to resume (no config.yaml)")
        stored = stored_kind(root)
        if kind is not None and stored is not None and stored != kind:
            raise RunDirError(f"{root} holds a {stored} run; --resume here continues only a {kind} run")
        if grid is not None:
            _check_grid(root, grid)
        _check_config_matches_checkpoint(root)
    elif root.exists() and any(root.iterdir()):
        if not force:
            resumable = kind is None or kind in RESUMABLE_KINDS  # classify and ceiling have no --resume
            what = "pass --resume to continue it or --force to overwrite it"
            if not resumable:
                what = "pass --force to overwrite it or choose another --out"
            raise RunDirError(f"{root} is not empty; {what}")
        if not is_run_dir(root):
            raise RunDirError(
                f"{root} holds files but no learner run; --force only overwrites a run directory"
            )
        if (foreign := _foreign_entry(root)) is not None:
            raise RunDirError(
                f"--force would delete {foreign}, which no learner run writes; move it out of {root} or "
                "choose another --out"
            )


def open_run_dir(
    path: str | os.PathLike[str],
    config: Config,
    *,
    resume: bool = False,
    force: bool = False,
    kind: str | None = None,
) -> RunDir:
    """Create (or reopen with ``resume``) a run directory, lock it for this process, and record config,
    seed, environment and ``kind``.

    Raises :class:`RunDirError` as :func:`check_run_dir` does, and when another process holds the folder.
    """
    root = Path(path)
    check_run_dir(root, resume=resume, force=force, kind=kind)
    cache = config.runtime.cache_dir  # config.yaml records it resolved: refuse a loop before the mkdir
    if cache is not None and (problem := atomic.path_problem(Path(cache))):
        raise OutputError(f"runtime.cache_dir: {cache}: {problem}")
    created = _first_missing(root)
    root.mkdir(parents=True, exist_ok=True)
    _lock(root)  # before anything in it is touched
    if created is not None:
        _CREATED[root.resolve()] = created
    else:
        _CREATED.pop(root.resolve(), None)
    if force:
        _put_back_set_aside(root)
    if not resume and any(root.iterdir()):  # --force, of a folder check_run_dir found to hold a run
        _set_aside(root)
    run = RunDir(root, config)
    if not resume:  # a resume is recorded by RunDir.record_resume once it has passed its own checks
        write_run_config(root, config)
        record = environment_record(config.seed) | {"paths": path_record(config)}
        atomic.write_json(run.layout.record, record | ({"kind": kind} if kind is not None else {}))
    _attach_log(run.layout.log)
    if resume:
        _remove_interrupted_writes(root)
    return run


def _remove_interrupted_writes(root: Path) -> None:
    """Delete the temporaries (:data:`learner.layout.TEMPORARY_PATTERN`) that atomic writes of a process
    killed outright left at the top of the run directory ``root`` (a kill while ``metrics.csv`` was being
    rewritten, e.g. from a background checkpoint write), each named in the log. Only where this process
    holds the folder's lock: then no other process is writing them, and this one has not started to."""
    if _HELD.get(root.resolve()) is None:  # not locked here (no flock on this file system): leave them
        return
    for leftover in sorted(root.glob(TEMPORARY_PATTERN)):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink()
            logging.getLogger(__name__).info(
                "%s: removed %s, left by an interrupted write", root, leftover.name
            )


CHECKPOINT_META = "meta.json"
"""A checkpoint folder's record, whose ``config`` is the config the checkpoint was trained under (the name
is :data:`learner.models.weights.CHECKPOINT_META`; a shared module cannot import it)."""


def _check_config_matches_checkpoint(root: Path) -> None:
    """Refuse to resume a run whose ``config.yaml`` no longer describes its ``last`` checkpoint (edited
    since: ``data.size`` 32 → 48 would train on at the new size). Only the settings that decide what a
    pretraining computes are compared, paths aside (a run moves with its data); ``optim.epochs`` may differ
    by an extension that ``run.json`` records. No checkpoint, or one that cannot be read: nothing to compare
    (loading it names the damage)."""
    meta = RunLayout(root).checkpoint("last") / CHECKPOINT_META
    try:
        saved = config_from_dict(json.loads(meta.read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return
    current = _flat(load_run_config(root).pretraining_settings())
    trained = _flat(saved.pretraining_settings())
    changed = sorted(k for k in current.keys() | trained.keys() if current.get(k) != trained.get(k))
    changed = [key for key in changed if key not in PATH_KEYS]
    extensions = (read_record(root) or {}).get("extensions") or []
    extended = [e.get("to_epochs") for e in extensions if isinstance(e, dict)]
    if "optim.epochs" in changed and extended and current["optim.epochs"] == extended[-1]:
        changed.remove("optim.epochs")  # an extension recorded before its first checkpoint was saved
    if changed:
        shown = ", ".join(f"{key} {trained.get(key)} → {current.get(key)}" for key in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise RunDirError(
            f"{RunLayout(root).config} differs from the config its last checkpoint was trained with "
            f"({shown}{more}); put the file back or start a new run"
        )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings → ``{"optim.lr": 0.001, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def read_record(root: Path) -> dict[str, Any] | None:
    """``run.json`` as a dict; None when it is missing or not a JSON object."""
    try:
        record = json.loads(RunLayout(root).record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _foreign_entry(root: Path) -> Path | None:
    """The first top-level entry of the run directory ``root`` that no learner run writes
    (:func:`learner.layout.written_by_runs`; an experiment grid's dataset folders are the ones its
    ``config.yaml`` names): the user's, which ``--force`` must not delete."""
    try:
        raw = load_yaml(RunLayout(root).config.read_text(encoding="utf-8"), str(RunLayout(root).config))
        folders = {str(dataset["name"]) for dataset in raw["experiment"]["datasets"]}
    except (OSError, ConfigError, KeyError, TypeError):
        folders = set()
    return next((entry for entry in sorted(root.iterdir()) if not written_by_runs(entry.name, folders)), None)


def _check_grid(root: Path, grid: str) -> None:
    """Refuse ``--resume`` of ``root`` by another experiment than the ``grid`` it holds. A grid of an earlier
    version interrupted before its ``results.json`` says none: it is resumed as ``grid`` (logged; nothing
    the user could do would tell more)."""
    held = stored_grid(root)
    if held is None:
        logging.getLogger(__name__).info(
            "%s does not record which experiment it holds (a grid of an earlier version); resuming it as %s",
            root,
            grid,
        )
    elif held != grid:
        raise RunDirError(
            f"{root} holds a {held} experiment; --resume here continues only a {grid} experiment"
        )


def stored_grid(root: Path) -> str | None:
    """Which experiment grid an experiment run directory holds: ``run.json["grid"]`` (``table3``,
    ``ablation``, ``sweep``), or for one written before it was recorded, its ``results.json["kind"]``; None
    when neither says."""
    for source, key in ((RunLayout(root).record, "grid"), (RunLayout(root).results, "kind")):
        try:
            held = json.loads(source.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(held, str):
            return held
    return None


def stored_kind(root: Path) -> str | None:
    """``run.json["kind"]`` of a run directory; None when it records none (or cannot be read)."""
    try:
        kind = json.loads(RunLayout(root).record.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def check_inputs_outside(root: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """``--force`` wipes the run directory: refuse, touching nothing, when one of the run's ``inputs`` (its
    manifest, a scan, the encoder or weights it starts from) lies inside it.

    Raises:
        RunDirError: names the first such input.
    """
    base = Path(root).resolve()
    if not base.is_dir():
        return
    for item in inputs:
        if atomic.lies_within(item, base):
            raise RunDirError(
                f"--force would delete {item}, an input of this run inside {root}; move it out or choose "
                "another --out"
            )


_HELD: dict[Path, int | None] = {}
"""Run directory (resolved) this process opened → the descriptor whose ``flock`` it holds on it; None where
the file system has no ``flock`` (some network mounts): the folder is still this process's to clean up."""


def _lock(root: Path) -> None:
    """Take the exclusive lock on ``root`` for this process (again: a no-op), or refuse in one line."""
    key = root.resolve()
    if key in _HELD:
        return
    descriptor = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunDirError(
            f"{root} is being written by another learner process; wait for it to end or choose another --out"
        ) from None
    except OSError as exc:  # no flock on this file system (ENOLCK, ENOSYS, EINVAL): run unguarded
        os.close(descriptor)
        logging.getLogger(__name__).warning(
            "%s: cannot lock the folder (%s); a second writer would not be refused", root, exc
        )
        _HELD[key] = None
        return
    _HELD[key] = descriptor


def _unlock(root: Path) -> bool:
    """Release this process's lock on ``root``; whether it held one."""
    key = root.resolve()
    if key not in _HELD:
        return False
    descriptor = _HELD.pop(key)
    if descriptor is not None:
        os.close(descriptor)  # closing the descriptor releases the flock
    return True


@contextmanager
def removed_unless_started(path: str | os.PathLike[str], *, new: bool) -> Iterator[None]:
    """Run the block, the life of the run at ``path``; if it raises (or is interrupted) and ``new`` (the block
    opens a new run directory at ``path``) while the run has not started (:meth:`RunLayout.started`: nothing
    worth resuming yet), delete what the run wrote, so that a failed start leaves nothing behind: the
    folder's entries (it was empty, or ``--force`` had set its previous run aside, which is put back), and
    the folder itself (with the parents it needed) only when this process created it; a symbolic link is
    removed, never followed. Only a folder this process locked (:func:`open_run_dir`) is ever touched. The
    lock ends with the block."""
    root = Path(path)
    try:
        yield
    except BaseException:
        owned = root.is_dir() and root.resolve() in _HELD  # never a folder another process is writing
        if new and owned and is_run_dir(root) and not RunLayout(root).started():
            _detach_log(root)
            _empty(root)
            previous = _REPLACED.pop(root.resolve(), None)
            if previous is None:
                _remove_created(root)
            else:  # --force: the new run never started, so the run it was to replace stays
                for child in list(previous.iterdir()):
                    os.replace(child, root / child.name)
                previous.rmdir()
        raise
    finally:
        if (previous := _REPLACED.pop(root.resolve(), None)) is not None:  # replaced for good
            shutil.rmtree(previous, ignore_errors=True)
        _CREATED.pop(root.resolve(), None)
        _unlock(root)


_CREATED: dict[Path, Path] = {}
"""Run directory (resolved) whose folder this process created (:func:`open_run_dir`) → the topmost folder
that creation made (the run directory or a missing parent): what a failed start may remove again."""


def _first_missing(root: Path) -> Path | None:
    """The topmost folder that creating ``root`` makes (``root`` or a missing parent); None when ``root``
    exists (the user's folder, or a link to one)."""
    folder = Path(os.path.abspath(root))
    if os.path.lexists(folder):
        return None
    while not os.path.lexists(folder.parent):
        folder = folder.parent
    return folder


def _remove_created(root: Path) -> None:
    """Remove the (emptied) run directory ``root`` and the parents made with it, if this process created
    them; a folder something else has been put into since is kept."""
    top = _CREATED.pop(root.resolve(), None)
    folder = Path(os.path.abspath(root))
    while top is not None:
        try:
            folder.rmdir()
        except OSError:  # not empty: another run's, or the user's
            return
        if folder == top:
            return
        folder = folder.parent


_REPLACED: dict[Path, Path] = {}
"""Run directory (resolved) opened with ``force`` → the hidden sibling its previous run waits in."""


SETTING_ASIDE, SET_ASIDE = "replacing", "replaced"
"""The hidden sibling of a run directory that ``--force`` moves the previous run into is
``.<name>.replacing-<random>`` while the entries move, and ``.<name>.replaced-<random>`` once all have
(one rename): what a process killed outright leaves behind says whether the previous run is whole in it."""


def _set_aside(root: Path) -> None:
    """Move every entry of ``root`` into a new hidden sibling (:data:`_REPLACED`), renames only."""
    base = Path(os.path.abspath(root))  # `--out .`: the sibling goes beside the folder, not into it
    prefix = f".{base.name}.{SETTING_ASIDE}-"
    moving = Path(tempfile.mkdtemp(prefix=prefix, dir=base.parent))
    for child in list(root.iterdir()):
        os.replace(child, moving / child.name)
    previous = base.parent / f".{base.name}.{SET_ASIDE}-{moving.name[len(prefix) :]}"
    os.replace(moving, previous)
    _REPLACED[root.resolve()] = previous


def set_aside_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """The hidden siblings of the run directory ``path`` into which a ``--force`` killed outright (kill -9,
    a power cut) set the previous run aside (:data:`SET_ASIDE`, :data:`SETTING_ASIDE`), this process's own
    excepted. They are the user's previous runs: never deleted here, put back or named in a warning."""
    base = Path(os.path.abspath(path))
    if not base.parent.is_dir():
        return []
    mine = set(_REPLACED.values())
    name = glob.escape(base.name)
    found = (p for kind in (SET_ASIDE, SETTING_ASIDE) for p in base.parent.glob(f".{name}.{kind}-*"))
    return sorted(p for p in found if p.is_dir() and not p.is_symlink() and p not in mine)


def _restorable(root: Path) -> Path | None:
    """The one whole previous run (:data:`SET_ASIDE`) beside ``root`` that a killed ``--force`` set aside
    while its new run in ``root`` had not started: what that ``--force``, had it failed instead of being
    killed, would have put back. None when there is no such one, or more than one, or the new run in
    ``root`` has started (then both are kept, and named)."""
    whole = [previous for previous in set_aside_leftovers(root) if _whole(previous, root)]
    if len(whole) != 1 or not is_run_dir(whole[0]) or (root.is_dir() and RunLayout(root).started()):
        return None
    return whole[0]


def _whole(previous: Path, root: Path) -> bool:
    """Whether the set-aside sibling ``previous`` of ``root`` received every entry (:data:`SET_ASIDE`)."""
    return previous.name.startswith(f".{Path(os.path.abspath(root)).name}.{SET_ASIDE}-")


_REPORTED: set[Path] = set()
"""Set-aside siblings this process has warned about already (the checks run more than once per command)."""


def _report_set_aside(root: Path, *, restoring: bool) -> None:
    """Name, in one warning line each, the previous runs that a killed ``--force`` of ``root`` left in hidden
    siblings (:func:`set_aside_leftovers`); with ``restoring`` (a new ``--force``), not the one that
    :func:`open_run_dir` will put back. Touches nothing; a folder another process is writing is skipped:
    its sibling is that run's own."""
    if _locked_elsewhere(root):
        return
    skip = _restorable(root) if restoring else None
    for previous in set_aside_leftovers(root):
        if previous == skip or previous in _REPORTED:
            continue
        _REPORTED.add(previous)
        held = (
            "the previous run"
            if _whole(previous, root)
            else f"part of the previous run (the rest is in {root})"
        )
        logging.getLogger(__name__).warning(
            "%s holds %s of %s, set aside by a --force that was killed before it ended; it is kept: move "
            "it back or delete it",
            previous,
            held,
            root,
        )


def _put_back_set_aside(root: Path) -> None:
    """Before a ``--force`` of ``root`` (locked by this process) sets its content aside: if a killed
    ``--force`` left the previous run whole in a sibling and its own new run never started
    (:func:`_restorable`), put that run back, so that this ``--force`` replaces (or, failing, keeps) the
    user's previous run rather than a run that never started."""
    previous = _restorable(root)
    if previous is None:
        return
    _empty(root)
    for child in list(previous.iterdir()):
        os.replace(child, root / child.name)
    previous.rmdir()
    logging.getLogger(__name__).warning(
        "%s: put back the previous run from %s, where a --force killed before its new run started had "
        "set it aside",
        root,
        previous,
    )


def _locked_elsewhere(root: Path) -> bool:
    """Whether another process holds the lock of the run directory ``root`` (:func:`_lock`); touches
    nothing (the probe's lock ends with its descriptor)."""
    if not root.is_dir() or root.resolve() in _HELD:
        return False
    try:
        descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return False


def _empty(root: Path) -> None:
    for child in list(root.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a learner run (what ``--force`` may wipe)."""
    root = Path(path)
    return RunLayout(root).config.is_file() or RunLayout(root).record.is_file()


def load_run_config(path: str | os.PathLike[str]) -> Config:
    """The resolved config stored in a run directory, its :data:`PATH_KEYS` resolved against the run
    directory (see the module docstring)."""
    root = Path(path)
    source = RunLayout(root).config
    if not source.is_file():
        raise RunDirError(f"{root} is not a run directory (no config.yaml)")
    raw = load_yaml(source.read_text(encoding="utf-8"), str(source)) or {}
    resolve_run_paths(raw, root)
    try:
        return config_from_dict(raw)
    except ConfigError as exc:  # a run written by another version of learner
        raise RunDirError(f"{source}: not a config this learner can read ({exc})") from None


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


def portable_paths(
    config: Config, root: str | os.PathLike[str], keys: Iterable[str] = PATH_KEYS
) -> dict[str, dict[str, str]]:
    """Each set path of ``keys`` in ``config``, resolved, as ``relative`` to the folder ``root`` and as
    ``absolute``: a record of the files a run used that still matches (:func:`changed_path`) once ``root``
    moved with those files (the relative one) or alone (the absolute one), the rule by which
    :func:`load_run_config` resolves stored paths."""
    base, wanted = Path(root).resolve(), set(keys)
    resolved = {key: Path(value).resolve() for key, value in _set_paths(config).items() if key in wanted}
    return {
        key: {"relative": os.path.relpath(path, base), "absolute": str(path)}
        for key, path in resolved.items()
    }


def changed_path(recorded: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> str | None:
    """The first path of two :func:`portable_paths` records (then, now) that is set in only one of them or
    names another file by both its relative and its absolute form, as ``key: then → now``; None when each
    path names the same file."""
    for key in sorted(recorded.keys() | current.keys()):
        then, now = recorded.get(key), current.get(key)
        same = then is not None and now is not None and any(then.get(f) == now[f] for f in now)
        if not same:
            return f"{key}: {(then or {}).get('absolute')} → {(now or {}).get('absolute')}"
    return None


def _detach_log(root: Path) -> None:
    """Close the log handlers of the run at ``root`` and of the runs inside it (before it is deleted)."""
    logger = logging.getLogger("learner")
    resolved = root.resolve()
    for handler in list(logger.handlers):
        owner = getattr(handler, "learner_run_dir", None)
        if owner is not None and (owner == resolved or resolved in owner.parents):
            logger.removeHandler(handler)
            handler.close()


@contextmanager
def logs_by_turn(runs: Sequence[RunDir]) -> Iterator[Callable[[int], None]]:
    """For runs that take turns in one process (``training/side_by_side.py``): one open handler per run's
    ``log.txt`` (the handlers :func:`open_run_dir` attached for them are closed first); the yielded
    ``point(k)`` sends the ``learner`` logger to run ``k``'s log alone, by swapping handlers, so that a turn
    opens no file. Handlers of enclosing runs (a grid's log) stay; on exit the runs' handlers are closed."""
    logger = logging.getLogger("learner")
    for run in runs:
        _detach_log(run.path)
    handlers = [_log_handler(run.layout.log) for run in runs]

    def point(index: int) -> None:
        for handler in handlers:
            logger.removeHandler(handler)  # a no-op for the ones not attached
        logger.addHandler(handlers[index])

    try:
        yield point
    finally:
        for handler in handlers:
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
    logger.addHandler(_log_handler(path))


def _log_handler(path: Path) -> logging.FileHandler:
    """An open handler appending to the run log ``path``, tagged with its run directory."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.learner_run_dir = path.parent.resolve()  # type: ignore[attr-defined]
    return handler
