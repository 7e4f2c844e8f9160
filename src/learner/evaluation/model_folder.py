"""A model folder others can load: ``learner export --format folder`` writes one
(:func:`export_model_folder`); :func:`load_model` rebuilds it for predicting pairs, embedding scans and
starting a pretraining (``--init``).

Files in ``OUT`` (written in this order, each atomically; ``config.json`` last, so a folder with it is
complete)::

    model.safetensors   every weight and statistic the predictions need, tensors only: ``encoder.*``
                        (θ_V) and ``head.*`` (θ_M), the ScoreRegressor state dict as a checkpoint stores
                        it; ``pair_classifier.head.*`` the classifier's MLP; ``pair_classifier.scaler.mean``
                        / ``.std`` its train-fitted feature standardisation (F,);
                        ``score_standardisation.mean`` / ``.std`` the train split's score statistics
                        (float64 scalars)
    preprocessing.json  how a scan becomes the encoder's input
                        (:func:`learner.evaluation.export.preprocessing_record`)
    splits.csv          the encoder run's patient split: a run started from the folder refuses to train on
                        patients the encoder saw that are test patients of its own split
    meta.json           the encoder checkpoint's metadata (and the SHA-256 of ``model.safetensors``): it
                        makes the folder a checkpoint folder, whose ``encoder.*`` weights ``model.init`` reads
    README.md           the model card (:mod:`learner.report.model_card`)
    config.json         the format tag; the resolved config (the pretraining run's, its ``classifier``
                        section the classification run's); the checkpoint's score standardisation,
                        encoder, epoch and metrics (as ``meta.json``); the classifier's metadata, the clips
                        per scan and the encoder fingerprint the classifier was trained on; the change
                        model of the predicted scores' own answer where the classification recorded one
                        (``score_change_calibration``, else null); the SHA-256 of the weights

Loading reads JSON and safetensors only (nothing is unpickled) and never touches the network.

Example::

    model = load_model("exported/lus-wcl")
    print(model.predict("day1.mp4", "day2.mp4").label)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from learner import formats
from learner.atomic import atomic_path, check_outputs, usable_folder, write_json, write_text
from learner.config import Config
from learner.data.manifest import Manifest, load_manifest
from learner.data.scales import scale_from_config
from learner.errors import CheckpointError, ConfigError, LearnerError, RunDirError
from learner.evaluation.change_posterior import ChangeCalibration
from learner.evaluation.embed import EmbeddingTable, embed_clips, embed_manifest
from learner.evaluation.export import preprocessing_record
from learner.evaluation.pair_classifier import ClassifierMeta, FeatureScaler, FittedPairClassifier
from learner.evaluation.predict import (
    Prediction,
    Predictor,
    classification_run,
    classifier_location,
    predict_table,
    read_pair_table,
    recorded_calibration,
)
from learner.layout import RunLayout
from learner.losses.regression import ScoreStandardiser
from learner.models.heads import PairClassifierHead, ScoreRegressor
from learner.models.weights import CHECKPOINT_META, CHECKPOINT_WEIGHTS, describe_mismatch
from learner.runs import load_run_config
from learner.training.checkpoint import (
    CHECKSUMS,
    CheckpointMeta,
    checkpoint_fingerprint,
    load_regressor,
    regressor_for,
)

FOLDER_RECORD = "config.json"
CARD_FILE = "README.md"
PREPROCESSING_FILE = "preprocessing.json"
REGRESSOR_PREFIXES: tuple[str, ...] = ("encoder.", "head.")
CLASSIFIER_PREFIX = "pair_classifier.head."
SCALER_KEYS = {"mean": "pair_classifier.scaler.mean", "std": "pair_classifier.scaler.std"}
STANDARDISATION_KEYS = {"mean": "score_standardisation.mean", "std": "score_standardisation.std"}
HOW = "learner export --format folder writes one"


@dataclass(frozen=True)
class ExportedFolder:
    """What :func:`export_model_folder` wrote: the folder, its files (name → path) and the fingerprint of
    the encoder checkpoint it holds (what the classifier was trained on)."""

    path: Path
    files: dict[str, Path]
    encoder_fingerprint: str


def export_model_folder(
    encoder_run: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    which: str = "best",
    card: str | None = None,
    force: bool = False,
) -> ExportedFolder:
    """Write the encoder of ``encoder_run`` (checkpoint ``which``) and the classifier ``classifier`` (a
    classification run or its ``classifier/`` folder) into the model folder ``out_dir``, with the model
    card ``card`` as its ``README.md``.

    ``out_dir`` is absent, empty or a model folder (an earlier export, replaced); a folder holding other
    files only with ``force`` (its files of the same names are replaced, the others left alone).

    Raises:
        CheckpointError: a missing encoder or classifier, or a classifier trained on another encoder.
        RunDirError: ``out_dir`` is a run directory. OutputError: ``out_dir`` cannot be written, holds files
            and is no model folder (without ``force``), or lies inside the encoder checkpoint or the
            classifier (:func:`learner.atomic.check_outputs`); all checked before anything is written.
    """
    target = usable_folder(out_dir, "model folder")
    if RunLayout(target).config.is_file():
        raise RunDirError(f"{target}: a run directory; export the model folder into a folder of its own")
    folder, clips_per_scan = classifier_location(classifier)
    checkpoint = RunLayout(encoder_run).checkpoint(which)
    inputs = {"the encoder checkpoint": checkpoint, "the classifier": folder}
    check_outputs([target], force=force or is_model_folder(target), inputs=inputs, what="model folder")
    fingerprint = checkpoint_fingerprint(checkpoint)
    fitted = FittedPairClassifier.load(folder, encoder_fingerprint=fingerprint)
    model, meta = load_regressor(encoder_run, which=which, device="cpu")
    calibration = recorded_calibration(classifier)
    for stale in (FOLDER_RECORD, CARD_FILE, RunLayout(target).splits.name):  # of an earlier export
        (target / stale).unlink(missing_ok=True)  # config.json first: incomplete until it is written again
    files: dict[str, Path] = {CHECKPOINT_WEIGHTS: target / CHECKPOINT_WEIGHTS}
    with atomic_path(files[CHECKPOINT_WEIGHTS]) as tmp:
        tensors = folder_tensors(model, meta.score_standardisation, fitted)
        tmp.write_bytes(save(tensors, metadata={"format": formats.tag("model_folder")}))  # keeps tmp's mode
    record = preprocessing_record(meta, clips_per_scan, fingerprint)
    del record["onnx_opset"]  # no ONNX graph in a model folder
    files[PREPROCESSING_FILE] = write_json(target / PREPROCESSING_FILE, record)
    splits = RunLayout(encoder_run).splits
    if splits.is_file():
        files[splits.name] = write_text(RunLayout(target).splits, splits.read_text(encoding="utf-8"))
    checksums = {CHECKPOINT_WEIGHTS: checkpoint_fingerprint(target)}
    files[CHECKPOINT_META] = write_json(target / CHECKPOINT_META, meta.to_json() | {CHECKSUMS: checksums})
    if card is not None:
        files[CARD_FILE] = write_text(target / CARD_FILE, card)
    config = meta.config
    run = classification_run(classifier)
    if run is not None:  # the classification run's classifier section trained the classifier
        config = config.model_copy(update={"classifier": load_run_config(run).classifier})
    folder_record = replace(meta, config=config).to_json() | {
        "format": formats.tag("model_folder"),
        "classifier": asdict(fitted.meta),
        "clips_per_scan": clips_per_scan,
        "encoder_fingerprint": fingerprint,
        "checkpoint": which,
        "score_change_calibration": None if calibration is None else calibration.as_dict(),
        "source": {"encoder_run": str(encoder_run), "classifier": str(folder)},
        CHECKSUMS: checksums,
    }
    files[FOLDER_RECORD] = write_json(target / FOLDER_RECORD, folder_record)  # last: the folder is complete
    return ExportedFolder(target, files, fingerprint)


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a model folder (its ``config.json`` carries the format tag of any version):
    what an export may replace without ``force``."""
    try:
        record = json.loads((Path(path) / FOLDER_RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    tag = record.get("format") if isinstance(record, dict) else None
    return isinstance(tag, str) and tag.startswith(formats.tag("model_folder").rpartition("/")[0] + "/")


def folder_tensors(
    model: ScoreRegressor, standardiser: ScoreStandardiser, fitted: FittedPairClassifier
) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` (see the module docstring), contiguous, on the CPU."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    tensors |= {CLASSIFIER_PREFIX + key: value.cpu() for key, value in fitted.state_dict().items()}
    for name, key in SCALER_KEYS.items():
        tensors[key] = torch.from_numpy(np.ascontiguousarray(getattr(fitted.scaler, name), np.float32))
    for name, key in STANDARDISATION_KEYS.items():
        tensors[key] = torch.tensor(getattr(standardiser, name), dtype=torch.float64)
    return tensors


@dataclass(frozen=True)
class LoadedModel:
    """A model folder rebuilt by :func:`load_model`: the encoder with its regression head (in eval mode),
    its checkpoint's metadata and the fitted pair classifier.

    :meth:`predict` classifies a pair of scans as ``learner predict`` does on the original runs (the same
    label and probabilities); :meth:`embed` embeds a manifest's scans; a pretraining starts from the
    folder's encoder with ``model.init`` (``--init``) set to :attr:`folder`.
    """

    folder: Path
    model: ScoreRegressor
    meta: CheckpointMeta
    classifier: FittedPairClassifier
    clips_per_scan: int
    """Deterministic clips whose embeddings were averaged per scan when the classifier was trained."""
    encoder_fingerprint: str
    """SHA-256 of the encoder checkpoint's weights the classifier was trained on (as its runs record it)."""
    calibration: ChangeCalibration | None = None
    """The change model of the predicted scores' own answer (``Prediction.score_change``), if recorded."""
    predictor: Predictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        predictor = Predictor.from_models(
            self.model,
            self.meta,
            self.classifier,
            clips_per_scan=self.clips_per_scan,
            fingerprint=self.encoder_fingerprint,
            calibration=self.calibration,
        )
        object.__setattr__(self, "predictor", predictor)

    @property
    def config(self) -> Config:
        """The resolved config of the runs the folder comes from (its ``config.json``)."""
        return self.meta.config

    def predict(self, earlier: str | os.PathLike[str], later: str | os.PathLike[str]) -> Prediction:
        """Did the patient improve, stay stable or deteriorate from scan ``earlier`` to scan ``later``?

        Raises:
            ScanReadError: a scan is missing or cannot be decoded (the message names the file).
        """
        return self.predictor.predict(earlier, later)

    def predict_pairs(self, pairs_csv: str | os.PathLike[str]) -> pd.DataFrame:
        """Every pair of ``pairs_csv`` (columns ``earlier``, ``later``) → one row each, as ``learner
        predict --pairs`` writes them (:func:`learner.evaluation.predict.predict_pairs`)."""
        return predict_table(self.predictor, read_pair_table(pairs_csv), pairs_csv)

    def embed(
        self,
        manifest: Manifest | str | os.PathLike[str],
        *,
        clips_per_scan: int = 1,
        skip_bad: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        data_root: str | os.PathLike[str] | None = None,
    ) -> EmbeddingTable:
        """Every scan of ``manifest`` (a path is read on the folder's score scale, relative scan paths
        against ``data_root``) through the frozen encoder: the table ``learner embed`` computes on the
        original run. Decoded scans are cached in ``cache_dir`` (default: beside the manifest)."""
        if not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest, scale_from_config(self.config.data), data_root=data_root)
        runtime = self.config.runtime.model_copy(update={"cache_dir": cache_dir})
        meta = replace(self.meta, config=self.config.model_copy(update={"runtime": runtime}))
        return embed_manifest(
            self.model,
            meta,
            manifest,
            self.encoder_fingerprint,
            clips_per_scan=clips_per_scan,
            skip_bad=skip_bad,
            where=self.folder,
        )

    def embed_clips(self, clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Clips (N, K, T, C, H, W) of N scans → mean embeddings (N, D) and predicted scores (N,) in score
        units (:func:`learner.evaluation.embed.embed_clips`)."""
        return embed_clips(self.model, clips, self.meta.score_standardisation)


def load_model(folder: str | os.PathLike[str], *, device: str = "cpu") -> LoadedModel:
    """Rebuild the model folder ``folder`` (written by :func:`export_model_folder`) on ``device``.

    Raises:
        RunDirError: ``folder`` is not a folder, or lacks ``config.json`` or ``model.safetensors``.
        ConfigError: ``config.json`` is not valid JSON, of another format version, or incomplete.
        CheckpointError: the weights changed since the export, are unreadable, or do not fit the models.
    """
    root = Path(folder)
    if not root.is_dir():
        raise RunDirError(f"{root}: not a model folder ({HOW})")
    for name in (FOLDER_RECORD, CHECKPOINT_WEIGHTS):
        if not (root / name).is_file():
            raise RunDirError(f"{root / name}: not found; {root} is not a complete model folder ({HOW})")
    path, weights = root / FOLDER_RECORD, root / CHECKPOINT_WEIGHTS
    record = _read_record(path)
    try:
        meta = CheckpointMeta.from_json(record, path)
        classifier_meta = ClassifierMeta(**record["classifier"])
        clips_per_scan, fingerprint = int(record["clips_per_scan"]), str(record["encoder_fingerprint"])
        expected = record[CHECKSUMS][CHECKPOINT_WEIGHTS]
        change = record.get("score_change_calibration")  # absent in folders of earlier versions
        calibration = None if change is None else ChangeCalibration(**change)
    except (KeyError, TypeError, ValueError, LearnerError) as exc:
        raise ConfigError(f"{path}: incomplete model folder record ({str(exc).splitlines()[0]})") from None
    if checkpoint_fingerprint(root) != expected:
        raise CheckpointError(f"{weights}: checksum mismatch with {path} (changed or damaged since export)")
    try:
        tensors = load_file(weights, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: unreadable ({exc})") from None
    model = regressor_for(meta, path)
    _load_strict(model, _take(tensors, REGRESSOR_PREFIXES), weights)
    try:  # the classifier's metadata is config.json's too: a kind or a layer size no head can have
        head = PairClassifierHead(
            classifier_meta.in_dim,
            kind=classifier_meta.kind,
            hidden=classifier_meta.hidden,
            dropout=classifier_meta.dropout,
            num_classes=classifier_meta.num_classes,
        )
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path}: classifier: not a pair classifier ({str(exc).splitlines()[0]})") from None
    head_state = {
        k.removeprefix(CLASSIFIER_PREFIX): v for k, v in _take(tensors, (CLASSIFIER_PREFIX,)).items()
    }
    _load_strict(head, head_state, weights)
    scaler = FeatureScaler(
        mean=_array(tensors, SCALER_KEYS["mean"], weights), std=_array(tensors, SCALER_KEYS["std"], weights)
    )
    stored = tuple(float(_array(tensors, STANDARDISATION_KEYS[name], weights)) for name in ("mean", "std"))
    if stored != (meta.score_standardisation.mean, meta.score_standardisation.std):
        raise CheckpointError(f"{weights}: its score standardisation {stored} disagrees with {path}")
    if tensors:
        raise CheckpointError(f"{weights}: unexpected tensors ({', '.join(sorted(tensors)[:5])})")
    if classifier_meta.encoder_fingerprint != fingerprint:
        raise CheckpointError(f"{path}: the classifier was trained on another encoder than the folder's")
    fitted = FittedPairClassifier(head=head.eval(), scaler=scaler, meta=classifier_meta)
    return LoadedModel(root, model.to(device).eval(), meta, fitted, clips_per_scan, fingerprint, calibration)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: not a model folder record (a JSON object)")
    try:
        formats.check("model_folder", record.get("format"), path)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    return record


def _take(tensors: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove and return the tensors whose key starts with one of ``prefixes``."""
    keys = [key for key in tensors if key.startswith(prefixes)]
    return {key: tensors.pop(key) for key in keys}


def _array(tensors: dict[str, torch.Tensor], key: str, weights: Path) -> np.ndarray:
    """Remove ``key`` from ``tensors`` and return it as an array."""
    if key not in tensors:
        raise CheckpointError(f"{weights}: missing {key}")
    return tensors.pop(key).numpy()


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], weights: Path) -> None:
    problem = describe_mismatch(module.state_dict(), state)
    if problem:
        raise CheckpointError(f"{weights} does not match {type(module).__name__}: {problem}")
    module.load_state_dict(state, strict=True)
