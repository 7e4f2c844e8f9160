"""Loss cost: seconds of one forward + backward of every contrastive objective at several batch sizes.

Usage::

    python benchmarks/loss_cost.py                                   # B = 16, 256, 1024; D = 512; CPU
    python benchmarks/loss_cost.py --batches 16 256 --memory 4096 --out benchmarks.jsonl

Each objective gets random embeddings (B, D) with gradient and integer-valued standardised scores (ties, as
with MMSE); ``--warmup`` untimed repetitions, then the median of ``--reps`` timed ones. ``rnc_public_loop``
is Rank-N-Contrast written like the public implementation (github.com/kaiwenzha/Rank-N-Contrast): a Python
loop over the B − 1 positive columns, each building a (B, B − 1) mask, O(B³) time; it is checked against
:class:`RankNContrastLoss` at the smallest B and its time is reported as a ratio to ours. ``--out`` appends
one JSON line (date, machine, figures).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import machine
from torch import Tensor

from learner.losses import (
    PairwiseContrastiveLoss,
    RankNContrastLoss,
    SupConBinsLoss,
    WeightedContrastiveLoss,
    YAwareInfoNCELoss,
)

Loss = Callable[..., Tensor]


def public_loop_rnc(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """RnC as the public code computes it (cosine logits here, to match our default), O(B³) time."""
    n = features.shape[0]
    z = F.normalize(features, dim=1)
    logits = z @ z.T / temperature  # (n, n)
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    label_diffs = (labels[:, None] - labels[None, :]).abs()  # (n, n)
    off = ~torch.eye(n, dtype=torch.bool)
    logits = logits.masked_select(off).view(n, n - 1)
    exp_logits = logits.exp()
    label_diffs = label_diffs.masked_select(off).view(n, n - 1)
    loss = logits.new_zeros(())
    for k in range(n - 1):  # the positive's column
        neg_mask = (label_diffs >= label_diffs[:, k].view(-1, 1)).to(logits)  # (n, n − 1)
        pos_log_probs = logits[:, k] - torch.log((neg_mask * exp_logits).sum(dim=-1))
        loss = loss - (pos_log_probs / (n * (n - 1))).sum()
    return loss


def objectives(temperature: float) -> dict[str, Loss]:
    return {
        "cl": PairwiseContrastiveLoss(),
        "wcl": WeightedContrastiveLoss(),
        "wcl_scaled": WeightedContrastiveLoss(scaled=True),
        "rnc": RankNContrastLoss(temperature),
        "yaware": YAwareInfoNCELoss(sigma=1.0, temperature=temperature),
        "supcon_bins": SupConBinsLoss(edges=(-1.0, 0.0, 1.0), temperature=temperature),
        "rnc_public_loop": lambda u, y: public_loop_rnc(u, y, temperature),
    }


def seconds(loss: Loss, batch: int, args: argparse.Namespace) -> float:
    """Median seconds of forward + backward over ``args.reps`` repetitions after ``args.warmup``."""
    generator = torch.Generator().manual_seed(batch)
    u = torch.randn(batch, args.dim, generator=generator, requires_grad=True)
    y = (torch.randint(0, 31, (batch,), generator=generator).float() - 15) / 5  # MMSE-like, standardised
    refs = () if not args.memory else (torch.randn(args.memory, args.dim), torch.randn(args.memory))
    times = []
    for rep in range(args.warmup + args.reps):
        u.grad = None
        start = time.perf_counter()
        loss(u, y, *refs).backward()
        if rep >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--memory", type=int, default=0, help="N references (the loop form is skipped)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    losses = objectives(args.temperature)
    if args.memory:
        del losses["rnc_public_loop"]
    check = min(args.batches)
    u, y = torch.randn(check, 16, dtype=torch.float64), torch.randint(0, 5, (check,)).double()
    ours, loop = RankNContrastLoss(args.temperature)(u, y), public_loop_rnc(u, y, args.temperature)
    assert torch.allclose(ours, loop), f"RnC forms disagree: {ours.item()} vs {loop.item()}"

    info = machine()
    print(f"# {info}; D = {args.dim}, memory N = {args.memory}, median of {args.reps} after {args.warmup}")
    print(f"{'objective':<16}" + "".join(f"{'B=' + str(b):>12}" for b in args.batches))
    figures: dict[str, dict[int, float]] = {}
    for name, loss in losses.items():
        figures[name] = {b: seconds(loss, b, args) for b in args.batches}
        print(f"{name:<16}" + "".join(f"{figures[name][b] * 1e3:>10.2f}ms" for b in args.batches), flush=True)
    ratio = {}
    if "rnc_public_loop" in figures:
        ratio = {b: figures["rnc_public_loop"][b] / figures["rnc"][b] for b in args.batches}
        print(f"{'loop / rnc':<16}" + "".join(f"{ratio[b]:>11.1f}×" for b in args.batches))
    if args.out is not None:
        record = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": info,
            "dim": args.dim,
            "memory": args.memory,
            "reps": args.reps,
            "seconds": figures,
            "rnc_public_loop_over_rnc": ratio,
        }
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
