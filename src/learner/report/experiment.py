"""The report of a Table 3, Table 4 (ablation) or sweep experiment, from its ``results.json`` (read back into
:data:`learner.experiments.results.Results`): the table and how to read it against the always-majority and
chance rows, each objective against the baseline loss, Fig. 1, every encoder's regression quality, the class
balance of every pair set, every cell, and small-sample warnings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learner.evaluation.baselines import ReferenceRow, majority_row
from learner.evaluation.metrics import PairedDifference, paired_difference_ci, small_sample_warnings
from learner.evaluation.reference_embeddings import RAW_PIXEL_SIDE
from learner.experiments.figure1 import FIGURE_TARGETS, REFERENCE_LABELS
from learner.experiments.results import (
    Cell,
    GridKey,
    PairAnswer,
    Results,
    Scalar,
    SummaryRow,
    Table3Results,
    json_number,
    load_results,
)
from learner.layout import RunLayout
from learner.losses.registry import loss_label
from learner.report.prose import (
    chance_statement,
    class_mix,
    comparison_verdict,
    majority_statement,
    zero_rho_statement,
)
from learner.report.sections import (
    ENCODER_KEYS,
    Source,
    key_names,
    metric_number,
    pair_balance_section,
    regression_section,
    unique_encoders,
    warning_section,
)
from learner.report.tables import (
    ANSWER_LABELS,
    ENCODER_ANSWERS,
    interval,
    interval_plain,
    markdown_table,
    percent,
    plain,
    write_experiment_table,
)

# what identifies a cell
CELL_KEYS: tuple[str, ...] = ("dataset", "setting", "backbone", "combine", "loss", "classifier", "seed")


def experiment_report(run_dir: Path, data: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data sources and sections of a Table 3, ablation or sweep experiment (its ``results.json``, read
    back into its typed results); writes the experiment's table (``table3.md``, ``table4.md`` or
    ``sweep.md``) beside it."""
    results = load_results(RunLayout(run_dir).results)
    sources = [Source(d.name, d.manifest, d.data_source, d.phantom) for d in results.datasets]
    table = write_experiment_table(run_dir, results)
    sections = [f"## {EXPERIMENT_TITLES[results.kind]}\n\n" + table + "\n" + _reading_the_table(results)]
    warnings = _cell_warnings(run_dir, results.cells) + _interval_warnings(results)
    if warnings:
        sections.insert(0, warning_section(warnings))
    sections.append(_majority_section(results))
    if isinstance(results, Table3Results):
        if results.comparisons:
            sections.append(_comparison_section(results))
        if results.figures:
            sections.append(_figure_section(results))
    encoders = unique_encoders(results.cells)
    encoder_keys = key_names(results.cells, ENCODER_KEYS)
    balance_keys = key_names(results.cells, ("dataset", "setting", "seed"))
    sections.append("## Regression quality of each encoder\n\n" + regression_section(encoders, encoder_keys))
    sections.append(
        "## Class balance of every pair set\n\n"
        + pair_balance_section(
            [([str(c.coordinates()[k]) for k in balance_keys], c.pair_counts) for c in results.cells],
            balance_keys,
        )
    )
    sections.append("## Every cell\n\n" + _cell_section(results.cells))
    return sources, sections


def _comparison_section(results: Table3Results) -> str:
    baseline = loss_label(results.baseline_loss)
    rows = [
        [
            dataset,
            loss_label(loss),
            _difference(diff["accuracy"]),
            _difference(diff["macro_f1"]),
            diff["accuracy"].n,
        ]
        for dataset in (d.name for d in results.datasets)
        for loss in results.losses
        if (diff := results.comparisons.get(dataset, {}).get(loss))
    ]
    header = [
        "Dataset",
        "Loss",
        f"Δ Accuracy vs {baseline} (95% CI)",
        f"Δ macro-F1 vs {baseline} (95% CI)",
        "seeds",
    ]
    note = (
        "Difference of the per-seed values (same seed = same split and pairs), mean and Student-t 95% "
        "interval over seeds, in percentage points; one seed gives no interval."
    )
    verdicts = [
        f"- {dataset}: {comparison_verdict(loss_label(loss), baseline, label, diff[metric])}"
        for dataset in (d.name for d in results.datasets)
        for loss in results.losses
        if (diff := results.comparisons.get(dataset, {}).get(loss))
        for metric, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
    ]
    return (
        f"## Each objective against {baseline}\n\n{note}\n\n"
        + markdown_table(header, rows)
        + "\n"
        + "\n".join(verdicts)
        + "\n"
    )


def _majority_section(results: Results) -> str:
    """Every row of the table and each of its other answers against always answering the majority class,
    paired by seed (a seed's cells share its test pairs): mean difference and Student-t interval over seeds,
    in percentage points (:func:`learner.evaluation.metrics.paired_difference_ci`)."""
    rows = []
    for dataset in (d.name for d in results.datasets):
        groups: dict[GridKey, list[Cell]] = defaultdict(list)
        for cell in results.cells:
            if cell.key.dataset == dataset and any(n > 0 for n in cell.pair_counts["test"].values()):
                groups[cell.key].append(cell)
        for key, members in groups.items():
            majority = [majority_row(c.pair_counts["test"]) for c in members]
            answers: dict[str, Sequence[Cell | PairAnswer]] = {"pair classifier": members}
            answers |= {
                label: [c.answers[name] for c in members]
                for name, label in ANSWER_LABELS.items()
                if all(name in c.answers for c in members)
            }
            for label, values in answers.items():
                accuracy, f1 = (
                    paired_difference_ci(
                        np.array([getattr(v, metric) for v in values]),
                        np.array([getattr(m, metric) for m in majority]),
                    )
                    for metric in ("accuracy", "macro_f1")
                )
                rows.append(
                    [
                        dataset,
                        _row_label(key.axes()),
                        label,
                        _difference(accuracy),
                        _difference(f1),
                        len(values),
                    ]
                )
    header = ["Dataset", "Row", "Answer", "Δ Accuracy (95% CI)", "Δ macro-F1 (95% CI)", "seeds"]
    note = (
        "Each answer minus always answering the test pairs' majority class, seed by seed (a seed's cells "
        "share their test pairs), mean and Student-t 95% interval over seeds, in percentage points; one "
        "seed gives no interval. An answer helps where its macro-F1 interval lies above 0 while its accuracy "
        "stays near the majority's."
    )
    return "## Each answer against always-majority\n\n" + note + "\n\n" + markdown_table(header, rows)


def _reading_the_table(results: Results) -> str:
    """Per dataset: the test pairs' class mix and whether always answering the majority class beats the
    models on accuracy (generated from the numbers, see :mod:`learner.report.prose`). Rows whose settings
    give other test pairs (a sweep's ``data.pairs`` or ``data.split``) are read against their own pairs'
    majority, one line per set of test pairs."""
    lines = []
    for dataset in (d.name for d in results.datasets):
        by_test_set: dict[str, tuple[dict[int, dict[str, int]], list[SummaryRow]]] = {}
        for row in (r for r in results.summary if r.key.dataset == dataset):
            counts = {c.seed: c.pair_counts["test"] for c in results.cells if c.key == row.key}
            counts = {seed: by_class for seed, by_class in counts.items() if sum(by_class.values())}
            if counts:
                by_test_set.setdefault(json.dumps(counts, sort_keys=True), (counts, []))[1].append(row)
        for counts, rows in by_test_set.values():
            seed = min(counts)
            models = {
                _row_label(row.key.axes()): (row.stats["accuracy"].mean, row.stats["macro_f1"].mean)
                for row in rows
            }
            where = dataset if len(by_test_set) == 1 else f"{dataset}, {', '.join(models)}"
            majority = _mean_majority(list(counts.values()))
            statement = majority_statement(models, majority, _other_answers(rows))
            lines.append(f"- {where}: {class_mix(counts[seed])} (seed {seed}). {statement}")
    return "\n".join(lines) + "\n"


def _other_answers(rows: Sequence[SummaryRow]) -> dict[str, tuple[float, float]]:
    """The other answers of these summary rows, labelled as the table labels them: an answer of the encoder
    alone once per encoder (every classifier variant shares it), any other once per row."""
    answers = {}
    for name, label in ANSWER_LABELS.items():
        for row in rows:
            if name in row.answers:
                axes = row.key.axes()
                if name in ENCODER_ANSWERS:
                    axes = {k: v for k, v in axes.items() if k not in ("combine", "classifier")}
                stats = row.answers[name]
                answers[f"{label}, {_row_label(axes)}"] = (stats["accuracy"].mean, stats["macro_f1"].mean)
    return answers


def _row_label(key: Mapping[str, str]) -> str:
    """A summary row's name in prose: its grid axes but the dataset, the loss in the paper's spelling."""
    return "/".join(loss_label(v) if k == "loss" else v for k, v in key.items() if k != "dataset")


def _mean_majority(counts_by_seed: Sequence[Mapping[str, int]]) -> ReferenceRow:
    """The always-majority row averaged over seeds (its answer: the seeds' answers)."""
    rows = [majority_row(counts) for counts in counts_by_seed]
    answers = sorted({row.answer for row in rows})
    return ReferenceRow(
        sum(r.accuracy for r in rows) / len(rows),
        sum(r.macro_f1 for r in rows) / len(rows),
        sum(r.weighted_f1 for r in rows) / len(rows),
        answers[0] if len(answers) == 1 else "always the majority class",
    )


def _cell_warnings(run_dir: Path, cells: Sequence[Cell]) -> list[str]:
    """Small-sample warnings of every distinct test set (dataset, seed) of a grid, from each cell's
    classifier ``metrics.json`` (its number of test patients)."""
    warnings: dict[str, None] = {}
    for cell in cells:
        metrics_file = RunLayout(run_dir / cell.classification_folder).metrics
        if not metrics_file.is_file():
            continue
        test = json.loads(metrics_file.read_text(encoding="utf-8"))["test"]
        where = f"{cell.key.dataset}, seed {cell.seed}"
        for text in small_sample_warnings(test, cell.pair_counts["test"]):
            warnings[f"{where}: {text}"] = None
    return list(warnings)


def _interval_warnings(results: Results) -> list[str]:
    """Per dataset, in words: every classifier interval includes chance, every Fig. 1 ρ interval includes 0
    (:func:`chance_statement`, :func:`zero_rho_statement`), whatever the test size."""
    warnings = []
    for dataset in (d.name for d in results.datasets):
        cells = [c for c in results.cells if c.key.dataset == dataset]
        chance = chance_statement(
            dataset, [(c.ci["accuracy"], c.ci["macro_f1"], c.pair_counts["test"]) for c in cells]
        )
        figures = results.figures.get(dataset, {}) if isinstance(results, Table3Results) else {}
        rho = [
            zero_rho_statement(
                f"{dataset} ({FIGURE_TARGETS[target]})",
                [
                    (json_number(metric_number(m["ci_low"])), json_number(metric_number(m["ci_high"])))
                    for m in figure.panels.values()
                ],
            )
            for target, figure in figures.items()
        ]
        warnings += [text for text in (chance, *rho) if text is not None]
    return warnings


def _difference(diff: PairedDifference) -> str:
    """A paired difference of fractions: mean and interval, in percentage points."""
    return f"{percent(diff.mean)} {interval(diff.low, diff.high)}"


def _figure_section(results: Table3Results) -> str:
    parts = [
        "## Fig. 1: embedding distance against change\n\nEach point is a test intra-patient pair: the cosine "
        "distance between the two scans' embeddings against the absolute change. The paper expects the "
        "distance to grow with the change, more so with contrastive pretraining (larger Spearman ρ). The "
        "rows in italics are references on the same pairs that had no pretraining: the encoder's "
        "architecture randomly initialised (the seed's) and frozen, and the raw pixels "
        f"(every frame area-averaged to at most {RAW_PIXEL_SIDE} px a side); an objective's ρ means "
        "something where it clears them.\n"
    ]
    for dataset in (d.name for d in results.datasets):
        figures = results.figures.get(dataset, {})
        for target, title in FIGURE_TARGETS.items():
            figure = figures.get(target)
            if figure is None:
                continue
            rows = [
                _rho_row(loss_label(loss), m) for loss in results.losses if (m := figure.panels.get(loss))
            ]
            rows += [_rho_row(f"*{REFERENCE_LABELS[name]}*", m) for name, m in figure.references.items()]
            table = markdown_table(["Loss", "Spearman ρ", "95% CI (patients)", "pairs", "patients"], rows)
            parts.append(
                f"### {dataset}: distance vs {title} (seed {figure.seed})\n\n"
                f"![Fig. 1 {dataset} {target}]({figure.png})\n\n{table}"
            )
    return "\n".join(parts)


def _rho_row(label: str, m: Mapping[str, Scalar]) -> list[object]:
    """A Fig. 1 table row: Spearman ρ, its patient-bootstrap interval, pairs and patients."""
    return [
        label,
        plain(metric_number(m["spearman_rho"])),
        interval_plain(metric_number(m["ci_low"]), metric_number(m["ci_high"])),
        m["n_pairs"],
        m["n_patients"],
    ]


def _cell_section(cells: Sequence[Cell]) -> str:
    keys = key_names(cells, CELL_KEYS)
    rows = [
        [
            *(loss_label(c.key.loss) if k == "loss" else c.coordinates()[k] for k in keys),
            f"{percent(c.accuracy)} {interval(*c.ci['accuracy'])}",
            f"{percent(c.macro_f1)} {interval(*c.ci['macro_f1'])}",
            percent(c.weighted_f1),
            c.n_test_pairs,
        ]
        for c in cells
    ]
    header = [*keys, "Accuracy (95% CI)", "macro-F1 (95% CI)", "weighted-F1", "test pairs"]
    note = "Intervals: 95% percentile bootstrap over test patients (all pairs of a drawn patient kept)."
    return f"{note}\n\n" + markdown_table(header, rows)


EXPERIMENT_TITLES: dict[str, str] = {"table3": "Table 3", "ablation": "Table 4 (ablation)", "sweep": "Sweep"}
"""Experiment kind → the title of its table in the report."""
