"""Batches that hold two visits of one patient (beyond the paper), for the within-patient pretraining term
(:mod:`learner.losses.within_patient`, ``loss.within_patient``).

A random batch of 16 from a few hundred patients holds two visits of one patient about once an epoch, so a
term on within-patient differences would see almost nothing. This sampler builds each epoch from *tracks*,
the scans of one patient at one site (the whole patient without a ``site`` column) in visit order: a track
is cut into consecutive pieces of :data:`PIECE` scans from a random offset, every scan left over (single-
visit patients, a track's remainder) is shuffled into pieces of its own, and the pieces are shuffled into
global batches of ``batch_size``. Each scan is drawn once an epoch, as with the paper's random batches.

With several processes each global batch is split into consecutive local slices of whole pieces, so a
rank's slice never cuts a piece (``batch_size / world_size`` must be a multiple of :data:`PIECE`). The
order is a pure function of (seed, epoch).

Example::

    sampler = PatientBatchSampler(records, batch_size=16, seed=0)
    groups, visits = visit_codes(records)  # (N,), (N,) integer codes for the loss
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from learner.data.manifest import ScanRecord

PIECE = 2
"""Scans of one track kept together in a batch: two visits, one within-patient pair."""


def visit_codes(records: Sequence[ScanRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of each record's track (patient and site) and visit (patient and visit), (N,) each."""
    tracks = [(r.patient_id, r.site or "") for r in records]
    visits = [(r.patient_id, r.visit) for r in records]
    return _codes(tracks), _codes(visits)


def _codes(keys: list[tuple[str, str]]) -> np.ndarray:
    index: dict[tuple[str, str], int] = {}
    return np.array([index.setdefault(key, len(index)) for key in keys], dtype=np.int64)


def longitudinal_tracks(records: Sequence[ScanRecord]) -> int:
    """How many tracks (patient and site) hold scans of 2+ visits: the pairs the term can learn from."""
    visits: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in records:
        visits[(record.patient_id, record.site or "")].add(record.visit)
    return sum(len(days) >= 2 for days in visits.values())


class PatientBatchSampler(Sampler[int]):
    """This rank's indices of a (seed, epoch) order whose global batches hold whole pieces of tracks.

    Args:
        records: the train scans, in dataset order.
        batch_size: the global batch (``optim.batch_size``).
        seed: the run's seed; the epoch is set by :meth:`set_epoch`.
        world_size, rank: the processes and this one.

    Raises:
        ValueError: the local batch is not a multiple of :data:`PIECE`, or exceeds the scans.
    """

    def __init__(
        self,
        records: Sequence[ScanRecord],
        *,
        batch_size: int,
        seed: int,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        local = batch_size // world_size
        if local % PIECE or batch_size > len(records):
            raise ValueError(
                f"a local batch of whole pieces of {PIECE} is needed, at most the {len(records)} scans; got "
                f"batch_size={batch_size} over {world_size} processes (training.plan checks it first)"
            )
        self.batch_size, self.local, self.seed, self.rank = batch_size, local, seed, rank
        self.epoch = 0
        order: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, record in sorted(enumerate(records), key=lambda item: item[1].visit_order):
            order[(record.patient_id, record.site or "")].append(index)
        self.tracks = list(order.values())
        self.batches = len(records) // batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> list[int]:
        """Every rank's indices of this epoch, ``batches × batch_size`` of them, batch after batch."""
        rng = np.random.default_rng((self.seed, self.epoch))
        pieces: list[list[int]] = []
        left: list[int] = []
        for track in self.tracks:
            start = int(rng.integers(PIECE)) if len(track) > PIECE else 0
            left += track[:start]
            whole = start + (len(track) - start) // PIECE * PIECE
            pieces += [track[i : i + PIECE] for i in range(start, whole, PIECE)]
            left += track[whole:]
        left = [left[i] for i in rng.permutation(len(left))]
        pieces += [left[i : i + PIECE] for i in range(0, len(left), PIECE)]
        shuffled = [pieces[i] for i in rng.permutation(len(pieces))]
        whole_pieces = [piece for piece in shuffled if len(piece) == PIECE]  # a short last piece goes last
        flat = [index for piece in whole_pieces + [p for p in shuffled if len(p) < PIECE] for index in piece]
        return flat[: self.batches * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        for start in range(0, len(order), self.batch_size):
            yield from order[start + self.rank * self.local : start + (self.rank + 1) * self.local]

    def __len__(self) -> int:
        return self.batches * self.local
