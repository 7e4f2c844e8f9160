"""Scan pairs for the downstream health-change classifier (Sections 2.1 and 2.4).

* **Inter-patient pairs** (train, val): random ordered pairs of scans of *different* patients of one
  split, without repeating an ordered pair, labelled by the scale's change rule applied to
  (first, second). The paper forms about 3 per scan (2103 from 701 train scans, 582 from 194 val scans).
* **Intra-patient pairs** (test): ordered pairs of one patient's scans from different visits, earlier
  first — consecutive visits by default, or every ordered visit pair; with a ``site`` column, a pair
  joins scans of the same site. With ``data.pairs.within_patient`` (beyond the paper) the train and val
  patients' own intra-patient pairs join their inter-patient ones.

Every pair table has the columns :data:`PAIR_COLUMNS` (+ ``site`` for intra-patient pairs) so each later
number can be traced back to its scans.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from learner.atomic import atomic_path
from learner.config import PairConfig
from learner.data.manifest import ScanRecord
from learner.data.scales import CLASS_NAMES, ScoreScale
from learner.errors import ConfigError

logger = logging.getLogger(__name__)

PAIR_COLUMNS: tuple[str, ...] = (
    "first_scan_id", "second_scan_id", "first_patient_id", "second_patient_id",
    "first_score", "second_score", "label", "label_name",
)  # fmt: skip


def pair_count(n_scans: int, pair_cfg: PairConfig, split: str) -> int:
    """Inter-patient pairs to draw for ``split`` (train/val): the explicit count, else per_scan × n_scans."""
    explicit = {"train": pair_cfg.count_train, "val": pair_cfg.count_val}
    if split not in explicit:
        raise ValueError(f"inter-patient pairs are drawn for train and val, not {split!r}")
    chosen = explicit[split]
    return chosen if chosen is not None else round(pair_cfg.per_scan * n_scans)


def inter_patient_pairs(
    records: Sequence[ScanRecord],
    scale: ScoreScale,
    count: int,
    seed: int,
    mix: Sequence[float] | None = None,
) -> pd.DataFrame:
    """``count`` distinct random ordered pairs of scans from different patients, in random order.

    Pairs are drawn uniformly without replacement from the ``n² − Σ_p n_p²`` ordered different-patient
    pairs (``n_p`` scans of patient ``p``). When fewer exist, all are returned and a warning is logged.
    With ``mix`` (shares of deteriorated, stable, improved summing to 1; :data:`BALANCED` for equal thirds)
    each class gets its share of ``count``; a class with fewer pairs gives all it has (warned) and the
    others share the rest in proportion to their shares, so the total stays ``count`` where possible.

    Returns:
        A table with :data:`PAIR_COLUMNS`, one row per pair.
    """
    n = len(records)
    patient_codes = np.unique([r.patient_id for r in records], return_inverse=True)[1]
    scores = np.array([r.score for r in records], dtype=float)
    available = n * n - int(np.sum(np.bincount(patient_codes) ** 2)) if n else 0
    wanted = min(count, available)
    if wanted < count:
        logger.warning(
            "asked for %d inter-patient pairs but only %d exist; using all of them", count, available
        )
    rng = np.random.default_rng(seed)
    first, second, labels = _draw(patient_codes, scores, scale, wanted, available, mix, rng)
    return _pair_frame([records[i] for i in first], [records[j] for j in second], labels)


def _draw(
    patient_codes: np.ndarray,
    scores: np.ndarray,
    scale: ScoreScale,
    wanted: int,
    available: int,
    mix: Sequence[float] | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (first, second) and labels of the chosen pairs.

    Draws a uniformly random prefix of all n² ordered index pairs (no repeats), drops same-patient pairs
    and keeps the first ``wanted`` (or the first quota of each class); the prefix grows until it holds
    enough, at worst all n² pairs.
    """
    n = len(patient_codes)
    total = n * n
    margin = 4.0 if mix is not None else 1.5
    size = min(total, int(np.ceil(wanted * total / max(available, 1) * margin)) + 64)
    while True:
        flat = rng.choice(total, size=size, replace=False) if total else np.zeros(0, dtype=np.int64)
        first, second = np.divmod(flat, n) if n else (flat, flat)
        keep = patient_codes[first] != patient_codes[second]
        first, second = first[keep], second[keep]
        labels = scale.change_labels(scores[first], scores[second])
        complete = size == total
        chosen = (
            _first(labels, wanted, complete) if mix is None else _mixed_choice(labels, wanted, complete, mix)
        )
        if chosen is not None:
            return first[chosen], second[chosen], labels[chosen]
        size = min(total, size * 4)


def _first(labels: np.ndarray, wanted: int, complete: bool) -> np.ndarray | None:
    if len(labels) < wanted and not complete:
        return None
    return np.arange(min(wanted, len(labels)))


def _mixed_choice(labels: np.ndarray, wanted: int, complete: bool, mix: Sequence[float]) -> np.ndarray | None:
    """Positions of the first ``quota[c]`` pairs of each class, in draw order; None if more must be drawn."""
    found = np.bincount(labels, minlength=len(CLASS_NAMES))
    shares = _split(wanted, mix)
    if not complete and np.any(found < shares):
        return None  # some class is short in this prefix; a longer prefix may hold more of it
    for label in np.flatnonzero(found < shares):
        logger.warning(
            "only %d %s inter-patient pairs exist (its share: %d): using all of them",
            found[label],
            CLASS_NAMES[label],
            shares[label],
        )
    quotas = class_quotas(found, wanted, mix)
    return np.flatnonzero(_rank_within_class(labels) < quotas[labels])


BALANCED: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
"""``data.pairs.balanced``: equal shares of deteriorated, stable and improved."""


def class_quotas(available: np.ndarray, total: int, mix: Sequence[float] = BALANCED) -> np.ndarray:
    """Per-class counts summing to ``min(total, Σ available)`` where the shares allow, as close to ``mix``
    (the shares of each class) as availability allows.

    Every class starts from its share of the total (largest remainders rounded up, ties to the lowest class
    index); a class with fewer pairs gives all it has, and what it leaves is shared by the classes that have
    more, in proportion to their shares (a class of share 0 never gets any).
    """
    available = np.asarray(available, dtype=np.int64)
    weights = np.asarray(mix, dtype=np.float64)
    target = min(total, int(available.sum()))
    quotas: npt.NDArray[np.int64] = np.minimum(available, _split(target, weights))
    while (remaining := target - int(quotas.sum())) > 0:
        open_classes = np.flatnonzero((available > quotas) & (weights > 0))
        if not len(open_classes):
            break
        extra = _split(remaining, weights[open_classes] / weights[open_classes].sum())
        quotas[open_classes] += np.minimum(available[open_classes] - quotas[open_classes], extra)
    return quotas


def _split(total: int, shares: Sequence[float] | np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``shares`` (summing to 1) into integers summing to ``total``: the
    floors, then one more for the largest remainders (ties: the lowest index first)."""
    raw = total * np.asarray(shares, dtype=np.float64)
    counts = np.floor(raw + 1e-9).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def _rank_within_class(labels: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions carry the same label."""
    ranks = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        where = labels == label
        ranks[where] = np.arange(int(where.sum()))
    return ranks


_VISIT_PAIRINGS: dict[str, Callable[[int], Iterable[tuple[int, int]]]] = {
    "consecutive": lambda k: zip(range(k - 1), range(1, k), strict=True),
    "all": lambda k: itertools.combinations(range(k), 2),
}


def intra_patient_pairs(
    records: Sequence[ScanRecord], scale: ScoreScale, mode: str = "consecutive", match_site: bool = True
) -> tuple[pd.DataFrame, list[str]]:
    """Ordered same-patient pairs from different visits, earlier visit first.

    Scans are grouped by patient — and by site when ``match_site`` and any record has a site — and each
    group's distinct visits are sorted; ``consecutive`` pairs visit ``k`` with ``k + 1`` of the group
    (the next visit at which that site was scanned), ``all`` pairs every earlier visit with every later
    one. Every scan of the earlier visit is paired with every scan of the later one.

    Returns:
        The pair table (:data:`PAIR_COLUMNS` + ``site``, the shared site or None) and the sorted IDs of
        patients that yield no pair (one visit, or no site seen twice), for the caller to warn about.
    """
    if mode not in _VISIT_PAIRINGS:
        raise ValueError(f"unknown intra-patient pair mode {mode!r}; expected {', '.join(_VISIT_PAIRINGS)}")
    by_site = match_site and any(r.site is not None for r in records)
    groups: dict[tuple[str, str], dict[float, list[ScanRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        site = (record.site or "") if by_site else ""
        groups[(record.patient_id, site)][record.visit_order].append(record)
    firsts: list[ScanRecord] = []
    seconds: list[ScanRecord] = []
    for key in sorted(groups):
        visits = [sorted(groups[key][order], key=lambda r: r.scan_id) for order in sorted(groups[key])]
        for a, b in _VISIT_PAIRINGS[mode](len(visits)):
            for first, second in itertools.product(visits[a], visits[b]):
                firsts.append(first)
                seconds.append(second)
    labels = scale.change_labels([r.score for r in firsts], [r.score for r in seconds])
    frame = _pair_frame(firsts, seconds, labels)
    shared = [f.site if f.site == s.site else None for f, s in zip(firsts, seconds, strict=True)]
    frame["site"] = pd.Series(shared, dtype=object)  # object keeps None (a str column would turn it into NaN)
    no_pair = sorted({r.patient_id for r in records} - {r.patient_id for r in firsts})
    return frame, no_pair


def _pair_frame(
    firsts: Sequence[ScanRecord], seconds: Sequence[ScanRecord], labels: np.ndarray
) -> pd.DataFrame:
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    columns = {
        "first_scan_id": [r.scan_id for r in firsts],
        "second_scan_id": [r.scan_id for r in seconds],
        "first_patient_id": [r.patient_id for r in firsts],
        "second_patient_id": [r.patient_id for r in seconds],
        "first_score": np.array([r.score for r in firsts], dtype=float),
        "second_score": np.array([r.score for r in seconds], dtype=float),
        "label": labels,
        "label_name": [CLASS_NAMES[k] for k in labels],
    }
    return pd.DataFrame(columns, columns=list(PAIR_COLUMNS))


def split_pairs(
    records_by_split: Mapping[str, Sequence[ScanRecord]], scale: ScoreScale, pair_cfg: PairConfig, seed: int
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The three pair sets of Section 2.1 for one split manifest — what ``learner data check`` counts and
    what the classifier trains and is tested on, from this one function so the two can never disagree.

    Train and val get inter-patient pairs (``pair_count`` of them, seeds ``seed`` and ``seed + 1``), and
    with ``pair_cfg.within_patient`` also the intra-patient pairs of their own patients (the test pairs'
    rule; a warning when a split has no patient with two visits); test gets the intra-patient pairs.

    Returns:
        ``{"train", "val", "test"} → pair table`` and the test patients that yield no pair (warned about).
    """
    pairs: dict[str, pd.DataFrame] = {}
    mix: Sequence[float] | None = BALANCED if pair_cfg.balanced else None
    if pair_cfg.class_mix == "within":
        mix = within_class_mix(records_by_split, scale, pair_cfg)
    elif pair_cfg.class_mix is not None:
        mix = pair_cfg.class_mix
    for offset, split in enumerate(("train", "val")):
        records = records_by_split.get(split, [])
        count = pair_count(len(records), pair_cfg, split)
        pairs[split] = inter_patient_pairs(records, scale, count, seed + offset, mix)
        if pair_cfg.within_patient:
            within, _ = intra_patient_pairs(records, scale, pair_cfg.intra, pair_cfg.match_site)
            if within.empty:
                logger.warning(
                    "data.pairs.within_patient: no %s patient has scans from two visits; its pairs stay "
                    "inter-patient only",
                    split,
                )
            else:
                pairs[split] = pd.concat([pairs[split], within[list(PAIR_COLUMNS)]], ignore_index=True)
    pairs["test"], no_pair = intra_patient_pairs(
        records_by_split.get("test", []), scale, pair_cfg.intra, pair_cfg.match_site
    )
    if no_pair:
        logger.warning("%d test patient(s) yield no intra-patient pair: %s", len(no_pair), ", ".join(no_pair))
    return pairs, no_pair


def within_class_mix(
    records_by_split: Mapping[str, Sequence[ScanRecord]], scale: ScoreScale, pair_cfg: PairConfig
) -> tuple[float, float, float]:
    """``data.pairs.class_mix: within``: the class shares (deteriorated, stable, improved) of the train and
    val patients' own intra-patient pairs (the test pairs' rule), the change a cohort's consecutive scans
    show, as the target mix of the inter-patient pairs; the test split is never read.

    Raises:
        ConfigError: no train or val patient has scans from two visits.
    """
    records = [*records_by_split.get("train", []), *records_by_split.get("val", [])]
    within, _ = intra_patient_pairs(records, scale, pair_cfg.intra, pair_cfg.match_site)
    if within.empty:
        raise ConfigError(
            "data.pairs.class_mix=within: no train or val patient has scans from two visits; state a prior "
            "instead, e.g. data.pairs.class_mix=[0.1,0.8,0.1]"
        )
    counts = np.bincount(within["label"].to_numpy(), minlength=3) / len(within)  # CLASS_NAMES order
    logger.info(
        "data.pairs.class_mix=within: %d train/val visit pairs, shares %s", len(within), counts.round(3)
    )
    return float(counts[0]), float(counts[1]), float(counts[2])


def write_pair_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomically write a pair table as CSV."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def pair_class_counts(df: pd.DataFrame) -> dict[str, int]:
    """Pairs per change class, every class present (deteriorated, stable, improved order)."""
    counts = df["label"].value_counts() if len(df) else pd.Series(dtype=np.int64)
    return {name: int(counts.get(index, 0)) for index, name in enumerate(CLASS_NAMES)}
