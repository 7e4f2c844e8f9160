"""Paper-scale training throughput on a GPU, and the projected wall time of Tables 3 and 4 at LUS scale.

Usage::

    python benchmarks/gpu.py                                   # one GPU: 8 frames × 224 px, batch 16
    torchrun --nproc-per-node=gpu benchmarks/gpu.py            # DDP over every local GPU (nccl)
    python benchmarks/gpu.py --compile                         # torch.compile the model first
    python benchmarks/gpu.py --device cpu --tiny               # a few seconds on a CPU (CI proves it runs)

Each backbone (``--backbones``; default the three of Table 4) runs ``--warmup`` untimed and ``--steps``
timed optimiser steps of pretraining as :func:`learner.training.pretrain.pretrain` does them: random clips
(global batch B, T frames, 1 channel, S × S), λ·MSE + (1 − λ)·wCL on the batch gathered over ranks, Adam,
bf16 autocast and channels-last weights on CUDA (``--no-amp``, ``--no-channels-last`` to turn them off),
DDP with SyncBatchNorm when started by torchrun (each rank B / world clips). The step time is the median of
the timed steps (CUDA synchronised on every step).

Projection (training steps only; validation, embedding and the classifiers come on top):

* Table 3 = ``⌊701 / B⌋ steps per epoch × 100 epochs × 3 objectives × 3 seeds`` steps of ``tsm_resnet18``
  (Table 1's 701 training clips, Table 2's batch 16 and 100 epochs);
* Table 4 = per backbone the same ``⌊701 / B⌋ × 100 × 3 losses × 3 seeds`` steps (the combines and
  classifier heads reuse each pretrained encoder's embeddings, so they add no pretraining).

With ``--tiny`` the model (``tiny`` preset), clips and steps are small and the projection still uses the
paper-scale step counts with the tiny step time: it proves the arithmetic, not the time. Prints a table and,
as its last line, the JSON record it appends to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import RESULTS, append_record

from learner.config import LossConfig, ModelConfig
from learner.losses.registry import build_objective
from learner.models.registry import build_regressor
from learner.training.distributed import DistInfo, all_gather_with_grad, barrier, distributed, wrap_model

LUS_TRAIN_CLIPS, EPOCHS, OBJECTIVES, SEEDS = 701, 100, 3, 3
"""Table 1's LUS training clips, Table 2's epochs, Table 3's objectives and our seeds."""


def projected_steps(batch: int) -> int:
    """Optimiser steps of one Table 3 column (or one Table 4 backbone): ⌊701 / B⌋ × 100 × 3 × 3."""
    return (LUS_TRAIN_CLIPS // batch) * EPOCHS * OBJECTIVES * SEEDS


def step_seconds(backbone: str, args: argparse.Namespace, device: torch.device, info: DistInfo) -> float:
    """Median seconds of one DDP training step of ``backbone`` (global batch ``args.batch``)."""
    torch.manual_seed(0)
    model = build_regressor(
        ModelConfig(backbone=backbone, size=args.preset), 1, args.size, frames=args.frames
    ).to(device)
    channels_last = device.type == "cuda" and args.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ddp = wrap_model(model, info, device)
    if args.compile:
        ddp = torch.compile(ddp)  # type: ignore[assignment]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = build_objective(LossConfig(name="mse+wcl"))
    local = args.batch // info.world_size
    clips = torch.rand(local, args.frames, 1, args.size, args.size, device=device)
    scores = torch.randn(local, device=device)
    amp = torch.bfloat16 if device.type == "cuda" and args.amp else None
    times = []
    for step in range(args.warmup + args.steps):
        barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            embeddings, predictions = ddp(clips)
        u = all_gather_with_grad(embeddings.float())
        out = objective(u, all_gather_with_grad(predictions.float()), all_gather_with_grad(scores))
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbones", nargs="+", default=["tsm_resnet18", "vit", "swin"])
    parser.add_argument("--batch", type=int, default=16, help="global batch (Table 2)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up compiles)")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="float32 instead of bf16 autocast")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 2 × 32 px clips, batch 4, 2 steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (--tiny: 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="append one JSON line here")
    args = parser.parse_args()
    if args.tiny:
        args.preset, args.frames, args.size, args.batch, args.steps, args.warmup = "tiny", 2, 32, 4, 2, 1
        args.threads = args.threads or 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with distributed(device.type) as info:
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        if args.batch % info.world_size:
            raise SystemExit(f"--batch {args.batch} must divide over {info.world_size} processes")
        seconds = {b: step_seconds(b, args, device, info) for b in args.backbones}
        if not info.is_main:
            return
        steps = projected_steps(args.batch)
        figures: dict[str, Any] = {
            "settings": vars(args) | {"out": str(args.out), "world_size": info.world_size},
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "step_seconds": seconds,
            "clips_per_second": {b: args.batch / s for b, s in seconds.items()},
            "steps_per_run": steps // (OBJECTIVES * SEEDS),
            "table3": {"steps": steps, "backbone": args.backbones[0]},
            "table4": {"steps": {b: steps for b in args.backbones}},
        }
        figures["table3"]["seconds"] = steps * seconds[args.backbones[0]]
        figures["table4"]["seconds"] = sum(steps * s for s in seconds.values())
        print(f"# {figures['device_name']}, world {info.world_size}, batch {args.batch}, T={args.frames}, "
              f"{args.size}², preset {args.preset}, amp {args.amp}, compile {args.compile}")  # fmt: skip
        for backbone, s in seconds.items():
            print(f"{backbone:14s} {s:8.4f} s/step  {args.batch / s:8.1f} clips/s")
        print(f"Table 3 ({steps} steps of {args.backbones[0]}): {figures['table3']['seconds'] / 3600:.2f} h")
        print(f"Table 4 ({len(seconds)} × {steps} steps): {figures['table4']['seconds'] / 3600:.2f} h")
        print(json.dumps(append_record(args.out, "gpu", figures)))


if __name__ == "__main__":
    main()
