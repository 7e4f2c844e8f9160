"""Scaling: epoch time and peak memory of pretraining at 1×, 2×, 4× a phantom LUS cohort (small settings).

Usage::

    python benchmarks/scaling.py                      # base cohort 20/4/4 patients, 32 px, 4 frames, 1 epoch
    python benchmarks/scaling.py --base 40 8 8 --factors 1 2 4 8

Each factor k runs in a fresh process (so peak RSS is its own): render a phantom LUS cohort of k × the base
patients, then one :func:`learner.training.pretrain.pretrain` epoch of the paper's ``tsm_resnet18`` at 32 px,
4 frames, batch 16, one loader worker. The stage clock (:mod:`learner.timing`) splits the run into the cache
build (decode), the training epoch (``pretrain``: steps and loader waits), validation and checkpoints.
Peak RSS is ``ru_maxrss`` of the process and of its largest child (loader worker). Target: time per train
clip flat (time linear in the cohort) and memory flat. Linear here means affine: a fixed per-run cost (model
build, loader start-up) plus a cost per clip, so the script fits ``seconds = fixed + per_clip × train clips``
by least squares over the factors and prints both terms and each factor's residual. Appends a JSON line to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_common import RESULTS, append_record


def child(factor: int, base: list[int], folder: Path) -> dict[str, object]:
    """One factor, in this process: cohort, one epoch, stage times and peak RSS."""
    from learner.config import load_config
    from learner.data.phantom.lus import generate_lus_cohort
    from learner.timing import CLOCK, stage
    from learner.training.pretrain import pretrain

    torch.set_num_threads(1)
    patients = tuple(factor * n for n in base)
    manifest = generate_lus_cohort(folder / "cohort", patients=patients, frames=8, size=32, workers=1)
    sets = [
        f"data.manifest={manifest}",
        "data.size=32",
        "data.frames=4",
        "optim.epochs=1",
        "runtime.workers=1",
    ]
    config = load_config("demo", [*sets, f"runtime.cache_dir={folder / 'cache'}"])
    started = CLOCK.mark()
    with stage("pretrain"):
        result = pretrain(config, folder / "run")
    timing = CLOCK.since(started)
    scans = json.loads((folder / "run" / "metrics.json").read_text())["scans"]
    kib = 1024
    return {
        "factor": factor,
        "patients": list(patients),
        "train_scans": scans["train"],
        "val_scans": scans["val"],
        "steps": result.last["step"],
        "seconds": timing.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 1e6,
        "peak_child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, nargs=3, default=[20, 4, 4], help="train/val/test patients at 1×")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="append one JSON line here")
    args = parser.parse_args()
    if args.child is not None:
        with tempfile.TemporaryDirectory(prefix="learner-scaling-") as tmp:
            print(json.dumps(child(args.child, args.base, Path(tmp))))
        return
    rows = []
    for factor in args.factors:
        argv = [sys.executable, __file__, "--child", str(factor), "--base", *map(str, args.base)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:  # the child's own last line says why (a traceback's last line is the error)
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            sys.exit(f"error: the {factor}× run failed: {lines[-1]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        train, stages = row["seconds"]["pretrain"], row["seconds"]
        print(
            f"{factor}×  {row['train_scans']:5d} train scans  {row['steps']:4d} steps  "
            f"epoch {train:7.1f} s ({train / row['train_scans'] * 1e3:6.1f} ms/clip)  "
            f"cache {stages.get('cache', 0.0):6.1f} s  validation {stages.get('validation', 0.0):5.1f} s  "
            f"peak RSS {row['peak_rss_mb']:6.0f} MB (child {row['peak_child_rss_mb']:4.0f} MB)",
            flush=True,
        )
    fit = affine_fit([row["train_scans"] for row in rows], [row["seconds"]["pretrain"] for row in rows])
    if fit is not None:
        print(
            f"fit: epoch = {fit['fixed_s']:.1f} s + {fit['per_clip_ms']:.1f} ms × clips; "
            f"residuals {', '.join(f'{r:+.1%}' for r in fit['relative_residuals'])}"
        )
    settings = vars(args) | {"out": str(args.out)}
    record = {"settings": settings, "rows": rows, "fit": fit}
    print(f"# {append_record(args.out, 'scaling', record)['machine']}")


def affine_fit(clips: list[int], seconds: list[float]) -> dict[str, object] | None:
    """Least-squares ``seconds ≈ fixed + per_clip × clips`` and each point's residual relative to its time;
    None with fewer than two cohort sizes."""
    if len(set(clips)) < 2:
        return None
    x, y = np.asarray(clips, float), np.asarray(seconds, float)
    per_clip, fixed = np.polyfit(x, y, 1)
    residuals = [float(r) for r in (y - (fixed + per_clip * x)) / y]
    return {"fixed_s": float(fixed), "per_clip_ms": float(per_clip * 1e3), "relative_residuals": residuals}


if __name__ == "__main__":
    main()
