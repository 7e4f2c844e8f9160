"""docs/config.md and `learner config show`: generated from the pydantic models, kept true (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from learner.config import CUSTOM_SCALE_EXAMPLE, Config, load_config, load_experiment
from learner.config_reference import commented_yaml, keys, reference_markdown
from learner.data.scales import scale_from_config
from learner.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_the_generated_reference() -> None:
    """Fails when a key, default or description changes without `learner config docs` being rerun."""
    assert DOCS.read_text(encoding="utf-8") == reference_markdown(), "run `learner config docs`"


def test_every_key_is_documented_with_a_description() -> None:
    documented = {k.name: k for k in keys()}
    flat = set(documented)
    assert {"seed", "data.split.counts", "runtime.cache_dir", "experiment.seeds"} <= flat
    assert "data.custom_scale.threshold" in flat  # a section behind an optional
    assert [name for name, k in documented.items() if not k.description] == []
    assert documented["optim.epochs"].default == "100"
    assert documented["runtime.device"].type_text == "one of auto, cpu, cuda"
    assert documented["data.split.counts"].type_text == "[int, int, int] or null"


def test_config_show_reads_back_to_the_resolved_config(cli) -> None:
    code, out, _ = cli(["config", "show", "--config", "small-cohort", "--set", "optim.epochs=3"])
    assert code == 0
    assert "  # pretraining epochs\n  epochs: 3\n" in out
    expected = load_experiment("small-cohort", ["optim.epochs=3"])  # the file has an experiment: grid
    assert yaml.safe_load(out) == yaml.safe_load(expected.to_yaml())
    code, out, _ = cli(["config", "show", "--set", "seed=4"])  # no file: a run's sections only
    assert Config.model_validate(yaml.safe_load(out)) == load_config(None, ["seed=4"])
    assert yaml.safe_load(commented_yaml(load_config("lus"))) == yaml.safe_load(load_config("lus").to_yaml())


def test_config_show_includes_the_grid_when_the_file_has_one(cli, tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("experiment:\n  seeds: [4]\n")
    code, out, _ = cli(["config", "show", "--config", str(path)])
    assert code == 0
    assert yaml.safe_load(out)["experiment"]["seeds"] == [4]


def test_config_docs_writes_the_reference(cli, tmp_path: Path) -> None:
    code, _, _ = cli(["config", "docs", "--out", str(tmp_path / "c.md")])
    assert code == 0
    assert (tmp_path / "c.md").read_text() == reference_markdown()


def test_the_custom_scale_errors_show_an_example_that_works() -> None:
    with pytest.raises(ConfigError, match="custom_scale is not set") as missing:
        scale_from_config(load_config(None, ["data.scale=custom"]).data)
    with pytest.raises(ConfigError, match="exactly one of 'bins' or 'threshold'") as neither:
        load_config(None, ["data.scale=custom", "data.custom_scale.low=0"])
    for error in (missing, neither):
        example = re.search(r"e\.g\. (data: \{.*\}\})", str(error.value))
        assert example is not None
        assert example.group(1) == CUSTOM_SCALE_EXAMPLE
    data = yaml.safe_load(CUSTOM_SCALE_EXAMPLE)["data"]
    scale = scale_from_config(load_config(None, [f"data.{k}={v}" for k, v in data.items()]).data)
    assert (scale.low, scale.high, scale.threshold) == (0, 3, 1)
