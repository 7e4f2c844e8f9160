"""Encoder training throughput: clips/s of one optimiser step (forward + λ·MSE + (1 − λ)·wCL + backward).

Usage::

    python benchmarks/encoder_throughput.py                           # every encoder, paper size, CPU
    python benchmarks/encoder_throughput.py --backbones tsm_resnet18 --size 112 --frames 8 --device cuda
    python benchmarks/encoder_throughput.py --layouts --sizes 32 64 112 --frames 8 --threads 1

Default: one line per encoder: parameters, embedding width, and clips/s over ``--steps`` timed steps after
``--warmup`` untimed ones, on random clips (B, T, 1, H, W) with random scores, so only the model and the
loss are measured (the loader has its own benchmark, ``loader_throughput.py``).

``--layouts`` (``tsm_resnet18``, CPU): per size, three arms built from the same seed and run side by side
(:func:`bench_common.interleaved`): ``default`` (NCHW float32), ``channels_last`` (NHWC weights and
activations) and ``compiled`` (``torch.compile`` of the default; its compile time is measured and printed
separately, ``--no-compile`` skips it). Each arm's step time is also given as a share of the float32 GEMM
peak measured in the same run (FLOPs counted from the convolutions and linears,
:func:`bench_common.conv_linear_flops`). Appends a JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_common import (
    RESULTS,
    append_record,
    conv_linear_flops,
    interleaved,
    median_ratio,
    training_step,
)

from learner.models.registry import available_encoders


def rate(backbone: str, args: argparse.Namespace, device: torch.device) -> tuple[int, int, float]:
    """(parameters, embed_dim, clips/s) of training steps on random data."""
    step, model = training_step(
        batch=args.batch,
        frames=args.frames,
        size=args.size,
        backbone=backbone,
        preset=args.preset,
        device=device,
    )
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    encoder = model.encoder  # type: ignore[union-attr]
    params = sum(p.numel() for p in encoder.parameters())
    return params, encoder.embed_dim, args.steps * args.batch / seconds


GEMM_N, GEMM_REPEATS = 2048, 4
GEMM_A, GEMM_B = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
GEMM_FLOPS = 2.0 * GEMM_N**3 * GEMM_REPEATS
"""The float32 GEMM peak: four 2048² matmuls in a row, timed as one more arm beside the training steps. A
single 1024² product (10 ms) read low next to 0.4-1.3 s steps on a loaded machine; four of 2048² sustain
the rate for about as long as a step."""


def gemm() -> None:
    for _ in range(GEMM_REPEATS):
        GEMM_A @ GEMM_B


def layouts(args: argparse.Namespace) -> dict[str, object]:
    """Side-by-side step times of the default, channels-last and compiled ``tsm_resnet18`` per size."""
    figures: dict[str, object] = {}
    for size in args.sizes:
        shape = {"batch": args.batch, "frames": args.frames, "size": size, "preset": args.preset}
        default, model = training_step(**shape)
        arms: dict[str, Callable[[], float]] = {"default": default}
        arms["channels_last"], _ = training_step(**shape, channels_last=True)
        compile_seconds = None
        if args.compile:
            compiled, compiled_model = training_step(**shape)
            compiled_model.forward = torch.compile(compiled_model.forward)  # type: ignore[method-assign]
            start = time.perf_counter()
            compiled()  # the first call compiles
            compile_seconds = time.perf_counter() - start
            arms["compiled"] = compiled
        example = torch.rand(args.batch, args.frames, 1, size, size)
        flops = conv_linear_flops(model, example)
        times = interleaved({**arms, "gemm": gemm}, args.reps, args.warmup)  # the peak under the same load
        peak = GEMM_FLOPS / statistics.median(times.pop("gemm")) / 1e9
        seconds = {name: statistics.median(t) for name, t in times.items()}
        ratios = {name: median_ratio(times, name, "default") for name in arms if name != "default"}
        share = {name: flops / s / 1e9 / peak for name, s in seconds.items()}
        figures[str(size)] = {
            "gemm_gflops": peak,
            "gflop_per_step": flops / 1e9,
            "seconds": seconds,
            "over_default": ratios,
            "share_of_peak": share,
            "compile_seconds": compile_seconds,
        }
        line = "  ".join(f"{n} {seconds[n]:.3f} s ({share[n]:.0%} of peak)" for n in arms)
        extra = "  ".join(
            f"{n}/default {r['median']:.3f} ({r['min']:.2f}-{r['max']:.2f})" for n, r in ratios.items()
        )
        print(
            f"{size:4d} px  {flops / 1e9:.1f} GFLOP/step, GEMM peak {peak:.0f} GFLOP/s  {line}  {extra}",
            flush=True,
        )
        if compile_seconds is not None:
            print(f"         compile (first step) {compile_seconds:.1f} s")
    return figures


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
    parser.add_argument("--layouts", action="store_true", help="default vs channels_last vs compiled, CPU")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 112], help="--layouts sizes")
    parser.add_argument("--reps", type=int, default=5, help="--layouts: timed repetitions per arm")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="--layouts: no compiled arm"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="append one JSON line here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads {torch.get_num_threads()}, batch {args.batch}, T={args.frames}, preset {args.preset}"
    )
    settings = vars(args) | {"out": str(args.out)}
    if args.layouts:
        record = append_record(args.out, "encoder_layouts", {"settings": settings, **layouts(args)})
    else:
        device = torch.device(args.device)
        rates = {}
        for backbone in args.backbones:
            params, dim, clips = rate(backbone, args, device)
            rates[backbone] = {"params": params, "embed_dim": dim, "clips_per_second": clips}
            print(f"{backbone:14s} params {params / 1e6:6.2f}M  D={dim:4d}  {clips:8.1f} clips/s")
        record = append_record(args.out, "encoder_throughput", {"settings": settings, "encoders": rates})
    print(f"# {record['machine']}")


if __name__ == "__main__":
    main()
