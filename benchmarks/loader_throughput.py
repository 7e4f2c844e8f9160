"""Loader throughput: first-pass decode (read + preprocess into the cache) and cached-loader clips/s.

Usage::

    python benchmarks/loader_throughput.py                      # generates 24 mp4 clips in a temp folder
    python benchmarks/loader_throughput.py --manifest M.csv --scale sf --workers 4
    python benchmarks/loader_throughput.py --config demo        # the demo's data settings, vs the model
    python benchmarks/loader_throughput.py --config small-cohort --manifest runs/pocus/manifest.csv \
        --set data.scale=custom --set data.custom_scale.high=3 --set data.custom_scale.threshold=1 \
        --set data.custom_scale.higher_is_better=false

The cache always starts cold (a fresh temporary folder unless ``--cache-dir``), so the first pass measures
decoding. The cached pass then reads the memory-mapped arrays through ``ScanDataset`` + ``make_loader``
(TSN sampling, augmentation when training) for ``--epochs`` epochs after one warm-up epoch.

With ``--config`` (a bundled config name or a file, plus ``--set`` overrides) the data settings (size,
frames, crop, augmentation, scale), batch size and workers are the config's, and the model's consumption
is measured too: clips/s of ``--model-steps`` training steps of the config's encoder on random clips of the
same shape (:func:`bench_common.training_step`), so the printed ratio loader/model says how far the loader
is ahead of training (target ≥ 3). Appends a JSON line to ``--out``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_common import RESULTS, append_record, training_step

from learner.config import Config, DataConfig, load_config
from learner.data.augment import ClipAugment
from learner.data.cache import CacheReport, ScanCache, build_cache
from learner.data.datasets import ScanDataset, make_loader
from learner.data.manifest import Manifest, load_manifest, manifest_from_frame
from learner.data.phantom.lus import generate_lus_cohort
from learner.data.preprocess import Preprocessor
from learner.data.scales import get_scale, scale_from_config


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
    manifest: Manifest,
    data: DataConfig,
    cache_root: Path,
    args: argparse.Namespace,
    train: bool,
    augment: ClipAugment | None,
) -> float:
    """Clips/s of ``--epochs`` epochs over the warm cache (after one warm-up epoch that starts workers),
    with training sampling (random frame per segment, then ``augment``) or eval sampling."""
    dataset = ScanDataset(
        manifest.records,
        ScanCache(cache_root, Preprocessor.from_config(data)),
        frames=data.frames,
        channels=data.channels,
        train=train,
        augment=augment,
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
    parser.add_argument("--scale", default="sf", help="score scale of --manifest (without --config)")
    parser.add_argument("--config", help="take data settings, batch and workers from this config")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument(
        "--phantom",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        help="a phantom LUS cohort (patients)",
    )
    parser.add_argument("--phantom-size", type=int, default=32, help="rendered size of --phantom clips")
    parser.add_argument("--phantom-frames", type=int, default=8, help="rendered frames of --phantom clips")
    parser.add_argument("--clips", type=int, default=24, help="generated clips")
    parser.add_argument("--source-frames", type=int, default=96, help="frames per generated clip")
    parser.add_argument("--source-size", type=int, default=256, help="height = width of generated clips")
    parser.add_argument("--size", type=int, default=112, help="data.size (cached H = W)")
    parser.add_argument("--frames", type=int, default=8, help="data.frames (T per clip)")
    parser.add_argument("--max-cached-frames", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="cache builders and DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="timed cached epochs")
    parser.add_argument("--model-steps", type=int, default=3, help="--config: timed model steps")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: a fresh temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="append one JSON line here")
    args = parser.parse_args()
    config = None
    if args.config is not None:
        config = load_config(args.config, args.sets)
        data = config.data
        args.batch_size, args.workers = config.optim.batch_size, config.runtime.workers
        args.size, args.frames = data.size, data.frames
    else:
        data = DataConfig(size=args.size, frames=args.frames, max_cached_frames=args.max_cached_frames)

    with tempfile.TemporaryDirectory(prefix="learner-bench-") as tmp:
        folder = Path(tmp)
        if args.manifest is not None:
            scale = scale_from_config(data) if config is not None else get_scale(args.scale)
            manifest = load_manifest(args.manifest, scale)
        elif args.phantom is not None:
            cohort = generate_lus_cohort(
                folder / "phantom",
                patients=tuple(args.phantom),
                frames=args.phantom_frames,
                size=args.phantom_size,
            )
            manifest = load_manifest(cohort, get_scale("sf"))
        else:
            manifest = generate_clips(folder, args.clips, args.source_frames, args.source_size, seed=0)
        cache_root = args.cache_dir or folder / "cache"
        serial = build_cache(manifest, data, workers=1, cache_dir=folder / "serial")
        pooled = build_cache(manifest, data, workers=args.workers, cache_dir=cache_root)
        augment = ClipAugment.from_config(data) if config is not None else ClipAugment()
        train_rate = cached_loader_rate(manifest, data, cache_root, args, True, augment)
        eval_rate = cached_loader_rate(manifest, data, cache_root, args, False, None)
    model_rate = model_consumption(config, args) if config is not None else None

    phantom = f"phantom LUS {args.phantom} patients, {args.phantom_frames} × {args.phantom_size}²"
    source = (
        args.manifest
        or (phantom if args.phantom else None)
        or f"{args.clips} generated mp4 clips, {args.source_frames} × {args.source_size}²"
    )
    batch = f"T={args.frames}, batch {args.batch_size}, {args.workers} workers"
    print(f"scans: {len(manifest.records)} ({source}); cache {args.size}² × ≤{data.max_cached_frames} frames")
    print(f"first-pass decode       {_rate(serial):8.1f} clips/s  (one process)")
    print(
        f"first-pass decode       {_rate(pooled):8.1f} clips/s  ({args.workers} processes, start-up included)"
    )
    print(f"cached loader, train    {train_rate:8.1f} clips/s  ({batch}, augmented: {augment is not None})")
    print(f"cached loader, eval     {eval_rate:8.1f} clips/s  ({batch})")
    if model_rate is not None:
        ahead = train_rate / model_rate
        print(f"model training step     {model_rate:8.1f} clips/s  → loader/model {ahead:.1f}×")
    figures = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "scans": len(manifest.records),
        "decode_one_process": _rate(serial),
        "decode_pooled": _rate(pooled),
        "loader_train": train_rate,
        "loader_eval": eval_rate,
        "model": model_rate,
        "loader_over_model": None if model_rate is None else train_rate / model_rate,
    }
    print(f"# {append_record(args.out, 'loader_throughput', figures)['machine']}")


def model_consumption(config: Config, args: argparse.Namespace) -> float:
    """Clips/s of training steps of the config's encoder on random clips of the loader's shape."""
    step, _ = training_step(
        batch=args.batch_size,
        frames=args.frames,
        size=args.size,
        backbone=config.model.backbone,
        preset=config.model.size,
        shift_fraction=config.model.shift_fraction,
    )
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.model_steps):
        step()
    return args.model_steps * args.batch_size / (time.perf_counter() - start)


def _rate(report: CacheReport) -> float:
    return report.built / report.seconds if report.built else float("nan")


if __name__ == "__main__":
    main()
