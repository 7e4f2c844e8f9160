"""``learner experiment table3 | ablation`` (Tables 3 and 4) and ``learner demo`` (Table 3 on the phantom)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from learner.cli.options import ConfigOption, SetOption
from learner.config import DatasetSpec, Experiment, load_experiment
from learner.errors import ConfigError

experiment_app = typer.Typer(
    help="The paper's experiments: Table 3 (loss × dataset × seed) and Table 4 (the ablation grid).",
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


def _grid_config(config: Path | None, sets: list[str] | None, datasets: list[str] | None) -> Experiment:
    experiment = load_experiment(config, sets or [])
    if datasets:
        specs = [parse_dataset(text, experiment.config.data.scale) for text in datasets]
        experiment = Experiment(experiment.config, experiment.grid.model_copy(update={"datasets": specs}))
    return experiment


def _run_and_report(
    runner: Callable[..., Any], experiment: Experiment, out: Path, *, resume: bool, force: bool
) -> None:
    """Run an experiment grid, print its table, write and name its report."""
    from learner.report import write_report

    result = runner(experiment.config, out, grid=experiment.grid, resume=resume, force=force)
    typer.echo(result.table)
    typer.echo(f"report: {write_report(result.out_dir)}")


@experiment_app.command("table3")
def table3_command(
    out: OutOption,
    config: ConfigOption = None,
    sets: SetOption = None,
    dataset: DatasetOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
) -> None:
    """Table 3: pretrain with every loss of experiment.losses on every dataset and seed, classify, compare.

    Writes OUT/table3.md (the paper's layout, mean ± std over seeds), table3.csv, results.json, the Fig. 1
    panels and OUT/REPORT.md. An interrupted run continues with --resume.
    """
    from learner.experiments.table3 import run_table3

    _run_and_report(run_table3, _grid_config(config, sets, dataset), out, resume=resume, force=force)


@experiment_app.command("ablation")
def ablation_command(
    out: OutOption,
    config: ConfigOption = None,
    sets: SetOption = None,
    dataset: DatasetOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
) -> None:
    """Table 4: backbone × combine × loss × classifier (experiment.backbones/combines/losses/classifiers).

    Each (backbone, loss, seed) is pretrained once; its cached embeddings serve every combine and
    classifier. Writes OUT/table4.md, table4.csv, results.json and OUT/REPORT.md.
    """
    from learner.experiments.ablation import run_ablation

    _run_and_report(run_ablation, _grid_config(config, sets, dataset), out, resume=resume, force=force)


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
) -> None:
    """The main job: Table 3 and Fig. 1 on the built-in phantom cohort, with a Markdown report.

    Generates (or reuses) the phantom, pretrains MSE, MSE+CL and MSE+wCL encoders, trains and tests the
    health-change classifier on each, then prints the table and the report's path. The default settings
    (the bundled demo config) finish in about 10 minutes on 2 CPU cores; running it again continues the same
    experiment.
    """
    from learner.experiments.demo import run_demo
    from learner.report import regression_summary, write_report

    result = run_demo(out, dataset=dataset, full=full, force=force)
    typer.echo(result.experiment.table)
    typer.echo(regression_summary(result.experiment.results.cells))
    typer.echo(f"report: {write_report(result.experiment.out_dir)}")
    typer.echo(f"wall time: {result.seconds / 60:.1f} min")
