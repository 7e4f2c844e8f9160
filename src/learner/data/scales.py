"""Score scales and the change labels of ordered scan pairs (Sections 2.1 and 2.4).

A scale knows its valid range, whether a higher score is better, and one change rule:

* **bins** — the score is discretised into clinical bins; a pair's label is the movement between the bins
  of (earlier, later). Bin edges are ascending and a value *equal to an edge belongs to the lower bin*
  (bins are ``(-inf, e0], (e0, e1], …, (e_k, inf)``) unless the edge is one of the scale's
  ``upper_edges``, whose own value belongs to the bin above (``[e, …)``). The rule is the scale's, and
  every consumer of its classes shares it: :meth:`ScoreScale.bin_of`, the change labels, the classes of
  ``supcon_bins`` (:meth:`ScoreScale.class_edges` returns :class:`ClassEdges`, which carries the side of
  each edge) and the exported ``change_rule``.
* **threshold** — the label comes from ``Δ = later − earlier``: ``|Δ| < threshold`` is stable.

Class indices are fixed for the whole toolkit (:class:`ChangeLabel`): 0 deteriorated, 1 stable, 2 improved.
"Improved" always means *healthier*, so on a scale where lower is better a falling score is an improvement.

Registered scales:

* ``sf`` — S/F ratio (SpO2 / FiO2), range [0, 500], higher is better, the paper's four bins
  ("[> 430, 275–430, 180–275, < 180]") with edges 180, 275, 430. The strict ends fix two edges: 180 is in
  "180–275" (the lowest bin is "< 180"; S/F 180 is common, SpO2 90% on FiO2 0.5) and 430 in "275–430"
  (the top bin is "> 430"). Only 275 is ambiguous (both middle bins name it); it stays in the lower bin.
  So the bins are exactly ``< 180``, ``[180, 275]``, ``(275, 430]`` and ``> 430``.
* ``mmse`` — Mini-Mental State Examination, integers 0–30, higher is better, threshold 2 points
  (|Δ| < 2 → stable), or the bins ``≤ 17`` / ``18–23`` / ``24–30`` via :func:`mmse_binned`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from learner.config import CUSTOM_SCALE_EXAMPLE
from learner.errors import ConfigError


class ChangeLabel(IntEnum):
    """The three-way health-change classes; the integer is the classifier's class index."""

    DETERIORATED = 0
    STABLE = 1
    IMPROVED = 2

    @property
    def display(self) -> str:
        return self.name.lower()


CLASS_NAMES: tuple[str, ...] = tuple(label.display for label in ChangeLabel)


NARROW_SPAN = 0.1
"""Scores spanning less than this fraction of their scale's range are flagged (``fit_warnings``)."""


class ClassEdges(tuple[float, ...]):
    """A scale's class edges, ascending — a tuple of floats — with ``upper``: per edge, whether a score equal
    to it belongs to the class above (True) or below (False, the default). ``==`` compares the edges only.

    Example::

        edges = get_scale("sf").class_edges()  # (180.0, 275.0, 430.0), upper (True, False, False)
        edges.classes([179.9, 180.0, 275.0, 430.0])  # array([0, 1, 1, 2])
    """

    upper: tuple[bool, ...]

    def __new__(cls, edges: Iterable[float], upper: Iterable[bool] = ()) -> ClassEdges:
        made = super().__new__(cls, (float(edge) for edge in edges))
        sides = tuple(bool(side) for side in upper) or (False,) * len(made)
        if len(sides) != len(made):
            raise ValueError(f"class edges: {len(sides)} sides for {len(made)} edges")
        made.upper = sides
        return made

    def __getnewargs__(self) -> tuple[tuple[float, ...], tuple[bool, ...]]:
        return tuple(self), self.upper

    def __repr__(self) -> str:
        return f"ClassEdges({tuple(self)!r}, upper={self.upper!r})"

    def classes(self, scores: npt.ArrayLike) -> np.ndarray:
        """Class index of each score, 0 for the lowest: #{edges below it} + #{``upper`` edges equal to it}."""
        values, edges = np.asarray(scores, dtype=float), np.asarray(self, dtype=float)
        upper = np.asarray(self.upper, dtype=bool)
        return np.searchsorted(edges[~upper], values, side="left") + np.searchsorted(
            edges[upper], values, side="right"
        )

    def sides(self) -> list[str]:
        """Per edge, the bin that a score equal to it belongs to: ``"upper"`` or ``"lower"``."""
        return ["upper" if side else "lower" for side in self.upper]


@dataclass(frozen=True)
class ScoreScale:
    """A health score's range, direction and change rule (exactly one of ``bins`` / ``threshold``).

    ``upper_edges``: the bin edges whose own value belongs to the bin above (default none: every edge value
    is in the bin below); each must be one of ``bins``.
    """

    name: str
    low: float
    high: float
    higher_is_better: bool = True
    bins: tuple[float, ...] | None = None
    threshold: float | None = None
    integer: bool = False
    unit: str = ""
    upper_edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if (self.bins is None) == (self.threshold is None):
            raise ConfigError(f"scale {self.name!r}: set exactly one of bins or threshold")
        if self.bins is not None and list(self.bins) != sorted(set(self.bins)):
            raise ConfigError(f"scale {self.name!r}: bins must be strictly ascending, got {list(self.bins)}")
        if not set(self.upper_edges) <= set(self.bins or ()):
            raise ConfigError(
                f"scale {self.name!r}: upper_edges {list(self.upper_edges)} must be bin edges, "
                f"bins are {list(self.bins or ())}"
            )
        if self.high <= self.low:
            raise ConfigError(f"scale {self.name!r}: high ({self.high}) must exceed low ({self.low})")

    def range_problem(self, score: float) -> str | None:
        """Why ``score`` is not a valid value of this scale, or None when it is."""
        if not np.isfinite(score):
            return f"score {score} is not finite"
        if not self.low <= score <= self.high:
            return f"score {score:g} is outside the {self.name} range [{self.low:g}, {self.high:g}]"
        if self.integer and score != round(score):
            return f"score {score:g} is not an integer ({self.name} scores are whole numbers)"
        return None

    def fit_warnings(self, scores: npt.ArrayLike) -> list[str]:
        """One line per sign that valid ``scores`` were read on the wrong scale: they span under
        :data:`NARROW_SPAN` of its range, or all sit in its lowest or highest tenth. Each line ends with the
        registered scales on which the scores would span at least twice that; scores that are all equal get
        one line that says so. Empty when they fit.
        """
        values = np.asarray(scores, dtype=float)
        if values.size < 2:
            return []
        low, high, width = float(values.min()), float(values.max()), self.high - self.low
        if low == high:  # no scale would fit better: the column itself is the problem
            return [
                f"every score is {low:g}: there is nothing to regress and no pair changes (a pretraining "
                "refuses it unless --loss vicreg); check the score column"
            ]
        span = (high - low) / width
        signs = []
        if span < NARROW_SPAN:
            signs.append(f"the scores ({low:g}–{high:g}) span {span:.0%} of the {self.name} range "
                         f"[{self.low:g}, {self.high:g}]: most pairs will look stable")  # fmt: skip
        if high <= self.low + width / 10 or low >= self.high - width / 10:
            end = "lowest" if high <= self.low + width / 10 else "highest"
            signs.append(f"every score sits in the {end} tenth of the {self.name} range")
        better = [
            name
            for name in available_scales()
            if name != self.name
            and (other := get_scale(name)).low <= low
            and high <= other.high
            and (high - low) / (other.high - other.low) >= 2 * NARROW_SPAN  # comfortably not narrow there
        ]
        hint = f"the scores fit {', '.join(better)} better" if better else "check --scale or data.scale"
        return [f"{sign}; is the scale right? ({hint}, or use a custom scale)" for sign in signs]

    def bin_of(self, scores: np.ndarray | float) -> np.ndarray:
        """Bin index of each score, 0 for the lowest bin (requires a binned scale); an edge value is in the
        bin below unless the edge is one of ``upper_edges``."""
        if self.bins is None:
            raise ConfigError(f"scale {self.name!r} has no bins (it uses a threshold)")
        return self.class_edges().classes(scores)

    def class_edges(self) -> ClassEdges:
        """The edges of the scale's score classes, ascending, with the side of each (:class:`ClassEdges`):
        the clinical bins (an edge value in the lower class unless it is one of ``upper_edges``), or for a
        threshold scale bands of width ``threshold`` from ``low`` (low + k·threshold < high, an edge value in
        the lower band), so two scores in one band differ by less than the threshold. Used as classes by
        ``supcon_bins``."""
        if self.bins is not None:
            return ClassEdges(self.bins, [edge in self.upper_edges for edge in self.bins])
        assert self.threshold is not None  # exactly one of bins / threshold (__post_init__)
        count = math.ceil((self.high - self.low) / self.threshold) - 1
        return ClassEdges(self.low + k * self.threshold for k in range(1, count + 1))

    def change_labels(self, earlier: npt.ArrayLike, later: npt.ArrayLike) -> np.ndarray:
        """Vectorised :class:`ChangeLabel` indices (int64) of ordered pairs (earlier, later)."""
        earlier = np.asarray(earlier, dtype=float)
        later = np.asarray(later, dtype=float)
        movement: npt.NDArray[np.float64]
        if self.bins is not None:
            movement = (self.bin_of(later) - self.bin_of(earlier)).astype(float)
        else:
            delta = later - earlier
            movement = np.where(np.abs(delta) < self.threshold, 0.0, delta)
        if not self.higher_is_better:
            movement = -movement
        return (np.sign(movement).astype(np.int64) + 1).astype(np.int64)

    def change_label(self, earlier: float, later: float) -> ChangeLabel:
        """The :class:`ChangeLabel` of one ordered pair."""
        return ChangeLabel(int(self.change_labels(earlier, later)))


_SCALES: dict[str, Callable[..., ScoreScale]] = {}


def register_scale(name: str) -> Callable[[Callable[..., ScoreScale]], Callable[..., ScoreScale]]:
    """Decorator: register a factory ``(**options) -> ScoreScale`` under ``name``."""

    def decorate(factory: Callable[..., ScoreScale]) -> Callable[..., ScoreScale]:
        if name in _SCALES:
            raise ValueError(f"score scale {name!r} is already registered")
        _SCALES[name] = factory
        return factory

    return decorate


def available_scales() -> list[str]:
    """Names accepted by :func:`get_scale` (plus ``custom`` through config)."""
    return sorted(_SCALES)


def get_scale(name: str, **options: float) -> ScoreScale:
    """Build a registered scale; ``options`` go to its factory (e.g. ``threshold=3`` for mmse)."""
    if name not in _SCALES:
        raise ConfigError(f"unknown score scale {name!r}; available: {', '.join(available_scales())}, custom")
    return _SCALES[name](**options)


@register_scale("sf")
def sf_ratio() -> ScoreScale:
    """S/F ratio, the paper's four bins "[> 430, 275–430, 180–275, < 180]" (Section 2.1): 180 belongs to
    "180–275" (an upper edge), 430 to "275–430"; 275, named by both middle bins, stays in the lower one."""
    return ScoreScale("sf", 0.0, 500.0, bins=(180.0, 275.0, 430.0), unit="S/F", upper_edges=(180.0,))


@register_scale("mmse")
def mmse(threshold: float = 2.0) -> ScoreScale:
    """MMSE 0–30, change by a point threshold on later − earlier (|Δ| < threshold → stable)."""
    return ScoreScale("mmse", low=0.0, high=30.0, threshold=threshold, integer=True, unit="points")


@register_scale("mmse_binned")
def mmse_binned() -> ScoreScale:
    """MMSE with the common severity bins ≤17 (moderate+), 18–23 (mild), 24–30 (normal)."""
    return ScoreScale("mmse_binned", low=0.0, high=30.0, bins=(17.0, 23.0), integer=True, unit="points")


def scale_from_config(data: object) -> ScoreScale:
    """The scale a :class:`learner.config.DataConfig` asks for (``custom`` reads ``custom_scale``)."""
    name: str = data.scale  # type: ignore[attr-defined]
    if name == "custom":
        custom = data.custom_scale  # type: ignore[attr-defined]
        if custom is None:
            raise ConfigError(
                "data.scale is 'custom' but data.custom_scale is not set; in YAML, e.g. "
                f"{CUSTOM_SCALE_EXAMPLE} "
                "(or --set data.custom_scale.low=0 --set data.custom_scale.high=3 "
                "--set data.custom_scale.threshold=1 --set data.custom_scale.higher_is_better=true)"
            )
        return ScoreScale(
            "custom",
            low=custom.low,
            high=custom.high,
            higher_is_better=custom.higher_is_better,
            bins=tuple(custom.bins) if custom.bins is not None else None,
            threshold=custom.threshold,
            integer=custom.integer,
            upper_edges=tuple(custom.upper_edges),
        )
    if name == "mmse":
        return get_scale("mmse", threshold=data.mmse_threshold)  # type: ignore[attr-defined]
    return get_scale(name)
