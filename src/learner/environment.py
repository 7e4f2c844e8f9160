"""What a run records about where it ran (``run.json``): seed, command line, time, git commit, package
versions, and the machine facts that decide a run's last float digits (docs/reproducibility.md).

Benchmarks record the same machine facts with each figure (``benchmarks/bench_common.py``).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "learner", "torch", "numpy", "pandas", "monai", "scikit-learn", "scipy", "av", "pydicom", "nibabel",
    "safetensors", "pydantic",
)  # fmt: skip


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
    import torch  # here: importing this module (every command does, through runs.py) stays light

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
