"""Cache integrity cost: milliseconds to check a scan cache entry (header + CRC-32 of the pixels) against
reading its pixels once.

Usage::

    python benchmarks/cache_check.py                  # 64 frames of 112×112, grey and RGB
    python benchmarks/cache_check.py --frames 64 --size 224

Writes one random entry per layout to a temporary folder, then reports the best of ``--reps`` rounds of
``--number`` calls each: the full check (:func:`learner.data.cache_entry.read_entry`), and a plain
memory-mapped read of the same pixels (summed, so that every page is touched). A process pays the check once
per entry (:func:`learner.data.cache_entry.verified_entry`); later reads of an unchanged entry cost one
``stat``.
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

import numpy as np

from learner.data.cache_entry import read_entry, write_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for shape in ((args.frames, args.size, args.size), (args.frames, args.size, args.size, 3)):
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        with tempfile.TemporaryDirectory() as folder:
            costs = _costs(Path(folder) / "entry.lcache", frames, args.number, args.reps)
        print(
            f"{shape}: {frames.nbytes / 1e6:.2f} MB; check {costs['check']:.2f} ms, "
            f"one read of the pixels {costs['read']:.2f} ms"
        )


def _costs(path: Path, frames: np.ndarray, number: int, reps: int) -> dict[str, float]:
    """Milliseconds per call: the full check of ``frames`` written at ``path``, and one plain read."""
    write_entry(path, frames, "source")
    offset = read_entry(path, "source")[1]

    def check() -> None:
        read_entry(path, "source")

    def read() -> None:
        np.asarray(np.memmap(path, np.uint8, "r", offset=offset, shape=frames.shape)).sum()

    return {
        name: min(timeit.repeat(call, number=number, repeat=reps)) / number * 1e3
        for name, call in (("check", check), ("read", read))
    }


if __name__ == "__main__":
    main()
