"""Run directories: every command that produces results writes one.

Layout::

    RUN_DIR/
      config.yaml      the resolved Config
      run.json         seed, command line, start time, git commit, package versions, platform, and the
                       machine: CPU model, ISA flags, torch's CPU kernels, oneDNN / MKL versions, threads
      log.txt          the run's log (appended on --resume)
      run.json         how and where the run started; a resume adds resume-<n>.json beside it
      metrics.json     final metrics (written atomically)
      metrics.csv      one row per epoch (rewritten atomically after each epoch)
      ...              checkpoints/, pairs/, embeddings/, figures as each stage adds them

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

import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from learner import atomic
from learner.config import Config, apply_overrides, stored_config
from learner.errors import RunDirError

PATH_KEYS: tuple[str, ...] = ("data.manifest", "model.init", "runtime.cache_dir")
"""The config's file-system paths, stored relative to the run directory (see the module docstring)."""

TRACKED_PACKAGES = (
    "learner", "torch", "numpy", "pandas", "monai", "scikit-learn", "scipy", "av", "pydicom", "nibabel",
    "safetensors", "pydantic",
)  # fmt: skip


@dataclass(frozen=True)
class RunDir:
    """A run directory opened for writing. Create with :func:`open_run_dir`."""

    path: Path
    config: Config

    def file(self, *parts: str) -> Path:
        """Path of a file inside the run directory (parent folders are created)."""
        target = self.path.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def record(self, **entries: Any) -> Path:
        """Add ``entries`` to ``run.json`` (e.g. ``init``: the weights the run started from)."""
        path = self.file("run.json")
        existing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return atomic.write_json(path, existing | entries)

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> Path:
        """Atomically write final metrics as JSON."""
        return atomic.write_json(self.file(name), metrics)


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
        if not (root / "config.yaml").is_file():
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
        previous = len(list(root.glob("resume-*.json")))
        atomic.write_json(root / f"resume-{previous + 1}.json", environment_record(config.seed))
    else:
        write_run_config(root, config)
        atomic.write_json(root / "run.json", environment_record(config.seed) | {"paths": path_record(config)})
    _attach_log(root / "log.txt")
    return run


@contextmanager
def removed_unless_started(path: str | os.PathLike[str], started: str, *, new: bool) -> Iterator[None]:
    """Run the block; if it raises (or is interrupted) and ``new`` (the block opens a new run directory at
    ``path``) while nothing matches the glob ``started`` in it (e.g. ``checkpoints/last``: nothing worth
    resuming yet), delete the run directory, so that a failed start leaves nothing behind."""
    try:
        yield
    except BaseException:
        root = Path(path)
        if new and root.is_dir() and is_run_dir(root) and not any(root.glob(started)):
            _detach_log(root)
            shutil.rmtree(root, ignore_errors=True)
        raise


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a learner run (what ``--force`` may wipe)."""
    root = Path(path)
    return (root / "config.yaml").is_file() or (root / "run.json").is_file()


def load_run_config(path: str | os.PathLike[str]) -> Config:
    """The resolved config stored in a run directory (upgraded if an older learner wrote it), its
    :data:`PATH_KEYS` resolved against the run directory (see the module docstring)."""
    import yaml

    root = Path(path)
    source = root / "config.yaml"
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
    return atomic.write_text(root / "config.yaml", yaml.safe_dump(raw, sort_keys=False))


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
        record = json.loads((root / "run.json").read_text(encoding="utf-8"))
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


def environment_record(seed: int) -> dict[str, Any]:
    """Seed, command line, time, git commit (if any), Python, platform and package versions."""
    return {
        "seed": seed,
        "argv": sys.argv,
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in TRACKED_PACKAGES},
        "machine": machine_record(),
    }


ISA_FLAG = re.compile(r"^(sse4_[12]|avx\w*|fma\w*|f16c|amx\w*)$")
"""The ``/proc/cpuinfo`` flags that choose float kernels (vector width, fused multiply-add, matrix units)."""

CPU_ID_FIELDS = ("vendor_id", "cpu family", "model", "stepping")
"""The ``/proc/cpuinfo`` fields that name a CPU generation where its model name does not (``AMD EPYC``)."""

KERNEL_ENVIRONMENT = (
    "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS"
)  # fmt: skip
"""Environment variables that change which CPU kernels run, or how many threads share a reduction."""


def machine_record() -> dict[str, Any]:
    """The machine facts that decide a run's last float digits (docs/reproducibility.md).

    float32 convolutions and matrix products take different kernels on different CPUs (oneDNN and MKL pick
    them by instruction set), so the same seed gives bit-identical numbers on one machine and software, and
    close but not identical ones elsewhere. This records what is needed to tell the two cases apart: the CPU
    model and its ISA flags, torch's ATen kernel level, the oneDNN and MKL versions, the thread count and
    the environment variables that override any of them. oneDNN also sizes its blocks by the caches, so
    they are recorded too.
    """
    import torch  # here, so that reading runs.py stays light for the commands that never build a model

    cpuinfo = _cpuinfo()
    built = torch.__config__.show()
    onednn = re.search(r"MKL-DNN (v[\d.]+)", built)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", built)
    return {
        "cpu": cpuinfo.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": " ".join(cpuinfo.get(key, "?") for key in CPU_ID_FIELDS) if cpuinfo else None,
        "caches": _cache_sizes(),
        "isa_flags": sorted(flag for flag in cpuinfo.get("flags", "").split() if ISA_FLAG.match(flag)),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": onednn.group(1) if onednn else None,
        "mkl": mkl.group(1) if mkl else None,
        "environment": {name: os.environ[name] for name in KERNEL_ENVIRONMENT if name in os.environ},
    }


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``name : value`` lines of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _cache_sizes() -> dict[str, str]:
    """CPU 0's caches as Linux lists them, e.g. ``{"L1d": "32K", "L1i": "32K", "L2": "1024K", ...}``."""
    sizes: dict[str, str] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip() for name in ("level", "type", "size"))
        except OSError:
            continue
        sizes[f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")] = size
    return sizes


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


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
