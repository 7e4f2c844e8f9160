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
from learner.report.sections import Source, pair_balance_section, regression_section, warning_section
from learner.report.tables import (
    ANSWER_LABELS,
    F1_NOTE,
    answers_note,
    interval,
    markdown_table,
    percent,
    reference_label,
)


def classification_report(run_dir: Path, metrics: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data source and sections of one classification run (``learner classify``, its ``metrics.json``)."""
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
                [f"*{reference_label(name, row.answer)}*", percent(row.accuracy), percent(row.macro_f1)]
                for name, row in references.items()
            ),
        ],
    )
    reading = f"{class_mix(test_counts)}. " + majority_statement(
        {"the classifier": (test["accuracy"], test["macro_f1"])}, references["majority"]
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
