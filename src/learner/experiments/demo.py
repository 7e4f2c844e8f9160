"""``learner demo``: the paper's Table 3 and Fig. 1 (Section 3) end to end on the built-in phantom cohorts.

Steps: generate (or reuse) the phantom cohort(s) under ``OUT`` and run
:func:`learner.experiments.table3.run_table3` on them; ``learner demo`` then writes the report
(:func:`learner.report.write_report`, which comes after the experiments in the import order). Two modes
(:data:`MODES`):

* **demo** (default) — the bundled ``demo`` config (``learner/configs/demo.yaml``), sized to finish
  within about 10 minutes on 2 CPU cores for the LUS column: the paper's train/val patients (160/44) but
  50 test patients instead of Table 1's 17 (Fig. 1's patient-bootstrap interval is about ±0.25 at 17
  patients, too wide to tell a ρ of 0.3 from 0, and ±0.15 at 50), small frames (32 px, 8 rendered frames,
  4 per clip) and few epochs. The report states the cohort's split next to Table 1's. docs/experiments.md
  gives the measured time and what the settings cost.
* **full** — the bundled ``lus`` config (Table 2: 100 epochs, batch 16; 224 px, 8 frames) on cohorts
  rendered at a higher resolution; meant for a GPU.

``--dataset mri`` (or ``both``) adds the MRI phantom, brought in through the ADNI adapter like real ADNI data
(NIfTI volumes whose axial slices are the clip's frames, MMSE scale) and split 2:1:1 by patient.

The experiment lives in ``OUT/table3-<mode>``; running the demo again continues it (finished cells are
reused), ``force`` recomputes it (the cohorts are still reused when their parameters match).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from learner.config import DatasetSpec, Experiment, SplitConfig, load_experiment
from learner.data.adni import adnimerge_to_manifest
from learner.data.manifest import load_manifest, write_manifest
from learner.data.phantom.lus import generate_lus_cohort
from learner.data.phantom.mri import generate_mri_cohort
from learner.data.scales import get_scale
from learner.data.splits import TABLE_1_PATIENTS, assign_splits
from learner.errors import ConfigError
from learner.experiments.grid import record_timing
from learner.experiments.results import ExperimentResult
from learner.experiments.table3 import run_table3
from learner.layout import RunLayout
from learner.runs import check_run_dir
from learner.timing import CLOCK, Timing, stage
from learner.training.device import resolve_device


@dataclass(frozen=True)
class DemoMode:
    """One demo setting: the config file (in ``configs/``) and the phantom cohorts' generator arguments."""

    config: str
    lus: dict[str, Any] = field(default_factory=dict)
    mri: dict[str, Any] = field(default_factory=dict)


MODES: dict[str, DemoMode] = {
    "demo": DemoMode(
        "demo.yaml",
        lus={"patients": (160, 44, 50), "frames": 8, "size": 32},
        mri={"patients": (80, 40, 40), "size": 32},
    ),
    "full": DemoMode(
        "lus.yaml",
        lus={"patients": TABLE_1_PATIENTS, "frames": 16, "size": 128},
        mri={"patients": (320, 160, 159), "size": 64},
    ),
}
"""Mode → config and cohort sizes: for LUS the paper's train/val patients (Table 1) and, in the CPU demo, more
test patients (narrower Fig. 1 intervals); fewer MRI patients in the CPU demo (its volumes cost more per
scan)."""

ADNI_SPLIT = SplitConfig(ratios=(0.5, 0.25, 0.25))  # the paper's 2:1:1 patient split of ADNI


@dataclass(frozen=True)
class DemoResult:
    """The finished experiment and the wall time of the demo, in all and per stage (cohorts included)."""

    experiment: ExperimentResult
    timing: Timing

    @property
    def seconds(self) -> float:
        """The demo's wall time."""
        return self.timing.total


def prepare_lus(folder: Path, mode: DemoMode, workers: int) -> DatasetSpec:
    """The phantom LUS cohort (mp4 clips, S/F scale, its own split column) as a dataset column."""
    manifest = generate_lus_cohort(folder, workers=workers, **mode.lus)
    return DatasetSpec(name="LUS", manifest=manifest, scale="sf")


def prepare_mri(folder: Path, mode: DemoMode, workers: int) -> DatasetSpec:
    """The phantom MRI cohort through the ADNI adapter, split 2:1:1 by patient, as a dataset column."""
    table = generate_mri_cohort(folder / "cohort", workers=workers, **mode.mri)
    target = folder / "manifest.csv"
    adnimerge_to_manifest(table, table.parent / "images", target)
    manifest = load_manifest(target, get_scale("mmse"))
    write_manifest(manifest.with_splits(assign_splits(manifest, ADNI_SPLIT, seed=0)), target)
    return DatasetSpec(name="MRI", manifest=target, scale="mmse")


DATASETS: dict[str, tuple[Callable[[Path, DemoMode, int], DatasetSpec], ...]] = {
    "lus": (prepare_lus,),
    "mri": (prepare_mri,),
    "both": (prepare_lus, prepare_mri),
}


def demo_config(mode: str) -> Experiment:
    """The experiment of a demo mode: a config bundled with the package (``learner/configs``)."""
    return load_experiment(Path(MODES[mode].config).stem)


def run_demo(
    out_dir: str | os.PathLike[str] = "runs/demo",
    *,
    dataset: str = "lus",
    full: bool = False,
    force: bool = False,
    workers: int = 2,
    longitudinal: bool = False,
) -> DemoResult:
    """Generate or reuse the phantom cohort(s) and run (or continue) Table 3 on them.

    Args:
        out_dir: holds ``phantom-<dataset>-<mode>/`` cohorts and the ``table3-<mode>/`` experiment.
        dataset: ``lus``, ``mri`` or ``both`` (the columns of Table 3).
        full: paper-scale settings (the bundled ``lus`` config) instead of the CPU demo.
        force: recompute the experiment instead of continuing it.
        workers: processes that render the phantom.
        longitudinal: the LUS cohort's train and val patients are scanned on several days too (the paper's
            have one day), so the val split has visit pairs and the tables gain the *Δ predicted score,
            calibrated* answer (:mod:`learner.evaluation.change_posterior`); the MRI cohort has repeat visits
            already. The cohort and the experiment get folders of their own (``-longitudinal``).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown demo dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    started = CLOCK.mark()
    mode_name = "full" if full else "demo"
    mode, experiment = MODES[mode_name], demo_config(mode_name)
    suffix = "-longitudinal" if longitudinal else ""
    if longitudinal:
        mode = replace(mode, lus=mode.lus | {"longitudinal": True})
    root = Path(out_dir)
    experiment_dir = root / f"table3-{mode_name}{suffix}"
    resume = not force and RunLayout(experiment_dir).config.is_file()
    check_run_dir(experiment_dir, resume=resume, force=force, kind="experiment")  # before any cohort
    resolve_device(experiment.config.runtime.device)
    with stage("cohort"):
        specs = []
        for prepare in DATASETS[dataset]:
            name = prepare.__name__.removeprefix("prepare_")
            cohort = (
                f"phantom-{name}-{mode_name}{suffix if name == 'lus' else ''}"  # MRI: repeat visits anyway
            )
            specs.append(prepare(root / cohort, mode, workers))
    grid = experiment.grid.model_copy(update={"datasets": specs})
    result = run_table3(Experiment(experiment.config, grid), experiment_dir, resume=resume, force=force)
    timing = CLOCK.since(started)
    record_timing(experiment_dir, timing)  # the cohorts' time too
    timed = replace(result, results=result.results.model_copy(update={"timing": timing}))
    return DemoResult(timed, timing)
