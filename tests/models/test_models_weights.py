"""Init weights: safetensors / .pth, key normalisation, grey from RGB, a run's encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor

from learner.config import ModelConfig
from learner.errors import CheckpointError
from learner.models.registry import build_encoder
from learner.models.tsm_resnet import TSMResNet18
from learner.models.weights import init_weights_file, load_init_weights


def source_model(in_channels: int = 3) -> TSMResNet18:
    model = TSMResNet18(in_channels=in_channels, size="tiny")
    with torch.no_grad():  # buffers too, so a round trip is visible in every tensor
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.uniform_(0.5, 1.5)
    return model


def assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_safetensors_round_trip_strips_prefixes_and_drops_fc(tmp_path: Path) -> None:
    source = source_model()
    state = {f"module.base_model.{k}": v.clone() for k, v in source.state_dict().items()}
    state |= {"fc.weight": torch.zeros(10, 128), "fc.bias": torch.zeros(10)}
    save_file(state, tmp_path / "w.safetensors")
    target = TSMResNet18(in_channels=3, size="tiny")
    load_init_weights(target, tmp_path / "w.safetensors")
    assert_same_state(target.state_dict(), source.state_dict())


def test_pth_round_trip_from_a_reference_tsm_checkpoint(tmp_path: Path) -> None:
    source = source_model()
    # The reference TSM wraps each block's conv1 as conv1.net and saves {"state_dict": ..., "epoch": ...}.
    state = {
        "module.base_model." + key.replace(".conv1.", ".conv1.net."): value
        for key, value in source.state_dict().items()
    }
    state |= {"module.new_fc.weight": torch.zeros(3, 128)}
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "ckpt.pth.tar")
    target = TSMResNet18(in_channels=3, size="tiny")
    load_init_weights(target, tmp_path / "ckpt.pth.tar")
    assert_same_state(target.state_dict(), source.state_dict())


def test_grey_model_from_rgb_weights_matches_rgb_model_on_replicated_grey(tmp_path: Path) -> None:
    source = source_model(in_channels=3)
    torch.save(source.state_dict(), tmp_path / "rgb.pth")
    target = TSMResNet18(in_channels=1, size="tiny")
    load_init_weights(target, tmp_path / "rgb.pth")
    torch.testing.assert_close(target.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    grey = torch.rand(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        got = target.double().eval()(grey)
        expected = source.double().eval()(grey.expand(-1, -1, 3, -1, -1))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_missing_batch_counters_are_accepted(tmp_path: Path) -> None:
    source = source_model()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, tmp_path / "old.safetensors")
    target = TSMResNet18(in_channels=3, size="tiny")
    load_init_weights(target, tmp_path / "old.safetensors")
    torch.testing.assert_close(target.layer3[1].bn2.running_var, source.layer3[1].bn2.running_var)


def _without(key: str) -> dict[str, Tensor]:
    return {k: v for k, v in source_model().state_dict().items() if k != key}


def _with(key: str) -> dict[str, Tensor]:
    return source_model().state_dict() | {key: torch.zeros(2)}


def _wider() -> dict[str, Tensor]:
    return TSMResNet18(in_channels=3, size="small").state_dict()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("absent.pth", None, "not found"),
        ("garbage.pth", b"this is not a pickle", "not a readable weights file"),
        ("garbage.safetensors", b"\x00\x01 not safetensors", "not a readable weights file"),
        ("empty.pth", b"", "not a readable weights file"),
        ("scalars.pth", {"lr": 0.1}, "not a state dict: entry 'lr'"),
        ("missing.safetensors", _without("layer1.0.bn1.weight"), "1 missing (layer1.0.bn1.weight)"),
        ("extra.safetensors", _with("head.weight"), "1 unexpected (head.weight)"),
        ("wide.safetensors", _wider(), "100 shape mismatches (bn1.bias (32,) vs (16,)"),
    ],
)  # fmt: skip
def test_bad_files_raise_one_line_checkpoint_errors(
    tmp_path: Path, name: str, content: bytes | dict[str, object] | None, expected: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict) and path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in content.items()}, path)
    elif content is not None:
        torch.save(content, path)
    target = TSMResNet18(in_channels=3, size="tiny")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        load_init_weights(target, path)
    message = str(caught.value)
    assert expected in message
    assert name in message
    assert "\n" not in message
    assert_same_state(target.state_dict(), before)  # a failed load changes nothing


# ---- --init RUN_DIR: a learner run's checkpoints/best encoder ----


def fake_run(root: Path, encoder: TSMResNet18, backbone: str = "tsm_resnet18", version: object = 1) -> Path:
    """A run directory as learner pretrain leaves it, as far as --init reads it: the ScoreRegressor's state
    dict (encoder.* + head.*) and meta.json in checkpoints/best."""
    best = root / "checkpoints" / "best"
    best.mkdir(parents=True)
    state = {f"encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    state |= {"head.net.0.weight": torch.ones(16, encoder.embed_dim), "head.net.0.bias": torch.zeros(16)}
    save_file(state, best / "model.safetensors")
    meta = {"schema_version": version, "encoder": {"name": backbone, "embed_dim": encoder.embed_dim}}
    (best / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("where", ["run", "checkpoint folder"])
def test_a_run_directory_gives_its_best_encoder(tmp_path: Path, where: str) -> None:
    source = source_model(in_channels=1)
    run_dir = fake_run(tmp_path / "run", source)
    target = TSMResNet18(in_channels=1, size="tiny")
    path = run_dir if where == "run" else run_dir / "checkpoints" / "best"
    load_init_weights(target, path, backbone="tsm_resnet18")
    assert_same_state(target.state_dict(), source.state_dict())
    assert init_weights_file(path) == run_dir / "checkpoints" / "best" / "model.safetensors"


def test_build_encoder_takes_a_run_directory_as_model_init(tmp_path: Path) -> None:
    source = source_model(in_channels=1)
    run_dir = fake_run(tmp_path / "run", source)
    encoder = build_encoder(ModelConfig(size="tiny", init=run_dir), 1, img_size=32)
    assert_same_state(encoder.state_dict(), source.state_dict())


def test_a_weights_file_starts_a_layer_embedding_norm_fresh_and_a_run_must_have_it(tmp_path: Path) -> None:
    """No other library's encoder has model.embed_norm=layer's LayerNorm: from a weights file it starts as
    initialised; a learner run's encoder is the run's own, all of it."""
    source = source_model(in_channels=1)
    save_file(source.state_dict(), tmp_path / "plain.safetensors")
    layer = ModelConfig(size="tiny", embed_norm="layer", init=tmp_path / "plain.safetensors")
    encoder = build_encoder(layer, 1, img_size=32)
    loaded = {k: v for k, v in encoder.state_dict().items() if not k.startswith("embedding_norm.")}
    assert_same_state(loaded, source.state_dict())
    torch.testing.assert_close(encoder.embedding_norm.weight, torch.ones(encoder.embed_dim))
    run_dir = fake_run(tmp_path / "run", source)
    with pytest.raises(CheckpointError, match=r"2 missing \(embedding_norm.bias, embedding_norm.weight\)"):
        build_encoder(layer.model_copy(update={"init": run_dir}), 1, img_size=32)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not a run", "not a learner run or checkpoint folder (no checkpoints/best/model.safetensors"),
        ("another backbone", "its encoder is 'vit', not 'tsm_resnet18'; initialise from a run of the same"),
        ("another size", "does not match TSMResNet18: 100 shape mismatches (bn1.bias (32,) vs (16,)"),
        ("another channel count", "1 shape mismatches (conv1.weight (16, 3, 7, 7) vs (16, 1, 7, 7))"),
        ("another format", "schema_version 99 is not supported"),
    ],
)
def test_a_run_that_does_not_fit_is_a_one_line_error_naming_it(
    tmp_path: Path, case: str, expected: str
) -> None:
    run_dir = tmp_path / "run"
    if case == "not a run":
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "config.yaml").write_text("seed: 0\n")  # a run that died before its first checkpoint
    else:
        channels = 3 if case == "another channel count" else 1
        size = "small" if case == "another size" else "tiny"
        backbone = "vit" if case == "another backbone" else "tsm_resnet18"
        fake_run(
            run_dir, TSMResNet18(in_channels=channels, size=size), backbone, 99 if "format" in case else 1
        )
    target = TSMResNet18(in_channels=1, size="tiny")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        load_init_weights(target, run_dir, backbone="tsm_resnet18")
    message = str(caught.value)
    assert expected in message
    assert str(run_dir) in message
    assert "\n" not in message
    assert_same_state(target.state_dict(), before)


# ``learner weights convert`` (every source layout): tests/models/test_models_layouts.py
