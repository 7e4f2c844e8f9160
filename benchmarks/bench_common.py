"""Helpers every benchmark shares: the machine record, side-by-side (interleaved) timing, one training
step of an encoder, and the JSON line each benchmark appends to its results file.

Not a benchmark itself. The scripts in this folder import it (a script's own folder is on ``sys.path``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from learner.config import LossConfig, ModelConfig
from learner.environment import machine_record
from learner.losses.registry import build_objective
from learner.models.registry import build_regressor

RESULTS = Path(__file__).with_name("results.jsonl")
"""Where a benchmark appends its JSON line unless told otherwise (``--out``)."""


def machine() -> dict[str, Any]:
    """The run record's machine facts (CPU model, ISA flags, torch's CPU kernels, oneDNN / MKL versions,
    threads: :func:`learner.environment.machine_record`), torch and Python versions, and the 1/5/15-minute
    load average now."""
    return machine_record() | {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def append_record(out: Path | None, benchmark: str, figures: Mapping[str, Any]) -> dict[str, Any]:
    """Append ``{"benchmark", "date", "machine", **figures}`` as one JSON line to ``out`` (skip when None)."""
    record = {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **figures,
    }
    if out is not None:
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return record


def interleaved(arms: Mapping[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of every arm, run side by side: each repetition runs every arm once, in an order rotated by
    one per repetition, so that load from other processes falls on all arms alike. The first ``warmup``
    repetitions are not kept."""
    names = list(arms)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(warmup + reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            arms[name]()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: Mapping[str, list[float]], numerator: str, denominator: str) -> dict[str, float]:
    """Median of the per-repetition ratios numerator/denominator, with its min and max."""
    ratios = [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def training_step(
    *,
    batch: int,
    frames: int,
    size: int,
    backbone: str = "tsm_resnet18",
    preset: str = "paper",
    shift_fraction: float = 0.125,
    device: torch.device | None = None,
    channels_last: bool = False,
    seed: int = 0,
) -> tuple[Callable[[], float], torch.nn.Module]:
    """One optimiser step (forward, λ·MSE + (1 − λ)·wCL, backward, Adam) on fixed random clips
    (``batch``, ``frames``, 1, ``size``, ``size``), and the model; the step returns the loss."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    model_cfg = ModelConfig(backbone=backbone, size=preset, shift_fraction=shift_fraction)
    model = build_regressor(model_cfg, 1, size, frames=frames).to(device)
    clips = torch.rand(batch, frames, 1, size, size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = build_objective(LossConfig(name="mse+wcl"))
    scores = torch.randn(batch, device=device)

    def step() -> float:
        embeddings, predictions = model(clips)
        loss = objective(embeddings, predictions, scores).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step, model


def conv_linear_flops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one training step (forward + backward ≈ 3 × forward) counted from the convolutions and
    linears (2 · multiply-adds) by forward hooks on one forward of ``example``."""
    total = 0.0

    def count(module: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2.0 * output.numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            total += 2.0 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    return 3.0 * total
