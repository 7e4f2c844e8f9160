"""A pretraining epoch with its data on the device (``data.device_data``) against the loader path, side by
side: seconds per optimiser step of each, on the same phantom cohort, model and settings.

Usage::

    python benchmarks/device_data.py                       # CPU, tiny: 6/3/3 patients, tiny TSM, 2 × 32 px
    python benchmarks/device_data.py --device cuda --preset paper --frames 8 --size 224 --batch 16 \
        --patients 160,44,17 --steps 40 --workers 4        # the paper-scale step on a GPU

Two arms (:func:`bench_common.interleaved`: each repetition runs both, in rotated order, medians after a
warm-up), each one epoch of ``--steps`` steps through the toolkit's own functions:

* ``loader``: :func:`learner.training.epoch.train_one_epoch` (``ScanDataset`` items through a DataLoader with
  ``--workers`` processes, per-clip augmentation on the host, ``.item()`` and ``bool()`` every step);
* ``device``: :func:`learner.training.device_epoch.device_epoch_steps` as pretraining runs it
  (:func:`~learner.training.device_epoch.start_device_run`: the cohort loaded once onto the device, batched
  picks and augmentation there, the sync-free step with a fused Adam);
* ``graph`` (CUDA only): the same with ``runtime.cuda_graph``, the step recorded once as a CUDA graph after
  3 eager steps and replayed (:mod:`learner.training.step_graph`).

Each arm trains its own model from the same initial weights; every repetition is a new epoch (new draws).
Printed: seconds per step of each arm, the ratios loader/device and device/graph (medians of the
per-repetition ratios, with min-max),
the one-off time to load the cohort onto the device; the JSON line goes to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import RESULTS, append_record, interleaved, median_ratio

from learner.config import Config, apply_overrides
from learner.data.phantom.lus import generate_lus_cohort
from learner.training.device_epoch import DeviceRun, drain, start_device_run
from learner.training.distributed import DistInfo
from learner.training.epoch import train_one_epoch
from learner.training.loaders import build_loaders
from learner.training.plan import plan_pretraining
from learner.training.pretrain import (
    build_model_and_objective,
    lr_schedule,
    open_run,
    prepare_scans,
)
from learner.training.seeding import seed_everything

ARMS = ("loader", "device", "graph")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patients", default="6,3,3", help="train,val,test patients of the phantom cohort")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed epoch (at most the cohort's)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="loader processes of the loader arm")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help="append one JSON line here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    patients = tuple(int(n) for n in args.patients.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        phantom_frames = max(4, args.frames)
        train, val, test = patients
        manifest = generate_lus_cohort(
            folder / "lus", patients=(train, val, test), frames=phantom_frames, size=args.size
        )
        overrides: dict[str, Any] = {
            "data.manifest": str(manifest), "data.frames": args.frames, "data.size": args.size,
            "model.size": args.preset, "optim.batch_size": args.batch, "optim.epochs": 1000,
            "optim.max_steps_per_epoch": args.steps, "runtime.workers": args.workers,
            "runtime.device": device.type, "runtime.cache_dir": str(folder / "cache"),
        }  # fmt: skip
        config = apply_overrides(Config(), overrides)
        figures = run_arms(config, folder / "run", device, args)
    figures["settings"] = vars(args) | {"out": str(args.out)}
    figures["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    loader, on_device = (figures["step_seconds"][arm] for arm in ("loader", "device"))
    ratio = figures["loader_over_device"]
    print(f"# {figures['device_name']}, batch {args.batch}, T={args.frames}, {args.size}², "
          f"preset {args.preset}, "
          f"{figures['steps_per_epoch']} steps × {args.reps} reps, loader workers {args.workers}, "
          f"{args.threads} thread(s)")  # fmt: skip
    print(f"loader path   {loader * 1e3:9.1f} ms/step")
    print(f"device data   {on_device * 1e3:9.1f} ms/step")
    print(f"loader/device {ratio['median']:.2f} (min {ratio['min']:.2f}, max {ratio['max']:.2f}); "
          f"cohort onto the device once: {figures['load_seconds']:.2f} s")  # fmt: skip
    if figures["device_over_graph"] is not None:
        graph, speedup = figures["step_seconds"]["graph"], figures["device_over_graph"]
        print(f"CUDA graph    {graph * 1e3:9.1f} ms/step")
        print(f"device/graph  {speedup['median']:.2f} (min {speedup['min']:.2f}, max {speedup['max']:.2f})")
    print(json.dumps(append_record(args.out, "device_data", figures)))


def run_arms(config: Config, run_dir: Path, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Build every arm from the pretraining's own parts and time them side by side."""
    plan = plan_pretraining(config, run_dir)
    info = DistInfo()
    seed_everything(config.seed, deterministic=device.type == "cpu")
    scans = prepare_scans(plan, info, open_run(plan, info))
    loaders = build_loaders(config, scans, info, device)
    steps = loaders.steps_per_epoch
    schedule = lr_schedule(config.optim, steps)
    total = config.optim.epochs * steps

    def lr_at(step: int) -> float:
        return schedule(step, total, config.optim.lr)

    arms: dict[str, Any] = {}
    seed_everything(config.seed, deterministic=device.type == "cpu")
    on_loader = build_model_and_objective(config, scans.standardiser, device)
    last_dir = run_dir / "checkpoints" / "last"
    epochs = dict.fromkeys(ARMS, 0)

    def loader_epoch() -> None:
        epochs["loader"] += 1
        train_one_epoch(
            on_loader, loaders, epochs["loader"], (epochs["loader"] - 1) * steps, lr_at, last_dir=last_dir
        )
        synchronize(device)

    arms["loader"] = loader_epoch
    load_seconds = None
    for arm, graph in (("device", False), ("graph", True)):
        if graph and device.type != "cuda":
            continue  # a CUDA graph records GPU kernels only
        arm_config = apply_overrides(config, {"data.device_data": True, "runtime.cuda_graph": graph})
        seed_everything(config.seed, deterministic=device.type == "cpu")
        trainee = build_model_and_objective(arm_config, scans.standardiser, device)
        started = time.perf_counter()
        device_run = start_device_run(arm_config, scans, trainee, lr_at, steps)
        if load_seconds is None:  # the device arm's: the graph arm loads the same cohort again
            load_seconds = time.perf_counter() - started

        def device_epoch(arm: str = arm, device_run: DeviceRun = device_run) -> None:
            epochs[arm] += 1
            drain(
                device_run.epoch_steps(epoch=epochs[arm], step=(epochs[arm] - 1) * steps, last_dir=last_dir)
            )
            synchronize(device)

        arms[arm] = device_epoch

    times = interleaved(arms, args.reps, args.warmup)
    return {
        "step_seconds": {arm: statistics.median(t) / steps for arm, t in times.items()},
        "epoch_seconds": times,
        "steps_per_epoch": steps,
        "loader_over_device": median_ratio(times, "loader", "device"),
        "device_over_graph": median_ratio(times, "device", "graph") if "graph" in times else None,
        "load_seconds": load_seconds,
        "train_scans": len(scans.train),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
