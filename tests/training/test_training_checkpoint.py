"""Checkpoint folders: strict safetensors round trip, weights-only train state, atomic replacement."""

from __future__ import annotations

import errno
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from learner.config import Config
from learner.errors import CheckpointError
from learner.losses.regression import ScoreStandardiser
from learner.training import checkpoint as checkpoint_module
from learner.training.checkpoint import (
    MODEL_FILE,
    TRAIN_STATE_FILE,
    CheckpointMeta,
    EncoderMeta,
    checkpoint_fingerprint,
    load_checkpoint,
    load_train_state,
    read_meta,
    recover_checkpoint,
    save_checkpoint,
)
from learner.training.seeding import rng_state


def _net(seed: int, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.Flatten(), nn.LazyLinear(1))


META = CheckpointMeta(
    Config(),
    ScoreStandardiser(mean=1.0, std=2.0),
    EncoderMeta("tsm_resnet18", 4, 1, 5),
    scan_kinds=("video",),
)


def _meta(epoch: int = 0, **metrics: float) -> CheckpointMeta:
    return replace(META, epoch=epoch, metrics=metrics)


def _built(seed: int, width: int = 4) -> nn.Module:
    net = _net(seed, width)
    net(torch.zeros(2, 1, 5, 5))  # materialise the lazy layer: (2, 1, 5, 5) → (2, 1)
    return net


def test_round_trip_is_exact_and_strict(tmp_path: Path) -> None:
    source, target = _built(0), _built(1)
    source[1].running_mean.add_(0.5)  # buffers must travel too
    save_checkpoint(tmp_path / "last", source, _meta(3, val_mae=1.5))
    loaded, meta = load_checkpoint(tmp_path / "last", target)
    assert loaded is target
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    assert meta == _meta(3, val_mae=1.5)
    on_disk = json.loads((tmp_path / "last" / "meta.json").read_text())
    assert (on_disk["epoch"], on_disk["metrics"], on_disk["schema_version"]) == (3, {"val_mae": 1.5}, 1)
    assert set(on_disk) == {
        "config",
        "score_standardisation",
        "encoder",
        "epoch",
        "step",
        "metrics",
        "scan_kinds",
        "schema_version",
        "sha256",
    }
    assert on_disk["scan_kinds"] == ["video"]
    weights = hashlib.sha256((tmp_path / "last" / MODEL_FILE).read_bytes()).hexdigest()
    assert on_disk["sha256"] == {MODEL_FILE: weights}  # written last, over the files beside it
    state, _ = load_checkpoint(tmp_path / "last")
    assert set(state) == set(source.state_dict())


def test_channels_last_weights_are_stored_in_standard_layout(tmp_path: Path) -> None:
    source = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    assert not source.weight.is_contiguous()
    save_checkpoint(tmp_path / "ck", source, _meta())
    state, _ = load_checkpoint(tmp_path / "ck")
    assert state["weight"].is_contiguous()
    assert torch.equal(state["weight"], source.weight)


def test_mismatched_model_is_refused_with_one_line(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", _built(0, width=4), _meta())
    with pytest.raises(CheckpointError, match=r"0\.weight \(4, 1, 3, 3\) vs \(6, 1, 3, 3\)") as info:
        load_checkpoint(tmp_path / "ck", _built(0, width=6))
    assert "\n" not in str(info.value)
    extra = nn.Sequential(*_built(0), nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match=r"2 missing \(4\.bias, 4\.weight\)"):
        load_checkpoint(tmp_path / "ck", extra)


def test_missing_or_foreign_files_are_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere")
    save_checkpoint(tmp_path / "ck", _built(0), _meta())
    with pytest.raises(CheckpointError, match=r"no train_state\.pt"):
        load_train_state(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    (tmp_path / "ck" / "meta.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(CheckpointError, match="schema_version 99"):
        read_meta(tmp_path / "ck")
    (tmp_path / "ck" / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        load_checkpoint(tmp_path / "ck")


def test_train_state_loads_weights_only_and_resumes_adam(tmp_path: Path) -> None:
    net = _built(0)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    batch = torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    net(batch).square().mean().backward()
    optimiser.step()
    state = {
        "optimizer": optimiser.state_dict(),
        "step": 1,
        "rng": rng_state(),
        "history": [{"val_mae": 0.5}],
    }
    save_checkpoint(tmp_path / "ck", net, _meta(), train_state=state)
    raw = torch.load(tmp_path / "ck" / TRAIN_STATE_FILE, weights_only=True)  # the safety requirement itself
    assert raw["step"] == 1
    assert raw["history"] == [{"val_mae": 0.5}]

    twin = _built(5)
    load_checkpoint(tmp_path / "ck", twin)
    twin_optimiser = torch.optim.Adam(twin.parameters(), lr=1e-2)
    twin_optimiser.load_state_dict(load_train_state(tmp_path / "ck")["optimizer"])
    for model, opt in ((net, optimiser), (twin, twin_optimiser)):
        opt.zero_grad()
        model(batch).square().mean().backward()
        opt.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    first = _built(0)
    save_checkpoint(tmp_path / "last", first, _meta(1))
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "last", _built(1), replace(_meta(), epoch=object()))  # type: ignore[arg-type]
    assert read_meta(tmp_path / "last").epoch == 1
    state, _ = load_checkpoint(tmp_path / "last")
    assert torch.equal(state["0.weight"], first[0].weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no staging or retired folders left


def test_replacing_a_checkpoint_swaps_every_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _built(0), _meta(1), train_state={"step": 1})
    save_checkpoint(tmp_path / "last", _built(1), _meta(2))
    assert read_meta(tmp_path / "last").epoch == 2
    assert not (tmp_path / "last" / TRAIN_STATE_FILE).exists()  # nothing stale survives from the old folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_fingerprint_is_the_sha256_of_the_weights_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a", _built(0), _meta(1))
    save_checkpoint(tmp_path / "b", _built(0), _meta(2))
    save_checkpoint(tmp_path / "c", _built(1), _meta(1))
    expected = hashlib.sha256((tmp_path / "a" / MODEL_FILE).read_bytes()).hexdigest()
    assert checkpoint_fingerprint(tmp_path / "a") == expected
    assert checkpoint_fingerprint(tmp_path / "b") == expected  # metadata is not part of the identity
    assert checkpoint_fingerprint(tmp_path / "c") != expected


def test_a_crash_between_the_two_renames_is_pointed_out(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _built(0), _meta(1))
    (tmp_path / "last").rename(tmp_path / ".last.old-1-abcd")  # as if the process died mid-swap
    with pytest.raises(
        CheckpointError, match=r"left .*\.last\.old-1-abcd; --resume recovers it, or rename it to last"
    ):
        read_meta(tmp_path / "last")


def test_checkpoint_folders_follow_the_umask_like_any_folder(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _built(0), _meta())
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "last").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_malformed_metadata_is_one_line_naming_the_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", _built(0), _meta(1))
    path = tmp_path / "ck" / "meta.json"
    meta = json.loads(path.read_text())
    broken_ones = (
        {k: v for k, v in meta.items() if k != "encoder"},
        {**meta, "epoch": "one"},
        {**meta, "scan_kinds": ["xray"]},
        {**meta, "scan_kinds": "video"},
        [1],
    )
    for broken in broken_ones:
        path.write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=r"meta\.json: ") as caught:
            read_meta(tmp_path / "ck")
        assert "\n" not in str(caught.value)


def test_a_checkpoint_from_before_scan_kinds_reads_with_none_recorded(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", _built(0), _meta(1))
    path = tmp_path / "ck" / "meta.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "scan_kinds"}))
    assert read_meta(tmp_path / "ck").scan_kinds == ()


@pytest.mark.parametrize("name", [MODEL_FILE, TRAIN_STATE_FILE])
def test_a_file_changed_after_saving_fails_its_checksum_naming_it(tmp_path: Path, name: str) -> None:
    save_checkpoint(tmp_path / "last", _built(0), _meta(1), train_state={"step": 1})
    path = tmp_path / "last" / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last byte: the file still parses, its weights are wrong
    path.write_bytes(bytes(data))
    load = load_checkpoint if name == MODEL_FILE else load_train_state
    with pytest.raises(CheckpointError, match=rf"^{path}: checksum mismatch") as caught:
        load(tmp_path / "last")
    assert "\n" not in str(caught.value)


def _interrupted_swap(tmp_path: Path, *, new_complete: bool) -> None:
    """``last`` at epoch 1, then a save of epoch 2 killed between its two renames."""
    save_checkpoint(tmp_path / "last", _built(0), _meta(1), train_state={"step": 1})
    save_checkpoint(tmp_path / "new", _built(1), _meta(2), train_state={"step": 2})
    (tmp_path / "last").rename(tmp_path / ".last.old-1-aaaa")
    if not new_complete:  # killed while writing: meta.json (written last) is missing
        (tmp_path / "new" / "meta.json").unlink()
    (tmp_path / "new").rename(tmp_path / ".last.tmp-1-bbbb")


@pytest.mark.parametrize(("new_complete", "epoch", "seed"), [(True, 2, 1), (False, 1, 0)])
def test_recovery_takes_the_newest_complete_copy_and_clears_the_rest(
    tmp_path: Path, new_complete: bool, epoch: int, seed: int
) -> None:
    _interrupted_swap(tmp_path, new_complete=new_complete)
    assert recover_checkpoint(tmp_path / "last")
    state, meta = load_checkpoint(tmp_path / "last")
    assert meta.epoch == epoch
    assert torch.equal(state["0.weight"], _built(seed)[0].weight)
    assert load_train_state(tmp_path / "last")["step"] == epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_recovery_prefers_a_complete_newer_staging_folder_over_the_current_one(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _built(0), _meta(1))
    save_checkpoint(tmp_path / "new", _built(1), _meta(2))
    (tmp_path / "new").rename(tmp_path / ".last.tmp-1-cccc")  # killed before the first rename
    assert recover_checkpoint(tmp_path / "last")
    assert read_meta(tmp_path / "last").epoch == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_recovery_without_any_complete_copy_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / ".last.tmp-1-dddd").mkdir()
    assert not recover_checkpoint(tmp_path / "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.tmp-1-dddd"]


def test_the_next_save_removes_what_an_interrupted_save_left(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _built(0), _meta(1))
    (tmp_path / ".last.tmp-9-eeee").mkdir()
    (tmp_path / ".last.old-9-ffff").mkdir()
    (tmp_path / ".best.tmp-9-ffff").mkdir()  # another checkpoint's: not this save's to remove
    save_checkpoint(tmp_path / "last", _built(1), _meta(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.tmp-9-ffff", "last"]


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _built(0)
    save_checkpoint(tmp_path / "last", first, _meta(1), train_state={"step": 1})

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    with pytest.raises(CheckpointError, match=r"last: no space left on device while writing train_state.pt"):
        save_checkpoint(tmp_path / "last", _built(1), _meta(2), train_state={"step": 2})
    state, meta = load_checkpoint(tmp_path / "last")
    assert meta.epoch == 1
    assert torch.equal(state["0.weight"], first[0].weight)
    assert load_train_state(tmp_path / "last")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
