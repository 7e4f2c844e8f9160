"""Encoder training throughput: clips/s of one optimiser step (forward + λ·MSE + (1 − λ)·wCL + backward).

Usage::

    python benchmarks/encoder_throughput.py                           # every encoder, paper size, CPU
    python benchmarks/encoder_throughput.py --backbones tsm_resnet18 --size 112 --frames 8 --device cuda

Prints one line per encoder: parameters, embedding width, and clips/s over ``--steps`` timed steps after
``--warmup`` untimed ones, on random clips (B, T, 1, H, W) with random scores, so only the model and the
loss are measured (the loader has its own benchmark, ``loader_throughput.py``).
"""

from __future__ import annotations

import argparse
import time

import torch

from learner.config import LossConfig, ModelConfig
from learner.losses.registry import build_objective
from learner.models.registry import available_encoders, build_regressor


def measure(backbone: str, args: argparse.Namespace, device: torch.device) -> tuple[int, int, float]:
    """(parameters, embed_dim, clips/s) of training steps on random data."""
    torch.manual_seed(0)
    model = build_regressor(ModelConfig(backbone=backbone, size=args.preset), 1, args.size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = build_objective(LossConfig(name="mse+wcl"))
    clips = torch.rand(args.batch, args.frames, 1, args.size, args.size, device=device)
    scores = torch.randn(args.batch, device=device)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        embeddings, predictions = model(clips)
        loss = objective(embeddings, predictions, scores).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.encoder.parameters())
    return params, model.encoder.embed_dim, args.steps * args.batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=available_encoders())
    parser.add_argument("--preset", default="paper", choices=["tiny", "small", "paper"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"T={args.frames}, {args.size}x{args.size}, preset {args.preset}")  # fmt: skip
    for backbone in args.backbones:
        params, dim, rate = measure(backbone, args, device)
        print(f"{backbone:14s} params {params / 1e6:6.2f}M  D={dim:4d}  {rate:8.1f} clips/s")


if __name__ == "__main__":
    main()
