"""Markdown reports of finished runs, and the tables in the paper's layouts (Tables 3 and 4).

:func:`write_report` turns a run directory into ``REPORT.md`` next to its plots. The kind of run is read from
its results file and picks the sections from :data:`REPORTS`:

* ``table3`` / ``ablation`` experiments (``results.json``, :mod:`learner.experiments`);
* a single ``classification`` run (``metrics.json``, :mod:`learner.evaluation.classify`).

Every report opens with the data source (PHANTOM or REAL) in a banner, then the tables, Fig. 1, the
regression quality of every encoder against the predict-the-train-mean baseline (computed here from the
stored metrics, with a verdict), the class balance of every pair set, the settings, the config and the
environment (``run.json``).

The F1 shown in the tables is **macro-F1** (see :data:`F1_NOTE`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from learner import atomic
from learner.data.scales import CLASS_NAMES
from learner.errors import RunDirError

REPORT_FILE = "REPORT.md"
ENCODER_KEYS: tuple[str, ...] = ("dataset", "backbone", "loss", "seed")  # what identifies a pretraining
PAIR_SETS: tuple[str, ...] = ("train", "val", "test")
FIGURE_TARGETS: dict[str, str] = {
    "score": "|Δ score|",
    "latent": "|Δ latent severity| (phantom ground truth)",
}
CLEAR_MARGIN = 0.10  # an encoder "clearly" beats the baseline when its val MAE is at least 10% lower

F1_NOTE = (
    "F1 is **macro-F1**, the unweighted mean of the per-class F1 of deteriorated, stable and improved. The "
    "test pairs are imbalanced (most intra-patient pairs are stable) and the paper's three-class F1 is most "
    "naturally the macro average; with it a classifier that always answers 'stable' cannot score well. "
    "Weighted-F1 is in the CSV/JSON files."
)

LOSS_LABELS: dict[str, str] = {"mse": "MSE", "cl": "CL", "wcl": "wCL", "wcl_scaled": "wCL (scaled)"}
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


# ------------------------------------------------------------------------------------------ formatting
def loss_label(name: str) -> str:
    """``mse+wcl`` → ``MSE + wCL`` (the paper's spelling; unknown terms are shown as they are)."""
    return " + ".join(LOSS_LABELS.get(part, part) for part in name.split("+"))


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals, like the paper's tables ('n/a' when undefined)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def mean_std(stats: dict[str, float]) -> str:
    """``{"mean", "std"}`` of a fraction → ``"72.46 ± 1.30"`` (percent)."""
    return f"{percent(stats['mean'])} ± {percent(stats['std'])}"


def interval(low: float | None, high: float | None) -> str:
    """A fraction interval as ``[a, b]`` in percent, or 'n/a'."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{percent(low)}, {percent(high)}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- paper tables
def render_table3(results: dict[str, Any]) -> str:
    """Table 3's layout: one row per loss, Accuracy and F1 (macro) per dataset, mean ± std over seeds (%)."""
    datasets = [d["name"] for d in results["datasets"]]
    summary = {(row["dataset"], row["loss"]): row for row in results["summary"]}
    header = ["Loss"] + [f"{d} {m}" for d in datasets for m in ("Accuracy", "F1")]
    rows = []
    for loss in results["losses"]:
        cells = [loss_label(loss)]
        for dataset in datasets:
            row = summary.get((dataset, loss))
            cells += [mean_std(row["accuracy"]), mean_std(row["macro_f1"])] if row else ["—", "—"]
        rows.append(cells)
    seeds = len(results["seeds"])
    caption = (
        "Health-change classification on the test intra-patient pairs: accuracy and F1 in %, mean ± std "
        "over "
        f"{seeds} seed{'s' if seeds != 1 else ''}. {F1_NOTE}\n"
    )
    return markdown_table(header, rows) + "\n" + caption


def render_ablation(results: dict[str, Any]) -> str:
    """Table 4's layout: Backbone | Combine | Loss | Classifier | Accuracy | F1 (macro), mean ± std (%)."""
    parts = []
    for dataset in results["datasets"]:
        rows = [
            [
                row["backbone"],
                row["combine"],
                loss_label(row["loss"]),
                row["classifier"],
                mean_std(row["accuracy"]),
                mean_std(row["macro_f1"]),
            ]
            for row in results["summary"]
            if row["dataset"] == dataset["name"]
        ]
        header = ["Backbone", "Combine", "Loss", "Classifier", "Accuracy", "F1"]
        parts.append(f"**{dataset['name']}**\n\n" + markdown_table(header, rows))
    seeds = len(results["seeds"])
    return "\n".join(parts) + f"\nMean ± std over {seeds} seed(s), in %. {F1_NOTE}\n"


# -------------------------------------------------------------------------------------------- sections
def source_banner(sources: Sequence[dict[str, Any]]) -> str:
    """The data-source statement that opens every report."""
    kinds = {s["data_source"] for s in sources}
    listed = "; ".join(f"{s['name']}: {s['data_source'].upper()} ({s['manifest']})" for s in sources)
    if kinds == {"phantom"}:
        head = (
            "> **Data source: PHANTOM.** Every number below comes from generated stand-in cohorts "
            "(`learner phantom`), not from patients. It shows that the pipeline works and what it "
            "measures; it is not a clinical result."
        )
    elif kinds == {"real"}:
        head = "> **Data source: REAL** scans listed in the manifest(s) below."
    else:
        head = "> **Data source: MIXED (PHANTOM and REAL)** — read each dataset's column accordingly."
    return f"{head}\n>\n> {listed}\n"


def regression_section(encoders: Sequence[tuple[list[str], dict[str, Any]]], key_names: Sequence[str]) -> str:
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
                plain(best.get("val_r")),
                verdict,
            ]
        )
    header = [*key_names, "val MAE", "mean-baseline MAE", "MAE reduction", "val RMSE", "baseline RMSE"]
    table = markdown_table([*header, "Pearson r", "beats baseline"], rows)
    note = "Val split, best checkpoint (lowest val MAE), score units."
    return f"{regression_verdict(margins)}\n\n{note}\n\n{table}"


def regression_verdict(margins: Sequence[float]) -> str:
    """One sentence on whether the encoders beat predicting the train mean, from their relative MAE margins
    ``1 − val MAE / baseline MAE``."""
    clear = sum(m >= CLEAR_MARGIN for m in margins)
    beaten = sum(m > 0 for m in margins)
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


def unique_encoders(cells: Sequence[dict[str, Any]]) -> list[tuple[list[str], dict[str, Any]]]:
    """(dataset, backbone?, loss, seed) → the best-checkpoint regression row, once per encoder (ablation
    cells share an encoder across classifier variants)."""
    names = [k for k in ENCODER_KEYS if cells and k in cells[0]]
    encoders = {tuple(str(c[k]) for k in names): c["regression"] for c in cells}
    return [(list(keys), best) for keys, best in encoders.items()]


def regression_summary(cells: Sequence[dict[str, Any]]) -> str:
    """The regression verdict of an experiment's encoders (what ``learner demo`` prints)."""
    return regression_verdict([_margin(best) for _, best in unique_encoders(cells)])


def _margin(best: dict[str, Any]) -> float:
    return 1.0 - best["val_mae"] / best["baseline_mae"]


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


def settings_section(config: dict[str, Any], sources: Sequence[dict[str, Any]]) -> str:
    """The settings that decide cost and quality (from ``config.yaml``) and each phantom cohort's size."""
    lines = []
    for dotted, label in SETTINGS:
        value: Any = config
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        lines.append(f"- {label} (`{dotted}`): {value}")
    for source in sources:
        cohort = source.get("phantom")
        if cohort:
            described = ", ".join(f"{k} {v}" for k, v in cohort.items() if k not in ("table",))
            lines.append(f"- phantom cohort of {source['name']}: {described}")
    return "\n".join(lines) + "\n"


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
def _experiment_sections(run_dir: Path, results: dict[str, Any]) -> list[str]:
    """Sections of a Table 3 or ablation experiment."""
    table3 = results["kind"] == "table3"
    sections = [
        f"## {'Table 3' if table3 else 'Table 4 (ablation)'}\n\n"
        + (render_table3(results) if table3 else render_ablation(results))
    ]
    if results.get("comparisons"):
        sections.append(_comparison_section(results))
    if results.get("figures"):
        sections.append(_figure_section(results))
    encoders = unique_encoders(results["cells"])
    encoder_keys = [k for k in ENCODER_KEYS if k in results["cells"][0]]
    sections.append("## Regression quality of each encoder\n\n" + regression_section(encoders, encoder_keys))
    sections.append(
        "## Class balance of every pair set\n\n"
        + pair_balance_section(
            [([c["dataset"], str(c["seed"])], c["pair_counts"]) for c in results["cells"]],
            ["dataset", "seed"],
        )
    )
    sections.append("## Every cell\n\n" + _cell_section(results["cells"]))
    return sections


def _comparison_section(results: dict[str, Any]) -> str:
    baseline = loss_label(results["baseline_loss"])
    rows = [
        [
            dataset,
            loss_label(loss),
            _difference(diff["accuracy"]),
            _difference(diff["macro_f1"]),
            diff["accuracy"]["n"],
        ]
        for dataset in (d["name"] for d in results["datasets"])
        for loss in results["losses"]
        if (diff := results["comparisons"].get(dataset, {}).get(loss))
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
    return f"## Each objective against {baseline}\n\n{note}\n\n" + markdown_table(header, rows)


def _difference(diff: dict[str, float]) -> str:
    """A paired difference of fractions: mean and interval, in percentage points."""
    return f"{percent(diff['mean'])} {interval(diff['low'], diff['high'])}"


def _figure_section(results: dict[str, Any]) -> str:
    parts = [
        "## Fig. 1: embedding distance against change\n\nEach point is a test intra-patient pair: the cosine "
        "distance between the two scans' embeddings against the absolute change. The paper expects the "
        "distance to grow with the change, more so with contrastive pretraining (larger Spearman ρ).\n"
    ]
    for dataset in (d["name"] for d in results["datasets"]):
        figures = results["figures"].get(dataset, {})
        for target, title in FIGURE_TARGETS.items():
            figure = figures.get(target)
            if figure is None:
                continue
            rows = [
                [
                    loss_label(loss),
                    plain(m["spearman_rho"]),
                    interval_plain(m["ci_low"], m["ci_high"]),
                    m["n_pairs"],
                    m["n_patients"],
                ]
                for loss in results["losses"]
                if (m := figure["panels"].get(loss))
            ]
            table = markdown_table(["Loss", "Spearman ρ", "95% CI (patients)", "pairs", "patients"], rows)
            parts.append(
                f"### {dataset}: distance vs {title} (seed {figure['seed']})\n\n"
                f"![Fig. 1 {dataset} {target}]({figure['png']})\n\n{table}"
            )
    return "\n".join(parts)


def plain(value: float | None) -> str:
    """A number with three decimals, or 'n/a' when undefined (stored as null, or NaN)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def interval_plain(low: float | None, high: float | None) -> str:
    """An interval of plain numbers (not fractions) as ``[a, b]``, or 'n/a'."""
    return "n/a" if "n/a" in (plain(low), plain(high)) else f"[{plain(low)}, {plain(high)}]"


def _cell_section(cells: Sequence[dict[str, Any]]) -> str:
    keys = [k for k in ("dataset", "backbone", "combine", "loss", "classifier", "seed") if k in cells[0]]
    rows = [
        [
            *(loss_label(c[k]) if k == "loss" else c[k] for k in keys),
            f"{percent(c['accuracy'])} {interval(*c['ci']['accuracy'])}",
            f"{percent(c['macro_f1'])} {interval(*c['ci']['macro_f1'])}",
            percent(c["weighted_f1"]),
            c["n_test_pairs"],
        ]
        for c in cells
    ]
    header = [*keys, "Accuracy (95% CI)", "macro-F1 (95% CI)", "weighted-F1", "test pairs"]
    note = "Intervals: 95% percentile bootstrap over test patients (all pairs of a drawn patient kept)."
    return f"{note}\n\n" + markdown_table(header, rows)


def _classification_sections(run_dir: Path, metrics: dict[str, Any]) -> list[str]:
    """Sections of a single classification run (``learner classify``)."""
    test = metrics["test"]
    summary = markdown_table(
        ["Accuracy (95% CI)", "macro-F1 (95% CI)", "weighted-F1", "test pairs", "patients"],
        [
            [
                f"{percent(test['accuracy'])} {interval(*test['ci']['accuracy'])}",
                f"{percent(test['macro_f1'])} {interval(*test['ci']['macro_f1'])}",
                percent(test["weighted_f1"]),
                test["n"],
                test["n_patients"],
            ]
        ],
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
    sections = [
        f"## Test intra-patient pairs ({metrics['head']}, {metrics['combine']})\n\n{summary}\n{F1_NOTE}\n\n"
        f"{per_class}\n{confusion}"
    ]
    encoder_metrics = Path(metrics["encoder_run"]) / "metrics.json"
    if encoder_metrics.is_file():
        best = json.loads(encoder_metrics.read_text(encoding="utf-8"))["best"]
        sections.append(
            "## Regression quality of the encoder\n\n"
            + regression_section([([metrics["encoder_run"]], best)], ["encoder run"])
        )
    sections.append(
        "## Class balance of every pair set\n\n" + pair_balance_section([([], metrics["pair_counts"])], [])
    )
    return sections


REPORTS: dict[str, Callable[[Path, dict[str, Any]], list[str]]] = {
    "table3": _experiment_sections,
    "ablation": _experiment_sections,
    "classification": _classification_sections,
}
"""Run kind (the ``kind`` of its results file) → the sections of its report."""

RESULT_FILES: tuple[str, ...] = ("results.json", "metrics.json")


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN_DIR/REPORT.md`` for a finished experiment or classification run and return its path.

    Raises:
        RunDirError: no results file of a known kind in ``run_dir``.
    """
    folder = Path(run_dir)
    results = _read_results(folder)
    config = _read_yaml(folder / "config.yaml")
    sources = results.get("datasets") or [
        {"name": "data", "manifest": results["manifest"], "data_source": results["data_source"]}
    ]
    text = "\n".join(
        [
            f"# LEARNER report: {folder.name}\n",
            source_banner(sources),
            "## Settings\n\n" + settings_section(config, sources),
            *REPORTS[results["kind"]](folder, results),
            "## Config and environment\n\n" + environment_section(folder),
        ]
    )
    return atomic.write_text(folder / REPORT_FILE, text)


def _read_results(folder: Path) -> dict[str, Any]:
    for name in RESULT_FILES:
        path = folder / name
        if path.is_file():
            results = json.loads(path.read_text(encoding="utf-8"))
            if results.get("kind") in REPORTS:
                return results
    kinds = ", ".join(REPORTS)
    raise RunDirError(f"{folder}: no results.json or metrics.json of a reportable run ({kinds})")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
