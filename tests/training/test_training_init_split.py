"""``model.init`` never brings in a test patient: a start from a learner run whose split put one of this
run's test patients in train or val is refused before any work (:func:`check_init_split`); weights made
for another ``model.size`` or ``data.channels`` are refused naming the setting that fits them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from learner.config import Config
from learner.errors import CheckpointError, ConfigError
from learner.training.plan import check_init_split
from learner.training.pretrain import pretrain

HERE = {"P1": "test", "P2": "train", "P3": "test", "P4": "val"}


def _run(folder: Path, splits: dict[str, str]) -> Path:
    """A finished run's split file and checkpoint folder (no weights: the check reads only the split)."""
    (folder / "checkpoints" / "best").mkdir(parents=True)
    rows = "".join(f"{patient},{split}\n" for patient, split in splits.items())
    (folder / "splits.csv").write_text("patient_id,split\n" + rows)
    return folder


@pytest.mark.parametrize("seen_as", ["train", "val"])
def test_a_start_that_saw_a_test_patient_is_refused(tmp_path: Path, seen_as: str) -> None:
    run = _run(tmp_path / "ssl", {"P1": seen_as, "P2": "train", "P3": "test", "P4": "val"})
    for init in (run, run / "checkpoints" / "best"):  # the run, or its checkpoint folder
        with pytest.raises(ConfigError) as error:
            check_init_split(init, HERE)
        message = str(error.value)
        assert "\n" not in message
        assert f"model.init: {run} trained on 1 patient(s)" in message
        assert "(P1)" in message


def test_many_leaked_patients_are_counted_and_the_first_named(tmp_path: Path) -> None:
    here = {f"P{i:02d}": "test" for i in range(8)}
    run = _run(tmp_path / "ssl", dict.fromkeys(here, "train"))
    with pytest.raises(ConfigError, match=r"8 patient\(s\) .* \(P00, P01, P02, P03, P04, \.\.\.\)"):
        check_init_split(run, here)


def test_the_same_split_and_unknown_origins_pass(tmp_path: Path) -> None:
    check_init_split(_run(tmp_path / "same", HERE), HERE)  # test patients that were test there too
    # a patient the start never saw, or saw only as test, is no leak
    check_init_split(_run(tmp_path / "other", {"P1": "test", "P9": "train"}), HERE)
    check_init_split(None, HERE)
    weights = tmp_path / "imagenet.safetensors"  # a weights file carries no split
    weights.write_bytes(b"")
    check_init_split(weights, HERE)
    plain = tmp_path / "plain" / "checkpoints" / "best"  # a checkpoint folder outside any run
    plain.mkdir(parents=True)
    check_init_split(plain, HERE)


def test_still_images_with_several_frames_are_warned_about(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pandas as pd

    from learner.data.manifest import load_manifest
    from learner.data.scales import get_scale
    from learner.training.plan import check_pretraining

    config = make_tiny_pretrain_config()
    table = pd.read_csv(config.data.manifest)
    table["modality"] = "image"  # as a radiograph cohort's manifest says
    table["path"] = [str((Path(config.data.manifest).parent / p).resolve()) for p in table["path"]]
    still = tmp_path / "still.csv"
    table.to_csv(still, index=False)
    manifest = load_manifest(still, get_scale("sf"))
    with caplog.at_level("WARNING", logger="learner"):
        check_pretraining(config, manifest, build_model=False)
    assert f"{len(table)} scan(s) are still images" in caplog.text
    assert "set data.frames=1" in caplog.text
    caplog.clear()
    one = make_tiny_pretrain_config(**{"data.frames": 1})
    with caplog.at_level("WARNING", logger="learner"):
        check_pretraining(one, manifest, build_model=False)
    assert "still images" not in caplog.text


def test_image_files_count_as_stills_and_volumes_beside_clips_are_warned_about(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No modality column: the files say what they are (here PNGs); a declared modality counts first."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from learner.data.manifest import load_manifest
    from learner.data.scales import get_scale
    from learner.training.plan import check_pretraining

    config = make_tiny_pretrain_config()
    table = pd.read_csv(config.data.manifest).drop(columns="modality")
    for row in table.index:
        Image.fromarray(np.full((16, 16), row, np.uint8)).save(tmp_path / f"{row}.png")
    table["path"] = [str(tmp_path / f"{row}.png") for row in table.index]
    table.to_csv(tmp_path / "pngs.csv", index=False)
    with caplog.at_level("WARNING", logger="learner"):
        check_pretraining(config, load_manifest(tmp_path / "pngs.csv", get_scale("sf")), build_model=False)
    assert f"{len(table)} scan(s) are still images" in caplog.text
    assert "mix volumes" not in caplog.text
    caplog.clear()
    table["modality"] = ["volume" if row % 3 == 0 else "video" for row in table.index]
    table.to_csv(tmp_path / "mixed.csv", index=False)
    with caplog.at_level("WARNING", logger="learner"):
        check_pretraining(config, load_manifest(tmp_path / "mixed.csv", get_scale("sf")), build_model=False)
    volumes = sum(row % 3 == 0 for row in table.index)
    assert f"the scans mix volumes with other kinds ({len(table) - volumes} video, {volumes} volume)" in (
        caplog.text
    )
    assert "still images" not in caplog.text


def test_constant_train_scores_are_refused_before_training(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    import pandas as pd

    from learner.data.manifest import load_manifest
    from learner.data.scales import get_scale
    from learner.errors import LearnerError
    from learner.training.plan import check_pretraining

    config = make_tiny_pretrain_config()
    table = pd.read_csv(config.data.manifest)
    table["score"] = 250.0  # every scan the same: MAE 0 would look like a perfect model
    table["path"] = [str((Path(config.data.manifest).parent / p).resolve()) for p in table["path"]]
    table.to_csv(tmp_path / "flat.csv", index=False)
    manifest = load_manifest(tmp_path / "flat.csv", get_scale("sf"))
    with pytest.raises(LearnerError, match=r"flat\.csv: every one of the \d+ train scans has the score 250"):
        check_pretraining(config, manifest, build_model=False)


@pytest.mark.parametrize(
    ("size", "channels", "made", "fits", "has"),
    [
        ("small", 1, "converted for", "model.size=small", "model.size=tiny"),
        ("tiny", 3, "converted for", "data.channels=1", "data.channels=3"),
        ("small", 3, "its weights fit", "model.size=small, data.channels=1",
         "model.size=tiny, data.channels=3"),
    ],
)  # fmt: skip
def test_weights_for_another_size_or_channel_count_name_the_setting_that_fits(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, size: str, channels: int, made: str,
    fits: str, has: str,
) -> None:  # fmt: skip
    """Grey weights of ``size`` in a tiny run of ``channels``: once ``100 shape mismatches (bn1.bias (32,)
    vs (16,), …)``, which said nothing of what to set. (RGB weights load into a grey run, summed.)"""
    from safetensors.torch import save_file

    from learner import api
    from learner.models.tsm_resnet import TSMResNet18

    weights = tmp_path / "w.safetensors"
    save_file(TSMResNet18(in_channels=1, size=size).state_dict(), weights)
    if made == "converted for":  # learner weights convert, for that size
        target = tmp_path / "c.safetensors"
        weights = api.convert_weights(weights, target, overrides={"model.size": size}).path
    config = make_tiny_pretrain_config(**{"model.init": str(weights), "data.channels": channels})
    with pytest.raises(CheckpointError) as error:
        pretrain(config, tmp_path / "run")
    sets = " ".join(f"--set {setting}" for setting in fits.split(", "))
    assert str(error.value) == f"{weights}: {made} {fits}; this run has {has} (set {sets})"
    assert not (tmp_path / "run").exists()
