"""Config: paper defaults, YAML + overrides, and one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.config import Config, apply_overrides, load_config
from learner.errors import ConfigError


def test_defaults_are_the_papers_table_2() -> None:
    cfg = Config()
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.optimizer) == (16, 1e-3, "adam")
    assert (cfg.optim.epochs, cfg.optim.scheduler) == (100, "cosine")
    assert cfg.loss.lam == 0.9
    assert cfg.model.backbone == "tsm_resnet18"
    assert cfg.experiment.losses == ["mse", "mse+cl", "mse+wcl"]


def test_yaml_then_overrides_win(tmp_path: Path) -> None:
    source = tmp_path / "c.yaml"
    source.write_text("optim:\n  epochs: 7\n  lr: 0.01\nloss:\n  name: mse+cl\n")
    cfg = load_config(source, ["optim.epochs=3", "experiment.seeds=[4, 5]", "data.split.counts=[3,2,1]"])
    assert cfg.optim.epochs == 3  # override beats file
    assert cfg.optim.lr == 0.01  # file beats default
    assert cfg.loss.name == "mse+cl"
    assert cfg.experiment.seeds == [4, 5]
    assert cfg.data.split.counts == (3, 2, 1)
    assert cfg.data.split.ratios is None  # counts take precedence over the default ratios


def test_unknown_key_names_key_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["optim.lrr=1"])
    message = str(info.value)
    assert "optim.lrr" in message
    assert "lr" in message
    assert "batch_size" in message
    assert "\n" not in message


def test_unknown_key_in_yaml_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "c.yaml"
    source.write_text("model:\n  backbon: vit\n")
    with pytest.raises(ConfigError, match=r"model\.backbon.*allowed: .*backbone"):
        load_config(source)


def test_invalid_literal_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["classifier.combine=sum"])
    message = str(info.value)
    assert "classifier.combine" in message
    assert "difference" in message
    assert "concatenate" in message
    assert "'sum'" in message


def test_out_of_range_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"loss\.lam"):
        load_config(None, ["loss.lam=1.5"])
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(None, ["optim.lr=-1"])


def test_malformed_override_and_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["optim.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"optim\.epochs\.x"):
        load_config(None, ["optim.epochs.x=1"])


def test_yaml_round_trip_and_apply_overrides(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), {"optim.epochs": 2, "data.size": 32})
    source = tmp_path / "resolved.yaml"
    source.write_text(cfg.to_yaml())
    assert load_config(source) == cfg
    assert (cfg.optim.epochs, cfg.data.size) == (2, 32)


def test_custom_scale_needs_exactly_one_rule() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(None, ["data.custom_scale={low: 0, high: 10}"])
    cfg = load_config(None, ["data.scale=custom", "data.custom_scale={low: 0, high: 10, threshold: 1}"])
    assert cfg.data.custom_scale is not None
    assert cfg.data.custom_scale.threshold == 1


def test_custom_scale_from_config_carries_every_field() -> None:
    from learner.data.scales import ChangeLabel, scale_from_config

    cfg = load_config(
        None,
        [
            "data.scale=custom",
            "data.custom_scale={low: 0, high: 10, higher_is_better: false, threshold: 2, integer: true}",
        ],
    )
    scale = scale_from_config(cfg.data)
    assert (scale.low, scale.high, scale.threshold, scale.integer) == (0, 10, 2, True)
    assert scale.change_label(5, 8) == ChangeLabel.DETERIORATED  # lower is better: +3 is worse
    assert scale.change_label(5, 6) == ChangeLabel.STABLE
    assert scale.range_problem(2.5) is not None  # not an integer
    with pytest.raises(ConfigError, match="custom_scale is not set"):
        scale_from_config(load_config(None, ["data.scale=custom"]).data)


def test_bundled_configs_load_by_name_and_ship_in_the_package() -> None:
    from learner.config import BUNDLED_CONFIGS, bundled_configs

    assert {"demo", "lus", "adni"} <= set(bundled_configs())
    assert BUNDLED_CONFIGS.parent.name == "learner"  # inside the package, so a wheel carries them
    lus = load_config("lus")
    assert lus.optim.epochs == 100  # Table 2
    with pytest.raises(ConfigError, match=r"bundled configs: .*lus"):
        load_config("nonexistent")
