"""``learner.api``: the pipeline from Python, typed. Each function takes paths or objects and returns the
typed result of the function the CLI calls (no second implementation):

=================  ==========================================================================================
``load_config``    a :class:`~learner.config.Config` from defaults, a YAML file / bundled name, overrides
``pretrain``       Algorithm 1 into a run directory → :class:`~learner.training.pretrain.PretrainResult`
``embed``          the frozen encoder on every scan → :class:`~learner.evaluation.embed.EmbeddingTable`
``classify``       the health-change classifier → :class:`~learner.experiments.classify.ClassificationResult`
``predict``        one pair of scans → :class:`~learner.evaluation.predict.Prediction`
``table3``         the Table 3 grid and its report → :class:`~learner.experiments.results.ExperimentResult`
=================  ==========================================================================================

``device`` defaults to ``auto`` (CUDA when visible) everywhere, as on the command line. See
``docs/python.md`` for a worked example.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from learner.config import (
    Config,
    DatasetSpec,
    Experiment,
    ExperimentConfig,
    apply_overrides,
    load_experiment,
)
from learner.config import load_config as _load_config
from learner.data.manifest import Manifest, load_manifest
from learner.data.scales import scale_from_config
from learner.errors import ConfigError
from learner.evaluation.embed import EmbeddingTable, embed_scans
from learner.evaluation.predict import Prediction, predict_pair
from learner.experiments.classify import ClassificationResult, run_classification
from learner.experiments.results import ExperimentResult
from learner.experiments.table3 import run_table3
from learner.report import write_report
from learner.runs import load_run_config
from learner.training.device import resolve_device
from learner.training.pretrain import PretrainResult
from learner.training.pretrain import pretrain as _pretrain

PathLike = str | os.PathLike[str]
ConfigSource = Config | PathLike | None
"""A config object, a YAML file or bundled config name (``"demo"``, ``"lus"``, ...), or None (defaults)."""

__all__ = ["classify", "embed", "load_config", "predict", "pretrain", "table3"]
"""The facade; its types come from the modules named in each function's return annotation."""


def load_config(source: ConfigSource = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """``source`` (see :data:`ConfigSource`) with dotted ``overrides`` (``{"optim.epochs": 5}``) applied.

    Raises:
        ConfigError: a bad file, key or value (one line naming it).
    """
    config = source if isinstance(source, Config) else _load_config(source, [])
    return apply_overrides(config, dict(overrides)) if overrides else config


def pretrain(
    config: ConfigSource,
    out: PathLike,
    *,
    manifest: PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
) -> PretrainResult:
    """Pretrain an encoder (Algorithm 1) into the run directory ``out``; ``manifest`` sets ``data.manifest``.

    Raises:
        ConfigError, ManifestError, RunDirError: bad input, named in one line.
    """
    extra = {"data.manifest": str(manifest)} if manifest is not None else {}
    return _pretrain(load_config(config, {**(overrides or {}), **extra}), out, resume=resume, force=force)


def embed(
    run: PathLike,
    manifest: Manifest | PathLike | None = None,
    *,
    which: str = "best",
    clips_per_scan: int = 1,
    device: str = "auto",
) -> EmbeddingTable:
    """Every scan of ``manifest`` (default: the run's ``data.manifest``) through the frozen encoder of the
    pretraining run ``run``; cached in ``run/embeddings``."""
    loaded = _manifest(manifest, load_run_config(run))
    return embed_scans(
        run, loaded, which=which, clips_per_scan=clips_per_scan, device=str(resolve_device(device))
    )


def classify(
    encoder_run: PathLike,
    out: PathLike,
    *,
    manifest: Manifest | PathLike | None = None,
    config: ConfigSource = None,
    overrides: Mapping[str, Any] | None = None,
    which: str = "best",
    device: str = "auto",
    force: bool = False,
) -> ClassificationResult:
    """Fit and test the improved / stable / deteriorated classifier on the frozen encoder of
    ``encoder_run`` into ``out``. ``config`` defaults to the encoder run's own."""
    base = load_run_config(encoder_run) if config is None else load_config(config)
    settings = load_config(base, overrides)
    loaded = _manifest(manifest, settings)
    return run_classification(
        encoder_run, loaded, settings, out, which=which, device=str(resolve_device(device)), force=force
    )


def predict(
    encoder_run: PathLike,
    classifier: PathLike,
    earlier: PathLike,
    later: PathLike,
    *,
    which: str = "best",
    device: str = "auto",
) -> Prediction:
    """Did the patient improve, stay stable or deteriorate from scan ``earlier`` to scan ``later``?
    (:class:`learner.evaluation.predict.Predictor` loads the models once for many pairs.)"""
    return predict_pair(
        encoder_run, classifier, earlier, later, which=which, device=str(resolve_device(device))
    )


def table3(
    out: PathLike,
    *,
    config: ConfigSource = None,
    datasets: Sequence[DatasetSpec] | None = None,
    losses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
) -> ExperimentResult:
    """Table 3 (dataset × loss × seed: pretrain → embed → classify) into ``out``; ``datasets``, ``losses``
    and ``seeds`` replace the grid's axes (default: the experiment config's, which a YAML ``config`` may
    give in its ``experiment:`` section). Writes the report (``REPORT.md``, ``table3.md``) as the CLI does."""
    if isinstance(config, Config):
        experiment = Experiment(config, ExperimentConfig())
    else:
        experiment = load_experiment(config, [])
    axes = {"datasets": datasets, "losses": losses, "seeds": seeds}
    grid = experiment.grid.model_copy(
        update={key: list(value) for key, value in axes.items() if value is not None}
    )
    settings = load_config(experiment.config, overrides)
    checked = ExperimentConfig.model_validate(grid.model_dump())
    result = run_table3(Experiment(settings, checked), out, resume=resume, force=force)
    write_report(result.out_dir)  # REPORT.md and table3.md, as `learner experiment table3` writes them
    return result


def _manifest(manifest: Manifest | PathLike | None, config: Config) -> Manifest:
    if isinstance(manifest, Manifest):
        return manifest
    source = manifest if manifest is not None else config.data.manifest
    if source is None:
        raise ConfigError("no manifest: pass manifest= or set data.manifest")
    return load_manifest(source, scale_from_config(config.data), data_root=config.runtime.data_root)
