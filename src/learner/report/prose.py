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


def majority_statement(
    models: Mapping[str, tuple[float, float]],
    majority: ReferenceRow,
    others: Mapping[str, tuple[float, float]] | None = None,
) -> str:
    """Whether always answering the majority class beats the models on accuracy, why macro-F1 matters, and
    where each other answer to the same pairs stands against it.

    Values are compared as the tables print them (:func:`_printed`), so a row the table shows equal to the
    constant answer is called equal, never above or below it (the transductive answers often collapse onto
    the majority class and tie it exactly).

    Args:
        models: model label → (accuracy, macro-F1) as fractions (means over seeds in a grid).
        majority: the always-majority reference row of the same test pairs.
        others: the italic rows of the same table (the regressor's own answer, the classifier adapted to
            the test prior): label → (accuracy, macro-F1); compared in a sentence of their own.
    """
    beaten = [name for name, (acc, _) in models.items() if _side(acc, majority.accuracy) == "below"]
    answer = majority.answer.removeprefix("always ")
    head = f"Answering {answer!r} for every pair scores {_printed(majority.accuracy):.2f}% accuracy"
    if not beaten:
        return f"{head}; every model matches or beats that on accuracy." + _others_sentence(others, majority)
    which = (
        "every model"
        if len(beaten) == len(models)
        else f"{len(beaten)} of {len(models)} models ({', '.join(beaten)})"
    )
    return (
        f"{head}, above {which}. Accuracy rewards answering the commonest class; macro-F1 weighs each "
        f"class equally, and there the constant answer scores {_printed(majority.macro_f1):.2f}%, "
        f"{_f1_phrase({name: f1 for name, (_, f1) in models.items()}, majority.macro_f1)}."
        + _others_sentence(others, majority)
    )


def _printed(fraction: float) -> float:
    """A fraction as the tables print it, a percentage rounded to two decimals
    (:func:`learner.report.tables.percent`): a sentence compares what its reader sees."""
    return float(f"{100 * fraction:.2f}")


def _side(value: float, reference: float) -> str:
    """Where ``value`` stands against ``reference`` as printed: below, equal, above, or n/a (undefined)."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return "n/a"
    shown, against = _printed(value), _printed(reference)
    return "below" if shown < against else "above" if shown > against else "equal"


def _f1_phrase(f1: Mapping[str, float], reference: float) -> str:
    """The constant answer's macro-F1 against the models' (``below every model``, ``still above MSE and
    equal to MSE + CL``)."""
    sides = {name: _side(value, reference) for name, value in f1.items()}
    groups = {side: [name for name, s in sides.items() if s == side] for side in ("below", "equal", "above")}
    if len(groups["above"]) == len(f1):
        return "below every model"
    if len(groups["below"]) == len(f1):
        return "still above every model"
    words = {"below": "still above", "equal": "equal to", "above": "below"}  # the constant answer's side
    parts = [f"{words[side]} {', '.join(names)}" for side, names in groups.items() if names]
    unknown = [name for name, side in sides.items() if side == "n/a"]
    parts += [f"not comparable with {', '.join(unknown)} (n/a)"] if unknown else []
    return " and ".join(parts)


_GROUP_VERBS = {
    "below": ("scores below it", "score below it"),
    "equal": ("equals it", "equal it"),
    "above": ("scores above it", "score above it"),
    "n/a": ("has no value", "have no value"),
}


def _others_sentence(others: Mapping[str, tuple[float, float]] | None, majority: ReferenceRow) -> str:
    """The other answers against the constant one on each metric, naming every answer of a group unless
    the group is all of them (empty without other answers)."""
    if not others:
        return ""
    n = len(others)
    clauses = []
    for index, (metric, reference) in enumerate(
        (("accuracy", majority.accuracy), ("macro-F1", majority.macro_f1))
    ):
        sides = {name: _side(values[index], reference) for name, values in others.items()}
        parts = []
        for side, (one, many) in _GROUP_VERBS.items():
            names = [name for name, s in sides.items() if s == side]
            if len(names) == n > 1:
                parts.append(f"all {n} {many}")
            elif names:
                parts.append(f"{len(names)} {one if len(names) == 1 else many} ({'; '.join(names)})")
        clauses.append(
            f"on {metric} " + (", ".join(parts[:-1]) + " and " if len(parts) > 1 else "") + parts[-1]
        )
    noun = f"{n} other answers" if n > 1 else "other answer"
    return f" Of the {noun} to these pairs (not counted among the models), {clauses[0]}; {clauses[1]}."


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
