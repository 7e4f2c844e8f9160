"""Embedding a pretrained run: cache reuse (no encoder forward on a hit) and invalidation, and the embedding
itself against an independent forward pass on the training dataset's eval clips."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from learner.config import DatasetSpec
from learner.data.cache import ScanCache, default_cache_root
from learner.data.datasets import ScanDataset
from learner.data.manifest import Manifest, load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.scales import get_scale
from learner.evaluation import embed
from learner.experiments.results import ExperimentResult
from learner.training.checkpoint import load_regressor, read_meta, save_checkpoint


@pytest.fixture
def encoder_run(tmp_path: Path, tiny_table3: ExperimentResult) -> Path:
    """A private copy of the shared LUS MSE encoder run, without its embedding cache."""
    target = tmp_path / "encoder"
    source = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("embeddings"))
    return target


@pytest.fixture
def loaded_lus_manifest(tiny_datasets: list[DatasetSpec]) -> Manifest:
    return load_manifest(tiny_datasets[0].manifest, get_scale("sf"))


@pytest.fixture
def forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the clips every encoder forward of :func:`embed.embed_scans` sees."""
    seen: list[int] = []

    def counting_load(*args: object, **kwargs: object) -> tuple[torch.nn.Module, dict]:
        model, meta = load_regressor(*args, **kwargs)
        model.encoder.register_forward_hook(lambda module, inputs, output: seen.append(len(output)))
        return model, meta

    monkeypatch.setattr(embed, "load_regressor", counting_load)
    return seen


def test_second_call_reads_the_cache_without_any_forward(
    encoder_run: Path, loaded_lus_manifest: Manifest, forwards: list[int]
) -> None:
    first = embed.embed_scans(encoder_run, loaded_lus_manifest)
    assert sum(forwards) == len(loaded_lus_manifest.records)
    forwards.clear()
    again = embed.embed_scans(encoder_run, loaded_lus_manifest)
    assert forwards == []
    assert again.scan_ids == [r.scan_id for r in loaded_lus_manifest.records]
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    np.testing.assert_array_equal(again.scores, first.scores)
    assert len(list((encoder_run / "embeddings").glob("*.npz"))) == 1


def test_a_changed_checkpoint_is_embedded_again(
    encoder_run: Path, loaded_lus_manifest: Manifest, forwards: list[int]
) -> None:
    before = embed.embed_scans(encoder_run, loaded_lus_manifest)
    best = encoder_run / "checkpoints" / "best"
    model, _ = load_regressor(encoder_run)
    with torch.no_grad():
        model.head.mlp[-1].bias.add_(1.0)  # the predicted (standardised) score moves by exactly 1
    save_checkpoint(best, model, read_meta(best))
    forwards.clear()
    after = embed.embed_scans(encoder_run, loaded_lus_manifest)
    assert sum(forwards) == len(loaded_lus_manifest.records)
    assert after.fingerprint != before.fingerprint
    np.testing.assert_allclose(after.embeddings, before.embeddings, rtol=1e-5, atol=1e-6)
    std = read_meta(best).score_standardisation.std
    np.testing.assert_allclose(after.scores - before.scores, std, rtol=1e-4)


def test_a_changed_scan_file_is_embedded_again(
    encoder_run: Path, tiny_datasets: list[DatasetSpec], forwards: list[int], tmp_path: Path
) -> None:
    # the session's cohort is shared (its mtimes key every other test's embedding cache): change a copy
    table = pd.read_csv(tiny_datasets[0].manifest, dtype=str)
    table["path"] = [str(tiny_datasets[0].manifest.parent / path) for path in table["path"]]
    path = Path(shutil.copy(table.loc[0, "path"], tmp_path / "first.mp4"))
    table.loc[0, "path"] = str(path)
    table.to_csv(tmp_path / "manifest.csv", index=False)
    manifest = load_manifest(tmp_path / "manifest.csv", get_scale("sf"))
    embed.embed_scans(encoder_run, manifest)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    forwards.clear()
    embed.embed_scans(encoder_run, manifest)
    assert sum(forwards) == len(manifest.records)
    assert len(list((encoder_run / "embeddings").glob("*.npz"))) == 2


def test_scans_of_a_kind_the_encoder_never_saw_are_embedded_with_a_warning_counting_them(
    encoder_run: Path, tiny_datasets: list[DatasetSpec], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mri = tiny_datasets[1].manifest
    table = pd.read_csv(mri, dtype=str).head(2)  # two volumes given to the LUS encoder
    table["path"] = [str(mri.parent / path) for path in table["path"]]
    table.to_csv(tmp_path / "volumes.csv", index=False)
    manifest = load_manifest(tmp_path / "volumes.csv", get_scale("sf"))
    with caplog.at_level("WARNING", logger="learner"):
        embedded = embed.embed_scans(encoder_run, manifest)
    assert len(embedded.scan_ids) == 2  # embedded all the same
    line = (
        f"{tmp_path / 'volumes.csv'}: 2 volume scan(s), but this encoder was trained on video scans only: "
        "their embeddings and predicted scores have no meaning"
    )
    assert line in caplog.messages


def test_embeddings_equal_an_independent_forward_on_eval_clips(
    encoder_run: Path, loaded_lus_manifest: Manifest
) -> None:
    table = embed.embed_scans(encoder_run, loaded_lus_manifest)
    model, meta = load_regressor(encoder_run)
    config = meta.config
    cache = ScanCache(
        default_cache_root(loaded_lus_manifest, config.runtime.cache_dir),
        Preprocessor.from_config(config.data),
    )
    dataset = ScanDataset(
        loaded_lus_manifest.records, cache, frames=config.data.frames, channels=1, train=False, augment=None
    )
    clips = torch.stack(
        [dataset.clip(i, (0, i)) for i in range(3)]
    )  # (3, T, C, H, W): the training eval path
    with torch.no_grad():
        expected = model.encoder(clips).double().numpy()
        standardised = model.head(model.encoder(clips)).double().numpy()
    mean, std = meta.score_standardisation.mean, meta.score_standardisation.std
    np.testing.assert_allclose(table.embeddings[:3], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(table.scores[:3], standardised * std + mean, rtol=1e-5)


def test_several_clips_per_scan_average_the_clip_embeddings(
    encoder_run: Path, loaded_lus_manifest: Manifest
) -> None:
    table = embed.embed_scans(encoder_run, loaded_lus_manifest, clips_per_scan=2)
    model, meta = load_regressor(encoder_run)
    config = meta.config
    cached = ScanCache(
        default_cache_root(loaded_lus_manifest, config.runtime.cache_dir),
        Preprocessor.from_config(config.data),
    )
    frames = np.asarray(cached.get(loaded_lus_manifest.records[0]))  # (4, 32, 32): 4 frames, T = 2, K = 2
    assert len(frames) == 4
    clips = torch.from_numpy(frames[[[0, 2], [1, 3]]]).float().div(255).unsqueeze(2)  # centres of quarters
    with torch.no_grad():
        expected = model.encoder(clips).mean(dim=0).numpy()
    np.testing.assert_allclose(table.embeddings[0], expected, rtol=1e-4, atol=1e-5)
    assert table.clips_per_scan == 2


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_embed_out_writes_scan_split_score_and_embedding_columns(
    tmp_path: Path,
    encoder_run: Path,
    loaded_lus_manifest: Manifest,
    cli: Callable[[list[str]], tuple[int, str, str]],
    suffix: str,
) -> None:
    out = tmp_path / f"emb{suffix}"
    code, stdout, err = cli(["embed", str(encoder_run), "--out", str(out), "--device", "cpu"])
    assert code == 0, err
    assert stdout.strip().endswith(f"written: {out}")
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out, dtype={"scan_id": str})
    cached = embed.EmbeddingTable.load(next((encoder_run / "embeddings").glob("*.npz")))
    assert frame["scan_id"].tolist() == cached.scan_ids
    dims = [f"emb_{d}" for d in range(cached.embeddings.shape[1])]
    assert list(frame.columns) == ["scan_id", "patient_id", "split", "score", "predicted_score", *dims]
    np.testing.assert_allclose(frame[dims].to_numpy(), cached.embeddings, rtol=1e-6)
    np.testing.assert_allclose(frame["predicted_score"], cached.scores, rtol=1e-6)
    splits = pd.read_csv(encoder_run / "splits.csv", dtype=str).set_index("patient_id")["split"]
    records = {r.scan_id: r for r in loaded_lus_manifest.records}
    assert frame["split"].tolist() == [splits[records[s].patient_id] for s in frame["scan_id"]]
    assert frame["score"].tolist() == [records[s].score for s in frame["scan_id"]]


def test_embed_out_npz_is_the_cache_format_and_an_unknown_suffix_is_an_error(
    tmp_path: Path, encoder_run: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    code, _, err = cli(["embed", str(encoder_run), "--out", str(tmp_path / "emb.npz"), "--device", "cpu"])
    assert code == 0, err
    table = embed.EmbeddingTable.load(tmp_path / "emb.npz")
    cached = embed.EmbeddingTable.load(next((encoder_run / "embeddings").glob("*.npz")))
    assert table.scan_ids == cached.scan_ids
    np.testing.assert_array_equal(table.embeddings, cached.embeddings)
    code, _, err = cli(["embed", str(encoder_run), "--out", str(tmp_path / "emb.xlsx"), "--device", "cpu"])
    assert code == 2
    expected = f"{tmp_path / 'emb.xlsx'}: unknown embedding file type '.xlsx'; use .parquet, .csv, .npz"
    assert err.strip() == f"error: {expected}"


def test_embed_command_honours_skip_bad_scans_and_reports_the_count(
    encoder_run: Path,
    tiny_datasets: list[DatasetSpec],
    tmp_path: Path,
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    """Like classify: the run's data.skip_bad_scans (here false) decides, --skip-bad overrides it."""
    cohort = tmp_path / "cohort"
    source = tiny_datasets[0].manifest.parent
    shutil.copytree(source, cohort, ignore=shutil.ignore_patterns(".learner-cache"))
    broken = sorted((cohort / "clips").glob("*.mp4"))[0]
    broken.write_bytes(b"not a video")
    argv = ["embed", str(encoder_run), "--manifest", str(cohort / "manifest.csv")]
    code, _, err = cli(argv)
    assert code == 2
    assert broken.name in err
    code, out, err = cli([*argv, "--skip-bad"])
    assert code == 0, err
    scans = len(load_manifest(cohort / "manifest.csv", get_scale("sf")).records)
    assert out.startswith(f"{scans - 1} scans × ")
    assert out.strip().endswith("; 1 unreadable scan(s) skipped")
    assert broken.stem in err  # the warning names the scan


def test_embed_out_never_overwrites_an_input_and_an_existing_file_only_with_force(
    tmp_path: Path,
    encoder_run: Path,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    """Checked before any scan is embedded: the manifest and the run's splits.csv are refused even with
    --force (the command reads them), a file of the user's without it."""
    source = tiny_datasets[0].manifest
    manifest = tmp_path / "manifest.csv"  # a copy (absolute scan paths): a failure must not touch the cohort
    frame = pd.read_csv(source, dtype=str)
    frame["path"] = [str(source.parent / path) for path in frame["path"]]
    frame.to_csv(manifest, index=False)
    kept = {path: path.read_bytes() for path in (manifest, encoder_run / "splits.csv")}
    argv = ["embed", str(encoder_run), "--manifest", str(manifest), "--device", "cpu"]
    for out, name in ((manifest, "the manifest"), (encoder_run / "splits.csv", "the run's splits.csv")):
        for force in ([], ["--force"]):
            code, _, err = cli([*argv, "--out", str(out), *force])
            assert code == 2
            assert err.strip() == (
                f"error: --out: {out} is {name}, an input of this command; choose another --out (--force "
                "never overwrites an input)"
            )
    assert {path: path.read_bytes() for path in kept} == kept
    mine = tmp_path / "mine.parquet"
    mine.write_bytes(b"my table")
    code, _, err = cli([*argv, "--out", str(mine)])
    assert code == 2
    assert err.strip() == f"error: --out: {mine} exists; pass --force to overwrite it or choose another --out"
    assert mine.read_bytes() == b"my table"
    assert not (encoder_run / "embeddings").exists()  # refused before any scan was embedded
    code, out, err = cli([*argv, "--out", str(mine), "--force"])
    assert code == 0, err
    assert out.strip().endswith(f"written: {mine}")
    assert pd.read_parquet(mine)["scan_id"].tolist() == frame["scan_id"].tolist()
