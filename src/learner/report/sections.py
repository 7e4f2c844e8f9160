"""The sections every report shares: the data-source banner, regression quality against the predict-the-mean
baseline, the class balance of pair sets, the settings, the config and environment, and warnings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner.data.scales import CLASS_NAMES
from learner.data.splits import TABLE_1_PATIENTS
from learner.errors import RunDirError
from learner.experiments.results import Cell, Scalar
from learner.layout import RunLayout
from learner.report.tables import interval_plain, markdown_table, plain

# what identifies a pretraining
ENCODER_KEYS: tuple[str, ...] = ("dataset", "setting", "backbone", "loss", "seed")
PAIR_SETS: tuple[str, ...] = ("train", "val", "test")
CLEAR_MARGIN = 0.10  # an encoder "clearly" beats the baseline when its val MAE is at least 10% lower

SETTINGS: tuple[tuple[str, str], ...] = (
    ("model.backbone", "backbone"),
    ("model.init", "encoder start (a pretrained run or weights; None: random)"),
    ("data.frames", "frames per clip (T)"),
    ("data.size", "frame size (px)"),
    ("optim.epochs", "pretraining epochs"),
    ("optim.batch_size", "batch size"),
    ("optim.lr", "initial LR"),
    ("optim.max_steps_per_epoch", "max steps per epoch"),
    ("loss.lam", "λ (MSE weight)"),
    ("loss.temperature", "τ (None: each objective's authors')"),
    ("loss.reduction", "reduction of Eqs. 1–3"),
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
    """Val-split regression quality of each encoder against predicting the train mean.

    Args:
        encoders: (key values, :func:`learner.evaluation.regression_quality.regression_quality`) per
            encoder: the best row (lowest val MAE) plus the last epoch's val MAE and the 95% patient-bootstrap
            interval of the MAE gain over the baseline.
        key_names: column names of the key values.
    """
    rows, verdicts = [], []
    for keys, quality in encoders:
        verdict = baseline_verdict(quality)
        verdicts.append(verdict)
        rows.append(
            [
                *keys,
                f"{quality.get('epoch', 'n/a')} / {quality.get('last_epoch', 'n/a')}",
                f"{quality['val_mae']:.3f}",
                plain(metric_number(quality.get("last_val_mae"))),
                f"{quality['baseline_mae']:.3f}",
                f"{_margin_percent(quality):.1f}%",
                interval_plain(
                    metric_number(quality.get("mae_gain_low")), metric_number(quality.get("mae_gain_high"))
                ),
                plain(metric_number(quality.get("val_r"))),
                verdict,
            ]
        )
    header = [*key_names, "best / last epoch", "val MAE (best)", "val MAE (last)", "mean-baseline MAE"]
    header += ["MAE reduction", "gain 95% CI", "Pearson r", "beats baseline"]
    note = (
        "Val split, score units. The best epoch (lowest val MAE) is chosen on these same val scans, so its "
        "MAE is optimistic; the last epoch's is beside it. *gain 95% CI*: patient-bootstrap interval of "
        "baseline MAE − best val MAE; an encoder beats the baseline only when it lies above 0 (*clearly*: "
        f"also ≥ {100 * CLEAR_MARGIN:.0f}% lower MAE); *not shown*: it includes 0."
    )
    return f"{regression_verdict(verdicts)}\n\n{note}\n\n" + markdown_table(header, rows)


def baseline_verdict(quality: Mapping[str, Scalar]) -> str:
    """Whether one encoder beats predicting the train mean: from its gain interval (``clearly``, ``yes``,
    ``**worse**``, ``**not shown**``), or ``n/a`` when the run has no val predictions to bootstrap."""
    low, high = metric_number(quality.get("mae_gain_low")), metric_number(quality.get("mae_gain_high"))
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    if low > 0:
        return "clearly" if _margin_percent(quality) >= 100 * CLEAR_MARGIN else "yes"
    return "**worse**" if high < 0 else "**not shown**"


def metric_number(value: Scalar) -> float | None:
    """A numeric value of a metrics record (None where JSON holds null: an undefined statistic)."""
    if isinstance(value, str):
        raise TypeError(f"metrics record value {value!r} is not a number")
    return value


def regression_verdict(verdicts: Sequence[str]) -> str:
    """One sentence on whether the encoders beat predicting the train mean, from their
    :func:`baseline_verdict` s."""
    beaten = sum(v in ("clearly", "yes") for v in verdicts)
    clear = sum(v == "clearly" for v in verdicts)
    unknown = sum(v == "n/a" for v in verdicts)
    n = len(verdicts)
    if n and clear == n:
        return (
            ("The encoder clearly beats" if n == 1 else f"All {n} encoders clearly beat")
            + " the predict-the-train-mean baseline: the 95% patient-bootstrap interval of the val MAE gain "
            "lies above 0."
        )
    sentence = (
        f"{beaten} of {n} encoders beat the predict-the-train-mean baseline on val MAE beyond patient "
        f"sampling noise, {clear} of them clearly (≥ {100 * CLEAR_MARGIN:.0f}% lower MAE); an encoder that "
        "does not has learned little of the score, and its downstream numbers say little about the objective."
    )
    return sentence + (f" {unknown} recorded no val predictions to tell." if unknown else "")


def unique_encoders(cells: Sequence[Cell]) -> list[tuple[list[str], Mapping[str, Scalar]]]:
    """(dataset, backbone?, loss, seed) → the encoder's regression quality (:attr:`Cell.regression`), once
    per encoder (ablation cells share an encoder across classifier variants)."""
    names = key_names(cells, ENCODER_KEYS)
    encoders = {tuple(str(c.coordinates()[k]) for k in names): c.regression for c in cells}
    return [(list(keys), best) for keys, best in encoders.items()]


def regression_summary(cells: Sequence[Cell]) -> str:
    """The regression verdict of an experiment's encoders (what ``learner demo`` prints)."""
    return regression_verdict([baseline_verdict(quality) for _, quality in unique_encoders(cells)])


def _margin_percent(quality: Mapping[str, Any]) -> float:
    """How much lower the val MAE is than the baseline's, in percent rounded to the one decimal the table
    prints: "clearly" is decided on this value, so a row showing 10.0% is never called short of 10%."""
    margin: float = 1.0 - quality["val_mae"] / quality["baseline_mae"]
    return round(100 * margin, 1)


def key_names(cells: Sequence[Cell], candidates: Sequence[str]) -> list[str]:
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


GRID_AXES: dict[str, tuple[str, ...]] = {
    "table3": ("datasets", "losses", "seeds"),
    "ablation": ("datasets", "losses", "seeds", "backbones", "combines", "classifiers"),
    "sweep": ("datasets", "settings", "losses", "seeds"),
}
"""An experiment kind → the grid axes (``experiment.<axis>``) its cells range over."""
AXIS_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "datasets": ("datasets", ("data.manifest", "data.scale")),
    "settings": ("named settings (each overrides the base keys it names)", ()),
    "losses": ("objectives", ("loss.name",)),
    "seeds": ("seeds", ("seed",)),
    "backbones": ("backbones", ("model.backbone",)),
    "combines": ("pair combines", ("classifier.combine",)),
    "classifiers": ("classifier heads", ("classifier.head",)),
}
"""A grid axis → its words and the config keys each cell takes from it (not the base config's)."""


def settings_section(config: dict[str, Any], sources: Sequence[Source], kind: str | None = None) -> str:
    """The settings that decide cost and quality (from ``config.yaml``) and each phantom cohort's size.

    For an experiment grid (``kind`` in :data:`GRID_AXES`) the grid's axes come first (datasets, objectives,
    seeds, ...; the ``experiment.init`` stage when set), and the keys each cell takes from them are left out
    of the base settings: the config block below is the base every cell starts from, not one cell's.
    """
    grid = config.get("experiment") if kind in GRID_AXES else None
    lines, per_cell = [], set[str]()
    if isinstance(grid, dict):
        for axis in GRID_AXES[kind or ""]:
            words, keys = AXIS_KEYS[axis]
            lines.append(f"- grid: {words} (`experiment.{axis}`): {_axis_values(axis, grid.get(axis))}")
            per_cell.update(keys)
        if grid.get("init"):
            extra = grid.get("init_settings") or {}
            with_settings = f", with {', '.join(f'{k}={v}' for k, v in extra.items())}" if extra else ""
            lines.append(
                f"- grid: self-supervised start of every cell (`experiment.init`): {grid['init']} stage per "
                f"dataset and seed on the cell's train and val scans{with_settings}; its encoder is each "
                "cell's `model.init`"
            )
            per_cell.add("model.init")
        taken = ", ".join(f"`{key}`" for key in sorted(per_cell))
        lines.append(
            f"- each cell takes {taken} from the grid; the base settings below and the config block at the "
            "end are what every cell starts from (each cell's own `config.yaml` has its values)"
        )
    for dotted, label in SETTINGS:
        if dotted in per_cell:
            continue
        value: Any = config
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        lines.append(f"- {label} (`{dotted}`): {value}")
    for source in sources:
        if source.phantom:
            lines.append(f"- phantom cohort of {source.name}: {phantom_cohort(source.phantom)}")
    return "\n".join(lines) + "\n"


def _axis_values(axis: str, values: Any) -> str:
    """One grid axis in words: datasets as ``NAME (manifest, scale)``, settings as ``name (k=v, ...)``."""
    if axis == "datasets" and isinstance(values, list):
        named = [d if isinstance(d, dict) else {"name": d} for d in values]
        return "; ".join(f"{d.get('name')} ({d.get('manifest')}, scale {d.get('scale')})" for d in named)
    if axis == "settings" and isinstance(values, dict):
        overrides = {name: ", ".join(f"{k}={v}" for k, v in (o or {}).items()) for name, o in values.items()}
        return "; ".join(f"{name} ({keys})" for name, keys in overrides.items())
    if isinstance(values, list):
        return ", ".join(str(v) for v in values)
    return str(values)


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
    run = RunLayout(run_dir)
    config = run.config.read_text(encoding="utf-8") if run.config.is_file() else ""
    environment = run.record.read_text(encoding="utf-8") if run.record.is_file() else "{}"
    return f"### Config\n\n```yaml\n{config}```\n\n### Environment\n\n```json\n{environment}```\n"


def warning_section(warnings: Sequence[str]) -> str:
    """The small-sample warnings as one quoted block, one paragraph each."""
    return "## Warnings\n\n" + "\n>\n".join(f"> **Warning:** {w}" for w in warnings) + "\n"


NUMBER = (int, float, type(None))
"""A number of a results file: JSON writes an undefined one (NaN) as null."""


def results_file_error(path: Path, kind: str, problem: str) -> RunDirError:
    """The one-line error of a results file that this version cannot report (an older learner's, or an edited
    one): it names the file and its first problem instead of a traceback from deep in a report."""
    return RunDirError(f"{path}: not a {kind} results file of this version ({problem})")


def require_fields(
    path: Path, kind: str, record: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]]
) -> None:
    """Check that ``record`` (read from ``path``) holds every dotted key of ``fields`` with a value of its
    type, before a report reads them.

    Raises:
        RunDirError: the first key that is missing or of another type (:func:`results_file_error`).
    """
    for dotted, expected in fields.items():
        value: Any = record
        for key in dotted.split("."):
            if not isinstance(value, Mapping) or key not in value:
                raise results_file_error(path, kind, f"no {dotted!r}")
            value = value[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is NUMBER):
            raise results_file_error(path, kind, f"{dotted!r} is {json_type(value)}")


def require_present_fields(
    path: Path, kind: str, record: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]]
) -> None:
    """:func:`require_fields` for the ``fields`` that a report reads only where
    ``record`` has them: each dotted key that ``record`` holds is checked, the others are left out (list a
    parent before its children: a child under a parent that is not an object is left to the parent's check).

    Raises:
        RunDirError: the first key present with a value of another type.
    """
    present = {}
    for dotted, expected in fields.items():
        value: Any = record
        for key in dotted.split("."):
            value = value[key] if isinstance(value, Mapping) and key in value else ...
        if value is not ...:
            present[dotted] = expected
    require_fields(path, kind, record, present)


def json_type(value: object) -> str:
    """What a JSON value is, in words, for an error message (``a string``, ``null``)."""
    names = {bool: "a boolean", str: "a string", list: "a list", dict: "an object", int: "a number"}
    return "null" if value is None else names.get(type(value), "a number")
