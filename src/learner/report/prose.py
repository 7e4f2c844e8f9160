"""Sentences of the reports and the terminal, generated from the numbers they describe.

Nothing here is a fixed claim about the data: every sentence is chosen by a comparison of measured values
(a class mix, an interval against 0, a reference row against the models), so it cannot be false for the
run it describes. Used by :mod:`learner.report.tables`, :mod:`learner.report` and the CLI.

Example::

    comparison_verdict("MSE + CL", "MSE", "macro-F1", PairedDifference(-0.047, -0.09, 0.01, 0.02, 3))
    # 'MSE + CL did not beat MSE on macro-F1: Δ −4.70 points, 95% CI [−9.00, 1.00] includes 0'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from learner.evaluation.baselines import ReferenceRow, chance_row
from learner.evaluation.metrics import PairedDifference


def points(value: float) -> str:
    """A difference of fractions in signed percentage points, with a real minus sign (``−4.70``)."""
    return f"{100 * value:+.2f}".replace("-", "−")


def class_mix(counts: Mapping[str, int]) -> str:
    """The test pairs' class mix in words, largest class first (``42 of 57 test pairs (73.7%) are
    stable, 10 improved, 5 deteriorated``)."""
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    (top, n_top), rest = ranked[0], ranked[1:]
    tail = ", ".join(f"{n} {name}" for name, n in rest)
    return f"{n_top} of {total} test pairs ({100 * n_top / total:.1f}%) are {top}" + (
        f", {tail}" if tail else ""
    )


def comparison_verdict(label: str, baseline: str, metric: str, diff: PairedDifference) -> str:
    """One line: did ``label`` beat ``baseline`` on ``metric``, from the paired difference over seeds."""
    delta = f"Δ {points(diff.mean)} points"
    if diff.n < 2 or not (math.isfinite(diff.low) and math.isfinite(diff.high)) or diff.low == diff.high:
        return f"{label} vs {baseline} on {metric}: {delta} from {diff.n} seed(s), no interval: cannot tell"
    ci = f"95% CI [{points(diff.low)}, {points(diff.high)}]"
    if diff.low > 0:
        return f"{label} beat {baseline} on {metric}: {delta}, {ci} excludes 0"
    if diff.high < 0:
        return f"{label} was worse than {baseline} on {metric}: {delta}, {ci} excludes 0"
    return f"{label} did not beat {baseline} on {metric}: {delta}, {ci} includes 0"


def majority_statement(models: Mapping[str, tuple[float, float]], majority: ReferenceRow) -> str:
    """Whether always answering the majority class beats the models on accuracy, and why macro-F1 matters.

    Args:
        models: model label → (accuracy, macro-F1) as fractions (means over seeds in a grid).
        majority: the always-majority reference row of the same test pairs.
    """
    beaten = [name for name, (acc, _) in models.items() if majority.accuracy > acc]
    f1_beaten = [name for name, (_, f1) in models.items() if majority.macro_f1 > f1]
    answer = majority.answer.removeprefix("always ")
    head = f"Answering {answer!r} for every pair scores {100 * majority.accuracy:.2f}% accuracy"
    if not beaten:
        return f"{head}; every model matches or beats that on accuracy."
    which = (
        "every model"
        if len(beaten) == len(models)
        else f"{len(beaten)} of {len(models)} models ({', '.join(beaten)})"
    )
    f1_part = (
        "below every model"
        if not f1_beaten
        else "still above every model"
        if len(f1_beaten) == len(models)
        else f"still above {', '.join(f1_beaten)}"
    )
    return (
        f"{head}, above {which}. Accuracy rewards answering the commonest class; macro-F1 weighs each "
        f"class equally, and there the constant answer scores {100 * majority.macro_f1:.2f}%, {f1_part}."
    )


Interval = tuple[float, float]


def chance_statement(where: str, cells: Sequence[tuple[Interval, Interval, Mapping[str, int]]]) -> str | None:
    """One warning when *every* classifier result of a test set is indistinguishable from guessing: each
    (accuracy interval, macro-F1 interval, test class counts) includes the chance row's accuracy and
    macro-F1 (:func:`learner.evaluation.baselines.chance_row`), whatever the test size. None otherwise, or
    when a result has no interval (no bootstrap)."""
    if not cells or not all(_finite(acc) and _finite(f1) for acc, f1, _ in cells):
        return None
    if all(
        _includes(acc, chance_row(c).accuracy) and _includes(f1, chance_row(c).macro_f1)
        for acc, f1, c in cells
    ):
        return (
            f"{where}: every 95% interval of accuracy and of macro-F1 includes chance (uniform answers): on "
            "this test set no classifier here can be told from guessing"
        )
    return None


def zero_rho_statement(where: str, intervals: Sequence[Interval]) -> str | None:
    """One warning when every Fig. 1 ρ interval includes 0 (no encoder's distance is shown to follow the
    change); None otherwise, or when an interval is undefined."""
    if intervals and all(_finite(ci) for ci in intervals) and all(_includes(ci, 0.0) for ci in intervals):
        return (
            f"{where}: every Fig. 1 ρ interval includes 0: no encoder's embedding distance is shown to "
            "follow the change"
        )
    return None


def _finite(interval: Interval) -> bool:
    return all(value is not None and math.isfinite(value) for value in interval)


def _includes(interval: Interval, value: float) -> bool:
    return interval[0] <= value <= interval[1]
