"""``learner embed | classify | predict | export``: the frozen encoder at work (Section 2.4)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from learner.cli.options import ForceOption, SetOption, config_from_options
from learner.config import Config
from learner.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from learner.data.manifest import Manifest

EncoderRunArgument = Annotated[
    Path, typer.Argument(help="A pretraining run directory (learner pretrain --out).", show_default=False)
]
ManifestOption = Annotated[
    Path | None,
    typer.Option("--manifest", "-m", help="Manifest of the scans (default: the run's data.manifest)."),
]
WhichOption = Annotated[str, typer.Option("--which", help="Encoder checkpoint: best or last.")]
DeviceOption = Annotated[
    str,
    typer.Option("--device", help="Where the frozen encoder runs: auto (CUDA when visible), cpu or cuda."),
]


def register(app: typer.Typer) -> None:
    """Add ``embed``, ``classify``, ``predict`` and ``export`` to the ``learner`` app."""
    app.command("embed")(embed_command)
    app.command("classify")(classify_command)
    app.command("predict")(predict_command)
    app.command("export")(export_command)


def _load_manifest(path: Path | None, config: Config) -> Manifest:
    """``--manifest`` or the config's ``data.manifest``, validated against the config's score scale."""
    from learner.data.manifest import load_manifest
    from learner.data.scales import scale_from_config

    source = path or config.data.manifest
    if source is None:
        raise ConfigError("no manifest: pass --manifest or set data.manifest")
    return load_manifest(source, scale_from_config(config.data), data_root=config.runtime.data_root)


def _check_runtime(which: str, device: str) -> None:
    """``--which`` and ``--device``, checked before anything is read or decoded."""
    from learner.training.checkpoint import CHECKPOINT_NAMES
    from learner.training.device import resolve_device

    if which not in CHECKPOINT_NAMES:
        raise ConfigError(f"--which {which!r}: choose one of {', '.join(CHECKPOINT_NAMES)}")
    resolve_device(device)  # cuda without a device: an error before anything is read


def run_config_with(run_dir: Path, sets: list[str] | None, flags: Mapping[str, object]) -> Config:
    """A run directory's stored config (its paths resolved, :func:`learner.runs.load_run_config`) with
    ``--set`` overrides, then the command's flags."""
    from learner.config import apply_overrides, split_override
    from learner.runs import load_run_config

    overrides = dict(split_override(item) for item in sets or [])
    overrides |= {key: value for key, value in flags.items() if value is not None}
    return apply_overrides(load_run_config(run_dir), overrides) if overrides else load_run_config(run_dir)


def embed_command(
    run_dir: EncoderRunArgument,
    manifest: ManifestOption = None,
    which: WhichOption = "best",
    clips_per_scan: Annotated[
        int, typer.Option("--clips-per-scan", min=1, help="Deterministic clips averaged per scan.")
    ] = 1,
    device: DeviceOption = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Also write the table here: .parquet or .csv (scan_id, patient_id, split, score, "
            "predicted_score, emb_0 …) or .npz (the cache's format). An existing file only with --force; "
            "never the manifest.",
            show_default=False,
        ),
    ] = None,
    skip_bad: Annotated[
        bool | None,
        typer.Option(
            "--skip-bad/--no-skip-bad",
            help="Leave unreadable scans out, counted and reported (default: the run's data.skip_bad_scans).",
            show_default=False,
        ),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Embed every scan with the frozen encoder of RUN_DIR, cached in RUN_DIR/embeddings.

    The table (scan IDs, embeddings, predicted scores) is keyed by the checkpoint's weights and the
    scans, so it is computed once and reused by every classifier on that encoder. The split column of
    --out is the run's own patient split (splits.csv).
    """
    from learner import api
    from learner.data.splits import read_splits
    from learner.evaluation.embed import check_embedding_output, embedding_cache_path, write_embeddings
    from learner.layout import RunLayout
    from learner.runs import load_run_config

    _check_runtime(which, device)
    config = load_run_config(run_dir)
    loaded = _load_manifest(manifest, config)
    splits_file = RunLayout(run_dir).splits
    if out is not None:  # before any scan is decoded
        check_embedding_output(out, loaded, force=force, inputs={"the run's splits.csv": splits_file})
    target, _ = embedding_cache_path(run_dir, loaded, which=which, clips_per_scan=clips_per_scan)
    cached = target.is_file()
    from learner.training.device import thread_count, torch_threads

    with torch_threads(thread_count(config.runtime)[0]):
        table = api.embed(
            run_dir, loaded, which=which, clips_per_scan=clips_per_scan, device=device, skip_bad=skip_bad
        )
    status = "reused" if cached else "computed"
    typer.echo(
        f"{len(table.scan_ids)} scans × {table.embeddings.shape[1]} dims ({status}): {target}"
        + (f"; {len(table.skipped)} unreadable scan(s) skipped" if table.skipped else "")
    )
    if out is not None:
        splits = read_splits(run_dir) if splits_file.is_file() else None
        typer.echo(f"written: {write_embeddings(table, loaded, out, splits=splits, force=force)}")


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
    device: DeviceOption = "auto",
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty OUT.")] = False,
    logger: Annotated[
        str | None,
        typer.Option(
            "--logger",
            help="Also record the run in tensorboard or mlflow (runtime.logger; csv: nothing more).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the config, pairs per class and a rough time estimate; create nothing."
        ),
    ] = False,
) -> None:
    """Train the improved / stable / deteriorated classifier on ENCODER_RUN's frozen embeddings and test it.

    Train/val pairs are inter-patient pairs of the run's own split, test pairs are intra-patient pairs;
    OUT receives the pair tables, the classifier (with the encoder's fingerprint), predictions.csv and
    metrics.json (accuracy, macro-/weighted-F1, per-class, confusion, 95% patient-bootstrap CIs).
    """
    from learner import api
    from learner.evaluation.baselines import reference_rows
    from learner.report.tables import ANSWER_LABELS, interval, percent, reference_label

    _check_runtime(which, device)
    flags = {"classifier.combine": combine, "classifier.head": head, "runtime.logger": logger}
    cfg = config_from_options(config, sets, **flags) if config else run_config_with(encoder_run, sets, flags)
    if dry_run:
        from learner.experiments.dry_run import plan_classify

        typer.echo(plan_classify(encoder_run, _load_manifest(manifest, cfg), cfg).render())
        return
    from learner.training.device import thread_count, torch_threads

    with torch_threads(thread_count(cfg.runtime)[0]):
        result = api.classify(
            encoder_run, out, manifest=_load_manifest(manifest, cfg), config=cfg, which=which, device=device,
            force=force,
        )  # fmt: skip
    test = result.metrics["test"]
    typer.echo(
        f"test ({test['n']} intra-patient pairs, {test['n_patients']} patients): accuracy "
        f"{percent(test['accuracy'])} {interval(*test['ci']['accuracy'])}, macro-F1 "
        f"{percent(test['macro_f1'])} {interval(*test['ci']['macro_f1'])} (%, 95% CI); results in {out}"
    )
    answers = result.metrics["answers"]  # the same pairs answered another way, in the tables' order
    for name in (name for name in ANSWER_LABELS if name in answers):
        typer.echo(
            f"  {ANSWER_LABELS[name]}: accuracy {percent(answers[name]['accuracy'])}, "
            f"macro-F1 {percent(answers[name]['macro_f1'])}"
        )
    for name, row in reference_rows(result.metrics["pair_counts"]["test"]).items():
        typer.echo(
            f"  reference, {reference_label(name, row.answer)}: accuracy {percent(row.accuracy)}, "
            f"macro-F1 {percent(row.macro_f1)}"
        )


def predict_command(
    encoder: Annotated[Path, typer.Option("--encoder", help="The pretraining run directory.")],
    classifier: Annotated[
        Path,
        typer.Option(
            "--classifier", help="The classification run (learner classify --out) or its classifier/ folder."
        ),
    ],
    earlier: Annotated[
        Path | None, typer.Argument(help="The earlier scan (any readable file).", show_default=False)
    ] = None,
    later: Annotated[
        Path | None, typer.Argument(help="The later scan of the same patient.", show_default=False)
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(
            "--pairs",
            help="A CSV of many pairs (columns earlier, later: scan paths, relative to the CSV) instead of "
            "EARLIER LATER; one output row per pair.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the answer here as CSV, one row per pair (with --pairs: instead of printing it). An "
            "existing file only with --force; never EARLIER, LATER or the --pairs CSV.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: one object for EARLIER LATER, a list of one object per pair with --pairs.",
        ),
    ] = False,
    which: WhichOption = "best",
    device: DeviceOption = "auto",
    force: ForceOption = False,
) -> None:
    """Did the patient improve, stay stable or deteriorate from EARLIER to LATER (or every pair of --pairs)?

    Both scans are decoded with the encoder's training preprocessing; prints the class with its
    probabilities, each scan's predicted score and the cosine distance of their embeddings, the predicted
    scores' own answer through the change model the classification fitted on its val visits (where it has
    one), and, as a caveat, the classifier's own test accuracy and macro-F1 (on stderr with --pairs). A scan
    of a kind the encoder never trained on (an MRI volume given to an encoder of ultrasound clips) is
    answered with a warning that its numbers mean nothing.
    """
    from learner import api
    from learner.atomic import check_outputs, usable_file
    from learner.evaluation.classifier_caveat import classifier_caveat

    _check_runtime(which, device)
    if pairs is not None and earlier is None and later is None:
        inputs = {"the --pairs CSV": pairs}
    elif pairs is None and earlier is not None and later is not None:
        inputs = {"EARLIER": earlier, "LATER": later}
    else:
        raise ConfigError("give either EARLIER LATER or --pairs PAIRS.csv")
    if out is not None:  # before any scan is decoded
        check_outputs([usable_file(out, "--out")], force=force, inputs=inputs)
    caveat = classifier_caveat(classifier)
    if pairs is not None:
        table = api.predict_pairs(encoder, classifier, pairs, which=which, device=device)
        if out is not None:
            _write_csv(table, out)
        if as_json:
            typer.echo(json.dumps(json.loads(table.to_json(orient="records")), indent=2))
        elif out is None:
            typer.echo(table.to_csv(index=False), nl=False)
        else:
            typer.echo(f"{len(table)} pair(s): {out}")
        if caveat:
            typer.echo(caveat, err=True)
        return
    result = api.predict(encoder, classifier, inputs["EARLIER"], inputs["LATER"], which=which, device=device)
    if out is not None:
        import pandas as pd

        _write_csv(pd.DataFrame([result.scans | result.to_row()]), out)
    if as_json:
        typer.echo(json.dumps(result.to_json() | {"caveat": caveat}, indent=2))
        return
    probabilities = ", ".join(f"{name} {p:.3f}" for name, p in result.probabilities.items())
    typer.echo(f"{result.label.upper()}  ({probabilities})")
    for side, path in result.scans.items():
        typer.echo(f"  {side:8s} predicted score {result.scores[side]:8.2f}  {path}")
    typer.echo(f"  embedding cosine distance {result.distance:.4f}")
    if result.score_change is not None and result.score_change_label is not None:
        change = ", ".join(f"{name} {p:.3f}" for name, p in result.score_change.items())
        label = result.score_change_label
        typer.echo(f"  the predicted scores through the val-fitted change model: {label} ({change})")
    if caveat:
        typer.echo(caveat)
    if out is not None:
        typer.echo(f"1 pair(s): {out}")


def _write_csv(table: pd.DataFrame, out: Path) -> None:
    """``learner predict --out``: the prediction table, atomically."""
    from learner.atomic import atomic_path

    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)


def export_command(
    run: Annotated[
        Path,
        typer.Argument(
            help="A classification run (learner classify --out) or a grid cell (holding encoder/ and "
            "classifier/).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the exported files.")],
    encoder: Annotated[
        Path | None,
        typer.Option(
            "--encoder", help="The pretraining run (default: the one RUN records).", show_default=False
        ),
    ] = None,
    onnx: Annotated[
        bool,
        typer.Option("--onnx/--no-onnx", help="Also write ONNX (needs pip install 'learner\\[export]')."),
    ] = True,
    which: WhichOption = "best",
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx (TorchScript and ONNX graphs), torchscript (TorchScript only, as --no-onnx) or folder "
            "(a model folder that learner.api.load_model reads: weights, config, preprocessing, model card).",
        ),
    ] = "onnx",
    force: ForceOption = False,
) -> None:
    """Export RUN's encoder and pair classifier as TorchScript and ONNX, with the preprocessing beside them,
    or as a model folder (--format folder).

    Writes OUT/encoder.{onnx,pt} (clips → embedding, score), OUT/pair_classifier.{onnx,pt} (two embeddings →
    class probabilities), OUT/preprocessing.json and OUT/PREPROCESSING.md (frames, size, channels, crop,
    intensity scaling, score scale, class order). With --format folder: OUT/model.safetensors (encoder,
    regression head, pair classifier and their statistics), OUT/config.json, OUT/meta.json,
    OUT/preprocessing.json, OUT/splits.csv and the model card OUT/README.md (test metrics with intervals,
    PHANTOM / REAL banner, warnings); OUT is a learner.api.load_model folder and a valid --init.

    Files OUT already holds are replaced only with --force: for the graphs, any of the files to write; for
    --format folder, an OUT that holds files and is no model folder (an earlier export is replaced).
    """
    from learner import api

    if export_format not in ("onnx", "torchscript", "folder"):
        raise ConfigError(f"--format {export_format!r}: choose one of onnx, torchscript, folder")
    if export_format == "folder":
        folder = api.export(run, out, encoder=encoder, which=which, format="folder", force=force)
        typer.echo("exported: " + ", ".join(sorted(folder.files)) + f" in {out}")
        return
    graphs: Literal["onnx", "torchscript"] = "onnx" if export_format == "onnx" else "torchscript"
    exported = api.export(run, out, encoder=encoder, onnx=onnx, which=which, format=graphs, force=force)
    typer.echo("exported: " + ", ".join(sorted(exported.files)) + f" in {out}")
