"""``learner phantom``: write the built-in phantom cohorts (LUS + S/F, MRI + MMSE) and their preview."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from learner.config import check_seed

phantom_app = typer.Typer(
    help="Generated stand-in data: LUS clips with S/F ratios, brain MRI with MMSE (see docs/phantom.md).",
    no_args_is_help=True,
)

OutDirArgument = Annotated[Path, typer.Argument(help="Folder to write the cohort into.", show_default=False)]
SeedOption = Annotated[
    int, typer.Option("--seed", help="The cohort is a pure function of its flags and seed.")
]
WorkersOption = Annotated[
    int, typer.Option("--workers", min=0, help="Rendering processes (0 or 1: in-process).")
]


def register(app: typer.Typer) -> None:
    """Add the ``phantom`` command group to the ``learner`` app."""
    app.add_typer(phantom_app, name="phantom")


def _patients(text: str) -> tuple[int, int, int]:
    """``"160,44,17"`` → (160, 44, 17), or a usage error naming --patients."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or sum(values) == 0:
        raise typer.BadParameter(
            f"expected three non-negative counts like 160,44,17, got {text!r}", param_hint="'--patients'"
        )
    return values


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The cohort's table ``path``, or a one-line error when it no longer is the table the cohort wrote
    (the cohort is reused by its record, ``phantom.json``, whatever became of the table since)."""
    from learner.errors import ManifestError

    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(
            f"{path}: unreadable ({type(exc).__name__}); not the table this cohort wrote"
        ) from None
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ManifestError(
            f"{path}: no column(s) {', '.join(missing)}: not the table this cohort wrote (changed since); "
            "write the cohort into a new folder"
        )
    return frame


def _status(table_path: Path, started: float) -> str:
    """'reused' when the cohort's record predates this command, else 'written'."""
    from learner.data.phantom.cohort import RECORD_NAME

    reused = (table_path.parent / RECORD_NAME).stat().st_mtime < started
    return "reused" if reused else "written"


@phantom_app.command("lus")
def lus(
    out_dir: OutDirArgument,
    patients: Annotated[
        str, typer.Option("--patients", help="Train,val,test patients (Table 1: 160,44,17).")
    ] = "160,44,17",
    seed: SeedOption = 0,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames per clip.")] = 16,
    size: Annotated[int, typer.Option("--size", min=16, help="Frame height = width in pixels (even).")] = 64,
    workers: WorkersOption = 2,
    longitudinal: Annotated[
        bool,
        typer.Option(
            "--longitudinal",
            help="Train and val patients get 2-3 days too (the paper's: test patients only).",
        ),
    ] = False,
) -> None:
    """Write phantom lung-ultrasound clips (mp4), manifest.csv (sf scale) and ground_truth.csv to OUT_DIR.

    Only test patients have two or more days, unless --longitudinal. An existing complete cohort with the
    same flags is reused.
    """
    from learner import api

    started = time.time()
    manifest = api.phantom_lus(
        out_dir,
        patients=_patients(patients),
        seed=check_seed(seed),
        frames=frames,
        size=size,
        workers=workers,
        longitudinal=longitudinal,
    )
    frame = _read_table(manifest, ("patient_id", "visit", "split"))
    table = Table("split", "patients", "visits", "clips", title=f"LUS phantom ({frames}×{size}×{size} mp4)")
    for split in ("train", "val", "test"):
        rows = frame[frame["split"] == split]
        visits = rows[["patient_id", "visit"]].drop_duplicates()
        table.add_row(split, str(rows["patient_id"].nunique()), str(len(visits)), str(len(rows)))
    Console().print(table)
    typer.echo(
        f"{_status(manifest, started)} {manifest} ({len(frame)} clips) in {time.time() - started:.1f} s"
    )


@phantom_app.command("mri")
def mri(
    out_dir: OutDirArgument,
    patients: Annotated[
        str,
        typer.Option(
            "--patients",
            help="Patients as train,val,test counts; only the total is used (ADNI: 639; at most 9998).",
        ),
    ] = "320,160,159",
    seed: SeedOption = 0,
    size: Annotated[int, typer.Option("--size", min=16, help="Voxels per axis of each volume.")] = 48,
    workers: WorkersOption = 2,
) -> None:
    """Write phantom brain MRI volumes (NIfTI), ADNIMERGE.csv and ground_truth.csv to OUT_DIR.

    Turn them into a manifest with `learner data adni --adnimerge OUT_DIR/ADNIMERGE.csv --images
    OUT_DIR/images --out manifest.csv`. An existing complete cohort with the same flags is reused.
    """
    from learner import api

    started = time.time()
    table_path = api.phantom_mri(
        out_dir, patients=_patients(patients), seed=check_seed(seed), size=size, workers=workers
    )
    frame = _read_table(table_path, ("PTID", "IMAGEUID", "MMSE"))
    images, unscored = int(frame["IMAGEUID"].notna().sum()), int(frame["MMSE"].isna().sum())
    typer.echo(
        f"{_status(table_path, started)} {table_path}: {frame['PTID'].nunique()} patients, "
        f"{len(frame)} visits, {images} volumes of {size}³ voxels, {unscored} visit(s) without MMSE, "
        f"{len(frame) - images} without an image, in {time.time() - started:.1f} s"
    )


@phantom_app.command("preview")
def preview(
    out_png: Annotated[Path, typer.Argument(help="PNG to write.", show_default=False)],
    seed: SeedOption = 0,
) -> None:
    """Draw LUS frames across severity and patients, and MRI slices across atrophy, into OUT_PNG."""
    from learner import api

    started = time.time()
    written = api.phantom_preview(out_png, seed=check_seed(seed))
    typer.echo(f"wrote {written} in {time.time() - started:.1f} s")
