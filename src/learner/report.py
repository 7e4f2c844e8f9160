"""``REPORT.md``: a finished run's data source, tables, Fig. 1, regression quality, pair balance, settings.

One module because a report is one document: its sections share the number formatting and are read
top to bottom in the order they appear in ``REPORT.md``.

:func:`write_report` turns a run directory into ``REPORT.md`` next to its plots. The kind of run is read from
its results file and picks the sections from :data:`REPORTS`:

* ``table3`` / ``ablation`` experiments (``results.json``, read back into the typed
  :class:`learner.experiments.results.Results`);
* a single ``classification`` run (``metrics.json``, :mod:`learner.experiments.classify`);
* a single ``pretraining`` run (``metrics.json`` and ``metrics.csv``, :mod:`learner.training.pretrain`):
  regression quality, the training curves (:mod:`learner.training.curves`) and every epoch.

Every sentence about the data is generated from it (:mod:`learner.experiments.prose`): the class mix, the
always-majority and chance reference rows against the models, one verdict per comparison, and warnings
for a test set with fewer than 5 patients or a missing class.

Every report opens with the data source (PHANTOM or REAL) in a banner, then the tables (Section 3's Tables 3
and 4, rendered by :mod:`learner.experiments.tables`), Fig. 1, the regression quality of every encoder
against the predict-the-train-mean baseline (computed here from the stored metrics, with a verdict), the
class balance of every pair set, the settings, the config and the environment (``run.json``).

This module comes after :mod:`learner.experiments` in the import order: it reads what the experiments
produce, and nothing but the CLI imports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner import atomic
from learner.data.phantom.lus import TABLE_1_PATIENTS
from learner.data.scales import CLASS_NAMES
from learner.errors import LearnerError, RunDirError
from learner.evaluation.baselines import ReferenceRow, majority_row, reference_rows
from learner.evaluation.metrics import PairedDifference
from learner.experiments.figure1 import FIGURE_TARGETS
from learner.experiments.prose import (
    class_mix,
    comparison_verdict,
    majority_statement,
    small_sample_warnings,
)
from learner.experiments.results import Cell, Results, Scalar
from learner.experiments.tables import (
    F1_NOTE,
    interval,
    interval_plain,
    loss_label,
    markdown_table,
    percent,
    plain,
    reference_label,
    render_ablation,
    render_sweep,
    render_table3,
    test_counts_by_seed,
)
from learner.runs import load_run_config

REPORT_FILE = "REPORT.md"
# what identifies a pretraining, and a cell
ENCODER_KEYS: tuple[str, ...] = ("dataset", "setting", "backbone", "loss", "seed")
CELL_KEYS: tuple[str, ...] = ("dataset", "setting", "backbone", "combine", "loss", "classifier", "seed")
PAIR_SETS: tuple[str, ...] = ("train", "val", "test")
CLEAR_MARGIN = 0.10  # an encoder "clearly" beats the baseline when its val MAE is at least 10% lower

SETTINGS: tuple[tuple[str, str], ...] = (
    ("model.backbone", "backbone"),
    ("data.frames", "frames per clip (T)"),
    ("data.size", "frame size (px)"),
    ("optim.epochs", "pretraining epochs"),
    ("optim.batch_size", "batch size"),
    ("optim.lr", "initial LR"),
    ("optim.max_steps_per_epoch", "max steps per epoch"),
    ("loss.lam", "λ (MSE weight)"),
    ("classifier.head", "classifier head"),
    ("classifier.combine", "pair combine"),
    ("classifier.bootstrap", "bootstrap resamples"),
)


@dataclass(frozen=True)
class Source:
    """A dataset as the banner and the settings name it: PHANTOM or REAL, and a phantom's record."""

    name: str
    manifest: str
    data_source: str
    phantom: Mapping[str, object] | None = None


# -------------------------------------------------------------------------------------------- sections
def source_banner(sources: Sequence[Source]) -> str:
    """The data-source statement that opens every report."""
    kinds = {s.data_source for s in sources}
    listed = "; ".join(f"{s.name}: {s.data_source.upper()} ({s.manifest})" for s in sources)
    if kinds == {"phantom"}:
        head = (
            "> **Data source: PHANTOM.** Every number below comes from generated stand-in cohorts "
            "(`learner phantom`), not from patients. It shows that the pipeline works and what it "
            "measures; it is not a clinical result."
        )
    elif kinds == {"real"}:
        head = "> **Data source: REAL** scans listed in the manifest(s) below."
    elif "unknown" in kinds:
        head = (
            "> **Data source: UNKNOWN.** The run does not record it and its manifest cannot be read: do not "
            "take these numbers for a clinical result."
        )
    else:
        head = "> **Data source: MIXED (PHANTOM and REAL)** — read each dataset's column accordingly."
    return f"{head}\n>\n> {listed}\n"


def regression_section(
    encoders: Sequence[tuple[list[str], Mapping[str, Scalar]]], key_names: Sequence[str]
) -> str:
    """Val-split regression quality of each encoder (best checkpoint) against predicting the train mean.

    Args:
        encoders: (key values, pretraining ``metrics.json["best"]`` row) per encoder.
        key_names: column names of the key values.
    """
    rows, margins = [], []
    for keys, best in encoders:
        margin = _margin(best)
        margins.append(margin)
        verdict = "clearly" if margin >= CLEAR_MARGIN else ("yes" if margin > 0 else "**no**")
        rows.append(
            [
                *keys,
                f"{best['val_mae']:.3f}",
                f"{best['baseline_mae']:.3f}",
                f"{100 * margin:.1f}%",
                f"{best['val_rmse']:.3f}",
                f"{best['baseline_rmse']:.3f}",
                plain(_number(best.get("val_r"))),
                verdict,
            ]
        )
    header = [*key_names, "val MAE", "mean-baseline MAE", "MAE reduction", "val RMSE", "baseline RMSE"]
    table = markdown_table([*header, "Pearson r", "beats baseline"], rows)
    note = "Val split, best checkpoint (lowest val MAE), score units."
    return f"{regression_verdict(margins)}\n\n{note}\n\n{table}"


def _number(value: Scalar) -> float | None:
    """A numeric value of a metrics record (None where JSON holds null: an undefined statistic)."""
    if isinstance(value, str):
        raise TypeError(f"metrics record value {value!r} is not a number")
    return value


def regression_verdict(margins: Sequence[float]) -> str:
    """One sentence on whether the encoders beat predicting the train mean, from their relative MAE margins
    ``1 − val MAE / baseline MAE``."""
    clear = sum(m >= CLEAR_MARGIN for m in margins)
    beaten = sum(m > 0 for m in margins)
    if len(margins) == 1 and clear == 1:
        return (
            f"The encoder clearly beats the predict-the-train-mean baseline: its val MAE is "
            f"{100 * margins[0]:.1f}% lower."
        )
    if margins and clear == len(margins):
        return (
            f"All {len(margins)} encoders clearly beat the predict-the-train-mean baseline: their val MAE is "
            f"{100 * min(margins):.1f}–{100 * max(margins):.1f}% lower."
        )
    return (
        f"{beaten} of {len(margins)} encoders beat the predict-the-train-mean baseline on val MAE, "
        f"{clear} of them clearly (by ≥ {100 * CLEAR_MARGIN:.0f}%); an encoder that does not clearly beat "
        "it has learned little of the score, and its downstream numbers say little about the objective."
    )


def unique_encoders(cells: Sequence[Cell]) -> list[tuple[list[str], Mapping[str, Scalar]]]:
    """(dataset, backbone?, loss, seed) → the best-checkpoint regression row, once per encoder (ablation
    cells share an encoder across classifier variants)."""
    names = _key_names(cells, ENCODER_KEYS)
    encoders = {tuple(str(c.coordinates()[k]) for k in names): c.regression for c in cells}
    return [(list(keys), best) for keys, best in encoders.items()]


def regression_summary(cells: Sequence[Cell]) -> str:
    """The regression verdict of an experiment's encoders (what ``learner demo`` prints)."""
    return regression_verdict([_margin(best) for _, best in unique_encoders(cells)])


def _margin(best: Mapping[str, Any]) -> float:
    margin: float = 1.0 - best["val_mae"] / best["baseline_mae"]
    return margin


def _key_names(cells: Sequence[Cell], candidates: Sequence[str]) -> list[str]:
    """The ``candidates`` that are key columns of these cells (an ablation has more axes than Table 3)."""
    present = cells[0].coordinates() if cells else {}
    return [k for k in candidates if k in present]


def pair_balance_section(
    entries: Sequence[tuple[list[str], dict[str, dict[str, int]]]], key_names: Sequence[str]
) -> str:
    """Class balance of every pair set; identical sets (e.g. one split shared by several losses) once."""
    rows, seen = [], set()
    for keys, counts in entries:
        for split in (s for s in PAIR_SETS if s in counts):
            by_class = counts[split]
            row = (*keys, split, *(by_class[name] for name in CLASS_NAMES), sum(by_class.values()))
            if row not in seen:
                seen.add(row)
                rows.append(list(row))
    return markdown_table([*key_names, "pairs", *CLASS_NAMES, "total"], rows)


def settings_section(config: dict[str, Any], sources: Sequence[Source]) -> str:
    """The settings that decide cost and quality (from ``config.yaml``) and each phantom cohort's size."""
    lines = []
    for dotted, label in SETTINGS:
        value: Any = config
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        lines.append(f"- {label} (`{dotted}`): {value}")
    for source in sources:
        if source.phantom:
            lines.append(f"- phantom cohort of {source.name}: {phantom_cohort(source.phantom)}")
    return "\n".join(lines) + "\n"


def phantom_cohort(record: Mapping[str, object]) -> str:
    """A phantom's record in words; an LUS cohort's patients per split are compared with the paper's Table 1
    (the demo may have more test patients, which narrows Fig. 1's intervals)."""
    patients = record.get("patients")
    if record.get("kind") != "lus" or not isinstance(patients, list) or len(patients) != 3:
        return ", ".join(f"{k} {v}" for k, v in record.items() if k != "table")
    described = ", ".join(f"{k} {v}" for k, v in record.items() if k not in ("table", "patients"))
    counts = "/".join(str(n) for n in patients)
    paper = "/".join(str(n) for n in TABLE_1_PATIENTS)
    if tuple(patients) == TABLE_1_PATIENTS:
        return f"{counts} train/val/test patients (the paper's Table 1), {described}"
    test, paper_test = patients[-1], TABLE_1_PATIENTS[-1]
    more = (
        f"; {test} test patients instead of {paper_test}: more test pairs, narrower Fig. 1 intervals"
        if test > paper_test
        else ""
    )
    return f"{counts} train/val/test patients (the paper's Table 1: {paper}{more}), {described}"


def environment_section(run_dir: Path) -> str:
    """Config (YAML) and environment (``run.json``) of the run, verbatim."""
    config = (
        (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").is_file() else ""
    )
    environment = (
        (run_dir / "run.json").read_text(encoding="utf-8") if (run_dir / "run.json").is_file() else "{}"
    )
    return f"### Config\n\n```yaml\n{config}```\n\n### Environment\n\n```json\n{environment}```\n"


# ---------------------------------------------------------------------------------------- the reports
def _experiment_report(run_dir: Path, data: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data sources and sections of a Table 3, ablation or sweep experiment (its ``results.json``)."""
    results = Results.from_json(data)
    sources = [Source(d.name, d.manifest, d.data_source, d.phantom) for d in results.datasets]
    title, render = EXPERIMENT_TABLES[results.kind]
    sections = [f"## {title}\n\n" + render(results) + "\n" + _reading_the_table(results)]
    warnings = _cell_warnings(run_dir, results.cells)
    if warnings:
        sections.insert(0, _warning_section(warnings))
    if results.comparisons:
        sections.append(_comparison_section(results))
    if results.figures:
        sections.append(_figure_section(results))
    encoders = unique_encoders(results.cells)
    encoder_keys = _key_names(results.cells, ENCODER_KEYS)
    balance_keys = _key_names(results.cells, ("dataset", "setting", "seed"))
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


def _comparison_section(results: Results) -> str:
    baseline = loss_label(results.baseline_loss or "")
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
        if (diff := (results.comparisons or {}).get(dataset, {}).get(loss))
    ]
    header = [
        "Dataset",
        "Loss",
        f"Δ Accuracy vs {baseline} (95% CI)",
        f"Δ F1 vs {baseline} (95% CI)",
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
        if (diff := (results.comparisons or {}).get(dataset, {}).get(loss))
        for metric, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
    ]
    return (
        f"## Each objective against {baseline}\n\n{note}\n\n"
        + markdown_table(header, rows)
        + "\n"
        + "\n".join(verdicts)
        + "\n"
    )


def _reading_the_table(results: Results) -> str:
    """Per dataset: the test pairs' class mix and whether always answering the majority class beats the
    models on accuracy (generated from the numbers, see :mod:`learner.experiments.prose`)."""
    lines = []
    for dataset in (d.name for d in results.datasets):
        counts = test_counts_by_seed(results.cells, dataset)
        if not counts:
            continue
        seed = min(counts)
        majority = _mean_majority(list(counts.values()))
        models = {
            _row_label(row.key.to_json()): (row.stats["accuracy"].mean, row.stats["macro_f1"].mean)
            for row in results.summary
            if row.key.dataset == dataset
        }
        lines.append(
            f"- {dataset}: {class_mix(counts[seed])} (seed {seed}). {majority_statement(models, majority)}"
        )
    return "\n".join(lines) + "\n"


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
        answers[0] if len(answers) == 1 else "always the majority class",
    )


def _cell_warnings(run_dir: Path, cells: Sequence[Cell]) -> list[str]:
    """Small-sample warnings of every distinct test set (dataset, seed) of a grid, from each cell's
    classifier ``metrics.json`` (its number of test patients)."""
    warnings: dict[str, None] = {}
    for cell in cells:
        metrics_file = run_dir / cell.dir / "classifier" / "metrics.json"
        if not metrics_file.is_file():
            continue
        test = json.loads(metrics_file.read_text(encoding="utf-8"))["test"]
        where = f"{cell.key.dataset}, seed {cell.seed}"
        for text in small_sample_warnings(test["n_patients"], cell.pair_counts["test"]):
            warnings[f"{where}: {text}"] = None
    return list(warnings)


def _warning_section(warnings: Sequence[str]) -> str:
    """The small-sample warnings as one quoted block, one paragraph each."""
    return "## Warnings\n\n" + "\n>\n".join(f"> **Warning:** {w}" for w in warnings) + "\n"


def _difference(diff: PairedDifference) -> str:
    """A paired difference of fractions: mean and interval, in percentage points."""
    return f"{percent(diff.mean)} {interval(diff.low, diff.high)}"


def _figure_section(results: Results) -> str:
    parts = [
        "## Fig. 1: embedding distance against change\n\nEach point is a test intra-patient pair: the cosine "
        "distance between the two scans' embeddings against the absolute change. The paper expects the "
        "distance to grow with the change, more so with contrastive pretraining (larger Spearman ρ).\n"
    ]
    for dataset in (d.name for d in results.datasets):
        figures = (results.figures or {}).get(dataset, {})
        for target, title in FIGURE_TARGETS.items():
            figure = figures.get(target)
            if figure is None:
                continue
            rows = [
                [
                    loss_label(loss),
                    plain(_number(m["spearman_rho"])),
                    interval_plain(_number(m["ci_low"]), _number(m["ci_high"])),
                    m["n_pairs"],
                    m["n_patients"],
                ]
                for loss in results.losses
                if (m := figure.panels.get(loss))
            ]
            table = markdown_table(["Loss", "Spearman ρ", "95% CI (patients)", "pairs", "patients"], rows)
            parts.append(
                f"### {dataset}: distance vs {title} (seed {figure.seed})\n\n"
                f"![Fig. 1 {dataset} {target}]({figure.png})\n\n{table}"
            )
    return "\n".join(parts)


def _cell_section(cells: Sequence[Cell]) -> str:
    keys = _key_names(cells, CELL_KEYS)
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


def _classification_report(run_dir: Path, metrics: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data source and sections of one classification run (``learner classify``, its ``metrics.json``)."""
    test = metrics["test"]
    test_counts = metrics["pair_counts"]["test"]
    references = reference_rows(test_counts)
    summary = markdown_table(
        ["", "Accuracy (95% CI)", "macro-F1 (95% CI)", "weighted-F1", "test pairs", "patients"],
        [
            [
                "classifier",
                f"{percent(test['accuracy'])} {interval(*test['ci']['accuracy'])}",
                f"{percent(test['macro_f1'])} {interval(*test['ci']['macro_f1'])}",
                percent(test["weighted_f1"]),
                test["n"],
                test["n_patients"],
            ],
            *(
                [f"*{reference_label(name, row.answer)}*", percent(row.accuracy), percent(row.macro_f1)]
                for name, row in references.items()
            ),
        ],
    )
    reading = f"{class_mix(test_counts)}. " + majority_statement(
        {"the classifier": (test["accuracy"], test["macro_f1"])}, references["majority"]
    )
    per_class = markdown_table(
        ["class", "precision", "recall", "F1", "support"],
        [
            [name, percent(v["precision"]), percent(v["recall"]), percent(v["f1"]), v["support"]]
            for name in CLASS_NAMES
            if (v := test["per_class"].get(name))
        ],
    )
    confusion = markdown_table(
        ["true \\ predicted", *CLASS_NAMES],
        [[name, *row] for name, row in zip(CLASS_NAMES, test["confusion"], strict=True)],
    )
    warnings = small_sample_warnings(test["n_patients"], test_counts)
    sections = [_warning_section(warnings)] if warnings else []
    sections.append(
        f"## Test intra-patient pairs ({metrics['head']}, {metrics['combine']})\n\n{summary}\n{reading}\n\n"
        f"{F1_NOTE}\n\n{per_class}\n{confusion}"
    )
    encoder_metrics = _encoder_run(run_dir, metrics) / "metrics.json"
    encoder = json.loads(encoder_metrics.read_text(encoding="utf-8")) if encoder_metrics.is_file() else {}
    best = encoder.get("best", {})
    if "val_mae" in best:  # a self-supervised encoder has no regression quality
        sections.append(
            "## Regression quality of the encoder\n\n"
            + regression_section([([metrics["encoder_run"]], best)], ["encoder run"])
        )
    sections.append(
        "## Class balance of every pair set\n\n" + pair_balance_section([([], metrics["pair_counts"])], [])
    )
    return [Source("data", metrics["manifest"], metrics["data_source"])], sections


def _encoder_run(run_dir: Path, metrics: Mapping[str, Any]) -> Path:
    """The encoder run of a classification: relative to the classification's run directory (portable), else
    as it was given."""
    relative = metrics.get("encoder_run_relative")
    if relative is not None and (run_dir / str(relative)).is_dir():
        return run_dir / str(relative)
    return Path(metrics["encoder_run"])


def _manifest_source(run_dir: Path) -> str:
    """The data source of a run that predates its record, from its manifest (a phantom cohort carries its
    generator's record beside it); ``unknown`` when the manifest cannot be read."""
    from learner.data.manifest import load_manifest
    from learner.data.phantom.ground_truth import data_source
    from learner.data.scales import scale_from_config

    config = load_run_config(run_dir)
    if config.data.manifest is None:
        return "unknown"
    try:
        return data_source(load_manifest(config.data.manifest, scale_from_config(config.data)))
    except (LearnerError, OSError, TypeError):
        return "unknown"


def _pretraining_report(run_dir: Path, metrics: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data source and sections of one pretraining run (``learner pretrain``, its ``metrics.json``):
    regression quality of the best checkpoint, the training curves and every epoch's row."""
    from learner.training.curves import CURVES_FILE, plot_training_curves

    manifest = str(load_run_config(run_dir).data.manifest)  # resolved against the run directory
    source = Source("data", manifest, metrics.get("data_source") or _manifest_source(run_dir))
    history = _read_history(run_dir)
    best = metrics["best"]
    if "val_mae" in best:
        quality = regression_section([([run_dir.name], best)], ["run"])
    else:
        quality = f"Self-supervised: best val loss {plain(best['val_loss'])} (epoch {best['epoch']}).\n"
    sections = [f"## Regression quality (best checkpoint, epoch {best['epoch']})\n\n{quality}"]
    if history:
        plot_training_curves(history, run_dir / CURVES_FILE)
        columns = [
            c for c in ("epoch", "lr", "train_loss", "val_loss", "val_mae", "baseline_mae") if c in history[0]
        ]
        rows = [[f"{row[c]:.4g}" if c != "epoch" else int(row[c]) for c in columns] for row in history]
        sections.append(
            "## Training curves\n\nLoss per epoch, and val MAE against always predicting the train mean "
            f"(score units).\n\n![training curves]({CURVES_FILE})\n\n" + markdown_table(columns, rows)
        )
    scans = metrics.get("scans", {})
    if scans:
        sections.append("## Scans\n\n" + ", ".join(f"{k} {v}" for k, v in scans.items()) + "\n")
    return [source], sections


def _read_history(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` (one per epoch), or none."""
    import csv

    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


EXPERIMENT_TABLES: dict[str, tuple[str, Callable[[Results], str]]] = {
    "table3": ("Table 3", render_table3),
    "ablation": ("Table 4 (ablation)", render_ablation),
    "sweep": ("Sweep", render_sweep),
}
"""Experiment kind → the title and renderer of its table in the report."""

REPORTS: dict[str, Callable[[Path, dict[str, Any]], tuple[list[Source], list[str]]]] = {
    "table3": _experiment_report,
    "ablation": _experiment_report,
    "sweep": _experiment_report,
    "classification": _classification_report,
    "pretraining": _pretraining_report,
}
"""Run kind (the ``kind`` of its results file) → the data sources and sections of its report."""

RESULT_FILES: tuple[str, ...] = ("results.json", "metrics.json")


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN_DIR/REPORT.md`` for a finished experiment or classification run and return its path.

    Raises:
        RunDirError: no results file of a known kind in ``run_dir``.
    """
    folder = Path(run_dir)
    results = _read_results(folder)
    config = _read_yaml(folder / "config.yaml")
    sources, sections = REPORTS[results["kind"]](folder, results)
    text = "\n".join(
        [
            f"# LEARNER report: {folder.name}\n",
            source_banner(sources),
            "## Settings\n\n" + settings_section(config, sources),
            *sections,
            "## Config and environment\n\n" + environment_section(folder),
        ]
    )
    return atomic.write_text(folder / REPORT_FILE, text)


def _read_results(folder: Path) -> dict[str, Any]:
    for name in RESULT_FILES:
        path = folder / name
        if path.is_file():
            results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if "kind" not in results and "best" in results and "train_mean" in results:
                results["kind"] = "pretraining"  # written before pretraining's metrics.json named its kind
            if results.get("kind") in REPORTS:
                return results
    kinds = ", ".join(REPORTS)
    raise RunDirError(f"{folder}: no results.json or metrics.json of a reportable run ({kinds})")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
