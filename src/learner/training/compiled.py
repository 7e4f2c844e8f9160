"""The training network under ``torch.compile`` (``runtime.compile``; issue 22).

At batch 16 × 8 frames a tsm_resnet18 step is launch-bound on a GPU; Inductor fuses the network's many
small kernels (the 2026-11-30 H200 figure: 15.0 against 23.6 ms per step with ``reduce-overhead``,
BENCHMARKS.md). Only the network a training step calls is compiled (``Trainee.network``, DDP-wrapped
first when distributed): the objective, the optimiser and validation (which calls the uncompiled model,
sharing its weights) stay eager, and checkpoints hold the model's own state dict, as without it.

Modes are ``torch.compile``'s. ``reduce-overhead`` and ``max-autotune`` also record the compiled kernels
in CUDA graphs (on CUDA; on a CPU they compile only): each training step then tells torch that a new step
begins (:class:`StepMarked`), so the graphs may reuse the last step's outputs, which a step never keeps
(the cross-batch memory keeps copies). Those two modes are refused with ``runtime.cuda_graph``, which
records the whole step itself (:func:`learner.training.plan.check_cuda_graph`). The first steps compile
(about a minute): worth it for long runs on a GPU, not for the CPU's short ones.
"""

from __future__ import annotations

import torch
from torch import nn

BACKEND = "inductor"
"""The ``torch.compile`` backend (tests use ``aot_eager``, which traces the same graphs in seconds)."""

GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
"""The ``runtime.compile`` modes whose compiled kernels are recorded in CUDA graphs."""


class StepMarked(nn.Module):
    """``network`` called after ``torch.compiler.cudagraph_mark_step_begin()``: one call per training step.

    Shape: what ``network`` takes and returns: clips (b, T, C, H, W) → embeddings (b, D), predictions (b,).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *args: object) -> object:
        torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]  # untyped in torch
        return self.network(*args)


def compile_network(network: nn.Module, mode: str) -> nn.Module:
    """``network`` compiled with ``runtime.compile``'s ``mode``, or ``network`` itself for ``off``; in a mode
    of :data:`GRAPH_MODES` also :class:`StepMarked`. The returned module shares ``network``'s parameters."""
    if mode == "off":
        return network
    compiled: nn.Module = torch.compile(network, mode=mode, backend=BACKEND)  # type: ignore[assignment]
    return StepMarked(compiled) if mode in GRAPH_MODES else compiled
