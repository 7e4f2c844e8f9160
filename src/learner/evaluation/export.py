"""``learner export``: a pretrained encoder and its pair classifier as ONNX and TorchScript files, with the
preprocessing they expect written beside them, for use outside this package (onnxruntime, C++, a browser).

Files in ``OUT``::

    encoder.onnx  encoder.pt           clips (N, T, C, H, W) float32 → embedding (N, D), score (N,)
    pair_classifier.onnx  pair_classifier.pt
                                       earlier (N, D), later (N, D) embeddings → probabilities (N, 3)
    preprocessing.json  PREPROCESSING.md
                                       how a scan becomes a clip; the score scale; the class order

The encoder graph holds θ_V and θ_M with the score de-standardisation built in (``score`` is in score
units, as :func:`learner.evaluation.embed.embed_clips` returns it). The classifier graph holds the whole
Section 2.4 head as :class:`learner.evaluation.pair_classifier.FittedPairClassifier` applies it: the pair
combination (difference later − earlier, or concatenation [earlier, later]), the train-fitted feature
standardisation, the MLP and the softmax. Both graphs take a dynamic batch N; T, C, H and W are the run's.

ONNX needs the ``export`` extra (``pip install 'learner[export]'``: onnx, and onnxruntime to run and check
the files); the graphs use the TorchScript-based exporter (``dynamo=False``, opset 17), which needs no
onnxscript. TorchScript files need nothing beyond torch (``torch.jit.load``).

Example::

    files = export_run("runs/lus-wcl", "runs/lus-wcl-classify", "exported/")
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from learner.atomic import atomic_path, check_outputs, usable_folder, write_json, write_text
from learner.data.preprocess import Preprocessor
from learner.data.scales import CLASS_NAMES, scale_from_config
from learner.errors import ConfigError, RunDirError
from learner.evaluation.pair_classifier import FittedPairClassifier
from learner.evaluation.predict import classifier_location
from learner.layout import RunLayout
from learner.models.encoder import VolumeEncoder
from learner.models.heads import ScoreRegressor
from learner.models.registry import ENCODERS
from learner.training.checkpoint import CheckpointMeta, checkpoint_fingerprint, load_regressor

ONNX_OPSET = 17
"""The ONNX opset of the exported graphs (onnxruntime ≥ 1.14 runs it)."""

# the files export_run writes, checked before any is: the TorchScript graphs, the ONNX graphs (with onnx)
# and the preprocessing record
GRAPH_FILES: tuple[str, ...] = ("encoder.pt", "pair_classifier.pt")
ONNX_FILES: tuple[str, ...] = ("encoder.onnx", "pair_classifier.onnx")
PREPROCESSING_FILES: tuple[str, ...] = ("preprocessing.json", "PREPROCESSING.md")


class EncoderGraph(nn.Module):
    """θ_V and θ_M, the score standardisation undone: clips (N, T, C, H, W) → (N, D), (N,) in score units."""

    def __init__(self, model: ScoreRegressor, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = mean, std

    def forward(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        embeddings, standardised = self.model(clips)
        return embeddings, standardised * self.std + self.mean


class PairClassifierGraph(nn.Module):
    """Two embeddings (N, D) each → class probabilities (N, 3): combine, standardise, MLP, softmax."""

    def __init__(self, fitted: FittedPairClassifier) -> None:
        super().__init__()
        self.head = fitted.head
        self.concatenate = fitted.meta.combine == "concatenate"
        self.mean = nn.Buffer(torch.from_numpy(np.asarray(fitted.scaler.mean, dtype=np.float32)))
        self.std = nn.Buffer(torch.from_numpy(np.asarray(fitted.scaler.std, dtype=np.float32)))

    def forward(self, earlier: Tensor, later: Tensor) -> Tensor:
        features = torch.cat([earlier, later], dim=1) if self.concatenate else later - earlier
        logits: Tensor = self.head((features - self.mean) / self.std)
        return torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class ExportedModels:
    """What :func:`export_run` wrote (paths) and the two graphs it exported (in eval mode, on the CPU)."""

    files: dict[str, Path]
    encoder: EncoderGraph
    classifier: PairClassifierGraph
    example_clips: Tensor


def locate_runs(
    run: str | os.PathLike[str], encoder: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """(encoder run, classifier) of ``run``: a grid cell (``encoder/`` and ``classifier/`` inside) or a
    classification run, whose encoder is ``encoder`` or else the one its ``metrics.json`` records
    (:func:`encoder_run_of`: found from any working directory).

    Raises:
        RunDirError: neither layout, or no encoder recorded and none given.
    """
    folder = Path(run)
    cell = RunLayout(folder)
    if cell.encoder().root.is_dir() and cell.classification().root.is_dir():
        return Path(encoder or cell.encoder().root), cell.classification().root
    if encoder is not None:
        return Path(encoder), folder
    try:
        recorded = encoder_run_of(folder, json.loads(cell.metrics.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise RunDirError(
            f"{folder}: not a classification run with a recorded encoder (metrics.json) nor a grid cell; "
            "pass --encoder RUN_DIR"
        ) from None
    return recorded, folder


def encoder_run_of(run_dir: str | os.PathLike[str], metrics: Mapping[str, Any]) -> Path:
    """The pretraining run that the classification run ``run_dir`` (its ``metrics.json``: ``metrics``)
    was trained on: ``encoder_run_relative`` resolved against ``run_dir``, so that the run works from any
    working directory and after being moved with its encoder; else ``encoder_run`` as it was given.

    Raises:
        KeyError: ``metrics`` records no encoder run.
    """
    relative = metrics.get("encoder_run_relative")
    if relative is not None and (Path(run_dir) / str(relative)).is_dir():
        return Path(run_dir) / str(relative)
    return Path(metrics["encoder_run"])


SAMPLING_STEPS: dict[str, str] = {
    "segments": "TSN centre frames: split the scan's frames into T equal segments and take the "
    "centre frame of each (learner.data.sampling.segment_indices with train=False)",
    "resample": "the whole scan resampled to T × size × size by trilinear interpolation with voxel "
    "centres aligned (torch interpolate, align_corners=False; learner.data.sampling.resample_volume), "
    "then every slice",
}
"""``data.sampling`` → how T frames are taken, in words (``preprocessing.json``)."""

INPUT_KINDS: dict[str, tuple[str, str]] = {
    "frames": ("8-bit videos and images", "the 8-bit grey levels, not rescaled"),
    "volumes": (
        "float scans (NIfTI volumes, 16-bit and float images)",
        "the 1st-99th percentile of the cropped slices' non-zero voxels → 0-255 after the resize, clipped",
    ),
}
"""Input kind → (the scans :class:`~learner.data.preprocess.Preprocessor` takes that way, by their decoded
dtype; how their uint8 grey levels are made)."""


def input_kind(backbone: str) -> str:
    """``volumes`` for a 3-D encoder (a :class:`~learner.models.encoder.VolumeEncoder`), else ``frames``:
    the kind of scan the record describes first (the preprocessing of float volumes and of 8-bit clips
    differs in the crop and the intensity scaling)."""
    spec = ENCODERS.get(backbone)
    return "volumes" if spec is not None and issubclass(spec.encoder, VolumeEncoder) else "frames"


def crop_notes(pre: Preprocessor) -> dict[str, str]:
    """Input kind → ``data.crop`` as :meth:`Preprocessor.__call__` runs it, with ``pre``'s thresholds."""
    bright = f"brighter than {pre.intensity_threshold:g} grey levels"
    clip_crops = {
        "fan": f"the bounding box of the pixels that vary over time (temporal std > "
        f"{pre.motion_threshold:g}) and are {bright}; a single frame or a static clip: as foreground",
        "foreground": f"the bounding box of the pixels {bright} in any frame",
        "none": "the whole frame",
    }
    volume = "(any crop but none) the 3-D bounding box (slices, rows, columns) of the voxels above "
    volume += (
        f"{pre.volume_threshold:g} × the 99th percentile after a 3×3×3 binary opening (the whole volume "
    )
    volume += "when none is left), before the frame budget; no 2-D crop"
    return {"frames": clip_crops[pre.crop], "volumes": "the whole volume" if pre.crop == "none" else volume}


def preprocessing_record(meta: CheckpointMeta, clips_per_scan: int, fingerprint: str) -> dict[str, Any]:
    """How a scan becomes the encoder's input, and what the outputs mean (``preprocessing.json``): the
    steps of the encoder's input kind (:func:`input_kind`), and what the other kind of scan takes instead."""
    data = meta.config.data
    scale = scale_from_config(data)
    kind = input_kind(meta.encoder.name)
    (scans, intensity), notes = INPUT_KINDS[kind], crop_notes(Preprocessor.from_config(data))
    other = "frames" if kind == "volumes" else "volumes"
    return {
        "input": {
            "name": "clips",
            "shape": ["N", data.frames, meta.encoder.in_channels, data.size, data.size],
            "dtype": "float32",
            "range": "pixel / 255 (uint8 grey levels to [0, 1]); no mean/std normalisation",
        },
        "frames": {
            "count": data.frames,
            "sampling": SAMPLING_STEPS[data.sampling],
            "max_cached_frames": data.max_cached_frames,
            "clips_per_scan": clips_per_scan,
            "clips_note": "the classifier was trained on the mean embedding of this many clips per scan",
        },
        "pixels": {
            "kind": kind,
            "scans": scans,
            "channels": meta.encoder.in_channels,
            "colour": "grey (ITU-R BT.601 luma); a grey frame is repeated to 3 channels when channels is 3",
            "crop": data.crop,
            "crop_note": notes[kind],
            "square": "the crop is zero-padded to a centred square",
            "size": data.size,
            "resize": "bilinear, antialiased (torch.nn.functional.interpolate)",
            "intensity": intensity,
            "nifti_axis": data.nifti_axis,
            "other_kind": f"{INPUT_KINDS[other][0]} instead: crop `{data.crop}`: {notes[other]}; intensity: "
            f"{INPUT_KINDS[other][1]}",
        },
        "outputs": {
            "embedding": ["N", meta.encoder.embed_dim],
            "score": "predicted clinical score, in score units",
            "probabilities": {"shape": ["N", len(CLASS_NAMES)], "classes": list(CLASS_NAMES)},
        },
        "score_scale": {
            "name": scale.name,
            "range": [scale.low, scale.high],
            "higher_is_better": scale.higher_is_better,
            "unit": scale.unit,
            "change_rule": (  # the bin a score equal to each edge falls in, to reproduce the labels
                {"bins": list(scale.bins), "edge_belongs_to": scale.class_edges().sides()}
                if scale.bins
                else {"threshold": scale.threshold}
            ),
        },
        "score_standardisation": {
            "mean": meta.score_standardisation.mean,
            "std": meta.score_standardisation.std,
        },
        "encoder": {"backbone": meta.encoder.name, "fingerprint": fingerprint},
        "onnx_opset": ONNX_OPSET,
    }


def export_run(
    encoder_run: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    which: str = "best",
    onnx: bool = True,
    force: bool = False,
) -> ExportedModels:
    """Write the encoder of ``encoder_run`` and the classifier ``classifier`` (a classification run or its
    ``classifier/`` folder) to ``out_dir`` as TorchScript, ONNX (with ``onnx``) and the preprocessing files.
    Other files in ``out_dir`` are left alone; one of the files to write that is already there is replaced
    only with ``force``.

    Raises:
        CheckpointError: a missing encoder or classifier, or a classifier trained on another encoder.
        ConfigError: ``onnx`` without the onnx package installed.
        OutputError: ``out_dir`` cannot be written, already holds one of the files (without ``force``), or
            lies inside the encoder checkpoint or the classifier (:func:`learner.atomic.check_outputs`);
            checked before anything is written.
    """
    if onnx and importlib.util.find_spec("onnx") is None:
        raise ConfigError("ONNX export needs the onnx package: pip install 'learner[export]'")
    target = usable_folder(out_dir, "--out")
    folder, clips_per_scan = classifier_location(classifier)
    checkpoint = RunLayout(encoder_run).checkpoint(which)
    names = [*GRAPH_FILES, *(ONNX_FILES if onnx else ()), *PREPROCESSING_FILES]
    inputs = {"the encoder checkpoint": checkpoint, "the classifier": folder}
    check_outputs([target / name for name in names], force=force, inputs=inputs)
    fingerprint = checkpoint_fingerprint(checkpoint)
    fitted = FittedPairClassifier.load(folder, encoder_fingerprint=fingerprint)
    model, meta = load_regressor(encoder_run, which=which, device="cpu")
    standardiser = meta.score_standardisation
    encoder = EncoderGraph(model, float(standardiser.mean), float(standardiser.std)).eval()
    pair = PairClassifierGraph(fitted).eval()
    data = meta.config.data
    clips = torch.rand(2, data.frames, meta.encoder.in_channels, data.size, data.size, generator=_generator())
    embeddings = torch.randn(2, meta.encoder.embed_dim, generator=_generator())
    files = {
        "encoder.pt": _torchscript(encoder, (clips,), target / "encoder.pt"),
        "pair_classifier.pt": _torchscript(pair, (embeddings, embeddings), target / "pair_classifier.pt"),
    }
    if onnx:
        files["encoder.onnx"] = _onnx(
            encoder, (clips,), target / "encoder.onnx", ["clips"], ["embedding", "score"]
        )
        files["pair_classifier.onnx"] = _onnx(
            pair, (embeddings, embeddings), target / "pair_classifier.onnx", ["earlier", "later"],
            ["probabilities"],
        )  # fmt: skip
    record = preprocessing_record(meta, clips_per_scan, fingerprint)
    files["preprocessing.json"] = write_json(target / "preprocessing.json", record)
    files["PREPROCESSING.md"] = write_text(target / "PREPROCESSING.md", preprocessing_markdown(record))
    return ExportedModels(files, encoder, pair, clips)


def preprocessing_markdown(record: dict[str, Any]) -> str:
    """``PREPROCESSING.md``: the record of :func:`preprocessing_record` for a reader."""
    outputs = record["outputs"]
    scale, std = record["score_scale"], record["score_standardisation"]
    shape = " × ".join(str(s) for s in record["input"]["shape"])
    return "\n".join([
        "# Exported LEARNER models",
        "",
        f"Encoder `{record['encoder']['backbone']}` (fingerprint `{record['encoder']['fingerprint'][:16]}`).",
        "",
        "| file | input | output |",
        "|---|---|---|",
        f"| `encoder.onnx`, `encoder.pt` | `clips` {shape} float32 | `embedding` "
        f"N × {outputs['embedding'][1]}, `score` N (score units) |",
        "| `pair_classifier.onnx`, `pair_classifier.pt` | `earlier`, `later`: embeddings | `probabilities` "
        f"N × 3 ({', '.join(outputs['probabilities']['classes'])}) |",
        "",
        *preprocessing_steps(record),
        f"Scores are on the `{scale['name']}` scale (range {scale['range'][0]} to {scale['range'][1]}); the "
        f"encoder graph already undoes the training standardisation (mean {std['mean']:.4g}, "
        f"std {std['std']:.4g}).",
        "",
    ])  # fmt: skip


def preprocessing_steps(record: dict[str, Any]) -> list[str]:
    """The lines of the section "From a scan to ``clips``" of ``PREPROCESSING.md`` (a model folder's
    ``README.md`` has it too), from the record of :func:`preprocessing_record`."""
    frames, pixels = record["frames"], record["pixels"]
    volumes, size = pixels["kind"] == "volumes", pixels["size"]
    axis = f" (NIfTI sliced along {pixels['nifti_axis']})" if volumes else ""
    steps = [
        f"Decode the scan{axis}; colour → {pixels['colour']}",
        f"Keep at most {frames['max_cached_frames']} {'slices' if volumes else 'frames'}, evenly spaced",
        f"Crop `{pixels['crop']}`: {pixels['crop_note']}",
    ]
    if volumes:  # the volume box runs before the frame budget
        steps[1], steps[2] = steps[2], steps[1]
    return [
        "## From a scan to `clips`",
        "",
        f"For {pixels['scans']}, the input of a {'3-D' if volumes else 'frame'} encoder:",
        "",
        *(f"{k}. {step}." for k, step in enumerate(steps, 1)),
        f"4. {pixels['square'].capitalize()}; resize to {size} × {size}: {pixels['resize']}; intensity: "
        f"{pixels['intensity']}.",
        f"5. Take T = {frames['count']} frames: {frames['sampling']}.",
        f"6. Scale: {record['input']['range']}; channels: {pixels['channels']}.",
        f"7. The classifier saw the mean embedding of {frames['clips_per_scan']} clip(s) per scan.",
        "",
        f"The decoded scan, not the encoder, picks the crop and the intensity: {pixels['other_kind']}.",
        "",
    ]


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)  # fixed example inputs: exports are reproducible


def _torchscript(module: nn.Module, example: tuple[Tensor, ...], path: Path) -> Path:
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; it still works
        traced = torch.jit.trace(module, example)  # type: ignore[no-untyped-call]  # untyped in torch
        torch.jit.save(traced, str(tmp))
    return path


def _onnx(
    module: nn.Module, example: tuple[Tensor, ...], path: Path, inputs: list[str], outputs: list[str]
) -> Path:
    batch = {name: {0: "N"} for name in inputs + outputs}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in favour of dynamo
        torch.onnx.export(
            module, example, str(tmp), input_names=inputs, output_names=outputs, dynamic_axes=batch,
            opset_version=ONNX_OPSET, dynamo=False,
        )  # fmt: skip
    return path
