"""Resuming a pretraining: what a resumed run may change, and how extending a finished run is recorded.

A resumed run must compute what the interrupted one would have, so only ``runtime`` may differ from the
stored config, and ``optim.epochs`` may grow (extending a finished run, docs/training.md): the LR schedule
is then recomputed over the new total from the current step on, and the change is recorded in
``config.yaml``, ``run.json["extensions"]`` and the log. An experiment grid's interrupted stage may not
grow: it continues only with exactly the config it started with (``extend=False``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from learner.config import Config
from learner.errors import ConfigError, RunDirError
from learner.runs import RunDir, load_run_config, with_absolute_paths, write_run_config
from learner.training.loggers import flatten_settings

log = logging.getLogger(__name__)


def check_resumable(config: Config, run_dir: Path, *, extend: bool = True) -> int:
    """A resumed run may change ``runtime``, and, with ``extend``, extend ``optim.epochs``; nothing else, so
    that it computes what the interrupted one would have. Returns the stored ``optim.epochs``.

    ``extend=False`` is an experiment grid's interrupted stage: its results are recorded under the digest
    of the config asked for now (:mod:`learner.experiments.stages`), which an extended run (its LR schedule
    recomputed midway) would not compute, so the stage must continue with exactly the config it started
    with.

    Raises:
        ConfigError: a ``learner pretrain --resume`` that changes more than it may, naming the keys.
        RunDirError: (``extend=False``) a grid stage asked for another config, naming the stage and keys.
    """
    stored_config = load_run_config(run_dir)
    stored = flatten_settings(stored_config.result_settings())
    current = flatten_settings(
        with_absolute_paths(config).result_settings()
    )  # stored paths read back absolute
    changed = sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
    if not extend and changed:
        shown = ", ".join(f"{key} {stored.get(key)} → {current.get(key)}" for key in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise RunDirError(
            f"{run_dir}: this interrupted stage started with another config ({shown}{more}); a grid "
            "continues a stage only with the config it started with: resume with those settings, or use a "
            "new output folder"
        )
    if config.optim.epochs > stored_config.optim.epochs:
        changed.remove("optim.epochs")  # extending a run (see record_extension)
    if changed:
        raise ConfigError(
            f"--resume: the config differs from {run_dir / 'config.yaml'} in {', '.join(changed)}; "
            "resume with the stored config (optim.epochs may only grow) or start a new run"
        )
    return stored_config.optim.epochs


def record_extension(
    run: RunDir,
    config: Config,
    stored_epochs: int,
    step: int,
    steps_per_epoch: int,
    schedule: Callable[[int, int, float], float],
) -> None:
    """A resumed run with more epochs than stored: the LR schedule is recomputed over the new total from
    the current step on (cosine: it rises from where the old schedule ended, then anneals to 0 at the new
    end). ``config.yaml`` gets the new ``optim.epochs``; ``run.json["extensions"]`` and the log record the
    change and the next step's LR under the old and the new schedule (docs/training.md)."""
    optim = config.optim
    record = {
        "from_epochs": stored_epochs,
        "to_epochs": optim.epochs,
        "at_step": step,
        "scheduler": optim.scheduler,
        "next_lr_old_schedule": schedule(step, stored_epochs * steps_per_epoch, optim.lr),
        "next_lr_new_schedule": schedule(step, optim.epochs * steps_per_epoch, optim.lr),
    }
    previous = json.loads(run.layout.record.read_text(encoding="utf-8")).get("extensions", [])
    run.record(extensions=[*previous, record])
    write_run_config(run.path, config)
    log.info(
        "extended from %d to %d epochs at step %d: the %s LR schedule now runs over %d steps; next LR %.3g "
        "(was %.3g under the old schedule)", stored_epochs, optim.epochs, step, optim.scheduler,
        optim.epochs * steps_per_epoch, record["next_lr_new_schedule"], record["next_lr_old_schedule"],
    )  # fmt: skip
