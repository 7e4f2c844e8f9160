"""``learner experiment table3 | ablation | sweep | ceiling`` (Tables 3 and 4, the settings sweep, the ceiling
study) and ``learner demo`` (Table 3 on the phantom)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from learner.cli.options import ConfigOption, ScaleOption, SetOption, config_from_options
from learner.config import DatasetSpec, Experiment, apply_overrides, load_experiment, split_override
from learner.errors import ConfigError
from learner.timing import Timing

experiment_app = typer.Typer(
    help="The paper's experiments: Table 3 (loss × dataset × seed), Table 4 (the ablation grid), a "
    "sweep of named settings, and the ceiling study of Fig. 1's ρ.",
    no_args_is_help=True,
)

OutOption = Annotated[Path, typer.Option("--out", "-o", help="The experiment's run directory.")]
DatasetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset",
        help="A dataset column, NAME=MANIFEST or NAME=MANIFEST@SCALE (repeatable).",
        show_default=False,
    ),
]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue OUT: finished cells are reused, new cells computed.")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Wipe a non-empty OUT first.")]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the resolved config, every cell, scans per split, pairs per class and a rough time "
        "estimate; create nothing.",
    ),
]
SettingOption = Annotated[
    list[str] | None,
    typer.Option(
        "--setting",
        metavar="NAME:KEY=VALUE,...",
        help="A named setting of the sweep, e.g. small:data.size=32,data.frames=4 (repeatable; replaces a "
        "setting of the same name in experiment.settings).",
        show_default=False,
    ),
]

LauncherOption = Annotated[
    str | None,
    typer.Option(
        "--launcher",
        help="Where cells run: inline (here), submitit (one SLURM job per cell) or submitit-local "
        "(runtime.launcher; needs pip install 'learner\\[cluster]').",
        show_default=False,
    ),
]
LauncherOptOption = Annotated[
    list[str] | None,
    typer.Option(
        "--launcher-opt",
        metavar="KEY=VALUE",
        help="A submitit executor parameter, e.g. slurm_partition=gpu, timeout_min=120, gpus_per_node=1 "
        "(repeatable; runtime.launcher_options).",
        show_default=False,
    ),
]
LoggerOption = Annotated[
    str | None,
    typer.Option(
        "--logger",
        help="Every pretraining's metrics sink besides metrics.csv: csv, tensorboard or mlflow "
        "(runtime.logger).",
        show_default=False,
    ),
]

_NEXT_KEY = re.compile(r",(?=\s*[A-Za-z_][\w.]*\s*=)")
"""A comma that starts the next ``key=value`` of a --setting (commas inside values such as [3,2,1] stay)."""


def register(app: typer.Typer) -> None:
    """Add the ``experiment`` group and ``demo`` to the ``learner`` app."""
    app.add_typer(experiment_app, name="experiment")
    app.command("demo")(demo_command)


def parse_dataset(text: str, default_scale: str) -> DatasetSpec:
    """``NAME=MANIFEST[@SCALE]`` → a :class:`DatasetSpec` (the scale defaults to ``data.scale``)."""
    name, sep, rest = text.partition("=")
    manifest, _, scale = rest.rpartition("@") if "@" in rest else (rest, "", default_scale)
    if not sep or not name or not manifest:
        raise ConfigError(f"--dataset {text!r} must look like NAME=MANIFEST or NAME=MANIFEST@SCALE")
    return DatasetSpec(name=name, manifest=Path(manifest), scale=scale)


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,key=value`` → (name, {dotted key: value}); values are YAML scalars or lists
    (``data.split.counts=[3,2,1]``). ``NAME:`` alone is the base config under that name."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise ConfigError(f"--setting {text!r} must look like NAME:key=value,key=value")
    items = [item for item in _NEXT_KEY.split(rest) if item.strip()]
    return name.strip(), dict(split_override(item) for item in items)


def runtime_overrides(
    launcher: str | None, launcher_opts: list[str] | None, logger: str | None
) -> dict[str, Any]:
    """``--launcher``, ``--launcher-opt KEY=VALUE`` and ``--logger`` as dotted ``runtime`` overrides."""
    overrides: dict[str, Any] = {"runtime.launcher": launcher, "runtime.logger": logger}
    if launcher_opts:
        pairs = [text.partition("=") for text in launcher_opts]
        bad = [key + sep + value for key, sep, value in pairs if not sep or not key.strip()]
        if bad:
            raise ConfigError(f"--launcher-opt {bad[0]!r} must look like KEY=VALUE")
        overrides["runtime.launcher_options"] = {key.strip(): value for key, _, value in pairs}
    return {key: value for key, value in overrides.items() if value is not None}


def _grid_config(
    config: Path | None,
    sets: list[str] | None,
    datasets: list[str] | None,
    settings: list[str] | None = None,
    runtime: dict[str, Any] | None = None,
) -> Experiment:
    experiment = load_experiment(config, sets or [])
    if runtime:
        experiment = Experiment(apply_overrides(experiment.config, runtime), experiment.grid)
    update: dict[str, Any] = {}
    if datasets:
        update["datasets"] = [parse_dataset(text, experiment.config.data.scale) for text in datasets]
    if settings:
        update["settings"] = experiment.grid.settings | dict(parse_setting(text) for text in settings)
    if update:
        experiment = Experiment(experiment.config, experiment.grid.model_copy(update=update))
    return experiment


def _run_and_report(
    runner: Callable[..., Any],
    experiment: Experiment,
    out: Path,
    *,
    resume: bool,
    force: bool,
    dry_run: str | None = None,
) -> None:
    """Run an experiment grid, print its table, write and name its report, print the per-stage times; with
    ``dry_run`` (the experiment's kind) only print its plan (:mod:`learner.experiments.dry_run`)."""
    if dry_run is not None:
        from learner.experiments.dry_run import plan_experiment

        typer.echo(plan_experiment(dry_run, experiment, out if resume else None).render())
        return
    from learner.report.tables import render_experiment_table
    from learner.training.device import thread_count, torch_threads

    with torch_threads(thread_count(experiment.config.runtime)[0]):
        result = runner(out, config=experiment, resume=resume, force=force)
    typer.echo(render_experiment_table(result.results))
    typer.echo(f"report: {_timing_and_report(result.out_dir, result.results.timing)}")


def _timing_and_report(out_dir: Path, timing: Timing | None) -> Path:
    """Print the whole run's wall time per stage (the API function wrote the report, timed as the stage
    ``report``, and stored them in ``results.json``) and return the report's path."""
    from learner.report import REPORT_FILE

    if timing is not None:
        typer.echo(f"wall time per stage (this run):\n{timing.table()}")
    return out_dir / REPORT_FILE


def _grid_command(
    name: str, load_runner: Callable[[], Callable[..., Any]], doc: str, *, settings: bool = False
) -> None:
    """Register ``learner experiment NAME``: run the grid of ``--config``, ``--set``, ``--dataset`` (and,
    with ``settings``, ``--setting``) through the runner ``load_runner()`` returns (imported only when the
    command runs, so ``learner --help`` stays fast). Every grid command has this one option set."""

    def command(
        out: OutOption,
        config: ConfigOption = None,
        sets: SetOption = None,
        setting: SettingOption = None,
        dataset: DatasetOption = None,
        resume: ResumeOption = False,
        force: ForceOption = False,
        launcher: LauncherOption = None,
        launcher_opt: LauncherOptOption = None,
        logger: LoggerOption = None,
        dry_run: DryRunOption = False,
    ) -> None:
        runtime = runtime_overrides(launcher, launcher_opt, logger)
        experiment = _grid_config(config, sets, dataset, setting, runtime)
        if force and config is not None and not dry_run:
            from learner.runs import check_inputs_outside

            check_inputs_outside(out, [config])  # --force must not delete the file this run reads
        _run_and_report(
            load_runner(), experiment, out, resume=resume, force=force, dry_run=name if dry_run else None
        )

    if not settings:  # only a sweep has named settings: the others do not offer --setting at all
        signature = inspect.signature(command, eval_str=True)  # typer reads a __signature__ as it is
        kept = [p for p in signature.parameters.values() if p.name != "setting"]
        command.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    command.__doc__ = inspect.cleandoc(doc)
    experiment_app.command(name)(command)


def _table3() -> Callable[..., Any]:
    from learner import api

    return api.table3


def _ablation() -> Callable[..., Any]:
    from learner import api

    return api.ablation


def _sweep() -> Callable[..., Any]:
    from learner import api

    return api.sweep


_grid_command(
    "table3",
    _table3,
    """Table 3: pretrain with every loss of experiment.losses on every dataset and seed, classify, compare.

    Writes OUT/table3.md (the paper's layout, mean ± std over seeds), table3.csv, results.json, the Fig. 1
    panels and OUT/REPORT.md. An interrupted run continues with --resume.
    """,
)
_grid_command(
    "ablation",
    _ablation,
    """Table 4: backbone × combine × loss × classifier (experiment.backbones/combines/losses/classifiers).

    Each (backbone, loss, seed) is pretrained once; its cached embeddings serve every combine and
    classifier. Writes OUT/table4.md, table4.csv, results.json and OUT/REPORT.md.
    """,
)
_grid_command(
    "sweep",
    _sweep,
    """A sweep: every named setting (experiment.settings, --setting) × loss × seed on every dataset.

    Reports per setting and loss Fig. 1's ρ against the latent ground truth (phantom) and |Δ score|,
    intra-patient macro-F1, val MAE against the predict-the-mean baseline and the pretraining wall time.
    Writes OUT/sweep.md, sweep.csv, results.json and OUT/REPORT.md; every cell's config is checked before
    the first pretraining. An interrupted sweep continues with --resume.
    """,
    settings=True,
)


def ceiling_command(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="Manifest CSV or Parquet with a latent column (the phantom cohorts write one).",
            show_default=False,
        ),
    ],
    out: OutOption,
    config: ConfigOption = None,
    sets: SetOption = None,
    scale: ScaleOption = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the split, oracle, random init and bootstrap (seed)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="The oracle's pretraining epochs (optim.epochs).")
    ] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Frames per clip (data.frames).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Frame height = width (data.size).")] = None,
    force: ForceOption = False,
) -> None:
    """Ceiling study: how far Fig. 1's ρ against |Δ latent| can go on MANIFEST's test intra-patient pairs.

    Rows: an oracle (the encoder pretrained with MSE on each scan's latent instead of its score), a frozen
    random-init encoder, the raw pixels, and hand features (mean frame, depth profile, lower-half brightness,
    column variance), each with Spearman ρ and its patient-bootstrap interval. Prints the table and writes
    OUT/metrics.json, the report (OUT/REPORT.md, OUT/ceiling.md) and the oracle's run in OUT/oracle.
    """
    from learner import api
    from learner.report import REPORT_FILE
    from learner.report.ceiling import render_ceiling

    cfg = config_from_options(config, sets)  # the flags below override it, as api.ceiling's arguments
    result = api.ceiling(
        manifest,
        out,
        config=cfg,
        scale=scale,
        seed=seed,
        epochs=epochs,
        frames=frames,
        size=size,
        force=force,
    )
    typer.echo(render_ceiling(result.results))
    typer.echo(f"report: {result.out_dir / REPORT_FILE} ({result.results.seconds:.0f} s)")


experiment_app.command("ceiling")(ceiling_command)


def demo_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the cohorts and the experiment.")
    ] = Path("runs/demo"),
    dataset: Annotated[str, typer.Option("--dataset", help="Table 3 column(s): lus, mri or both.")] = "lus",
    full: Annotated[
        bool, typer.Option("--full", help="Paper-scale settings (the bundled lus config; meant for a GPU).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Recompute the experiment (cohorts are reused).")
    ] = False,
    longitudinal: Annotated[
        bool,
        typer.Option(
            "--longitudinal",
            help="LUS train and val patients scanned on several days too (beyond the paper), so the tables "
            "add the predicted scores' answer through a change model fitted on the val visits.",
        ),
    ] = False,
) -> None:
    """The main job: Table 3 and Fig. 1 on the built-in phantom cohort, with a Markdown report.

    Generates (or reuses) the phantom, pretrains MSE, MSE+CL and MSE+wCL encoders, trains and tests the
    health-change classifier on each, then prints the table and the report's path. The default settings
    (the bundled demo config) finish in about 5 minutes on 2 quiet CPU cores (several times that on a busy
    machine); running it again continues the same experiment.
    """
    from learner import api
    from learner.experiments.demo import demo_config
    from learner.report.sections import regression_summary
    from learner.report.tables import render_experiment_table
    from learner.training.device import thread_count, torch_threads

    runtime = demo_config("full" if full else "demo").config.runtime  # threads as every other command
    with torch_threads(thread_count(runtime)[0]):
        result = api.demo(out, dataset=dataset, full=full, force=force, longitudinal=longitudinal)
    typer.echo(render_experiment_table(result.experiment.results))
    typer.echo(regression_summary(result.experiment.results.cells))
    typer.echo(f"report: {_timing_and_report(result.experiment.out_dir, result.timing)}")
    typer.echo(f"wall time: {result.timing.total / 60:.1f} min")
