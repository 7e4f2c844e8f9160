"""Table 3 on real lung-ultrasound clips: the POCUS collection (covid19_ultrasound), 0–3 severity score.

Three steps, each printed as it happens (see README.md beside this file for the choices and a measured run):

1. **Manifest.** Every row of ``dataset_metadata.csv`` is kept or skipped with a reason, never dropped
   silently: kept rows have a ``Lung Severity Score``, a ``Patient ID / Name`` and a clip in
   ``pocus_videos/`` that decodes. A patient's clips get visits 1, 2, … in natural filename order (the one
   four-day series, ``Cov-Atlas-Day+1`` … ``+4``, sorts by day), so the intra-patient pairs of a test patient
   are its clips two by two. The clips are read in place (absolute paths); nothing is copied.
2. **Split.** Patients, by :func:`learner.data.splits.assign_splits` (stratified by mean score, test patients
   need ≥ 2 clips), written into the manifest's ``split`` column.
3. **Table 3.** ``learner experiment table3 --config small-cohort`` with the custom 0–3 scale and all-pairs
   intra-patient pairs, one seed, resumable (``--resume`` when the output folder exists); then the summary:
   val MAE against the predict-the-mean baseline and Fig. 1's ρ against |Δ score| for each objective.

Usage (from the repository root)::

    python examples/pocus/run.py                       # ../shared/data/pocus → runs/pocus
    python examples/pocus/run.py --metadata PATH/dataset_metadata.csv --out runs/pocus --manifest-only
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from learner.config import SplitConfig
from learner.data.manifest import load_manifest, write_manifest
from learner.data.readers import READERS, read_scan, suffix_of
from learner.data.scales import ScoreScale
from learner.data.splits import assign_splits
from learner.errors import LearnerError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_METADATA = REPO / ".." / "shared" / "data" / "pocus" / "dataset_metadata.csv"

SCORE, PATIENT, FILENAME = "Lung Severity Score", "Patient ID / Name", "Filename"

SCALE = ScoreScale("custom", low=0.0, high=3.0, higher_is_better=False, threshold=1.0, integer=True)
"""The severity score 0–3 (lower is healthier); |Δ| < 1, i.e. the same score, is stable."""

SCALE_OVERRIDES = [
    "data.custom_scale.low=0",
    "data.custom_scale.high=3",
    "data.custom_scale.integer=true",
    "data.custom_scale.higher_is_better=false",
    "data.custom_scale.threshold=1",
]
"""The same scale for ``learner experiment table3`` (``--dataset POCUS=manifest.csv@custom``)."""

PAIR_OVERRIDES = ["data.pairs.intra=all", "data.pairs.match_site=false"]
"""Test pairs: every two clips of a test patient (zones of one exam), not only consecutive visits."""

SPLIT = SplitConfig(ratios=(0.6, 0.2, 0.2), test_min_visits=2)
"""Patients 60/20/20: the most patients for pretraining that still leaves a test split with pairs."""


@dataclass(frozen=True)
class Skipped:
    """A metadata row that is not in the manifest, and why."""

    row: int  # 1 = the first data row under the header (line row + 1 of the CSV)
    filename: str
    reason: str


@dataclass(frozen=True)
class Built:
    """The manifest table (``split`` not yet set) and every skipped row."""

    frame: pd.DataFrame
    skipped: list[Skipped]
    n_rows: int


def build_manifest(metadata: Path, videos: Path | None = None) -> Built:
    """The POCUS manifest from ``dataset_metadata.csv`` and ``pocus_videos/`` (by default beside it).

    A row is kept when it has a score, a patient and a decodable clip whose file name (without suffix,
    case-insensitively) is the row's ``Filename``. Every other row is in ``Built.skipped`` with the first
    reason that applies: no score, score not a whole number in 0–3, no patient, no clip file, clip not
    readable, a second row for a clip already kept.

    Raises:
        LearnerError: no folder ``videos``, or no row kept (with the first row's reason).
    """
    videos = videos or metadata.parent / "pocus_videos"
    if not videos.is_dir():
        raise LearnerError(f"{videos}: no such folder (the clips, pocus_videos/ beside {metadata.name})")
    table = pd.read_csv(metadata, dtype=str, keep_default_na=False)
    clips: dict[str, Path] = {}
    for path in sorted(videos.rglob("*")):
        if path.is_file() and suffix_of(path) in READERS:
            clips.setdefault(path.stem.strip().lower(), path.resolve())
    kept: list[dict[str, object]] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for row, raw in enumerate(table.to_dict("records"), start=1):
        item = {str(key): str(value) for key, value in raw.items()}
        name = item[FILENAME].strip()
        reason = _skip_reason(item, clips.get(name.lower()), seen)
        if reason:
            skipped.append(Skipped(row, name, reason))
            continue
        path = clips[name.lower()]
        seen.add(path)
        kept.append(
            {
                "patient_id": f"pocus-{item[PATIENT].strip()}",
                "scan_id": name,
                "path": str(path),
                "score": int(item[SCORE].strip()),
                "modality": "video",
                "probe": item["Probe"].strip(),
                "label": item["Label"].strip(),
                "zone": item["Area according to DEGUM"].strip(),
                "license": item["License"].strip(),
                "metadata_row": row,
            }
        )
    if not kept:
        first = skipped[0] if skipped else None
        why = f" (row {first.row}: {first.reason})" if first else ""
        raise LearnerError(f"{metadata}: none of its {len(table)} rows has a clip to keep{why}")
    frame = pd.DataFrame(kept)
    frame["visit"] = _visit_numbers(frame)
    columns = ["patient_id", "scan_id", "path", "visit", "score", "modality"]
    frame = frame[columns + [c for c in frame.columns if c not in columns]]
    return Built(frame.sort_values(["patient_id", "visit"], ignore_index=True), skipped, len(table))


def _skip_reason(item: dict[str, str], clip: Path | None, seen: set[Path]) -> str | None:
    score = item[SCORE].strip()
    if not score:
        return "no Lung Severity Score"
    if score not in {"0", "1", "2", "3"}:
        return f"score {score!r} is not a whole number in 0-3"
    if not item[PATIENT].strip():
        return "no Patient ID / Name"
    if clip is None:
        return "no clip of that name in pocus_videos/"
    if clip in seen:
        return f"a second row for {clip.name}"
    try:
        read_scan(clip, max_frames=2, grey=True)
    except LearnerError as exc:
        return f"clip not readable: {exc}"
    return None


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in re.split(r"(\d+)", text) if p)


def _visit_numbers(frame: pd.DataFrame) -> list[int]:
    """1, 2, … per patient in natural filename order (a clip per visit; see the module docstring)."""
    order = sorted(range(len(frame)), key=lambda k: (frame["patient_id"][k], _natural(frame["scan_id"][k])))
    visits = [0] * len(frame)
    count: dict[str, int] = {}
    for k in order:
        patient = frame["patient_id"][k]
        count[patient] = count.get(patient, 0) + 1
        visits[k] = count[patient]
    return visits


def write_split_manifest(built: Built, out_dir: Path, seed: int = 0) -> Path:
    """``out_dir/manifest.csv``: the built manifest with its patient split, validated by ``load_manifest``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "manifest.csv"
    write_manifest(built.frame, target)  # validated below, then rewritten with its split
    splits = assign_splits(load_manifest(target, SCALE), SPLIT, seed)
    write_manifest(built.frame.assign(split=built.frame["patient_id"].map(splits)), target)
    load_manifest(target, SCALE)
    return target


def describe(built: Built, manifest: Path) -> str:
    """Kept/skipped counts, every skipped row with its reason, and patients/clips/scores per split."""
    frame = pd.read_csv(manifest, dtype={"patient_id": str})
    lines = [f"metadata rows: {built.n_rows}; kept {len(built.frame)} clips; skipped {len(built.skipped)}"]
    reasons = pd.Series([s.reason.split(":")[0] for s in built.skipped]).value_counts()
    lines += [f"  skipped, {reason}: {n}" for reason, n in reasons.items()]
    with_score = [s for s in built.skipped if s.reason != "no Lung Severity Score"]
    lines += [f"  row {s.row} {s.filename!r}: {s.reason}" for s in with_score]
    lines.append(
        f"  (and {len(built.skipped) - len(with_score)} rows without a score, listed in skipped.csv)"
    )
    for split, part in frame.groupby("split", sort=False):
        clips_per_patient = part.groupby("patient_id").size()
        scores = part["score"].value_counts().sort_index().to_dict()
        lines.append(
            f"{split}: {part['patient_id'].nunique()} patients, {len(part)} clips "
            f"({int((clips_per_patient >= 2).sum())} patients with ≥ 2 clips), scores {scores}"
        )
    return "\n".join(lines)


def table3_command(manifest: Path, out: Path, resume: bool) -> list[str]:
    """The ``learner experiment table3`` call: small-cohort preset, one seed, the custom scale and pairs."""
    sets = [*SCALE_OVERRIDES, *PAIR_OVERRIDES, "experiment.seeds=[0]"]
    command = [sys.executable, "-m", "learner", "experiment", "table3", "--config", "small-cohort"]
    command += ["--dataset", f"POCUS={manifest}@custom", "--out", str(out)]
    for item in sets:
        command += ["--set", item]
    return [*command, "--resume"] if resume else command


def summary(out: Path) -> str:
    """Val MAE against the predict-the-mean baseline and Fig. 1's ρ vs |Δ score| per objective (Markdown)."""
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    panels = results["figures"]["POCUS"]["score"]["panels"]
    header = ["loss", "val MAE", "mean-baseline MAE", "MAE reduction", "ρ vs \\|Δ score\\| [95% CI]"]
    lines = ["| " + " | ".join([*header, "pairs / patients", "pretrain s"]) + " |", "|---" * 7 + "|"]
    for cell in results["cells"]:
        best, panel = cell["regression"], panels[cell["loss"]]
        row = [
            cell["loss"],
            f"{best['val_mae']:.3f}",
            f"{best['baseline_mae']:.3f}",
            f"{100 * (1 - best['val_mae'] / best['baseline_mae']):.1f}%",
            f"{panel['spearman_rho']:+.2f} [{panel['ci_low']:+.2f}, {panel['ci_high']:+.2f}]",
            f"{panel['n_pairs']} / {panel['n_patients']}",
            f"{cell.get('pretrain_seconds') or 0:.0f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path, default=DEFAULT_METADATA, help="dataset_metadata.csv")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "pocus", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    parser.add_argument("--manifest-only", action="store_true", help="stop after writing the manifest")
    args = parser.parse_args(argv)
    if not args.metadata.is_file():
        parser.error(f"{args.metadata} not found (give --metadata PATH/dataset_metadata.csv)")
    try:
        built = build_manifest(args.metadata.resolve())
    except LearnerError as exc:
        parser.exit(2, f"error: {exc}\n")
    manifest = write_split_manifest(built, args.out, args.seed)
    pd.DataFrame(built.skipped).to_csv(args.out / "skipped.csv", index=False)
    print(describe(built, manifest))
    print(f"manifest: {manifest}; every skipped row: {args.out / 'skipped.csv'}")
    if args.manifest_only:
        return 0
    table3 = args.out / "table3"
    command = table3_command(manifest, table3, resume=table3.exists())
    print("$", " ".join(command), flush=True)
    start = time.monotonic()
    done = subprocess.run(command, check=False)
    if done.returncode:  # the command said why in its own one line
        return done.returncode
    print(f"wall time {(time.monotonic() - start) / 60:.1f} min")
    print(summary(table3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
