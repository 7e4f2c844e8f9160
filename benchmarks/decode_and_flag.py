"""Two CPU costs, before and after: PyAV frame conversion (a swscale context per frame vs one per clip) and
the finiteness flag of the gradients (the inf-norm's ``torch._foreach_norm`` vs a per-gradient aminmax).

Usage::

    python benchmarks/decode_and_flag.py                                 # renders a small phantom cohort
    python benchmarks/decode_and_flag.py --folder runs/demo/lus/clips --clips 1207 --reps 5

Decoding: ``--clips`` clips of ``--folder`` (default: a phantom LUS cohort rendered as the quick demo
renders it, 8 frames of 32 × 32, in a temporary folder), each decoded by the reader
(``learner.data.readers._decode_pyav``: one ``VideoReformatter`` per clip) and by the reference here (the
reader's loop as it was: ``frame.to_ndarray(format=...)`` per frame), to grey (``gray``, what a
``data.channels: 1`` config reads) and to colour (``rgb24``). Every clip's frames must be bit-identical
(checked once before timing); then the arms run interleaved (``bench_common.interleaved``), median of
``--reps`` after one warm-up.

Flag: the ``--config``'s model (default ``demo``) after one training step on random clips
(``bench_common.training_step``, so its real gradients), timed ``--flag-reps`` times interleaved:
``learner.training.finite.finite_gradient_flag`` vs the reference ``isfinite(get_total_norm(grads, inf))``;
the two flags must be equal, on these gradients and with a NaN, +inf or -inf put into one of them.
``--out`` appends one JSON line (date, machine with its load, figures).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_common import append_record, interleaved, machine, training_step
from torch import nn

from learner.config import load_config
from learner.data import readers
from learner.data.phantom.lus import generate_lus_cohort
from learner.training.finite import finite_gradient_flag

SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".mpeg", ".mpg", ".webm"}


def per_frame_decode(path: Path, grey: bool) -> list[np.ndarray]:
    """The reader's loop as it was: ``to_ndarray(format=...)`` builds a swscale context for every frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fmt = "gray" if grey or (stream.codec_context.pix_fmt or "").startswith("gray") else "rgb24"
        return [frame.to_ndarray(format=fmt) for frame in container.decode(stream)]


def reader_decode(path: Path, grey: bool) -> list[np.ndarray]:
    frames, _ = readers._decode_pyav(path, readers.ReadOptions(grey=grey))
    return frames


def every(
    decode: Callable[[Path, bool], list[np.ndarray]], clips: list[Path], grey: bool
) -> Callable[[], object]:
    return lambda: [decode(clip, grey) for clip in clips]


def decoding(clips: list[Path], reps: int) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for grey, fmt in ((True, "gray"), (False, "rgb24")):
        for clip in clips:  # bit-identical, or no figures
            ref, got = per_frame_decode(clip, grey), reader_decode(clip, grey)
            if len(ref) != len(got) or not all(
                a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(ref, got, strict=True)
            ):
                sys.exit(f"error: {clip}: the reader's {fmt} frames differ from per-frame to_ndarray")
        arms = {
            "per_frame": every(per_frame_decode, clips, grey),
            "one_per_clip": every(reader_decode, clips, grey),
        }
        times = interleaved(arms, reps=reps, warmup=1)
        figures[fmt] = {name: statistics.median(t) for name, t in times.items()}
        old, new = figures[fmt]["per_frame"], figures[fmt]["one_per_clip"]
        print(
            f"decode {len(clips)} clips to {fmt:<5}: per-frame to_ndarray {old:7.2f} s, one reformatter per "
            f"clip {new:7.2f} s, {old / new:4.1f}x (median of {reps}; bit-identical)",
            flush=True,
        )
    return figures


def reference_flag(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.isfinite(nn.utils.get_total_norm(grads, norm_type=math.inf))


def flagging(config_name: str, reps: int) -> dict[str, float]:
    config = load_config(config_name)
    step, model = training_step(
        batch=4,
        frames=config.data.frames,
        size=config.data.size,
        backbone=config.model.backbone,
        preset=config.model.size,
        shift_fraction=config.model.shift_fraction,
    )
    step()  # real gradients, left in .grad
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    count = sum(g.numel() for g in grads)
    new = finite_gradient_flag(model)
    if new is None or not torch.equal(new, reference_flag(model)):
        sys.exit("error: the flag differs from the inf-norm's on finite gradients")
    largest = max(grads, key=lambda g: g.numel())
    for value in (math.nan, math.inf, -math.inf):
        kept = largest.view(-1)[largest.numel() // 2].item()
        largest.view(-1)[largest.numel() // 2] = value
        new = finite_gradient_flag(model)
        if new is None or bool(new) or not torch.equal(new, reference_flag(model)):
            sys.exit(f"error: the flag differs from the inf-norm's with a {value} gradient")
        largest.view(-1)[largest.numel() // 2] = kept
    times = interleaved(
        {"inf_norm": lambda: reference_flag(model), "aminmax": lambda: finite_gradient_flag(model)},
        reps=reps,
        warmup=2,
    )
    figures = {name: statistics.median(t) for name, t in times.items()}
    old, new_s = figures["inf_norm"], figures["aminmax"]
    print(
        f"finiteness flag on {config_name}'s {len(grads)} gradients ({count / 1e6:.1f} M values): "
        f"inf-norm {old * 1e3:.2f} ms, aminmax {new_s * 1e3:.2f} ms, {old / new_s:.1f}x "
        f"(median of {reps}; the same flag)",
        flush=True,
    )
    return figures | {"values": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="clips to decode (default: a phantom)")
    parser.add_argument("--clips", type=int, default=300, help="the first N clips (sorted by name)")
    parser.add_argument(
        "--phantom", type=int, nargs=3, default=(40, 11, 12), metavar=("TRAIN", "VAL", "TEST")
    )
    parser.add_argument("--reps", type=int, default=5, help="timed decoding repetitions")
    parser.add_argument("--config", default="demo", help="the model whose gradients are flagged")
    parser.add_argument("--flag-reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="learner-bench-") as tmp:
        if args.folder is None:
            manifest = generate_lus_cohort(Path(tmp), patients=tuple(args.phantom), frames=8, size=32)
            folder = manifest.parent / "clips"
        else:
            folder = args.folder
        clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)[: args.clips]
        if not clips:
            parser.error(f"no video clips under {folder} (give --folder DIR)")
        info = machine()
        print(f"# {info.get('cpu', '')}; torch threads {torch.get_num_threads()}; load {info['load']}")
        decode = decoding(clips, args.reps)
    flag = flagging(args.config, args.flag_reps)
    print(f"# load after: {machine()['load']}")
    append_record(
        args.out, "decode_and_flag", {"clips": len(clips), "reps": args.reps, "decode": decode, "flag": flag}
    )


if __name__ == "__main__":
    main()
