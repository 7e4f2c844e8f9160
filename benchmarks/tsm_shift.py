"""TSM shift cost: training-step time of ``tsm_resnet18`` with the shift against the same network without it.

Usage::

    python benchmarks/tsm_shift.py                          # 64 and 112 px, 8 frames, batch 16
    python benchmarks/tsm_shift.py --sizes 64 112 224 --reps 5

Three arms per size, built from the same seed and run side by side (:func:`bench_common.interleaved`):
``tsm`` (the shift of :func:`learner.models.tsm_resnet.temporal_shift`), ``plain`` (``shift_fraction=0``:
no shift, same FLOPs) and ``tsm_slicing`` (the shift as first written: a zero tensor and three sliced
copies with autograd's own backward, kept here to show what the custom backward saves). Prints the median
of the per-repetition ratios tsm/plain and tsm_slicing/plain (target: tsm/plain ≤ 1.05) and appends a JSON
line to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from bench_common import RESULTS, append_record, interleaved, median_ratio, training_step
from torch import Tensor

import learner.models.tsm_resnet as tsm


def slicing_shift(frames: Tensor, num_frames: int, fold: int) -> Tensor:
    """The shift as first written: out-of-place into a zero tensor, autograd's backward of three slices."""
    if fold == 0:
        return frames
    nt, c, h, w = frames.shape
    x = frames.reshape(nt // num_frames, num_frames, c, h, w)
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.reshape(nt, c, h, w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of each arm")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="append one JSON line here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    fast_shift = tsm.temporal_shift
    figures: dict[str, dict[str, object]] = {}
    for size in args.sizes:
        shape = {"batch": args.batch, "frames": args.frames, "size": size}
        tsm_step, _ = training_step(**shape)
        plain_step, _ = training_step(**shape, shift_fraction=0.0)
        slicing_step, _ = training_step(**shape)

        def slicing(slicing_step: Callable[[], float] = slicing_step) -> None:
            tsm.temporal_shift = slicing_shift  # BasicBlock looks the name up at call time
            try:
                slicing_step()
            finally:
                tsm.temporal_shift = fast_shift

        times = interleaved(
            {"tsm": tsm_step, "plain": plain_step, "tsm_slicing": slicing}, args.reps, args.warmup
        )
        seconds = {name: statistics.median(t) for name, t in times.items()}
        ratio = median_ratio(times, "tsm", "plain")
        slicing_ratio = median_ratio(times, "tsm_slicing", "plain")
        figures[str(size)] = {
            "seconds": seconds,
            "tsm_over_plain": ratio,
            "slicing_over_plain": slicing_ratio,
        }
        print(
            f"{size:4d} px  plain {seconds['plain']:.3f} s  tsm/plain {ratio['median']:.3f} "
            f"({ratio['min']:.3f}-{ratio['max']:.3f})  slicing/plain {slicing_ratio['median']:.3f} "
            f"({slicing_ratio['min']:.3f}-{slicing_ratio['max']:.3f})",
            flush=True,
        )
    settings = vars(args) | {"out": str(args.out)}
    record = append_record(args.out, "tsm_shift", {"settings": settings, **figures})
    print(f"# {record['machine']}")


if __name__ == "__main__":
    main()
