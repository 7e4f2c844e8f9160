"""The report of one classification run (``learner classify``, its ``metrics.json``): the test intra-patient
pairs against the reference rows, per-class scores and the confusion matrix, the encoder's regression quality
and the class balance of every pair set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from learner.data.scales import CLASS_NAMES
from learner.evaluation.baselines import reference_rows
from learner.evaluation.export import encoder_run_of
from learner.evaluation.metrics import small_sample_warnings
from learner.evaluation.regression_quality import regression_quality
from learner.experiments.results import json_number
from learner.layout import RunLayout
from learner.report.prose import chance_statement, class_mix, majority_statement
from learner.report.sections import (
    NUMBER,
    PAIR_SETS,
    Source,
    json_type,
    pair_balance_section,
    regression_section,
    require_fields,
    require_present_fields,
    results_file_error,
    warning_section,
)
from learner.report.tables import (
    ANSWER_LABELS,
    F1_NOTE,
    answers_note,
    interval,
    markdown_table,
    percent,
    reference_label,
)

KIND = "classification"
"""The kind of results file, as an error names it."""

ANSWER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "accuracy": NUMBER,
    "macro_f1": NUMBER,
    "weighted_f1": NUMBER,
    "ci.accuracy": list,
    "ci.macro_f1": list,
    "n": int,
    "n_patients": int,
}
"""The fields of one answer to the test pairs (the classifier's, or another) that its table row reads."""

FIELDS: dict[str, type | tuple[type, ...]] = {
    "manifest": str,
    "data_source": str,
    "head": str,
    "combine": str,
    "encoder_run": str,
    "pair_counts.test": dict,
    **{f"test.{key}": kind for key, kind in ANSWER_FIELDS.items()},
    "test.per_class": dict,
    "test.confusion": list,
}
"""The fields of a classification run's ``metrics.json`` that its report reads (checked before it does; the
shapes of its lists and the entries of its objects: :func:`check_classification_fields`)."""

PER_CLASS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "precision": NUMBER,
    "recall": NUMBER,
    "f1": NUMBER,
    "support": int,
}
"""The fields of one class's entry of ``test.per_class`` (a class without one has no row)."""

OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "test.n_boot": int,
    "test.ci_resamples": dict,
    "test.ci_resamples.macro_f1": int,
}
"""Fields the report reads where the file has them (the small-sample warnings), parents first."""

INTERVAL = "[low, high]"
"""What every entry of an answer's ``ci`` is: two numbers, each null where undefined."""


def classification_report(run_dir: Path, metrics: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data source and sections of one classification run (``learner classify``, its ``metrics.json``).

    Raises:
        RunDirError: the file lacks a field the report reads (an older learner's run, or an edited file).
    """
    check_classification_fields(RunLayout(run_dir).metrics, metrics)
    test = metrics["test"]
    test_counts = metrics["pair_counts"]["test"]
    references = reference_rows(test_counts)
    others = metrics.get("answers", {})  # the encoder alone, the classifier adapted to the test prior
    answers = {"classifier": test} | {f"*{ANSWER_LABELS[name]}*": others[name] for name in others}
    summary = markdown_table(
        ["", "Accuracy (95% CI)", "macro-F1 (95% CI)", "weighted-F1", "test pairs", "patients"],
        [
            *(
                [
                    name,
                    f"{percent(answer['accuracy'])} {interval(*answer['ci']['accuracy'])}",
                    f"{percent(answer['macro_f1'])} {interval(*answer['ci']['macro_f1'])}",
                    percent(answer["weighted_f1"]),
                    answer["n"],
                    answer["n_patients"],
                ]
                for name, answer in answers.items()
            ),
            *(
                [f"*{reference_label(name, row.answer)}*"]
                + [percent(value) for value in (row.accuracy, row.macro_f1, row.weighted_f1)]
                for name, row in references.items()
            ),
        ],
    )
    reading = f"{class_mix(test_counts)}. " + majority_statement(
        {"the classifier": (json_number(test["accuracy"]), json_number(test["macro_f1"]))},
        references["majority"],
        {
            ANSWER_LABELS[name]: (json_number(answer["accuracy"]), json_number(answer["macro_f1"]))
            for name, answer in others.items()
        },
    )
    reading += answers_note(list(others))
    per_class = markdown_table(
        ["class", "precision", "recall", "F1", "support"],
        [
            [name, percent(v["precision"]), *_recall_and_f1(v), v["support"]]
            for name in CLASS_NAMES
            if (v := test["per_class"].get(name))
        ],
    )
    confusion = markdown_table(
        ["true \\ predicted", *CLASS_NAMES],
        [[name, *row] for name, row in zip(CLASS_NAMES, test["confusion"], strict=True)],
    )
    warnings = small_sample_warnings(test, test_counts)
    ci = {name: (json_number(low), json_number(high)) for name, (low, high) in test["ci"].items()}
    chance = chance_statement("test pairs", [(ci["accuracy"], ci["macro_f1"], test_counts)])
    warnings += [chance] if chance else []
    sections = [warning_section(warnings)] if warnings else []
    sections.append(
        f"## Test intra-patient pairs ({metrics['head']}, {metrics['combine']})\n\n{summary}\n{reading}\n\n"
        f"{F1_NOTE}\n\n{per_class}\n{confusion}"
    )
    encoder_run = encoder_run_of(run_dir, metrics)
    quality = regression_quality(encoder_run) if RunLayout(encoder_run).metrics.is_file() else {}
    if "val_mae" in quality:  # a self-supervised encoder has no regression quality
        sections.append(
            "## Regression quality of the encoder\n\n"
            + regression_section([([metrics["encoder_run"]], quality)], ["encoder run"])
        )
    sections.append(
        "## Class balance of every pair set\n\n" + pair_balance_section([([], metrics["pair_counts"])], [])
    )
    return [Source("data", metrics["manifest"], metrics["data_source"])], sections


def _recall_and_f1(per_class: Mapping[str, Any]) -> list[str]:
    """A class's recall and F1 for the per-class table; a class with no test pair has neither (the metrics
    file stores 0, scikit-learn's value), and macro-F1 leaves it out."""
    if per_class["support"] == 0:
        return ["n/a", "n/a (no test pair)"]
    return [percent(per_class["recall"]), percent(per_class["f1"])]


def check_classification_fields(path: Path, metrics: Mapping[str, Any]) -> None:
    """Check every field of a classification run's ``metrics`` (read from ``path``) that its report reads,
    down to the numbers: :data:`FIELDS`, each answer's :data:`ANSWER_FIELDS` with every ``ci`` entry an
    :data:`INTERVAL`, the class counts of every pair set (each class a whole number, the test set's not
    all 0), each ``test.per_class`` entry's :data:`PER_CLASS_FIELDS`, a 3×3 confusion matrix of whole
    numbers (rows: the true class) and :data:`OPTIONAL_FIELDS`.

    Raises:
        RunDirError: the first field missing or of another type or shape, named by its key
            (:func:`~learner.report.sections.results_file_error`).
    """
    require_fields(path, KIND, metrics, FIELDS)
    answers = {"test": metrics["test"]}
    if "answers" in metrics:  # the other answers to the test pairs: none before learner wrote them
        require_fields(path, KIND, metrics, {"answers": dict})
        for name in metrics["answers"]:
            if name not in ANSWER_LABELS:
                raise results_file_error(path, KIND, f"unknown answer {name!r}")
            require_fields(path, KIND, metrics, {f"answers.{name}.{k}": t for k, t in ANSWER_FIELDS.items()})
            answers[f"answers.{name}"] = metrics["answers"][name]
    for where, answer in answers.items():  # the test answer's every ci entry is read; the others' two
        read = answer["ci"] if where == "test" else ("accuracy", "macro_f1")
        for metric in read:
            _require_list(path, f"{where}.ci.{metric}", answer["ci"][metric], 2, INTERVAL, NUMBER)
    for split in PAIR_SETS:
        if split in metrics["pair_counts"]:
            _require_counts(path, metrics, split)
    per_class = metrics["test"]["per_class"]
    fields = {
        f"test.per_class.{c}.{k}": t
        for c in CLASS_NAMES
        if c in per_class
        for k, t in PER_CLASS_FIELDS.items()
    }
    require_fields(path, KIND, metrics, fields)
    shape = f"{len(CLASS_NAMES)} rows of {len(CLASS_NAMES)} counts"
    rows = _require_list(path, "test.confusion", metrics["test"]["confusion"], len(CLASS_NAMES), shape, list)
    for i, row in enumerate(rows):
        _require_list(path, f"test.confusion[{i}]", row, len(CLASS_NAMES), f"{len(CLASS_NAMES)} counts", int)
    require_present_fields(path, KIND, metrics, OPTIONAL_FIELDS)


def _require_list(
    path: Path, dotted: str, value: Any, length: int, shape: str, item: type | tuple[type, ...]
) -> list[Any]:
    """``value`` (``dotted`` of the file at ``path``) as a list of ``length`` items of type ``item`` (an
    ``int`` a whole number; a bool neither a number nor a count).

    Raises:
        RunDirError: not a list, of another length, or an item of another type (named ``dotted[i]``).
    """
    if not isinstance(value, list):
        raise results_file_error(path, KIND, f"{dotted!r} is {json_type(value)}, not {shape}")
    if len(value) != length:
        raise results_file_error(
            path, KIND, f"{dotted!r} is a list of {len(value)} value{'s' * (len(value) != 1)}, not {shape}"
        )
    for i, entry in enumerate(value):
        if isinstance(entry, bool) or not isinstance(entry, item):
            whole = ", not a whole number" if item is int and isinstance(entry, float) else ""
            raise results_file_error(path, KIND, f"'{dotted}[{i}]' is {json_type(entry)}{whole}")
    return value


def _require_counts(path: Path, metrics: Mapping[str, Any], split: str) -> None:
    """The class counts of the ``split`` pairs (``pair_counts.test``): an object naming every class, each a
    whole number (they are summed, so an extra entry is one too); for the test pairs, not all 0.

    Raises:
        RunDirError: the first count missing or not a whole number, or a test set of no pair.
    """
    dotted = f"pair_counts.{split}"
    require_fields(
        path, KIND, metrics, {dotted: dict, **{f"{dotted}.{name}": object for name in CLASS_NAMES}}
    )
    counts = metrics["pair_counts"][split]
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int):
            whole = ", not a whole number" if isinstance(count, float) else ""
            raise results_file_error(path, KIND, f"'{dotted}.{name}' is {json_type(count)}{whole}")
    if split == "test" and not sum(counts.values()):
        raise results_file_error(path, KIND, f"{dotted!r} counts no pair")
