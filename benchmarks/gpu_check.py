"""The paper-scale training step with its data on the device, in four forms, in one short run on one GPU:
step times, GPU busy %, the top kernels and the projected wall time of Tables 3 and 4.

Usage::

    bash benchmarks/gpu_check.sh OUT_DIR                # on a GPU machine: this under a 4-minute timeout
    python benchmarks/gpu_check.py                      # one GPU: tsm_resnet18, 8 frames × 224 px, batch 16
    python benchmarks/gpu_check.py --device cpu --tiny  # seconds on a CPU (tests/test_benchmark_gpu.py)

The step is the toolkit's own device-data step (``data.device_data``, docs/training.md "Data on the
device"): :func:`learner.training.sync_free.sync_free_step` of a trainee built by
:func:`learner.training.pretrain.build_model_and_objective` from the bundled ``lus`` config (tsm_resnet18,
λ·MSE + (1 − λ)·wCL, Adam made fused and, on CUDA, capturable with a tensor LR; bf16 autocast and
channels-last on CUDA, as the config has them), on a batch :class:`~learner.data.clip_store.DeviceBatches`
made on the device from a random uint8 clip store (picks and augmentation done before the timing: the
batch stays fixed, so every form times the same work). Forms (``--forms``):

* ``eager``: the step as training runs it by default; then 2 more steps under
  ``torch.cuda.set_sync_debug_mode("error")`` (CUDA only), which should find no host sync (printed, and
  ``host_syncs`` in the record: ``none`` or the first sync's error);
* ``graph``: the step as ``runtime.cuda_graph`` runs it: recorded once in a ``torch.cuda.CUDAGraph`` (after
  3 warm-up steps on a side stream) and replayed (:mod:`learner.training.step_graph`; CUDA only). First a
  check: cell 0 trained 10 steps eagerly and 10 steps recorded, from the same weights; the largest
  parameter difference and whether the loss sums agree (printed, and ``replay_check`` in the record);
* ``compile``: the network as ``runtime.compile=--compile-mode`` compiles it
  (:func:`learner.training.compiled.compile_network`; ``reduce-overhead``: Inductor's kernels in CUDA
  graphs, forward and backward, each step's start marked), the loss and the fused Adam eager (CUDA only);
* ``cells``: ``--cells`` independent cells (own model, optimiser, batch), one step each in turn, each on its
  own CUDA stream (on a CPU: in turn, no streams);
* ``cells_graph``: the same cells, each step a captured graph replayed on the cell's stream (CUDA only).

Figures of each form: ``--warmup`` untimed steps, then ``--steps`` timed steps in chunks of ``--chunk`` with
one device sync at the end of each chunk (so the host runs ahead as in training): the median of the
chunks' ms per step, steps per second over all timed steps, and the GPU busy %: the device time of
``--profile-steps`` further steps under ``torch.profiler`` (the union of the kernel, memcpy and memset
intervals, so overlapping streams count once) per step, over the median step time. For the cells forms a
"step" is one cell's step (a round of all cells / ``--cells``), so every row says how fast the steps of a
Table 3 cell get done. TFLOP/s counts the convolutions and linears (:func:`bench_common.conv_linear_flops`).
Also measured: making one batch on the device (picks, gather, augmentation; not a step, it comes on top),
the top 10 kernels of the eager step by device time (on a CPU: the top ops by self CPU time), and for the
Table 4 projection the eager step of each of ``--table4`` backbones (default vit, swin).

Projection (:func:`gpu.projected_steps`, the same arithmetic as benchmarks/gpu.py): Table 3 = its steps ×
the best form's seconds per step; Table 4 = the same steps per backbone × (tsm_resnet18's best form + each
other backbone's eager step). Training steps only: batch making, validation, checkpoints and start-up come
on top (the batch making is printed beside it).

Guards: each form runs on its own; an error prints one line (``FORM: error: …``; the traceback goes to the
JSON record) and the next form runs. ``--budget-s`` (default 200) bounds the whole run from the start of
the process: a form whose estimate would pass it is skipped (``FORM: skipped: over budget …``), a timed
loop stops early at it, and an alarm interrupts a form (a long compile) that runs past it. After every form
the figures so far are written to ``--partial`` (when given), so a run killed from outside still leaves them.
Prints a markdown table, the top kernels and the projection, and as its last line the JSON record appended
to ``--out``.
"""

from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here, imports included

import argparse  # noqa: E402 -- after START, so that the budget counts the imports
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, get_args  # noqa: E402

import torch  # noqa: E402
from bench_common import RESULTS, append_record, conv_linear_flops  # noqa: E402
from gpu import LUS_TRAIN_CLIPS, projected_steps  # noqa: E402
from torch import Tensor  # noqa: E402

from learner.config import CompileMode, Config, apply_overrides, load_config  # noqa: E402
from learner.data.augment import ClipAugment  # noqa: E402
from learner.data.clip_store import ClipStore, DeviceBatches  # noqa: E402
from learner.losses.regression import ScoreStandardiser  # noqa: E402
from learner.training.compiled import compile_network  # noqa: E402
from learner.training.epoch import Trainee  # noqa: E402
from learner.training.pretrain import build_model_and_objective, lr_schedule  # noqa: E402
from learner.training.seeding import seed_everything  # noqa: E402
from learner.training.step_graph import WARMUP_STEPS, CudaGraphRecorder  # noqa: E402
from learner.training.sync_free import (  # noqa: E402
    DeviceCounters,
    DeviceStep,
    lr_table,
    sync_free_optimizer,
)

FORMS = ("eager", "graph", "compile", "cells", "cells_graph")
CUDA_ONLY = frozenset({"graph", "compile", "cells_graph"})
RUN_ORDER = ("eager", "graph", "cells", "cells_graph", "compile")
"""The forms in the order they run: the compile, the longest and likeliest to fail, last."""
CAPTURE_STEPS = WARMUP_STEPS + 1
"""Steps :meth:`Runner.capture` takes: the eager warm-up, then the recording replayed once."""
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
"""Chrome-trace categories of work on the GPU (annotations and host-side events excluded)."""


class BudgetExceeded(Exception):
    """The run's time budget ran out inside a form."""


@dataclasses.dataclass
class Budget:
    """``seconds`` of wall time from ``start`` (``time.monotonic``) for the whole run."""

    seconds: float
    start: float = START

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, estimate: float) -> bool:
        """Whether work estimated at ``estimate`` seconds ends within the budget."""
        return estimate <= self.left()


@contextlib.contextmanager
def alarm_at_budget(budget: Budget) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` in the main thread when the budget runs out (POSIX; elsewhere or off
    the main thread nothing is armed)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(_signum: int, _frame: object) -> None:
        raise BudgetExceeded(f"the {budget.seconds:.0f} s budget ran out")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(budget.left(), 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (whitespace collapsed, at most 300 characters)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def guarded(
    name: str, estimate: float, budget: Budget, run: Callable[[], dict[str, Any]], *, skip: str | None = None
) -> dict[str, Any]:
    """Run one form: ``{"status": "ok", **run()}``; or, printing one line, ``{"status": "skipped",
    "reason"}`` (``skip`` given, or ``estimate`` seconds would pass the budget) or ``{"status": "error",
    "error", "traceback"}`` (``run`` raised, or the budget ran out inside it)."""
    if skip is None and not budget.allows(estimate):
        skip = f"over budget ({budget.elapsed():.0f} s spent + ~{estimate:.0f} s > {budget.seconds:.0f} s)"
    if skip is not None:
        print(f"{name}: skipped: {skip}", flush=True)
        return {"status": "skipped", "reason": skip}
    try:
        with alarm_at_budget(budget):
            figures = run()
    except Exception as exc:  # one form's failure must not stop the others
        print(f"{name}: error: {one_line(exc)}", flush=True)
        return {"status": "error", "error": one_line(exc), "traceback": traceback.format_exc()[-4000:]}
    return {"status": "ok", **figures}


def device_intervals(events: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(start µs, end µs, name) of every GPU activity (kernel, memcpy, memset) of a Chrome trace's events."""
    spans = []
    for event in events:
        if event.get("ph") == "X" and event.get("cat") in DEVICE_CATEGORIES and "dur" in event:
            start = float(event["ts"])
            spans.append((start, start + float(event["dur"]), str(event.get("name", "?"))))
    return spans


def union_us(spans: list[tuple[float, float, str]]) -> float:
    """Total µs covered by the intervals (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end, _ in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def top_kernels(spans: list[tuple[float, float, str]], steps: int, count: int = 10) -> list[dict[str, Any]]:
    """The ``count`` kernels (by name) with the most device time: ms and calls per step, % of all."""
    by_name: dict[str, list[float]] = {}
    for start, end, name in spans:
        by_name.setdefault(name, []).append(end - start)
    total = sum(sum(d) for d in by_name.values()) or 1.0
    ranked = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:count]
    return [
        {"name": name[:300], "ms_per_step": sum(d) / steps / 1e3, "calls_per_step": len(d) / steps,
         "percent": 100.0 * sum(d) / total}
        for name, d in ranked
    ]  # fmt: skip


@dataclasses.dataclass
class Cell:
    """One cell's parts: its step (trainee, LR table and tensor, device counters bound) and fixed batch."""

    device_step: DeviceStep
    clips: Tensor
    scores: Tensor

    @property
    def trainee(self) -> Trainee:
        return self.device_step.trainee

    def step(self) -> None:
        self.device_step(self.clips, self.scores)


@dataclasses.dataclass
class Setup:
    """The config, a random clip store on the device and its batches: what every cell is built from."""

    config: Config
    device: torch.device
    batches: DeviceBatches
    standardiser: ScoreStandardiser
    lrs: Tensor

    def cell(self, index: int, backbone: str | None = None) -> Cell:
        """Cell ``index``: initial weights from seed ``index`` (every form's cell i starts alike), batch
        ``index`` of epoch 1."""
        config = self.config
        if backbone is not None:
            config = apply_overrides(config, {"model.backbone": backbone})
        seed_everything(index, deterministic=self.device.type == "cpu")
        trainee = build_model_and_objective(config, self.standardiser, self.device)
        lr = sync_free_optimizer(trainee.optimizer, self.device)
        clips, scores = self.batches.batch(1, index % len(self.batches))
        counters = DeviceCounters.starting(0, self.device)
        return Cell(DeviceStep(trainee, self.lrs, lr, counters), clips, scores)


def build_setup(args: argparse.Namespace, device: torch.device) -> Setup:
    """The ``lus`` config at ``args``' scale with ``data.device_data``, and ``4 × batch`` random scans of
    ``2 × frames`` frames each, loaded as a :class:`ClipStore` on ``device`` (scores 100–500, S/F units)."""
    config = apply_overrides(
        load_config("lus"),
        {"data.device_data": True, "data.frames": args.frames, "data.size": args.size,
         "model.size": args.preset, "optim.batch_size": args.batch, "runtime.device": device.type},
    )  # fmt: skip
    generator = torch.Generator(device=device).manual_seed(0)
    scans, per_scan = 4 * args.batch, 2 * args.frames
    shape = (scans * per_scan, args.size, args.size)
    frames = torch.randint(0, 256, shape, generator=generator, device=device, dtype=torch.uint8)
    store = ClipStore(
        frames=frames,
        offsets=torch.arange(scans, device=device) * per_scan,
        counts=torch.full((scans,), per_scan, device=device),
        scores=100 + 400 * torch.rand(scans, generator=generator, device=device),
    )
    standardiser = ScoreStandardiser.fit(store.scores.cpu())
    batches = DeviceBatches(
        store, frames=args.frames, channels=config.data.channels, batch_size=args.batch,
        augment=ClipAugment.from_config(config.data), seed=0,
    )  # fmt: skip
    per_epoch = LUS_TRAIN_CLIPS // args.batch
    total = config.optim.epochs * per_epoch
    schedule = lr_schedule(config.optim, per_epoch)
    lrs = lr_table(lambda step: schedule(step, total, config.optim.lr), total, device)
    return Setup(config, device, batches, standardiser, lrs)


class Runner:
    """Times, profiles and guards the forms of one run (its settings, device, budget and figures)."""

    def __init__(self, args: argparse.Namespace, device: torch.device, budget: Budget) -> None:
        self.args, self.device, self.budget = args, device, budget
        self.cuda = device.type == "cuda"
        self.trace_dir = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.eager_step_s: float | None = None  # the eager step, once measured: the forms' estimates

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def host_syncs(self, step: Callable[[], object], steps: int = 2) -> str | None:
        """``steps`` calls of a warmed-up ``step`` with CUDA's sync debug mode raising at a host sync:
        ``"none"``, or the error's first line; None on a CPU (there ``tests/conftest.py``'s
        ``forbid_host_syncs`` checks the step in CI)."""
        if not self.cuda:
            return None
        self.sync()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(steps):
                step()
        except RuntimeError as error:
            return str(error).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        self.sync()
        return "none"

    def timed(self, step: Callable[[], object], *, warmup: int, steps: int) -> dict[str, Any]:
        """``warmup`` untimed calls, then ``steps`` timed in chunks of ``--chunk`` (a sync ending each);
        stops early (after two chunks) when what is left of the budget would not hold three more chunks
        (the rest and the profile). Seconds per call: the chunks' median, and ``calls`` / total seconds."""
        for _ in range(warmup):
            step()
        self.sync()
        chunks: list[tuple[int, float]] = []
        done = 0
        while done < steps:
            count = min(self.args.chunk, steps - done)
            start = time.perf_counter()
            for _ in range(count):
                step()
            self.sync()
            chunks.append((count, time.perf_counter() - start))
            done += count
            if len(chunks) >= 2 and self.budget.left() < 3 * chunks[-1][1]:
                break
        per_call = [seconds / count for count, seconds in chunks]
        return {
            "median_s": statistics.median(per_call), "chunk_s": per_call, "calls": done,
            "calls_per_s": done / sum(seconds for _, seconds in chunks),
        }  # fmt: skip

    def profile(self, name: str, step: Callable[[], object], calls: int) -> dict[str, Any]:
        """``calls`` calls under ``torch.profiler``: on CUDA the device-busy µs per call (union of GPU
        intervals) and the top kernels; on a CPU the top ops by self CPU time."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.sync()
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(calls):
                step()
            self.sync()
        if not self.cuda:
            averages = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
            top = [
                {"name": e.key[:300], "ms_per_step": e.self_cpu_time_total / calls / 1e3,
                 "calls_per_step": e.count / calls, "percent": None}
                for e in averages
            ]  # fmt: skip
            return {"device_ms": None, "top": top, "top_of": "ops by self CPU time"}
        path = self.trace_dir / f"{name}.json"
        prof.export_chrome_trace(str(path))
        spans = device_intervals(json.loads(path.read_text()).get("traceEvents", []))
        path.unlink()
        device_ms = union_us(spans) / calls / 1e3 if spans else None
        return {"device_ms": device_ms, "top": top_kernels(spans, calls), "top_of": "kernels by device time"}

    def measure(self, name: str, step: Callable[[], object], cells: int, *, warmup: int) -> dict[str, Any]:
        """Time then profile ``step`` (one round of ``cells`` cell-steps); figures per cell-step."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        timing = self.timed(step, warmup=warmup, steps=self.args.steps)
        profiled = self.profile(name, step, self.args.profile_steps)
        step_s = timing["median_s"] / cells
        device_ms, round_ms = profiled["device_ms"], 1e3 * timing["median_s"]
        figures = {
            "cells": cells, "step_ms": 1e3 * step_s, "steps_per_s": cells * timing["calls_per_s"],
            "round_ms": round_ms, "chunk_ms": [1e3 * s for s in timing["chunk_s"]],
            "timed_rounds": timing["calls"], "device_ms_per_round": device_ms,
            "busy_percent": None if device_ms is None else 100 * device_ms / round_ms,
            "top": profiled["top"], "top_of": profiled["top_of"],
        }  # fmt: skip
        if self.cuda:
            figures["peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return figures

    def estimate(self, fixed: float, steps: int) -> float:
        """Seconds of work that takes ``fixed`` seconds (building, capturing, compiling) and ``steps``
        eager-sized steps (the eager step once measured, else a guess of 50 ms on CUDA, 0.5 s on a CPU)."""
        return fixed + steps * (self.eager_step_s or (0.05 if self.cuda else 0.5))

    def release(self) -> None:
        """Free what the last form left (its cells and graphs are out of scope by now)."""
        self.sync()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def capture(self, cell: Cell) -> Callable[[], None]:
        """``cell``'s step as ``runtime.cuda_graph`` runs it (``GraphedStep`` with ``CudaGraphRecorder``,
        :mod:`learner.training.step_graph`): 3 eager warm-up steps on a side stream, then recorded once and
        replayed; returns the step, recorded already (:data:`CAPTURE_STEPS` steps taken)."""
        cell.device_step.graph(CudaGraphRecorder(self.device), warmup=WARMUP_STEPS)
        for _ in range(CAPTURE_STEPS):
            cell.step()
        self.sync()
        return cell.step

    def replay_matches_eager(self, setup: Setup, steps: int = 10) -> dict[str, Any]:
        """Cell 0 trained ``steps`` steps eagerly and, from the same initial weights, with its step recorded:
        the largest parameter difference after them (absolute, and relative to the largest |parameter|),
        and whether the two runs' loss sums agree within 1e-3 relative (cuDNN may pick other kernels)."""
        eager, graphed = setup.cell(0), setup.cell(0)
        replay = self.capture(graphed)
        for _ in range(steps):
            eager.step()
        for _ in range(steps - CAPTURE_STEPS):
            replay()
        self.sync()
        pairs = list(zip(eager.trainee.model.parameters(), graphed.trainee.model.parameters(), strict=True))
        diff = max(float((a.detach() - b.detach()).abs().max()) for a, b in pairs)
        scale = max(float(a.detach().abs().max()) for a, _ in pairs)
        sums = [cell.device_step.counters.read().sums["train_loss"] for cell in (eager, graphed)]
        return {
            "steps": steps, "param_max_abs_diff": diff, "param_max_rel_diff": diff / scale,
            "loss_sums": sums, "agree": abs(sums[0] - sums[1]) <= 1e-3 * abs(sums[0]),
        }  # fmt: skip


def on_streams(steps: list[Callable[[], None]], device: torch.device) -> Callable[[], None]:
    """One round: each step in turn on its own new CUDA stream (after the work queued so far)."""
    streams = [torch.cuda.Stream(device) for _ in steps]
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream(device))

    def round_() -> None:
        for stream, step in zip(streams, steps, strict=True):
            with torch.cuda.stream(stream):
                step()

    return round_


def in_turn(steps: list[Callable[[], None]]) -> Callable[[], None]:
    def round_() -> None:
        for step in steps:
            step()

    return round_


def run_forms(args: argparse.Namespace, runner: Runner, setup: Setup, figures: dict[str, Any]) -> None:
    """Every form of ``args.forms`` (in :data:`RUN_ORDER`), guarded, into ``figures["forms"]``; the eager
    form also measures the batch making and the FLOPs. The other backbones' eager steps (Table 4) run just
    before the compile."""
    forms: dict[str, Any] = figures["forms"]
    device, warmup, n = runner.device, args.warmup, args.cells

    def eager() -> dict[str, Any]:
        cell = setup.cell(0)
        result = runner.measure("eager", cell.step, 1, warmup=warmup)
        runner.eager_step_s = result["step_ms"] / 1e3
        figures["host_syncs"] = runner.host_syncs(cell.step)
        if figures["host_syncs"] is not None:
            print(f"eager: host syncs in 2 steps (torch.cuda.set_sync_debug_mode('error')): "
                  f"{figures['host_syncs']}", flush=True)  # fmt: skip
        batches, counter = setup.batches, iter(range(10**9))

        def make_batch() -> None:
            batches.batch(1, next(counter) % len(batches))

        batch = runner.timed(make_batch, warmup=1, steps=args.steps)
        figures["batch_ms"] = 1e3 * batch["median_s"]
        figures["tflop_per_step"] = conv_linear_flops(cell.trainee.model, cell.clips) / 1e12
        return result

    def graph() -> dict[str, Any]:
        check = runner.replay_matches_eager(setup)
        print(f"graph: replay against eager after {check['steps']} steps: parameters differ by at most "
              f"{check['param_max_abs_diff']:.2e} ({check['param_max_rel_diff']:.1e} relative), loss sums "
              f"{'agree' if check['agree'] else 'DISAGREE'}", flush=True)  # fmt: skip
        runner.release()
        cell = setup.cell(0)
        return runner.measure("graph", runner.capture(cell), 1, warmup=warmup) | {"replay_check": check}

    def compiled() -> dict[str, Any]:
        from torch._dynamo.utils import counters

        cell = setup.cell(0)  # the network as runtime.compile compiles it (marking each step's start)
        network = compile_network(cell.trainee.model, args.compile_mode)
        cell.device_step.trainee = dataclasses.replace(cell.trainee, network=network)
        step = cell.step

        skips = counters["inductor"]["cudagraph_skips"]
        started = time.perf_counter()
        step()
        runner.sync()
        compile_s = time.perf_counter() - started
        result = runner.measure("compile", step, 1, warmup=max(warmup, 3))
        return result | {
            "compile_s": compile_s, "mode": args.compile_mode,
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips,
            "graph_breaks": sum(counters["graph_break"].values()),
        }  # fmt: skip

    def cells() -> dict[str, Any]:
        steps = [setup.cell(i).step for i in range(n)]
        round_ = on_streams(steps, device) if runner.cuda else in_turn(steps)
        return runner.measure("cells", round_, n, warmup=warmup) | {"streams": n if runner.cuda else 0}

    def cells_graph() -> dict[str, Any]:
        replays = [runner.capture(setup.cell(i)) for i in range(n)]
        return runner.measure("cells_graph", on_streams(replays, device), n, warmup=warmup) | {"streams": n}

    run = {"eager": eager, "graph": graph, "compile": compiled, "cells": cells, "cells_graph": cells_graph}
    for form in RUN_ORDER:
        if form == "compile":
            table4_backbones(args, runner, setup, figures)  # before the compile, which may use the rest
        if form not in args.forms:
            continue
        cells_of = n if form.startswith("cells") else 1
        fixed = args.compile_estimate_s if form == "compile" else 10.0
        estimate = runner.estimate(fixed, (warmup + args.steps + args.profile_steps) * cells_of)
        skip = "CUDA only" if form in CUDA_ONLY and not runner.cuda else None
        forms[form] = guarded(form, estimate, runner.budget, run[form], skip=skip)
        runner.release()
        report_form(form, forms[form])
        write_partial(args.partial, figures)


def table4_backbones(args: argparse.Namespace, runner: Runner, setup: Setup, figures: dict[str, Any]) -> None:
    """The eager step of each ``--table4`` backbone, for the Table 4 projection."""
    figures["table4_eager"] = {}
    steps = min(args.steps, 2 * args.chunk)
    for backbone in args.table4:

        def measure(backbone: str = backbone) -> dict[str, Any]:
            cell = setup.cell(0, backbone)
            timing = runner.timed(cell.step, warmup=2, steps=steps)
            return {"step_ms": 1e3 * timing["median_s"], "steps_per_s": timing["calls_per_s"]}

        # a ViT or Swin step: a few times tsm_resnet18's (the estimate's factor 5)
        estimate = runner.estimate(10.0, 5 * (2 + steps))
        result = guarded(f"table4 {backbone}", estimate, runner.budget, measure)
        figures["table4_eager"][backbone] = result
        runner.release()
        if result["status"] == "ok":
            print(f"table4 {backbone}: eager {result['step_ms']:.2f} ms/step", flush=True)
    write_partial(args.partial, figures)


def report_form(form: str, result: dict[str, Any]) -> None:
    if result["status"] != "ok":
        return  # guarded() printed its line
    busy = "n/a" if result["busy_percent"] is None else f"{result['busy_percent']:.0f}%"
    extra = f", compiled in {result['compile_s']:.0f} s" if "compile_s" in result else ""
    print(f"{form}: {result['step_ms']:.2f} ms/step, {result['steps_per_s']:.1f} steps/s, "
          f"GPU busy {busy}{extra}", flush=True)  # fmt: skip


def write_partial(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


def project(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """Table 3 and Table 4 wall time (training steps) from the best form (:func:`gpu.projected_steps`)."""
    ok = {f: r for f, r in figures["forms"].items() if r["status"] == "ok"}
    if not ok:
        figures["table3"] = figures["table4"] = None
        return
    best = min(ok, key=lambda f: ok[f]["step_ms"])
    best_s = ok[best]["step_ms"] / 1e3
    steps = projected_steps(args.batch)
    batch_s = figures.get("batch_ms", 0.0) / 1e3
    figures["best_form"] = best
    figures["table3"] = {
        "steps": steps, "backbone": "tsm_resnet18", "form": best, "seconds": steps * best_s,
        "seconds_with_batch_making": steps * (best_s + batch_s),
    }  # fmt: skip
    per_backbone = {"tsm_resnet18": {"form": best, "seconds": steps * best_s}}
    for backbone, result in figures.get("table4_eager", {}).items():
        if result["status"] == "ok":
            per_backbone[backbone] = {"form": "eager", "seconds": steps * result["step_ms"] / 1e3}
    figures["table4"] = {
        "steps": {b: steps for b in per_backbone}, "backbones": per_backbone,
        "seconds": sum(b["seconds"] for b in per_backbone.values()),
        "missing": [b for b in args.table4 if b not in per_backbone],
    }  # fmt: skip


def _cell(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_report(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """The markdown tables and the projection."""
    forms = figures["forms"]
    eager = forms.get("eager", {})
    eager_ms = eager.get("step_ms") if eager.get("status") == "ok" else None
    flop = figures.get("tflop_per_step")
    print()
    print(f"# {figures['device_name']}, torch {torch.__version__}: tsm_resnet18 ({args.preset}), batch "
          f"{args.batch}, {args.frames} × {args.size}², amp {figures['amp']}, channels-last "
          f"{figures['channels_last']}; {args.steps} steps in chunks of {args.chunk} after {args.warmup} "
          f"warm-up, {args.profile_steps} profiled; {figures['elapsed_s']:.0f} s of a "
          f"{args.budget_s:.0f} s budget")  # fmt: skip
    print()
    print("| form | cells | ms/step | steps/s | GPU busy % | TFLOP/s | × eager | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for form in FORMS:
        if form not in forms:
            continue
        r = forms[form]
        if r["status"] != "ok":
            note = r.get("reason") or r.get("error", "")
            print(f"| {form} | — | — | — | — | — | — | {r['status']}: {note.replace('|', '/')} |")
            continue
        notes = []
        if r["cells"] > 1:
            notes.append(f"round {r['round_ms']:.2f} ms on {r.get('streams') or 'no'} streams")
        if "compile_s" in r:
            notes.append(f"compiled in {r['compile_s']:.0f} s, {r['cudagraph_skips']} cudagraph skips")
        if "peak_gib" in r:
            notes.append(f"peak {r['peak_gib']:.1f} GiB")
        speedup = None if eager_ms is None else eager_ms / r["step_ms"]
        tflops = None if flop is None else flop / (r["step_ms"] / 1e3)
        print(f"| {form} | {r['cells']} | {r['step_ms']:.2f} | {r['steps_per_s']:.1f} | "
              f"{_cell(r['busy_percent'], '.0f')} | {_cell(tflops, '.3g')} | {_cell(speedup, '.2f')} | "
              f"{'; '.join(notes)} |")  # fmt: skip
    if figures.get("host_syncs") is not None:
        print(f"| host syncs in 2 eager steps (sync debug mode) | 1 | — | — | — | — | — | "
              f"{figures['host_syncs'].replace('|', '/')} |")  # fmt: skip
    if "batch_ms" in figures:
        print(f"| batch making (picks, gather, augment; on top of a step) | 1 | {figures['batch_ms']:.2f} "
              f"| — | — | — | — | not a step |")  # fmt: skip
    if eager.get("status") == "ok":
        print()
        print(f"| # | eager: top {eager['top_of']} | ms/step | calls/step | % |")
        print("|---:|---|---:|---:|---:|")
        for rank, k in enumerate(eager["top"], 1):
            name = k["name"].replace("|", "/")[:100]
            print(f"| {rank} | `{name}` | {k['ms_per_step']:.3f} | {k['calls_per_step']:.0f} | "
                  f"{_cell(k['percent'], '.1f')} |")  # fmt: skip
    print()
    t3, t4 = figures.get("table3"), figures.get("table4")
    if not t3:
        print("No form ran: no projection.")
        return
    print(f"Table 3 ({t3['steps']} steps of tsm_resnet18, {t3['form']}): {t3['seconds'] / 60:.1f} min of "
          f"steps ({t3['seconds_with_batch_making'] / 60:.1f} min with the batch making); validation, "
          f"checkpoints and start-up on top")  # fmt: skip
    parts = ", ".join(f"{b} {v['form']}" for b, v in t4["backbones"].items())
    missing = f"; not measured: {', '.join(t4['missing'])}" if t4["missing"] else ""
    print(f"Table 4 ({len(t4['backbones'])} × {t3['steps']} steps: {parts}): {t4['seconds'] / 3600:.2f} h"
          f"{missing}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--batch", type=int, default=16, help="Table 2's batch")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps (rounds) per form")
    parser.add_argument("--chunk", type=int, default=5, help="steps between device syncs while timing")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--cells", type=int, default=3, help="cells of the cells forms")
    parser.add_argument(
        "--compile-mode", default="reduce-overhead", choices=get_args(CompileMode), help="runtime.compile's"
    )
    parser.add_argument("--compile-estimate-s", type=float, default=120.0, help="for the budget")
    parser.add_argument("--table4", nargs="*", default=None, help="other Table 4 backbones (vit swin)")
    parser.add_argument("--budget-s", type=float, default=200.0, help="wall seconds for the whole run")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 2 × 32 px, batch 4, 4 steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (--tiny: 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="append one JSON line here")
    parser.add_argument("--partial", type=Path, default=None, help="the figures so far, after every form")
    args = parser.parse_args()
    if args.tiny:
        args.preset, args.frames, args.size, args.batch = "tiny", 2, 32, 4
        args.steps, args.chunk, args.warmup, args.profile_steps = 4, 2, 1, 2
        args.threads = args.threads or 1
    if args.table4 is None:
        args.table4 = [] if args.tiny else ["vit", "swin"]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    budget = Budget(args.budget_s)
    setup = build_setup(args, device)
    runtime = setup.config.runtime
    figures: dict[str, Any] = {
        "settings": vars(args) | {"out": str(args.out), "partial": args.partial and str(args.partial)},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": device.type == "cuda" and runtime.amp,
        "channels_last": runtime.channels_last if device.type == "cuda" else runtime.cpu_channels_last,
        "forms": {},
    }
    runner = Runner(args, device, budget)
    try:
        run_forms(args, runner, setup, figures)
    finally:
        shutil.rmtree(runner.trace_dir, ignore_errors=True)
    project(args, figures)
    figures["elapsed_s"] = budget.elapsed()
    write_partial(args.partial, figures)
    print_report(args, figures)
    print(json.dumps(append_record(args.out, "gpu_check", figures)))


if __name__ == "__main__":
    main()
