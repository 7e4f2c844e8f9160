"""Cache identity cost: seconds to hash the bytes of every scan (what :class:`ScanCache` does once per source
per process to name its entry), against decoding the same scans once.

Usage::

    python benchmarks/cache_identity.py                 # the real POCUS clips (../shared/data/pocus)
    python benchmarks/cache_identity.py --decode        # also decode every clip once (minutes)
    python benchmarks/cache_identity.py --folder DIR    # every file under DIR

Reads every file once first, so that the timings are of a warm page cache (the usual case: a scan is hashed
right before or after it is decoded, or in a later run); a cold read costs what the disk costs, for the hash
and the decoder alike. Reports the best of ``--reps`` rounds of hashing every file with
:func:`learner.data.cache.content_digest` (BLAKE2b, streamed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench_common import RESULTS, append_record

from learner.data.cache import content_digest
from learner.data.readers import read_scan

POCUS = Path(
    os.environ.get(
        "LEARNER_POCUS_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pocus"
    )
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=POCUS / "pocus_videos")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--decode", action="store_true", help="also decode every file once (grey)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.is_file())
    if not files:
        parser.error(f"no files under {args.folder} (give --folder DIR or set LEARNER_POCUS_DIR)")
    total = sum(p.stat().st_size for p in files)
    for path in files:  # warm the page cache
        path.read_bytes()
    rounds = []
    for _ in range(args.reps):
        started = time.perf_counter()
        for path in files:
            content_digest(path)
        rounds.append(time.perf_counter() - started)
    best = min(rounds)
    figures: dict[str, object] = {
        "folder": str(args.folder),
        "files": len(files),
        "megabytes": round(total / 1e6, 1),
        "hash_seconds": [round(r, 4) for r in rounds],
        "hash_mb_per_s": round(total / 1e6 / best, 1),
    }
    print(
        f"{len(files)} files, {total / 1e6:.1f} MB: hashing all {best:.3f} s (best of {args.reps}; median "
        f"{statistics.median(rounds):.3f} s) = {total / 1e6 / best:.0f} MB/s, "
        f"{best / len(files) * 1e3:.2f} ms per file"
    )
    if args.decode:
        started = time.perf_counter()
        for path in files:
            read_scan(path, grey=True)
        decode = time.perf_counter() - started
        figures |= {"decode_seconds": round(decode, 2), "hash_share_of_decode": round(best / decode, 5)}
        print(f"decoding all once (grey): {decode:.1f} s; hashing is {best / decode:.2%} of it")
    append_record(args.out, "cache_identity", figures)


if __name__ == "__main__":
    main()
