"""The report of a ceiling study (``learner experiment ceiling``, its ``metrics.json``): how far Fig. 1's ρ
against |Δ latent| goes on the cohort's test intra-patient pairs for an oracle, a frozen random-init
encoder, the raw pixels and hand features (:mod:`learner.experiments.ceiling`).

:func:`render_ceiling` is the table the CLI prints and ``ceiling.md`` holds; :func:`ceiling_report` writes
that file and gives the report its sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from learner import atomic
from learner.experiments.ceiling import CeilingResults
from learner.layout import RunLayout
from learner.report.sections import Source, metric_number, results_file_error
from learner.report.tables import markdown_table


def render_ceiling(results: CeilingResults) -> str:
    """The study as Markdown: a sentence naming the pairs, the table, and the oracle's val MAE against the
    predict-the-train-mean baseline (is the oracle's encoder trained at all?)."""
    alpha = metric_number(results.rows[0].analysis["alpha"]) if results.rows else None
    level = f"{100 * (1 - alpha):g}%" if alpha is not None else "95%"
    rows = []
    for row in results.rows:
        rho, low, high = (metric_number(row.analysis[name]) for name in ("spearman_rho", "ci_low", "ci_high"))
        rows.append(
            [
                row.label,
                row.distance,
                "n/a" if rho is None else f"{rho:+.3f}",  # constant distances: ρ is undefined
                "n/a" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]",
            ]
        )
    best, last = results.oracle_best, results.oracle_last
    return (
        f"Ceiling study on {results.dataset.manifest}: {results.n_pairs} test intra-patient pairs from "
        f"{results.n_patients} patients; Spearman ρ between a pair's distance and |Δ latent|, {level} "
        f"patient-bootstrap interval ({results.bootstrap} resamples), seed {results.seed}, {results.frames} "
        f"frames of {results.size} px.\n\n"
        + markdown_table(["method", "distance", r"ρ vs \|Δ latent\|", f"{level} interval"], rows)
        + f"\nOracle: best val MAE {metric_number(best['val_mae']):.4f} (epoch {best['epoch']}) against "
        f"{metric_number(last['baseline_mae']):.4f} predicting the train mean, in latent units.\n"
    )


def ceiling_report(run_dir: Path, metrics: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data source and sections of a ceiling study; writes its table (``ceiling.md``) beside the report."""
    try:
        results = CeilingResults.model_validate(metrics)
    except ValidationError as error:  # an older learner's study, or an edited file
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise results_file_error(RunLayout(run_dir).metrics, "ceiling", f"{where}: {first['msg']}") from None
    table = render_ceiling(results)
    atomic.write_text(RunLayout(run_dir).table(results.kind, ".md"), table)
    dataset = results.dataset
    source = Source(dataset.name, dataset.manifest, dataset.data_source, dataset.phantom)
    return [source], ["## Ceiling study: Fig. 1's ρ without the score\n\n" + table]
