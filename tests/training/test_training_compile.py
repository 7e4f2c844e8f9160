"""``runtime.compile`` (learner.training.compiled) on CPU, with the ``aot_eager`` backend, which traces the
graphs Inductor would compile (Dynamo and AOTAutograd, forward and backward) in seconds instead of a
minute: the compiled network's loss, gradients and contrastive gradient share equal the eager network's, a
mode that records CUDA graphs marks each step's start, a tiny pretraining with it writes the eager run's
numbers and checkpoints, and the plan refuses it where Inductor could not build its kernels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from learner.config import Config
from learner.errors import ConfigError
from learner.layout import RunLayout
from learner.losses.regression import ScoreStandardiser
from learner.training import compiled as compiled_module
from learner.training import plan as plan_module
from learner.training.checkpoint import load_checkpoint
from learner.training.compiled import GRAPH_MODES, StepMarked, compile_network
from learner.training.epoch import batch_loss
from learner.training.grad_share import contrastive_gradient_norms
from learner.training.plan import plan_pretraining
from learner.training.pretrain import build_model_and_objective, pretrain
from learner.training.seeding import seed_everything

TINY = {"data.frames": 2, "data.size": 32, "model.size": "tiny", "model.head_hidden": 16}


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``runtime.compile`` through ``aot_eager`` for the test, Dynamo's caches fresh; returns the list that
    every ``torch.compile`` call's mode joins."""
    monkeypatch.setattr(compiled_module, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    modes: list[str] = []
    real = torch.compile

    def counted(model: Any, **options: Any) -> Any:
        modes.append(options["mode"])
        return real(model, **options)

    monkeypatch.setattr(torch, "compile", counted)
    return modes


def test_off_is_the_network_itself() -> None:
    network = torch.nn.Linear(2, 1)
    assert compile_network(network, "off") is network


@pytest.mark.parametrize(  # each mode compiles again (5-9 s on a 2-core CPU): all in the slow lane
    "mode",
    [
        pytest.param("default", marks=pytest.mark.slow),
        pytest.param("reduce-overhead", marks=pytest.mark.slow),  # the step marks of CUDA graphs
        pytest.param("max-autotune-no-cudagraphs", marks=pytest.mark.slow),  # the default's path
    ],
)
def test_a_compiled_step_computes_the_eager_steps_loss_gradients_and_share(
    mode: str,
    make_tiny_pretrain_config: Callable[..., Config],
    traced: list[str],
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_tiny_pretrain_config(**TINY)
    standardiser = ScoreStandardiser(mean=300.0, std=80.0)
    seed_everything(0, deterministic=True)
    trainee = build_model_and_objective(config, standardiser, torch.device("cpu"))
    marks: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    network = compile_network(trainee.network, mode)
    assert isinstance(network, StepMarked) == (mode in GRAPH_MODES)
    assert traced == [mode]
    clips = torch.rand(4, 2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    scores = torch.tensor([150.0, 250.0, 350.0, 450.0])

    def step(network: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        trainee.model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # the same dropout masks
        out = batch_loss(replace(trainee, network=network), clips, scores, two_views=False)
        norms = contrastive_gradient_norms(trainee.model, out)  # autograd.grad twice, graph retained
        assert norms is not None
        out.total.backward()
        return out.total.detach(), norms, [p.grad.clone() for p in trainee.model.parameters()]

    trainee.model.train()
    eager_loss, eager_norms, eager_grads = step(trainee.network)
    compiled_loss, compiled_norms, compiled_grads = step(network)
    torch.testing.assert_close(compiled_loss, eager_loss)
    torch.testing.assert_close(compiled_norms, eager_norms)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-5)
    assert len(marks) == (1 if mode in GRAPH_MODES else 0)  # one mark per call of the network


@pytest.mark.slow  # two tiny pretrainings, one traced (~15 s)
def test_a_compiled_pretraining_writes_the_eager_runs_numbers_and_checkpoints(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, traced: list[str], one_thread: None
) -> None:
    runs = {}
    for mode in ("off", "default"):
        runs[mode] = tmp_path / mode
        pretrain(make_tiny_pretrain_config(**{"runtime.compile": mode}), runs[mode])
    assert traced == ["default"]  # the compiled run's network, once
    metrics = {mode: pd.read_csv(run / "metrics.csv") for mode, run in runs.items()}
    numbers = [c for c in metrics["off"].columns if c.startswith(("train_", "val_"))]
    pd.testing.assert_frame_equal(metrics["default"][numbers], metrics["off"][numbers], rtol=1e-4, atol=1e-6)
    states = {mode: load_checkpoint(RunLayout(run).checkpoint("last"))[0] for mode, run in runs.items()}
    compiled_state, eager_state = states["default"], states["off"]
    assert isinstance(compiled_state, dict)
    assert isinstance(eager_state, dict)
    assert compiled_state.keys() == eager_state.keys()  # the model's own names, no `_orig_mod.`
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=1e-4, atol=1e-5)


def test_compile_is_refused_before_any_work_where_inductor_cannot_build(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inductor (the default backend) writes C++ on a CPU and Triton kernels on a GPU: without the C++
    compiler, or without triton on CUDA, the plan says so in one line and no run folder is made."""
    config = make_tiny_pretrain_config(**{"runtime.compile": "default"})
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(ConfigError, match=r"^runtime\.compile=default on a CPU needs a C\+\+ compiler: "):
        plan_pretraining(config, tmp_path / "cpu")
    monkeypatch.setattr(plan_module, "runs_on_cuda", lambda requested: True)
    monkeypatch.setattr(plan_module, "triton_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"on a GPU needs triton"):
        plan_pretraining(config, tmp_path / "gpu")
    assert not any(tmp_path.iterdir())
    off = make_tiny_pretrain_config()  # runtime.compile=off asks for neither
    assert plan_pretraining(off, tmp_path / "off").config.runtime.compile == "off"
