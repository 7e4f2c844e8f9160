"""The downstream health-change classifier on pairs of frozen embeddings (Section 2.4, Table 4).

Two scans with embeddings u_t (first, earlier) and u_{t+1} (second, later) become one feature vector
through a registered combine function — ``difference`` d_t = u_{t+1} − u_t (the paper's choice) or
``concatenate`` [u_t, u_{t+1}] (Table 4's alternative) — and a small MLP head predicts 0 deteriorated /
1 stable / 2 improved with cross-entropy. It is trained on train inter-patient pairs, early-stopped on
the val inter-patient pairs and tested on the test intra-patient pairs.

Example::

    X = pair_features(train_pairs, embeddings, scan_ids, combine="difference")
    fitted = fit_pair_classifier(X, train_pairs["label"].to_numpy(), val_X, val_y, cfg.classifier, seed=0)
    fitted.save(run.layout.classifier)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from learner import atomic, formats
from learner.config import ClassifierConfig
from learner.data.scales import ChangeLabel
from learner.errors import CheckpointError, ConfigError, LearnerError, NonFiniteLossError
from learner.evaluation.metrics import macro_f1
from learner.models.heads import PairClassifierHead
from learner.timing import stage

NUM_CLASSES = len(ChangeLabel)
WEIGHTS_FILE = "classifier.safetensors"
META_FILE = "classifier.json"

CombineFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(P, D), (P, D) → (P, D): u_second − u_first, the later scan minus the earlier one."""
    difference: np.ndarray = second - first
    return difference


def _concatenate(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(P, D), (P, D) → (P, 2D): [u_first, u_second]."""
    return np.concatenate([first, second], axis=1)


COMBINES: dict[str, CombineFn] = {"difference": _difference, "concatenate": _concatenate}


def pair_embeddings(
    pairs: pd.DataFrame, embeddings: np.ndarray, scan_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Look up the embeddings of both scans of every pair.

    Args:
        pairs: a pair table with ``first_scan_id`` and ``second_scan_id`` columns (P rows).
        embeddings: (S, D) one embedding per scan, in the order of ``scan_ids``.
        scan_ids: the S scan IDs (unique; compared as strings).

    Returns:
        ``(first, second)``, each (P, D) float32.

    Raises:
        LearnerError: a missing column, a duplicated scan ID, or pairs naming scans with no embedding
            (the message counts them and names the first, with its 0-based pair row).
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(scan_ids):
        raise ValueError(
            f"embeddings should be (S, D) with S = len(scan_ids) = {len(scan_ids)}, got {embeddings.shape}"
        )
    index = pd.Index([str(s) for s in scan_ids])
    if index.has_duplicates:
        raise LearnerError(
            f"the embedding table lists scan_id {index[index.duplicated()][0]!r} more than once"
        )
    rows = []
    for column in ("first_scan_id", "second_scan_id"):
        if column not in pairs.columns:
            raise LearnerError(f"the pair table has no {column!r} column")
        ids = pairs[column].astype(str).to_numpy()
        positions = index.get_indexer(pd.Index(ids))
        missing = np.flatnonzero(positions < 0)
        if missing.size:
            raise LearnerError(
                f"{missing.size} pair(s) name a scan with no embedding, e.g. {column} "
                f"{ids[missing[0]]!r} in pair row {missing[0]}"
            )
        rows.append(positions)
    values = embeddings.astype(np.float32, copy=False)
    return values[rows[0]], values[rows[1]]


def pair_features(
    pairs: pd.DataFrame, embeddings: np.ndarray, scan_ids: Sequence[str], combine: str = "difference"
) -> np.ndarray:
    """Classifier input of every pair: the registered ``combine`` of its two scan embeddings.

    Args:
        pairs: pair table (P rows) with ``first_scan_id`` / ``second_scan_id``.
        embeddings: (S, D) scan embeddings in ``scan_ids`` order.
        scan_ids: the S scan IDs.
        combine: a key of :data:`COMBINES`.

    Returns:
        (P, D) for ``difference``, (P, 2D) for ``concatenate``; float32.
    """
    if combine not in COMBINES:
        raise ConfigError(f"unknown classifier.combine {combine!r}; available: {', '.join(sorted(COMBINES))}")
    first, second = pair_embeddings(pairs, embeddings, scan_ids)
    return COMBINES[combine](first, second)


def inverse_frequency_weights(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Class weights n / (K · n_k) ("balanced"), so every class carries the same total weight.

    A class with no examples is counted as having one, which keeps its weight finite.

    Args:
        labels: (N,) class indices. Returns: (K,) float32.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    return (labels.size / (num_classes * np.maximum(counts, 1))).astype(np.float32)


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature standardisation fitted on the train pairs: (x − mean) / std.

    A constant feature (std below 1e-8) is only centred, so it maps to 0 instead of dividing by ~0.
    """

    mean: npt.NDArray[np.float32]  # (F,)
    std: npt.NDArray[np.float32]  # (F,)

    @classmethod
    def fit(cls, features: np.ndarray) -> FeatureScaler:
        """Fit on (N, F) features (statistics in float64, stored as float32)."""
        values = np.asarray(features, dtype=np.float64)
        std = values.std(axis=0)
        std = np.where(std < 1e-8, 1.0, std)
        return cls(mean=values.mean(axis=0).astype(np.float32), std=std.astype(np.float32))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """(N, F) → (N, F) float32 standardised features."""
        return ((np.asarray(features, dtype=np.float32) - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class ClassifierMeta:
    """Everything needed to rebuild a saved classifier and to check that it fits an encoder."""

    kind: str
    combine: str
    in_dim: int
    hidden: int
    dropout: float
    seed: int
    encoder_fingerprint: str
    class_weights: list[float] | None = None
    num_classes: int = NUM_CLASSES


@dataclass
class FittedPairClassifier:
    """A trained pair classifier: the head with its best-epoch weights plus the train-fitted scaler.

    ``history`` has one entry per epoch run (``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``,
    ``val_macro_f1``); ``best_epoch`` indexes the epoch whose weights the head holds.
    """

    head: torch.nn.Module
    scaler: FeatureScaler
    meta: ClassifierMeta
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(P, in_dim) pair features → (P, 3) class probabilities (float32, rows sum to 1)."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.meta.in_dim:
            raise ValueError(
                f"features should be (P, {self.meta.in_dim}) ({self.meta.combine} of the encoder's "
                f"embeddings), got {features.shape}"
            )
        self.head.eval()
        with torch.no_grad():
            logits = self.head(torch.from_numpy(self.scaler.transform(features)))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(P, in_dim) pair features → (P,) int64 class indices (0 deteriorated, 1 stable, 2 improved)."""
        classes: np.ndarray = self.predict_proba(features).argmax(axis=1)
        return classes.astype(np.int64)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The head's weights (what :meth:`save` writes to safetensors)."""
        return {name: tensor.detach().contiguous() for name, tensor in self.head.state_dict().items()}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``classifier.safetensors`` (weights) then ``classifier.json`` (meta, scaler, history).

        Both writes are atomic and the JSON goes last, so a directory with a JSON file is complete.
        """
        target = Path(directory)
        with atomic.atomic_path(target / WEIGHTS_FILE) as tmp:
            save_file(self.state_dict(), str(tmp))
        atomic.write_json(
            target / META_FILE,
            {
                "format": formats.tag("pair_classifier"),
                "meta": asdict(self.meta),
                "scaler": {"mean": self.scaler.mean.tolist(), "std": self.scaler.std.tolist()},
                "history": self.history,
                "best_epoch": self.best_epoch,
            },
        )
        return target

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], encoder_fingerprint: str | None = None
    ) -> FittedPairClassifier:
        """Read a classifier written by :meth:`save`.

        Args:
            directory: the folder holding ``classifier.safetensors`` and ``classifier.json``.
            encoder_fingerprint: when given, the classifier must have been trained on this encoder.

        Raises:
            CheckpointError: missing or malformed files, weights that do not fit the recorded head, or a
                classifier trained on another encoder.
        """
        source = Path(directory)
        for name in (META_FILE, WEIGHTS_FILE):
            if not (source / name).is_file():
                raise CheckpointError(f"{source / name}: classifier file not found")
        try:
            record = json.loads((source / META_FILE).read_text(encoding="utf-8"))
            formats.check("pair_classifier", record.get("format"), source / META_FILE)
            meta = ClassifierMeta(**record["meta"])
            scaler = FeatureScaler(
                mean=np.asarray(record["scaler"]["mean"], dtype=np.float32),
                std=np.asarray(record["scaler"]["std"], dtype=np.float32),
            )
            history, best_epoch = list(record["history"]), int(record["best_epoch"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{source / META_FILE}: not a valid classifier record ({exc})") from None
        if encoder_fingerprint is not None and meta.encoder_fingerprint != encoder_fingerprint:
            raise CheckpointError(
                f"{source}: the classifier was trained on encoder {meta.encoder_fingerprint!r}, "
                f"not on {encoder_fingerprint!r}"
            )
        head = _build_head(meta)
        try:
            head.load_state_dict(load_file(str(source / WEIGHTS_FILE)), strict=True)
        except (SafetensorError, RuntimeError) as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"{source / WEIGHTS_FILE}: weights do not fit the head ({first_line})"
            ) from None
        head.eval()
        return cls(head=head, scaler=scaler, meta=meta, history=history, best_epoch=best_epoch)


@stage("classifier")
def fit_pair_classifier(
    train_X: np.ndarray,
    train_y: np.ndarray,
    val_X: np.ndarray,
    val_y: np.ndarray,
    cfg: ClassifierConfig,
    seed: int,
    encoder_fingerprint: str = "",
) -> FittedPairClassifier:
    """Train the health-change head with cross-entropy and Adam, early-stopped on the val pairs.

    Features are standardised with statistics of ``train_X`` only. Every epoch shuffles the train pairs
    into mini-batches of ``cfg.batch_size``; after it, the cross-entropy on the val pairs (with the same
    class weights as training, so both measure one objective) decides early stopping: training stops
    after ``cfg.patience`` epochs without a strictly lower val loss, or after ``cfg.epochs``, and the
    weights of the best epoch are restored. Val loss is used rather than val macro-F1 because it is
    smooth — F1 on a few hundred pairs moves in coarse steps and ties often — and it rewards calibrated
    probabilities; val accuracy and macro-F1 are still recorded in ``history``.

    Deterministic for a given ``seed``: shuffling draws from an explicit ``torch.Generator`` and the
    head's initialisation and dropout run inside ``torch.random.fork_rng`` seeded with ``seed``, which
    restores the caller's global RNG state afterwards. Runs on the CPU (the head and features are small).

    Args:
        train_X: (N, F) train pair features (see :func:`pair_features`).
        train_y: (N,) class indices (0 deteriorated, 1 stable, 2 improved).
        val_X: (M, F) val pair features; val_y: (M,) class indices.
        cfg: the ``classifier`` config section (head kind, hidden, dropout, lr, batch size, epochs,
            patience, class_weights, combine — recorded in the meta).
        seed: the run's seed.
        encoder_fingerprint: identifies the encoder whose embeddings made the features (saved in meta).
    """
    train_X, train_y = _check_xy(train_X, train_y, "train")
    val_X, val_y = _check_xy(val_X, val_y, "val")
    if val_X.shape[1] != train_X.shape[1]:
        raise ValueError(f"train and val features differ in width: {train_X.shape[1]} vs {val_X.shape[1]}")
    scaler = FeatureScaler.fit(train_X)
    weights = inverse_frequency_weights(train_y) if cfg.class_weights else None
    meta = ClassifierMeta(
        kind=cfg.head,
        combine=cfg.combine,
        in_dim=int(train_X.shape[1]),
        hidden=cfg.hidden,
        dropout=cfg.dropout,
        seed=seed,
        encoder_fingerprint=encoder_fingerprint,
        class_weights=None if weights is None else weights.tolist(),
    )
    x_train, y_train = torch.from_numpy(scaler.transform(train_X)), torch.from_numpy(train_y)
    x_val, y_val = torch.from_numpy(scaler.transform(val_X)), torch.from_numpy(val_y)
    class_weight = None if weights is None else torch.from_numpy(weights)
    generator = torch.Generator().manual_seed(seed)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = _build_head(meta)
        optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr)
        history: list[dict[str, float]] = []
        best_loss, best_epoch, best_state = float("inf"), 0, _copy_state(head)
        for epoch in range(cfg.epochs):
            head.train()
            order = torch.randperm(len(y_train), generator=generator)
            total = 0.0
            for step, start in enumerate(range(0, len(order), cfg.batch_size)):
                batch = order[start : start + cfg.batch_size]
                logits = head(x_train[batch])  # (B, 3)
                loss = F.cross_entropy(logits, y_train[batch], weight=class_weight)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"pair classifier: non-finite loss at epoch {epoch} step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward is untyped in torch
                optimizer.step()
                total += loss.item() * len(batch)
            val_loss, val_pred = _evaluate(head, x_val, y_val, class_weight)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / len(order),
                    "val_loss": val_loss,
                    "val_accuracy": float(np.mean(val_pred == val_y)),
                    "val_macro_f1": macro_f1(val_y, val_pred),
                }
            )
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, _copy_state(head)
            elif epoch - best_epoch >= cfg.patience:
                break

    head.load_state_dict(best_state)
    head.eval()
    return FittedPairClassifier(head=head, scaler=scaler, meta=meta, history=history, best_epoch=best_epoch)


def _build_head(meta: ClassifierMeta) -> torch.nn.Module:
    return PairClassifierHead(
        meta.in_dim, kind=meta.kind, hidden=meta.hidden, dropout=meta.dropout, num_classes=meta.num_classes
    )


def _evaluate(
    head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None
) -> tuple[float, np.ndarray]:
    """Val cross-entropy (eval mode, no dropout) and the (M,) predicted classes."""
    head.eval()
    with torch.no_grad():
        logits = head(x)  # (M, 3)
        loss = F.cross_entropy(logits, y, weight=class_weight)
    return float(loss), logits.argmax(dim=1).numpy()


def _copy_state(head: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in head.state_dict().items()}


def _check_xy(features: Any, labels: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"{split}: expected (N, F) features and (N,) labels, got {features.shape}, {labels.shape}"
        )
    if features.shape[0] == 0:
        raise LearnerError(f"no {split} pairs: the pair classifier needs {split} inter-patient pairs")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(
            f"{split}: labels should be class indices 0..{NUM_CLASSES - 1}, got {np.unique(labels)}"
        )
    if not np.isfinite(features).all():
        raise LearnerError(f"{split}: the pair features contain NaN or inf (check the embedding table)")
    return features, labels.astype(np.int64)
