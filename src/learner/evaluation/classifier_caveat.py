"""How far to trust a classifier's answer: one line with its own test result beside what needs no classifier.

``learner predict`` prints it with every prediction (:func:`classifier_caveat`): the classification run's
``metrics.json`` gives the classifier's accuracy and macro-F1 on the test intra-patient pairs, and the same
pairs scored by always the majority class, uniform chance and, where recorded, the encoder's own
predicted scores (:mod:`learner.evaluation.baselines`, :mod:`learner.evaluation.score_change`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from learner.evaluation.baselines import reference_rows
from learner.evaluation.predict import classification_metrics


def classifier_caveat(classifier: str | os.PathLike[str]) -> str | None:
    """One line with the classifier's own test result (its run's ``metrics.json``) beside what needs no
    classifier on the same test pairs (always the majority class, uniform chance, and the encoder's own
    predicted scores when recorded), saying plainly what the classifier is below: how far to trust its
    predictions. None when the classifier folder has no run around it."""
    found = classification_metrics(classifier)
    if found is None:
        return None
    try:
        return _caveat(*found)
    except (KeyError, TypeError, ValueError, AttributeError):  # a malformed metrics.json: no caveat to give
        return None


def _caveat(metrics_file: Path, metrics: dict[str, Any]) -> str:
    test, counts = metrics["test"], metrics["pair_counts"]["test"]
    answers = {row.answer: (row.accuracy, row.macro_f1) for row in reference_rows(counts).values()}
    own = {
        "delta_score": "the encoder's own predicted scores",
        "delta_score_margin": "those with a val margin",
        "delta_score_calibrated": "those through the val-calibrated change model",
    }
    for name, answer in own.items():
        if name in metrics.get("answers", {}):
            answers[answer] = (metrics["answers"][name]["accuracy"], metrics["answers"][name]["macro_f1"])
    scored = "; ".join(f"{name} {acc:.1%} / {f1:.1%}" for name, (acc, f1) in answers.items())
    below = []
    for name, (acc, f1) in answers.items():
        metrics_below = [
            m
            for m, theirs, ours in (("accuracy", acc, test["accuracy"]), ("macro-F1", f1, test["macro_f1"]))
            if ours < theirs
        ]
        if metrics_below:
            below.append(f"{name} ({' and '.join(metrics_below)})")
    verdict = f"it is below {', '.join(below)}" if below else "it beats every one of them"
    return (
        f"caveat: this classifier scored accuracy {test['accuracy']:.1%}, macro-F1 {test['macro_f1']:.1%} "
        f"on {test['n']} test pairs of {test['n_patients']} patients ({metrics_file}); without it, "
        f"accuracy / macro-F1 on those pairs: {scored}; {verdict}."
    )
