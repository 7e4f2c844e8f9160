"""docs/python.md stays true: its code blocks run as written (on the tiny LUS cohort, tiny settings in
place of the bundled demo ones) and the facade returns what the pipeline functions return."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from learner import api
from learner.config import Config, DatasetSpec

PYTHON_DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"
DEMO_CONFIG_LINE = 'config = api.load_config("demo")  # the bundled CPU demo settings'


@pytest.mark.slow
def test_the_python_page_runs_as_written(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_lus: DatasetSpec,
    make_tiny_pretrain_config: Callable[..., Config],
) -> None:
    blocks = re.findall(r"```python\n(.*?)\n```", PYTHON_DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 2
    code = "\n".join(blocks)
    assert DEMO_CONFIG_LINE in code
    tiny = make_tiny_pretrain_config(**{"data.manifest": None, "classifier.epochs": 10})
    code = code.replace(DEMO_CONFIG_LINE, "config = TINY_CONFIG")
    cohort = tmp_path / "runs" / "demo" / "phantom-lus-demo"
    cohort.parent.mkdir(parents=True)
    cohort.symlink_to(tiny_lus.manifest.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"TINY_CONFIG": tiny}
    exec(compile(code, str(PYTHON_DOC), "exec"), namespace)
    run, result, experiment = namespace["run"], namespace["result"], namespace["experiment"]
    assert run.history[-1] == run.last  # a PretrainResult
    assert (tmp_path / "runs" / "py" / "classifier" / "metrics.json").is_file()
    assert result.metrics["encoder_run"] == "runs/py/encoder"
    assert [c.key.loss for c in experiment.results.cells] == ["mse", "mse+wcl"]
    stored = yaml.safe_load((tmp_path / "runs" / "py" / "encoder" / "config.yaml").read_text())
    assert (stored["loss"]["name"], stored["seed"]) == ("mse+wcl", 1)  # the overrides reached the run
    on_disk = json.loads((tmp_path / "runs" / "py" / "table3" / "results.json").read_text())
    assert [c["dir"] for c in on_disk["cells"]] == [c.dir for c in experiment.results.cells]


def test_load_config_takes_objects_names_and_overrides() -> None:
    base = api.load_config("demo")
    changed = api.load_config(base, {"optim.epochs": 3})
    assert (changed.optim.epochs, changed.data.size) == (3, base.data.size)
    assert api.load_config(None) == Config()
    assert {"load_config", "pretrain", "embed", "classify", "predict", "table3"} <= set(api.__all__)
