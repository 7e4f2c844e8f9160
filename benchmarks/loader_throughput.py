"""Loader throughput: first-pass decode (read + preprocess into the cache) and cached-loader clips/s.

Usage::

    python benchmarks/loader_throughput.py                      # generates 24 mp4 clips in a temp folder
    python benchmarks/loader_throughput.py --manifest M.csv --scale sf --workers 4

The cache always starts cold (a fresh temporary folder unless ``--cache-dir``), so the first pass measures
decoding. The cached pass then reads the memory-mapped arrays through ``ScanDataset`` + ``make_loader``
(TSN sampling, augmentation when training) for ``--epochs`` epochs after one warm-up epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from learner.config import DataConfig
from learner.data.augment import ClipAugment
from learner.data.cache import CacheReport, ScanCache, build_cache
from learner.data.datasets import ScanDataset, make_loader
from learner.data.manifest import Manifest, load_manifest, manifest_from_frame
from learner.data.preprocess import Preprocessor
from learner.data.scales import get_scale


def generate_clips(folder: Path, clips: int, frames: int, size: int, seed: int) -> Manifest:
    """``clips`` H.264 mp4 files of drifting speckle (size × size, ``frames`` frames) and their manifest."""
    import av

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(clips):
        path = folder / f"clip{i:03d}.mp4"
        speckle = rng.gamma(1.5, 40.0, (size, size + frames)).clip(0, 255).astype(np.uint8)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for t in range(frames):
                grey = np.ascontiguousarray(speckle[:, t : t + size])  # the pattern slides sideways
                container.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="gray")))
            container.mux(stream.encode())
        rows.append(
            {"patient_id": f"p{i}", "scan_id": f"s{i}", "path": path.name, "visit": 1, "score": 300.0}
        )
    return manifest_from_frame(pd.DataFrame(rows), get_scale("sf"), root=folder)


def cached_loader_rate(
    manifest: Manifest, data: DataConfig, cache_root: Path, args: argparse.Namespace, train: bool
) -> float:
    """Clips/s of ``--epochs`` epochs over the warm cache (after one warm-up epoch that starts workers)."""
    dataset = ScanDataset(
        manifest.records,
        ScanCache(cache_root, Preprocessor.from_config(data)),
        frames=data.frames,
        channels=data.channels,
        train=train,
        augment=ClipAugment() if train else None,
    )
    loader = make_loader(dataset, batch_size=args.batch_size, shuffle=train, num_workers=args.workers, seed=0)
    for _ in loader:  # warm-up: worker start-up and page cache
        pass
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        dataset.set_epoch(epoch)
        for _ in loader:
            pass
    return len(dataset) * args.epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, help="benchmark these scans instead of generated clips")
    parser.add_argument("--scale", default="sf", help="score scale of --manifest")
    parser.add_argument("--clips", type=int, default=24, help="generated clips")
    parser.add_argument("--source-frames", type=int, default=96, help="frames per generated clip")
    parser.add_argument("--source-size", type=int, default=256, help="height = width of generated clips")
    parser.add_argument("--size", type=int, default=112, help="data.size (cached H = W)")
    parser.add_argument("--frames", type=int, default=8, help="data.frames (T per clip)")
    parser.add_argument("--max-cached-frames", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="cache builders and DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="timed cached epochs")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: a fresh temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="learner-bench-") as tmp:
        folder = Path(tmp)
        if args.manifest is not None:
            manifest = load_manifest(args.manifest, get_scale(args.scale))
        else:
            manifest = generate_clips(folder, args.clips, args.source_frames, args.source_size, seed=0)
        cache_root = args.cache_dir or folder / "cache"
        data = DataConfig(size=args.size, frames=args.frames, max_cached_frames=args.max_cached_frames)
        serial = build_cache(manifest, data, workers=1, cache_dir=folder / "serial")
        pooled = build_cache(manifest, data, workers=args.workers, cache_dir=cache_root)
        train_rate = cached_loader_rate(manifest, data, cache_root, args, train=True)
        eval_rate = cached_loader_rate(manifest, data, cache_root, args, train=False)

    source = args.manifest or f"{args.clips} generated mp4 clips, {args.source_frames} × {args.source_size}²"
    batch = f"T={args.frames}, batch {args.batch_size}, {args.workers} workers"
    print(f"scans: {len(manifest.records)} ({source}); cache {args.size}² × ≤{args.max_cached_frames} frames")
    print(f"first-pass decode       {_rate(serial):8.1f} clips/s  (one process)")
    print(
        f"first-pass decode       {_rate(pooled):8.1f} clips/s  ({args.workers} processes, start-up included)"
    )
    print(f"cached loader, train    {train_rate:8.1f} clips/s  ({batch}, augmented)")
    print(f"cached loader, eval     {eval_rate:8.1f} clips/s  ({batch})")


def _rate(report: CacheReport) -> float:
    return report.built / report.seconds if report.built else float("nan")


if __name__ == "__main__":
    main()
