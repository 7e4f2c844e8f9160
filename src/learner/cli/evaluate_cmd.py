"""``learner embed | classify | report | predict``: the frozen encoder at work (Section 2.4), reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from learner.cli.options import SetOption, config_from_options
from learner.config import Config
from learner.errors import ConfigError

if TYPE_CHECKING:
    from learner.data.manifest import Manifest

EncoderRunArgument = Annotated[
    Path, typer.Argument(help="A pretraining run directory (learner pretrain --out).", show_default=False)
]
ManifestOption = Annotated[
    Path | None,
    typer.Option("--manifest", "-m", help="Manifest of the scans (default: the run's data.manifest)."),
]
WhichOption = Annotated[str, typer.Option("--which", help="Encoder checkpoint: best or last.")]
DeviceOption = Annotated[str, typer.Option("--device", help="Where the frozen encoder runs: cpu or cuda.")]


def register(app: typer.Typer) -> None:
    """Add ``embed``, ``classify``, ``report`` and ``predict`` to the ``learner`` app."""
    app.command("embed")(embed_command)
    app.command("classify")(classify_command)
    app.command("report")(report_command)
    app.command("predict")(predict_command)


def _load_manifest(path: Path | None, config: Config) -> Manifest:
    """``--manifest`` or the config's ``data.manifest``, validated against the config's score scale."""
    from learner.data.manifest import load_manifest
    from learner.data.scales import scale_from_config

    source = path or config.data.manifest
    if source is None:
        raise ConfigError("no manifest: pass --manifest or set data.manifest")
    return load_manifest(source, scale_from_config(config.data))


def embed_command(
    run_dir: EncoderRunArgument,
    manifest: ManifestOption = None,
    which: WhichOption = "best",
    clips_per_scan: Annotated[
        int, typer.Option("--clips-per-scan", min=1, help="Deterministic clips averaged per scan.")
    ] = 1,
    device: DeviceOption = "cpu",
) -> None:
    """Embed every scan with the frozen encoder of RUN_DIR, cached in RUN_DIR/embeddings.

    The table (scan IDs, embeddings, predicted scores) is keyed by the checkpoint's weights and the
    scans, so it is computed once and reused by every classifier on that encoder.
    """
    from learner.evaluation.embed import embed_scans, embedding_cache_path
    from learner.runs import load_run_config

    config = load_run_config(run_dir)
    loaded = _load_manifest(manifest, config)
    target, _ = embedding_cache_path(run_dir, loaded, which=which, clips_per_scan=clips_per_scan)
    cached = target.is_file()
    table = embed_scans(run_dir, loaded, which=which, clips_per_scan=clips_per_scan, device=device)
    status = "reused" if cached else "computed"
    typer.echo(
        f"{len(table.scan_ids)} scans × {table.embeddings.shape[1]} dims ({status}): {target}"
        + (f"; {len(table.skipped)} unreadable scan(s) skipped" if table.skipped else "")
    )


def classify_command(
    encoder_run: EncoderRunArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory for the classifier.")],
    manifest: ManifestOption = None,
    combine: Annotated[
        str | None, typer.Option("--combine", help="difference or concatenate (classifier.combine).")
    ] = None,
    head: Annotated[str | None, typer.Option("--head", help="mlp or mlp_large (classifier.head).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config (default: the encoder run's config.yaml)."),
    ] = None,
    sets: SetOption = None,
    which: WhichOption = "best",
    device: DeviceOption = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty OUT.")] = False,
) -> None:
    """Train the improved / stable / deteriorated classifier on ENCODER_RUN's frozen embeddings and test it.

    Train/val pairs are inter-patient pairs of the run's own split, test pairs are intra-patient pairs;
    OUT receives the pair tables, the classifier (with the encoder's fingerprint), predictions.csv and
    metrics.json (accuracy, macro-/weighted-F1, per-class, confusion, 95% patient-bootstrap CIs).
    """
    from learner.experiments.classify import run_classification
    from learner.experiments.tables import interval, percent

    cfg = config_from_options(
        config or encoder_run / "config.yaml",
        sets,
        **{"classifier.combine": combine, "classifier.head": head},
    )
    result = run_classification(
        encoder_run, _load_manifest(manifest, cfg), cfg, out, which=which, device=device, force=force
    )
    test = result.metrics["test"]
    typer.echo(
        f"test ({test['n']} intra-patient pairs, {test['n_patients']} patients): accuracy "
        f"{percent(test['accuracy'])} {interval(*test['ci']['accuracy'])}, macro-F1 "
        f"{percent(test['macro_f1'])} {interval(*test['ci']['macro_f1'])} (%, 95% CI); results in {out}"
    )


def report_command(
    run_dir: Annotated[
        Path, typer.Argument(help="An experiment or classification run directory.", show_default=False)
    ],
) -> None:
    """Write RUN_DIR/REPORT.md: data source, tables, Fig. 1, regression quality, pair balance, config."""
    from learner.report import write_report

    typer.echo(f"report: {write_report(run_dir)}")


def predict_command(
    earlier: Annotated[
        Path, typer.Argument(help="The earlier scan (any readable file).", show_default=False)
    ],
    later: Annotated[Path, typer.Argument(help="The later scan of the same patient.", show_default=False)],
    encoder: Annotated[Path, typer.Option("--encoder", help="The pretraining run directory.")],
    classifier: Annotated[
        Path, typer.Option("--classifier", help="The classification run (learner classify --out).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    which: WhichOption = "best",
    device: DeviceOption = "cpu",
) -> None:
    """Did the patient improve, stay stable or deteriorate from EARLIER to LATER?

    Both scans are decoded with the encoder's training preprocessing; prints the class with its
    probabilities, each scan's predicted score and the cosine distance of their embeddings.
    """
    from learner.evaluation.predict import predict_pair

    result = predict_pair(encoder, classifier, earlier, later, which=which, device=device)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    probabilities = ", ".join(f"{name} {p:.3f}" for name, p in result.probabilities.items())
    typer.echo(f"{result.label.upper()}  ({probabilities})")
    for side, path in result.scans.items():
        typer.echo(f"  {side:8s} predicted score {result.scores[side]:8.2f}  {path}")
    typer.echo(f"  embedding cosine distance {result.distance:.4f}")
