"""The study tables of docs/losses.md and docs/recipe.md, rebuilt from experiment folders' ``results.json``.

Each ARM is one or more folders of ``learner experiment table3`` or ``sweep`` (one per seed, or one holding
several seeds); their cells are merged by (setting, loss, seed). Per row (arm, setting, loss) it prints
accuracy and macro-F1 as mean ± std over seeds, the paired difference in macro-F1 (t-interval over seeds)
against ``--base-loss`` in the same arm and setting, against ``--base-setting`` for the same loss, and
against ``--base-arm`` for the same setting and loss, and Fig. 1's Spearman ρ against the latent ground
truth: the mean over seeds, with the first seed's patient-bootstrap interval. With ``--answers`` it prints
instead every answer of every row (the pair classifier, the Δ-predicted-score rows, the prior-adapted
ones) against always answering the test pairs' majority class, paired by seed: the report's "Each answer
against always-majority" over all the folders' seeds::

    python examples/studies/paired_tables.py --base-arm 0 \\
        --arm 0=runs/mem0-s0,runs/mem0-s1,runs/mem0-s2 --arm 64=runs/mem64-s0,runs/mem64-s1,runs/mem64-s2
    python examples/studies/paired_tables.py --arm lus=runs/recipe-lus-2b --base-setting demo
    python examples/studies/paired_tables.py --answers --arm lus=runs/table3-s012,runs/table3-s34
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from scipy import stats

from learner.evaluation.baselines import majority_row

Key = tuple[str, str, str, int]
"""(arm, setting, loss, seed); a table3 cell's setting is ``-``."""


def read_arm(arm: str, folders: list[Path], dataset: str | None = None) -> dict[Key, dict[str, Any]]:
    """Every cell of the arm's folders (of ``dataset`` when given) with its ``rho`` (Fig. 1 against the
    latent ground truth). Cells of two datasets with one (setting, loss, seed) are an error: pass one."""
    cells: dict[Key, dict[str, Any]] = {}
    for folder in folders:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        if results["kind"] == "sweep":
            sweep = results["sweep"]["cells"]
            rho = {
                (c["dataset"], c["setting"], c["loss"], c["seed"]): c["correlations"]["latent"] for c in sweep
            }
        else:  # table3: Fig. 1 of the folder's figure seed
            rho = {}
            for name, figure in results["figures"].items():
                for loss, panel in figure["latent"]["panels"].items():
                    rho[(name, "-", loss, figure["latent"]["seed"])] = panel | {"rho": panel["spearman_rho"]}
        for cell in results["cells"]:
            if dataset is not None and cell["dataset"] != dataset:
                continue
            where = (cell.get("setting", "-"), cell["loss"], cell["seed"])
            if (arm, *where) in cells and cells[(arm, *where)]["dataset"] != cell["dataset"]:
                raise SystemExit(
                    f"error: {folder} has several datasets ({cell['dataset']}, ...): pass --dataset"
                )
            cells[(arm, *where)] = cell | {"rho": rho.get((cell["dataset"], *where))}
    return cells


def paired(values: list[float]) -> str:
    """Mean and 95% t-interval of paired differences (the mean alone for one seed)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:+.1f}"
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def spread(values: list[float]) -> str:
    """Mean ± std over seeds (the mean alone for one seed)."""
    std = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.1f}{std}"


def delta(cells: dict[Key, dict[str, Any]], group: tuple[str, str, str], base: tuple[str, str, str]) -> str:
    """Macro-F1 of ``group`` minus ``base``'s, paired by seed ("–": itself, or ``base`` lacks a seed)."""
    seeds = sorted(key[3] for key in cells if key[:3] == group)
    if base == group or any((*base, s) not in cells for s in seeds):
        return "–"
    return paired([100 * (cells[(*group, s)]["macro_f1"] - cells[(*base, s)]["macro_f1"]) for s in seeds])


def latent_rho(group: list[dict[str, Any]]) -> str:
    """Fig. 1's ρ: mean over the seeds that have it, with the first one's patient-bootstrap interval."""
    rhos = [c["rho"] for c in group if c["rho"] is not None]
    if not rhos:
        return "n/a"
    mean = statistics.mean(r["rho"] for r in rhos)
    return f"{mean:+.2f} [{rhos[0]['ci_low']:.2f}, {rhos[0]['ci_high']:.2f}]"


def table(cells: dict[Key, dict[str, Any]], args: argparse.Namespace) -> str:
    """One Markdown row per (arm, setting, loss), in the order the folders list them."""
    rows = [
        "| arm | setting | loss | accuracy % | macro-F1 % | Δ vs base loss | Δ vs base setting "
        "| Δ vs base arm | ρ vs \\|Δ latent\\| (mean; first seed's interval) | val MAE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, setting, loss in dict.fromkeys(key[:3] for key in cells):
        here = (arm, setting, loss)
        group = [cell for key, cell in sorted(cells.items()) if key[:3] == here]
        rows.append(
            f"| {arm} | {setting} | {loss} | {spread([100 * c['accuracy'] for c in group])} "
            f"| {spread([100 * c['macro_f1'] for c in group])} "
            f"| {delta(cells, here, (arm, setting, args.base_loss))} "
            f"| {delta(cells, here, (arm, args.base_setting, loss))} "
            f"| {delta(cells, here, (args.base_arm or arm, setting, loss))} "
            f"| {latent_rho(group)} | {statistics.mean(c['regression']['val_mae'] for c in group):.2f} |"
        )
    return "\n".join(rows)


def answers_table(cells: dict[Key, dict[str, Any]]) -> str:
    """One Markdown row per (arm, setting, loss, answer): mean ± std over seeds, and minus always-majority
    paired by seed (the cells of a seed share their test pairs)."""
    rows = [
        "| arm | setting | loss | answer | seeds | accuracy % | macro-F1 % | Δ accuracy vs majority "
        "| Δ macro-F1 vs majority |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, setting, loss in dict.fromkeys(key[:3] for key in cells):
        group = [cell for key, cell in sorted(cells.items()) if key[:3] == (arm, setting, loss)]
        names = ["pair classifier", *dict.fromkeys(n for c in group for n in c.get("answers", {}))]
        for name in names:
            answered = [c for c in group if name == "pair classifier" or name in c["answers"]]
            scored = [
                (
                    majority_row(c["pair_counts"]["test"]),
                    c if name == "pair classifier" else c["answers"][name],
                )
                for c in answered
            ]
            pct = {m: [100 * a[m] for _, a in scored] for m in ("accuracy", "macro_f1")}
            gap = {m: [100 * (a[m] - getattr(row, m)) for row, a in scored] for m in pct}
            rows.append(
                f"| {arm} | {setting} | {loss} | {name} | {len(scored)} | {spread(pct['accuracy'])} "
                f"| {spread(pct['macro_f1'])} | {paired(gap['accuracy'])} | {paired(gap['macro_f1'])} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", required=True, help="NAME=DIR[,DIR...]")
    parser.add_argument("--base-loss", default="mse")
    parser.add_argument("--base-setting", default="-", help="a sweep setting (table3 cells have '-')")
    parser.add_argument("--base-arm", default=None)
    parser.add_argument("--answers", action="store_true", help="every answer against always-majority")
    parser.add_argument("--dataset", default=None, help="only this dataset's cells (a Table 3 column)")
    args = parser.parse_args()
    cells: dict[Key, dict[str, Any]] = {}
    for arm in args.arm:
        name, equals, folders = arm.partition("=")
        paths = [Path(f) for f in folders.split(",")]
        if not (name and equals and folders):
            parser.error(f"--arm {arm!r} must look like NAME=DIR[,DIR...]")
        for path in paths:
            if not (path / "results.json").is_file():
                parser.error(f"--arm {arm}: {path / 'results.json'} not found (a sweep or table3 folder)")
        cells |= read_arm(name, paths, args.dataset)
    print(answers_table(cells) if args.answers else table(cells, args))


if __name__ == "__main__":
    main()
