"""``learner pretrain``: Algorithm 1 on a manifest's train split, one or many processes (torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from learner.cli.options import ConfigOption, SetOption, config_from_options
from learner.config import apply_overrides, check_custom_scale, split_override
from learner.errors import ConfigError
from learner.runs import check_inputs_outside, load_run_config


def register(app: typer.Typer) -> None:
    """Add the ``pretrain`` command to the ``learner`` app."""
    app.command("pretrain")(pretrain_command)


def pretrain_command(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory to create.", show_default=False)
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="Manifest CSV/Parquet (data.manifest).")
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            "--loss", help="mse, mse+cl, mse+wcl, mse+wcl_scaled, or vicreg (self-supervised) (loss.name)."
        ),
    ] = None,
    config: ConfigOption = None,
    sets: SetOption = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (optim.epochs).")] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            "--backbone", help="Encoder (model.backbone): tsm_resnet18, vit, swin, resnet18_3d, vit_3d."
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            help="Encoder weights (model.init): a previous pretraining RUN_DIR (its checkpoints/best), a "
            "model folder (learner export --format folder) or a safetensors/.pth file.",
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu or cuda (runtime.device).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of every RNG (seed).")] = None,
    logger: Annotated[
        str | None,
        typer.Option(
            "--logger",
            help="Metrics sink besides metrics.csv: csv (none), tensorboard or mlflow (runtime.logger).",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            metavar="RUN_DIR",
            help="Continue RUN_DIR from checkpoints/last with its stored config (instead of --out); with "
            "--set optim.epochs=N (N larger) extend a finished run (docs/training.md).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty OUT.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the resolved config, scans per split, pairs per class and a rough time estimate; "
            "create nothing.",
        ),
    ] = False,
) -> None:
    """Pretrain encoder + regression head on λ·MSE + (1 − λ)·contrastive (Alg. 1, Table 2 defaults).

    Every config key can be set with --set key.sub=value; the other flags are shortcuts for keys.

    Writes OUT/config.yaml, metrics.csv (one row per epoch), metrics.json and checkpoints/{best,last}.

    With --loss vicreg: a self-supervised stage on the train and val scans' pixels (no scores); chain it
    with --init RUN_DIR, which starts the encoder from a previous run's checkpoints/best.

    With N processes: torchrun --nproc_per_node=N -m learner pretrain ... (optim.batch_size is global).
    """
    from learner import api

    flags = {
        "--manifest": ("data.manifest", manifest),
        "--loss": ("loss.name", loss),
        "--epochs": ("optim.epochs", epochs),
        "--backbone": ("model.backbone", backbone),
        "--init": ("model.init", init),
        "--seed": ("seed", seed),
    }
    if dry_run and resume is None:
        from learner.experiments.dry_run import plan_pretrain

        cfg = config_from_options(config, sets, **dict(flags.values()))
        if device is not None:
            cfg = apply_overrides(cfg, {"runtime.device": device})
        typer.echo(plan_pretrain(check_custom_scale(cfg)).render())
        return
    if resume is not None and out is not None and resume != out:
        raise ConfigError(f"--resume {resume} continues that run; drop --out {out}")
    out = resume or out
    if out is None:
        raise ConfigError("give --out RUN_DIR for a new run, or --resume RUN_DIR to continue one")
    if resume:
        extend = [item for item in sets or [] if split_override(item)[0] == "optim.epochs"]
        given = [flag for flag, (_, value) in flags.items() if value is not None and flag != "--epochs"]
        given += ["--config"] * (config is not None) + ["--set"] * (len(sets or []) > len(extend))
        if given:  # a resumed run must compute what the interrupted one would have (it may only extend)
            raise ConfigError(
                f"--resume continues {out} with its stored config; drop {', '.join(given)} "
                "(only --epochs / --set optim.epochs=N may extend it)"
            )
        cfg = load_run_config(out)
        more = dict(split_override(item) for item in extend)
        if epochs is not None:  # --epochs 0 is refused as without --resume, never taken as "not given"
            more["optim.epochs"] = epochs
        cfg = apply_overrides(cfg, more) if more else cfg
    else:
        cfg = config_from_options(config, sets, **dict(flags.values()))
        if force and config is not None:
            check_inputs_outside(out, [config])  # --force must not delete the file this run reads
    runtime = {"runtime.device": device, "runtime.logger": logger}
    given_runtime = {key: value for key, value in runtime.items() if value is not None}
    if given_runtime:
        cfg = apply_overrides(cfg, given_runtime)  # a resumed run may change runtime
    if dry_run:  # a resumed or extended run: what the rest of it would do
        from learner.experiments.dry_run import plan_pretrain

        typer.echo(plan_pretrain(cfg).render())
        return
    from learner.training.device import thread_count, torch_threads

    with torch_threads(thread_count(cfg.runtime)[0]):
        result = api.pretrain(cfg, out, resume=resume is not None, force=force)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports
    best, last = result.best, result.last
    if "val_mae" not in best:  # a self-supervised run (loss.name=vicreg)
        typer.echo(
            f"best val loss {best['val_loss']:.4f} (epoch {best['epoch']}), last {last['val_loss']:.4f}; "
            f"checkpoints in {out / 'checkpoints'}; chain with --init {out}"
        )
        return
    typer.echo(
        f"best val MAE {best['val_mae']:.3f} (epoch {best['epoch']}), last {last['val_mae']:.3f}, vs "
        f"{last['baseline_mae']:.3f} predicting the train mean; checkpoints in {out / 'checkpoints'}"
    )
