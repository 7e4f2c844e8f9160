"""``learner data``: check a manifest, make a patient-level split, convert ADNIMERGE, build the scan cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from learner.cli.options import ConfigOption, ScaleOption, SetOption, config_from_options
from learner.config import Config, apply_overrides, check_custom_scale
from learner.data.manifest import SPLITS, Manifest, ScanRecord, load_manifest, unreadable_scans
from learner.data.pairs import pair_class_counts
from learner.data.scales import CLASS_NAMES, ScoreScale, scale_from_config
from learner.errors import ConfigError, ManifestError

if TYPE_CHECKING:
    from learner.api import ManifestCheck

ManifestArgument = Annotated[
    Path, typer.Argument(help="Manifest CSV or Parquet, one row per scan.", show_default=False)
]
DataRootOption = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Refuse scan paths that resolve outside this folder (runtime.data_root); default: trusted.",
        show_default=False,
    ),
]

data_app = typer.Typer(
    help="Manifests: check them, split them by patient, convert ADNIMERGE, build the scan cache.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the ``learner`` app."""
    app.add_typer(data_app, name="data")


@data_app.command("check")
def check(
    manifest: ManifestArgument,
    scale: ScaleOption = None,
    config: ConfigOption = None,
    sets: SetOption = None,
    data_root: DataRootOption = None,
) -> None:
    """Validate MANIFEST and summarise it per split: patients, scans, visits, scores, pairs per change class.

    Every problem is listed with its row (data rows count from 1, under the header).

    Exit code 0 when the manifest is clean, 2 when it is not.

    Without a split column it shows the split that `learner data split` would make.
    """
    from learner import api

    cfg = config_from_options(config, sets, **{"data.scale": scale, "runtime.data_root": data_root})
    score_scale = _scale(cfg)
    loaded = _load_or_list_problems(manifest, score_scale, cfg.runtime.data_root, True)
    checked = api.check_manifest(loaded, config=cfg)
    console = Console()
    for warning in checked.warnings:
        typer.echo(f"warning: {warning}")
    clean = f"{manifest}: no problems found ({len(loaded.records)} scans, scale {score_scale.name})."
    if checked.split_error is not None:  # the manifest is fine; only the default split settings do not fit it
        console.print(_counts_table({"all": loaded.records}, score_scale))
        typer.echo(
            f"warning: no split shown: {checked.split_error} (adjust data.split or use `learner data split`)"
        )
        typer.echo(clean)
        return
    if not checked.split_from_file:
        console.print(
            f"No complete split column: showing the split `learner data split` would make (seed {cfg.seed}).",
            markup=False,
        )
    loaded = checked.manifest
    console.print(_counts_table({name: loaded.by_split(name) for name in SPLITS}, score_scale))
    console.print(_pairs_table(checked))  # patients without a pair are warned about
    typer.echo(clean)


@data_app.command("split")
def split(
    manifest: ManifestArgument,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the manifest with its split column.")
    ],
    ratios: Annotated[
        str | None,
        typer.Option(
            "--ratios", metavar="A,B,C", help="train,val,test patient ratios, e.g. 2,1,1.", show_default=False
        ),
    ] = None,
    counts: Annotated[
        str | None,
        typer.Option(
            "--counts",
            metavar="A,B,C",
            help="train,val,test patient counts, e.g. 160,44,17.",
            show_default=False,
        ),
    ] = None,
    stratify: Annotated[
        bool | None,
        typer.Option("--stratify/--no-stratify", help="Stratify by patient mean score.", show_default=False),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed (default: config seed).", show_default=False)
    ] = None,
    test_min_visits: Annotated[
        int | None,
        typer.Option(
            "--test-min-visits", help="Visits a test patient needs (default 2).", show_default=False
        ),
    ] = None,
    scale: ScaleOption = None,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Assign every patient of MANIFEST to train, val or test and write the manifest with a split column.

    Sizes are ratios or exact patient counts (default data.split.ratios 0.5,0.25,0.25, i.e. 2:1:1).

    Seeded; the result does not depend on the row order. An existing split column is replaced.
    """
    if ratios is not None and counts is not None:
        raise ConfigError("give --ratios or --counts, not both")
    cfg = config_from_options(
        config,
        sets,
        **{
            "data.scale": scale,
            "seed": seed,
            "data.split.stratify": stratify,
            "data.split.test_min_visits": test_min_visits,
        },
    )
    if ratios is not None:  # either clears the config's other one
        cfg = apply_overrides(cfg, {"data.split.ratios": _three(ratios, float, "--ratios")})
    if counts is not None:
        cfg = apply_overrides(cfg, {"data.split.counts": _three(counts, int, "--counts")})
    from learner import api

    loaded = _load_or_list_problems(manifest, _scale(cfg), cfg.runtime.data_root)
    assigned = api.split_manifest(loaded, out, config=cfg)
    table = Table("split", "patients", "scans", title=f"Patient-level split (seed {cfg.seed})")
    for name in SPLITS:
        records = assigned.by_split(name)
        table.add_row(name, str(len({r.patient_id for r in records})), str(len(records)))
    Console().print(table)
    typer.echo(f"wrote {out}")


@data_app.command("adni")
def adni(
    adnimerge: Annotated[
        Path,
        typer.Option(
            "--adnimerge", help="ADNIMERGE.csv with RID, PTID, VISCODE, EXAMDATE, MMSE, DX, IMAGEUID."
        ),
    ],
    images: Annotated[Path, typer.Option("--images", help="Folder of MRI files (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write (CSV or Parquet).")],
    min_visits: Annotated[
        int,
        typer.Option(
            "--min-visits",
            help="Drop patients with fewer scored visits that have an image (the paper's cohort: 2).",
        ),
    ] = 1,
    max_visits: Annotated[
        int | None,
        typer.Option(
            "--max-visits",
            help="Keep each patient's first N such visits in time order (default: all; the paper's: 3).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Convert an ADNIMERGE table and an image folder into a manifest on the mmse scale (see docs/data.md).

    The paper's ADNI cohort (Section 2.1) is --min-visits 2 --max-visits 3; by default every patient and
    visit is kept. The table counts the patients and scans they drop.
    """
    from learner import api
    from learner.data.adni import visit_limits_problem

    problem = visit_limits_problem(min_visits, max_visits, ("--min-visits", "--max-visits"))
    if problem is not None:
        raise ConfigError(problem)
    report = api.convert_adni(adnimerge, images, out, min_visits=min_visits, max_visits=max_visits)
    table = Table("", "count", title="ADNIMERGE → manifest")
    rows = (
        {
            "ADNIMERGE rows": report.rows,
            "scans written": report.scans,
            "patients": report.patients,
            "matched by IMAGEUID": report.matched_by_imageuid,
            "matched by PTID + visit": report.matched_by_visit,
        }
        | {f"dropped: {reason}": n for reason, n in sorted(report.dropped.items())}
        | {f"patients dropped: {reason}": n for reason, n in sorted(report.dropped_patients.items())}
    )
    for name, value in rows.items():
        table.add_row(name, str(value))
    Console().print(table)
    typer.echo(f"wrote {report.manifest}")


@data_app.command("cache")
def cache(
    manifest: ManifestArgument,
    scale: ScaleOption = None,
    config: ConfigOption = None,
    sets: SetOption = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Decoding processes (default: runtime.workers).")
    ] = None,
    skip_bad: Annotated[
        bool | None,
        typer.Option("--skip-bad/--no-skip-bad", help="Skip unreadable scans (listed) instead of stopping."),
    ] = None,
    data_root: DataRootOption = None,
) -> None:
    """Decode every scan of MANIFEST once into the cache (runtime.cache_dir) so training reads arrays."""
    from learner import api

    explicit = {
        "data.scale": scale,
        "data.skip_bad_scans": skip_bad,
        "runtime.workers": workers,
        "runtime.data_root": data_root,
    }
    cfg = config_from_options(config, sets, **explicit)
    loaded = _load_or_list_problems(manifest, _scale(cfg), cfg.runtime.data_root)
    report = api.build_cache(loaded, config=cfg)
    typer.echo(
        f"cache: {report.built} built, {report.reused} reused, {len(report.skipped)} skipped, "
        f"{report.rebuilt} rebuilt (corrupt) in {report.seconds:.1f} s"
    )
    for scan_id, reason in report.skipped:  # only with --skip-bad; otherwise the first bad scan stops it
        typer.echo(f"skipped {scan_id}: {reason}")


def _load_or_list_problems(
    path: Path, scale: ScoreScale, data_root: Path | None, open_scans: bool = False
) -> Manifest:
    """The validated manifest; otherwise every problem is printed, one per line, before the ManifestError
    (exit code 2) is raised. With ``open_scans`` (``data check``, which decodes nothing) every scan file is
    opened too, and one that cannot be read is a problem of its row (:func:`unreadable_scans`)."""
    try:
        loaded = load_manifest(path, scale, data_root=data_root)
    except ManifestError as exc:
        if not exc.problems:
            raise  # unreadable file: its one-line error
        _list_problems(path, exc.problems)
    if open_scans and (unreadable := unreadable_scans(loaded)):
        _list_problems(path, [str(problem) for problem in unreadable])
    return loaded


def _list_problems(path: Path, problems: list[str]) -> NoReturn:
    """Print every problem, one per line, then raise the ManifestError (exit code 2) that counts them."""
    typer.echo(f"{path}: {len(problems)} problem(s)")
    for problem in problems:
        typer.echo(f"  {problem}")
    raise ManifestError(f"{path}: {len(problems)} problem(s), listed above", problems) from None


def _three(text: str, kind: type[float] | type[int], flag: str) -> list[float] | list[int]:
    """``"2,1,1"`` → ``[2, 1, 1]`` (train, val, test)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != len(SPLITS):
        raise ConfigError(f"{flag} takes three comma-separated numbers (train,val,test), got {text!r}")
    return values


def _scale(cfg: Config) -> ScoreScale:
    """The command's score scale, once a data.custom_scale beside another data.scale is refused."""
    return scale_from_config(check_custom_scale(cfg).data)


def _counts_table(groups: dict[str, list[ScanRecord]], scale: ScoreScale) -> Table:
    unit = f", scores in {scale.unit}" if scale.unit else ""
    title = f"Manifest per split (scale {scale.name}{unit})"
    table = Table(
        "split", "patients", "scans", "visits", "score min", "q1", "median", "q3", "max", title=title
    )
    for name, records in groups.items():
        visits = {(r.patient_id, r.visit_order) for r in records}
        patients = len({r.patient_id for r in records})
        table.add_row(name, str(patients), str(len(records)), str(len(visits)), *_quantiles(records))
    return table


def _quantiles(records: list[ScanRecord]) -> list[str]:
    if not records:
        return ["–"] * 5
    values = np.percentile([r.score for r in records], [0, 25, 50, 75, 100])
    return [f"{v:g}" for v in values]


def _pairs_table(checked: ManifestCheck) -> Table:
    """Pairs per change class: exactly the pair sets a classification run draws (``split_pairs``)."""
    cfg = checked.config
    pairs_cfg = cfg.data.pairs
    table = Table(
        "split", "pairs", title="Pairs per change class (inter-patient for train/val, intra for test)"
    )
    for name in ("kind", *CLASS_NAMES):
        table.add_column(name, no_wrap=True)
    pairs = checked.pairs()
    kinds = {"train": f"inter, seed {cfg.seed}", "val": f"inter, seed {cfg.seed + 1}"}
    for name in SPLITS:
        kind = kinds.get(name, f"intra, {pairs_cfg.intra}")
        counts = pair_class_counts(pairs[name]).values()
        table.add_row(name, str(len(pairs[name])), kind, *(str(n) for n in counts))
    return table
