"""The paper's tables in Markdown (Section 3): Table 3 (loss × dataset), Table 4 (the ablation), the sweep.

:func:`write_experiment_table` renders an experiment's typed results into ``table3.md``, ``table4.md`` or
``sweep.md`` when its report is written, and the CLI prints the same text; the number formatters here are
shared with the rest of the report and the CLI.

Tables 3 and 4 show two F1s (see :data:`F1_NOTE`). **weighted-F1** (each class's F1 weighted by its test
pairs, scikit-learn's ``average="weighted"``) is the paper's "F1": Table 4's rows where a model answers one
class for all 236 LUS test pairs (Section 2.1) read accuracy/F1 28.81/12.89, 30.51/14.26 and 40.68/23.52,
and those accuracies make classes of 68, 72 and 96 pairs, on which a constant answer scores exactly that
weighted-F1 (its macro-F1 would be 14.91, 15.58 and 19.28). **macro-F1** (the unweighted mean over the
classes that occur) stays the project's headline, first of the two: on test pairs dominated by "stable" it
does not reward answering the commonest class, which weighted-F1, like accuracy, does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from learner import atomic
from learner.evaluation.baselines import REFERENCES, reference_rows
from learner.experiments.results import (
    AblationResults,
    Cell,
    MeanStd,
    Results,
    SummaryRow,
    SweepResults,
    Table3Results,
)
from learner.layout import RunLayout
from learner.losses.registry import loss_label

F1_NOTE = (
    "macro-F1 is the unweighted mean of the per-class F1 of deteriorated, stable and improved (the classes "
    "that occur), this project's headline: unlike accuracy and weighted-F1 it does not reward answering the "
    "commonest class. weighted-F1 weighs each class's F1 by its number of test pairs; it is the paper's "
    '"F1", the one to compare with its Tables 3 and 4: its Table 4 rows that answer one class for all '
    "236 LUS test pairs (accuracy 28.81, 30.51, 40.68: classes of 68, 72, 96 pairs) read F1 12.89, 14.26, "
    "23.52, that constant answer's weighted-F1 (its macro-F1 is 14.91, 15.58, 19.28). The reference rows "
    "(in italics) need no model: always answering the test set's majority class, and answering uniformly at "
    "random (expected values)."
)

TABLE_METRICS: dict[str, str] = {"accuracy": "Accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}
"""The metrics of Tables 3 and 4 (of :data:`learner.experiments.results.METRICS`) → their column labels,
in column order: macro-F1, the headline, before weighted-F1, the paper's F1."""


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals, like the paper's tables ('n/a' when undefined)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def format_mean_std(stats: MeanStd, n: int) -> str:
    """Mean and std over ``n`` seeds of a fraction → ``"72.46 ± 1.30"`` (percent); the spread is 'n/a'
    when it is degenerate (one seed, or zero variance), never a misleading ``± 0.00``."""
    spread = "n/a" if n < 2 or stats.std < 1e-12 else percent(stats.std)  # float noise of equal values
    return f"{percent(stats.mean)} ± {spread}"


def interval(low: float | None, high: float | None) -> str:
    """A fraction interval as ``[a, b]`` in percent, or 'n/a' when undefined or degenerate (``low ==
    high``: one patient, or no variation over the resamples)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or low == high:
        return "n/a"
    return f"[{percent(low)}, {percent(high)}]"


def plain(value: float | None) -> str:
    """A number with three decimals, or 'n/a' when undefined (stored as null, or NaN)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def interval_plain(low: float | None, high: float | None) -> str:
    """An interval of plain numbers (not fractions) as ``[a, b]``, or 'n/a'."""
    return "n/a" if "n/a" in (plain(low), plain(high)) else f"[{plain(low)}, {plain(high)}]"


REFERENCE_LABELS: dict[str, str] = {"majority": "always-majority", "chance": "chance (uniform)"}
"""Reference row (:data:`learner.evaluation.baselines.REFERENCES`) → its label in the tables."""


def reference_label(name: str, answer: str) -> str:
    """A reference row's label; the majority row names its class: "always-majority (stable)"."""
    label = REFERENCE_LABELS[name]
    return f"{label} ({answer.removeprefix('always ')})" if name == "majority" else label


def test_counts_by_seed(cells: Sequence[Cell], dataset: str) -> dict[int, dict[str, int]]:
    """Seed → the test pairs' class counts of one dataset (every cell of a seed shares its split and
    pairs)."""
    return {c.seed: c.pair_counts["test"] for c in cells if c.key.dataset == dataset}


def reference_cells(counts_by_seed: dict[int, dict[str, int]]) -> dict[str, tuple[str, list[str]]]:
    """Reference name → (its label, [accuracy, macro-F1, weighted-F1] as mean ± std over seeds), for a table
    row; empty without test pairs."""
    per_seed = [reference_rows(counts) for counts in counts_by_seed.values() if sum(counts.values())]
    if not per_seed:
        return {}
    n = len(per_seed)
    out = {}
    for name in REFERENCES:
        answers = sorted({rows[name].answer for rows in per_seed})
        label = REFERENCE_LABELS[name]
        if name == "majority":
            label += f" ({answers[0].removeprefix('always ')})" if len(answers) == 1 else " (per seed)"
        values = [
            format_mean_std(MeanStd.over([getattr(rows[name], metric) for rows in per_seed]), n)
            for metric in TABLE_METRICS
        ]
        out[name] = (f"*{label}*", values)
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_table3(results: Table3Results) -> str:
    """Table 3's layout: one row per loss, Accuracy, macro-F1 and weighted-F1 (the paper's F1) per dataset,
    mean ± std over seeds (%)."""
    datasets = [d.name for d in results.datasets]
    summary = {(row.key.dataset, row.key.loss): row for row in results.summary}
    header = ["Loss"] + [f"{d} {label}" for d in datasets for label in TABLE_METRICS.values()]
    rows = []
    for loss in results.losses:
        cells = [loss_label(loss)]
        for dataset in datasets:
            row = summary.get((dataset, loss))
            stats = [format_mean_std(row.stats[m], row.n_seeds) for m in TABLE_METRICS] if row else []
            cells += stats or ["—"] * len(TABLE_METRICS)
        rows.append(cells)
    answered = []
    for answer in ANSWER_LABELS:  # other answers to the same pairs, one row per encoder, when cells have them
        for loss in results.losses:
            answers = [summary.get((dataset, loss)) for dataset in datasets]
            if any(
                row is not None and answer in row.answers for row in answers
            ):  # "—" where a dataset lacks it
                rows.append(
                    [f"*{ANSWER_LABELS[answer]}, {loss_label(loss)}*", *_answer_cells(answers, answer)]
                )
                answered.append(answer)
    references = {d: reference_cells(test_counts_by_seed(results.cells, d)) for d in datasets}
    for name in REFERENCES if all(references.values()) else ():
        labels = {references[d][name][0] for d in datasets}
        label = labels.pop() if len(labels) == 1 else f"*{REFERENCE_LABELS[name]}*"
        rows.append([label] + [value for d in datasets for value in references[d][name][1]])
    seeds = len(results.seeds)
    caption = (
        "Health-change classification on the test intra-patient pairs: accuracy, macro-F1 and weighted-F1 in "
        f"%, mean ± std over {seeds} seed{'s' if seeds != 1 else ''}. {F1_NOTE}{DASH_NOTE}"
        f"{answers_note(answered)}\n"
    )
    return markdown_table(header, rows) + "\n" + caption


ANSWER_LABELS: dict[str, str] = {
    "delta_score": "Δ predicted score",
    "delta_score_margin": "Δ predicted score, val margin",
    "delta_score_calibrated": "Δ predicted score, calibrated",
    "classifier_em": "classifier + EM test prior (transductive)",
    "classifier_bbse": "classifier + BBSE test prior (transductive)",
}
"""Each answer of :data:`learner.experiments.answers.ANSWERS` → its row label in the tables."""

ANSWER_NOTES: dict[str, str] = {
    "delta_score": "the pretrained encoder's regression head answers by itself, its predicted scores of "
    "the two scans labelled by the scale's change rule (no pair classifier); a pair classifier on that "
    "encoder should beat it",
    "delta_score_margin": "the same, but a pair is stable unless its predicted scores differ by at least a "
    "margin chosen for the best macro-F1 on the val pairs",
    "delta_score_calibrated": "the most probable label given the two predicted scores, under a level "
    "model fitted on the val scans and a change model fitted on the val patients' own visit pairs (a "
    "predicted change is shrunk towards the true one; shown where val patients have repeat visits)",
    "classifier_em": "the pair classifier's probabilities re-weighted to the test prior that EM estimates "
    "from the unlabelled test pairs (Saerens et al. 2002)",
    "classifier_bbse": "the same with the test prior of black-box shift estimation (Lipton et al. 2018); "
    "*transductive* rows look at the test pairs' embeddings (never their labels)",
}
"""What each answer's rows mean, for the tables' captions."""

ENCODER_ANSWERS: tuple[str, ...] = ("delta_score", "delta_score_margin", "delta_score_calibrated")
"""Answers of the encoder alone (one per encoder, whatever the classifier); the others adapt a classifier."""


def answers_note(answered: Sequence[str]) -> str:
    """The caption sentences of the answer rows a table shows (empty when it shows none)."""
    shown = [name for name in ANSWER_LABELS if name in answered]
    return "".join(f" *{ANSWER_LABELS[name]}*: {ANSWER_NOTES[name]}." for name in shown)


DASH_NOTE = ' "—": no such value for that row (a dataset without that answer, or a metric its results lack).'
"""The caption sentence of the "—" cells of Tables 3 and 4."""


def _answer_cells(rows: Sequence[SummaryRow | None], answer: str) -> list[str]:
    """Accuracy, macro-F1 and weighted-F1 cells of one answer of each summary row (mean ± std, %; "—" where
    a row lacks the answer, or the answer lacks the metric: a results file written without it)."""
    cells = []
    for row in rows:
        stats = row.answers.get(answer, {}) if row is not None else {}
        n_seeds = row.n_seeds if row is not None else 0
        cells += [format_mean_std(stats[m], n_seeds) if m in stats else "—" for m in TABLE_METRICS]
    return cells


def render_ablation(results: AblationResults) -> str:
    """Table 4's layout: Backbone | Combine | Loss | Classifier | Accuracy | macro-F1 | weighted-F1 (the
    paper's F1), mean ± std (%)."""
    parts, answered = [], []
    for dataset in results.datasets:
        summary = [row for row in results.summary if row.key.dataset == dataset.name]
        rows = [
            [
                row.key.backbone,
                row.key.combine,
                loss_label(row.key.loss),
                row.key.classifier,
                *(format_mean_std(row.stats[m], row.n_seeds) for m in TABLE_METRICS),
            ]
            for row in summary
        ]
        for answer, label in ANSWER_LABELS.items():
            if answer in ENCODER_ANSWERS:  # one row per encoder: every classifier variant shares it
                encoders: dict[tuple[str | None, str], SummaryRow] = {}
                for row in summary:
                    if answer in row.answers:
                        encoders.setdefault((row.key.backbone, row.key.loss), row)
                shown: list[tuple[str | None, str | None, str, str, SummaryRow]] = [
                    (b, "", loss, f"*{label}*", row) for (b, loss), row in encoders.items()
                ]
            else:  # one row per classifier variant
                shown = [
                    (row.key.backbone, row.key.combine, row.key.loss, f"{row.key.classifier} *{label}*", row)
                    for row in summary
                    if answer in row.answers
                ]
            rows += [
                [backbone, combine, loss_label(loss), name, *_answer_cells([row], answer)]
                for backbone, combine, loss, name, row in shown
            ]
            answered += [answer] if shown else []
        references = reference_cells(test_counts_by_seed(results.cells, dataset.name))
        rows += [[label, "", "", "", *values] for label, values in references.values()]
        header = ["Backbone", "Combine", "Loss", "Classifier", *TABLE_METRICS.values()]
        parts.append(f"**{dataset.name}**\n\n" + markdown_table(header, rows))
    seeds = len(results.seeds)
    note = f"{F1_NOTE}{DASH_NOTE}{answers_note(answered)}"
    return "\n".join(parts) + f"\nMean ± std over {seeds} seed(s), in %. {note}\n"


SWEEP_TARGETS: dict[str, str] = {"latent": r"ρ vs \|Δ latent\|", "score": r"ρ vs \|Δ score\|"}
"""Fig. 1 target → its sweep column, latent first (the ground truth, when the cohort is a phantom)."""


def render_sweep(results: SweepResults) -> str:
    """The sweep's table, one block per dataset: setting × loss with Fig. 1's ρ (mean over seeds, the lowest
    seed's 95% patient-bootstrap CI), intra-patient macro-F1 (%), val MAE against the predict-the-mean
    baseline, and the measured pretraining wall time; then the settings and what each column means."""
    sweep = results.sweep
    parts = []
    for dataset in results.datasets:
        rows = [r for r in sweep.rows if r.key.dataset == dataset.name]
        targets = [t for t in SWEEP_TARGETS if any(t in r.rho for r in rows)]
        header = ["Setting", "Loss", *(SWEEP_TARGETS[t] for t in targets)]
        header += [
            "macro-F1 (%)",
            f"{ANSWER_LABELS['delta_score']} F1 (%)",
            "val MAE",
            "baseline MAE",
            "MAE −%",
            "pretrain s",
        ]
        table = []
        for row in rows:
            rhos = [
                f"{plain(row.rho[t].mean)} {interval_plain(*row.rho_ci[t])}" if t in row.rho else "—"
                for t in targets
            ]
            seconds = "n/a" if row.pretrain_seconds is None else f"{row.pretrain_seconds.mean:.1f}"
            if row.encoders_of is not None:  # no pretraining of its own: the encoders (and time) of another
                seconds = f"`{row.encoders_of}`'s"
            table.append(
                [
                    row.key.setting,
                    loss_label(row.key.loss),
                    *rhos,
                    format_mean_std(row.macro_f1, row.n_seeds),
                    "n/a" if row.delta_macro_f1 is None else format_mean_std(row.delta_macro_f1, row.n_seeds),
                    f"{row.val_mae.mean:.3f}",
                    f"{row.baseline_mae.mean:.3f}",
                    percent(row.mae_reduction),
                    seconds + ("†" if row.resumed else ""),
                ]
            )
        version = (dataset.phantom or {}).get("version")
        source = f"{dataset.data_source}" + (f", generator version {version}" if version is not None else "")
        parts.append(f"**{dataset.name}** ({source})\n\n" + markdown_table(header, table))
    settings = "\n".join(
        f"- `{name}`: " + (", ".join(f"`{k}={v}`" for k, v in keys.items()) or "the base config")
        for name, keys in sweep.settings.items()
    )
    seeds = len(results.seeds)
    caption = (
        f"Over {seeds} seed{'s' if seeds != 1 else ''} ({', '.join(map(str, results.seeds))}). ρ: Spearman "
        "correlation between the cosine distance of a test intra-patient pair's embeddings and its change "
        "(Fig. 1), mean over seeds, with the 95% patient-bootstrap interval of the lowest seed. macro-F1: "
        "the health-change classifier on the test intra-patient pairs, mean ± std; "
        f"{ANSWER_LABELS['delta_score']} F1: the same for the encoders' regression heads answering by "
        "themselves (their "
        "predicted scores of the two scans labelled by the scale's change rule), which the classifier "
        "should beat. val MAE: the encoders' "
        "best val-split MAE (score units, mean over seeds) against predicting the train mean (baseline "
        "MAE); MAE −%: how much lower it is. pretrain s: measured wall time of the pretraining, mean over "
        "seeds († only the part after a resume; `name`'s: a setting that changes only the classifier reuses "
        "that setting's encoders).\n\nSettings:\n\n" + settings + "\n"
    )
    return "\n".join(parts) + "\n" + caption


def render_experiment_table(results: Results) -> str:
    """The table of an experiment of any kind, in the paper's layout (Table 3, Table 4 or the sweep's)."""
    if isinstance(results, Table3Results):
        return render_table3(results)
    if isinstance(results, AblationResults):
        return render_ablation(results)
    return render_sweep(results)


def write_experiment_table(run_dir: str | os.PathLike[str], results: Results) -> str:
    """Write the experiment's table (``table3.md``, ``table4.md`` or ``sweep.md``: :meth:`RunLayout.table`)
    into ``run_dir`` and return its text."""
    table = render_experiment_table(results)
    atomic.write_text(RunLayout(run_dir).table(results.kind, ".md"), table)
    return table
