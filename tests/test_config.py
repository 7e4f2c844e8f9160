"""Config: paper defaults, YAML + overrides, and one-line errors that name the key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, get_args

import pytest

from learner.config import (
    ClassifierHead,
    Combine,
    Config,
    Crop,
    EmbedNorm,
    ExperimentConfig,
    IntraPairing,
    ModelSize,
    NiftiAxis,
    Norm,
    Optimizer,
    Sampling,
    Schedule,
    Similarity,
    SplitConfig,
    apply_overrides,
    load_config,
    load_experiment,
)
from learner.data.scales import ChangeLabel, scale_from_config
from learner.errors import ConfigError


def test_defaults_are_the_papers_table_2() -> None:
    cfg = Config()
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.optimizer) == (16, 1e-3, "adam")
    assert (cfg.optim.epochs, cfg.optim.scheduler) == (100, "cosine")
    assert cfg.loss.lam == 0.9
    assert cfg.model.backbone == "tsm_resnet18"
    assert ExperimentConfig().losses == ["mse", "mse+cl", "mse+wcl"]


def test_yaml_then_overrides_win(tmp_path: Path) -> None:
    source = tmp_path / "c.yaml"
    source.write_text("optim:\n  epochs: 7\n  lr: 0.01\nloss:\n  name: mse+cl\n")
    experiment = load_experiment(
        source, ["optim.epochs=3", "experiment.seeds=[4, 5]", "data.split.counts=[3,2,1]"]
    )
    cfg = experiment.config
    assert cfg.optim.epochs == 3  # override beats file
    assert cfg.optim.lr == 0.01  # file beats default
    assert cfg.loss.name == "mse+cl"
    assert experiment.grid.seeds == [4, 5]
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


def test_a_resampled_scan_has_one_clip() -> None:
    assert load_config(None, ["data.sampling=resample"]).data.sampling == "resample"
    with pytest.raises(ConfigError, match=r"classifier\.clips_per_scan=3 needs data\.sampling=segments"):
        load_config(None, ["data.sampling=resample", "classifier.clips_per_scan=3"])
    with pytest.raises(ConfigError, match=r"data\.sampling.*'segments' or 'resample'"):
        load_config(None, ["data.sampling=nearest"])


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
    scale = "data.custom_scale={low: 0, high: 10, threshold: 1, higher_is_better: true}"
    cfg = load_config(None, ["data.scale=custom", scale])
    assert cfg.data.custom_scale is not None
    assert cfg.data.custom_scale.threshold == 1


def test_a_custom_scales_upper_edges_put_their_own_value_in_the_bin_above() -> None:
    """Bins written "< 10, 10–20, > 20": 10 opens the middle bin, 20 closes it (the rule of ``sf``'s 180)."""
    scale = "data.custom_scale={low: 0, high: 30, bins: [10, 20], upper_edges: [10], higher_is_better: true}"
    custom = scale_from_config(load_config(None, ["data.scale=custom", scale]).data)
    assert custom.bin_of([9.9, 10.0, 10.1, 20.0, 20.1]).tolist() == [0, 1, 1, 1, 2]
    assert custom.change_label(9.9, 10.0) is ChangeLabel.IMPROVED
    plain = scale.replace(", upper_edges: [10]", "")
    assert scale_from_config(load_config(None, ["data.scale=custom", plain]).data).bin_of(10.0) == 0
    with pytest.raises(ConfigError, match=r"'upper_edges' \[15.0\] are not among 'bins' \[10.0, 20.0\]"):
        load_config(None, ["data.scale=custom", scale.replace("upper_edges: [10]", "upper_edges: [15]")])


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.custom_scale={low: 0, high: 3, threshold: 1}"],  # the README's old small-cohort example
        ["data.custom_scale.low=0", "data.custom_scale.high=3", "data.custom_scale.threshold=1"],
    ],
)
def test_a_custom_scale_must_state_its_direction(overrides: list[str]) -> None:
    """A severity scale (higher is worse) taken as higher-is-better swaps improved and deteriorated without a
    word, so the direction is never defaulted."""
    with pytest.raises(
        ConfigError, match=r"data\.custom_scale.*set 'higher_is_better'.*never guessed"
    ) as error:
        load_config(None, ["data.scale=custom", *overrides])
    assert "\n" not in str(error.value)
    stated = load_config(None, ["data.scale=custom", *overrides, "data.custom_scale.higher_is_better=false"])
    assert stated.data.custom_scale is not None
    assert stated.data.custom_scale.higher_is_better is False


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

    assert {"demo", "lus", "adni", "paper", "small-cohort"} <= set(bundled_configs())
    assert BUNDLED_CONFIGS.parent.name == "learner"  # inside the package, so a wheel carries them
    lus = load_config("lus")
    assert lus.optim.epochs == 100  # Table 2
    with pytest.raises(ConfigError, match=r"bundled configs: .*lus"):
        load_config("nonexistent")


def test_a_key_of_an_older_version_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"optim\.device"):
        load_config(None, ["optim.device=cpu"])  # runtime.device since 0.1; no moved-key table (issue 19)


def test_runtime_is_outside_the_result_settings() -> None:
    cfg = load_config(None, ["runtime.device=cpu", "runtime.workers=0", "runtime.cache_dir=/tmp/c"])
    assert (cfg.runtime.device, cfg.runtime.workers, str(cfg.runtime.cache_dir)) == ("cpu", 0, "/tmp/c")
    assert "runtime" not in cfg.result_settings()
    elsewhere = apply_overrides(cfg, {"runtime.amp": False, "runtime.channels_last": False})
    assert elsewhere.result_settings() == cfg.result_settings()
    assert apply_overrides(cfg, {"optim.lr": 0.1}).result_settings() != cfg.result_settings()


def test_experiment_grid_lives_beside_the_run_not_in_it(tmp_path: Path) -> None:
    source = tmp_path / "exp.yaml"
    source.write_text("optim:\n  epochs: 4\nexperiment:\n  seeds: [7]\n  losses: [mse]\n")
    experiment = load_experiment(source, ["experiment.combines=[concatenate]"])
    assert (experiment.grid.seeds, experiment.grid.losses, experiment.grid.combines) == (
        [7],
        ["mse"],
        ["concatenate"],
    )
    assert experiment.config.optim.epochs == 4
    run = load_config(source)  # a single run validates the grid but does not carry it
    assert run == experiment.config
    assert "experiment" not in run.to_yaml()
    again = tmp_path / "again.yaml"
    again.write_text(experiment.to_yaml())
    assert load_experiment(again) == experiment
    with pytest.raises(ConfigError, match=r"experiment\.seeds is an experiment grid key"):
        load_config(source, ["experiment.seeds=[1]"])
    source.write_text("experiment:\n  seed: [7]\n")
    with pytest.raises(ConfigError, match=r"experiment\.seed.*allowed: .*seeds"):
        load_config(source)
    with pytest.raises(ConfigError, match=r"experiment\.classifiers\.0"):
        load_experiment(None, ["experiment.classifiers=[svm]"])


def test_split_counts_replace_the_default_ratios() -> None:
    assert SplitConfig(counts=(3, 2, 1)).ratios is None
    assert SplitConfig.model_validate({"counts": [3, 2, 1], "ratios": [1, 1, 1]}).ratios is None
    assert SplitConfig().ratios == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="set 'ratios' or 'counts'"):
        SplitConfig(ratios=None)
    with pytest.raises(ValueError, match="non-negative"):
        SplitConfig(ratios=(1, -1, 1))


def _closed_sets() -> list[tuple[Any, object]]:
    from learner.data.pairs import _VISIT_PAIRINGS
    from learner.data.preprocess import CROPS
    from learner.data.readers import _NIFTI_AXES
    from learner.data.sampling import SAMPLINGS
    from learner.evaluation.export import SAMPLING_STEPS
    from learner.evaluation.pair_classifier import COMBINES
    from learner.losses.registry import SIMILARITIES
    from learner.models.encoder import EMBEDDING_NORMS, SIZES
    from learner.models.heads import CLASSIFIER_DEPTHS
    from learner.models.tsm_resnet import NORM_LAYERS
    from learner.training.pretrain import LR_SCHEDULES, OPTIMIZERS

    return [
        (Crop, CROPS), (NiftiAxis, _NIFTI_AXES), (IntraPairing, _VISIT_PAIRINGS), (ModelSize, SIZES),
        (Similarity, SIMILARITIES), (Optimizer, OPTIMIZERS), (Schedule, LR_SCHEDULES),
        (ClassifierHead, CLASSIFIER_DEPTHS), (Combine, COMBINES), (Norm, NORM_LAYERS),
        (EmbedNorm, EMBEDDING_NORMS), (Sampling, SAMPLINGS), (Sampling, SAMPLING_STEPS),
    ]  # fmt: skip


def test_closed_name_sets_match_their_registries() -> None:
    for alias, registry in _closed_sets():
        assert set(get_args(alias)) == set(registry), alias  # type: ignore[arg-type]


def test_open_registry_names_are_checked_before_any_work() -> None:
    from learner.training.names import check_names

    check_names(Config())
    for override, message in [
        ("model.backbone=resnet", r"unknown model\.backbone 'resnet'; available: .*tsm_resnet18"),
        ("loss.name=mse+xyz", r"loss\.name='mse\+xyz': unknown term 'xyz'; available: .*wcl"),
        ("data.scale=gcs", r"unknown data\.scale 'gcs'; available: .*sf"),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_names(load_config(None, [override]))


def test_a_run_config_of_an_older_layout_is_a_one_line_error(tmp_path: Path) -> None:
    import yaml

    from learner.errors import RunDirError
    from learner.runs import load_run_config

    old = Config().model_dump(mode="json")
    old["optim"] |= {"device": "cpu"}  # a key that moved to runtime before 0.1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(
        RunDirError, match=r"config\.yaml: not a config this learner can read .*optim\.device"
    ):
        load_run_config(tmp_path)


TABLE_2 = {
    "optim.batch_size": 16,
    "optim.lr": 1e-3,
    "optim.optimizer": "adam",
    "optim.epochs": 100,
    "optim.scheduler": "cosine",
    "loss.lam": 0.9,  # Eq. 4
    "model.backbone": "tsm_resnet18",  # Section 2.2
    "classifier.combine": "difference",  # Section 2.4
    "classifier.head": "mlp",  # one hidden layer (Section 3.2)
}
"""The paper's training settings: Table 2 and the method sections."""


def _dotted(config: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


@pytest.mark.parametrize("name", ["paper", "lus", "adni"])
def test_the_paper_presets_hold_table_2(name: str) -> None:
    config = load_config(name)
    assert {key: _dotted(config, key) for key in TABLE_2} == TABLE_2


def test_the_paper_preset_sets_nothing_dataset_specific() -> None:
    experiment = load_experiment("paper")
    assert experiment.config.data == Config().data  # scale, frames, size, split: the code defaults
    assert experiment.grid.losses == ["mse", "mse+cl", "mse+wcl"]  # Table 3 rows


CUSTOM_SCALE = [
    "data.scale=custom",
    "data.custom_scale.low=0",
    "data.custom_scale.high=3",
    "data.custom_scale.integer=true",
    "data.custom_scale.higher_is_better=false",
    "data.custom_scale.threshold=1",
]


def test_small_cohort_preset_validates_with_any_custom_scale() -> None:
    from learner.data.scales import scale_from_config
    from learner.experiments.grid import check_grid
    from learner.training.names import check_names

    experiment = load_experiment("small-cohort", CUSTOM_SCALE)
    config = experiment.config
    check_names(config)
    scale = scale_from_config(config.data)
    assert (scale.low, scale.high, scale.threshold, scale.higher_is_better) == (0, 3, 1, False)
    dataset = {"name": "X", "manifest": "m.csv", "scale": "custom"}
    check_grid(ExperimentConfig.model_validate({**experiment.grid.model_dump(), "datasets": [dataset]}))
    assert experiment.grid.losses == ["mse", "mse+cl", "mse+wcl"]
    assert experiment.grid.seeds == [0]
    # nothing dataset-specific: no manifest, no scale, no split counts, the default pairs
    raw = load_experiment("small-cohort").config
    assert raw.data.manifest is None
    assert raw.data.scale == Config().data.scale
    assert raw.data.custom_scale is None
    assert raw.data.split == SplitConfig()
    assert raw.data.pairs == Config().data.pairs
    # the paper's settings apart from what the preset's header explains (size, frames, epochs)
    table_2 = {key: value for key, value in TABLE_2.items() if key != "optim.epochs"}
    assert {key: _dotted(config, key) for key in table_2} == table_2
    assert (config.data.size, config.data.frames, config.optim.epochs) == (64, 4, 15)


def test_new_options_default_to_todays_behaviour_and_classifier_keys_do_not_change_pretraining() -> None:
    cfg = Config()
    assert (cfg.optim.warmup_epochs, cfg.model.norm, cfg.model.embed_norm) == (0.0, "batch", "none")
    with pytest.raises(
        ConfigError, match=r"'optim': Value error, 'warmup_epochs' \(4.0\) exceeds 'epochs' \(3\)"
    ):
        apply_overrides(cfg, {"optim.epochs": 3, "optim.warmup_epochs": 4})
    classifier_only = apply_overrides(cfg, {"classifier.hidden": 7, "data.pairs.intra": "all"})
    assert classifier_only.pretraining_settings() == cfg.pretraining_settings()
    assert classifier_only.result_settings() != cfg.result_settings()
    pretraining = cfg.pretraining_settings()
    assert "classifier" not in pretraining
    assert "pairs" not in pretraining["data"]
    assert "runtime" not in pretraining
    assert pretraining["data"]["split"] == cfg.result_settings()["data"]["split"]
    assert apply_overrides(cfg, {"model.embed_norm": "l2"}).pretraining_settings() != pretraining


def test_the_digest_hashes_every_result_setting() -> None:
    from learner.experiments.stages import config_digest

    cfg = Config()
    settings = cfg.model_dump(mode="json", exclude={"runtime"})
    assert cfg.result_settings() == settings  # every key, at any value (no pre-0.1 exceptions)
    expected = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    assert config_digest(cfg) == expected
    assert config_digest(apply_overrides(cfg, {"model.norm": "group"})) != expected
    assert config_digest(apply_overrides(cfg, {"runtime.workers": 0})) == expected


def test_base_extends_a_preset_or_a_file_key_by_key(tmp_path: Path, cli) -> None:
    """``base:`` (issue 23 point 10): the file's keys win, section by section; lists are replaced."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: demo\noptim:\n  epochs: 7\nexperiment:\n  seeds: [4]\n")
    experiment = load_experiment(mine)
    demo = load_experiment("demo")
    assert experiment.config.optim.epochs == 7
    assert experiment.config.optim.batch_size == demo.config.optim.batch_size == 16  # kept from the base
    assert (experiment.config.data.size, experiment.config.data.frames) == (32, 4)  # demo's, not the default
    assert experiment.grid.seeds == [4]
    assert experiment.grid.losses == demo.grid.losses
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../mine.yaml\nloss:\n  lam: 0.5\n")  # a path relative to the file
    config = load_config(child)
    assert (config.loss.lam, config.optim.epochs, config.data.size) == (0.5, 7, 32)
    code, out, err = cli(["config", "show", "--config", str(child)])
    assert code == 0, err
    assert "epochs: 7" in out
    assert "lam: 0.5" in out


def test_a_circle_of_bases_or_a_bad_base_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base: makes a circle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: [demo]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: base: should name a bundled config or a file"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: base: nowhere\.yaml is neither a file beside it"):
        load_config(tmp_path / "d.yaml")


def test_a_base_missing_beside_the_file_is_never_one_of_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``base: common.yaml`` is relative to the file (README): a ``common.yaml`` of the working folder was
    once read in its place without a word; only a bundled config's name is the fallback."""
    (tmp_path / "common.yaml").write_text("optim:\n  epochs: 7\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.yaml").write_text("base: common.yaml\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^sub/mine\.yaml: base: common\.yaml is neither a file beside it"):
        load_config("sub/mine.yaml")
    (tmp_path / "sub" / "preset.yaml").write_text("base: demo\n")
    assert load_config("sub/preset.yaml") == load_config("demo")


def test_the_radiograph_recipe_in_the_docs_loads(tmp_path: Path) -> None:
    import re

    docs = Path(__file__).resolve().parents[1] / "docs" / "data.md"
    block = re.search(r"```yaml\n# xray.yaml\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
    assert block is not None
    (tmp_path / "xray.yaml").write_text(block.group(1))
    config = load_config(tmp_path / "xray.yaml")
    assert (config.data.frames, config.data.crop) == (1, "foreground")
    assert config.data.custom_scale is not None
    assert config.data.custom_scale.higher_is_better is False


def test_a_billion_laughs_is_refused_in_one_line_and_quickly(tmp_path: Path) -> None:
    import time

    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}]")
    bomb = "\n".join(levels) + "\n"  # 9 · 5⁸ ≈ 3.5 million strings once expanded
    (tmp_path / "bomb.yaml").write_text(bomb)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: the YAML expands to more than 100,000 values"):
        load_config(tmp_path / "bomb.yaml")
    with pytest.raises(ConfigError, match=r"--set optim\.lr: the YAML expands"):
        load_config(None, ["optim.lr=" + "{" + bomb.replace("\n", ", ") + "}"])
    assert time.perf_counter() - start < 10  # refused before anything is built (it once took 83 s)
    assert load_config(None, ["optim.lr=3e-4"]).optim.lr == 3e-4  # small values are untouched


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"counts": (-1, 10, 3)}, r"'counts' must be non-negative whole numbers, got \(-1, 10, 3\)"),
        ({"ratios": (float("nan"), 1, 1)}, r"'ratios' must be finite and non-negative with a positive sum"),
        ({"ratios": (1, float("inf"), 1)}, r"'ratios' must be finite .*got \(1\.0, inf, 1\.0\)"),
        ({"ratios": (float("-inf"), 1, 1)}, r"'ratios' must be finite"),
        ({"ratios": (0, 0, 0)}, r"with a positive sum"),
        ({"ratios": (1, -1, 1)}, r"'ratios' must be finite and non-negative"),
    ],
)
def test_split_sizes_must_be_finite_and_non_negative(given: dict[str, Any], message: str) -> None:
    """A negative count once reached numpy ("low >= high"), a NaN or infinite ratio a silent split of every
    patient into train: both are refused, in the class and as overrides (one line naming data.split)."""
    with pytest.raises(ValueError, match=message):
        SplitConfig(**given)
    overrides = [f"data.split.{key}=[{','.join(map(str, value))}]" for key, value in given.items()]
    line = r"^invalid config value for 'data\.split': Value error, .*" + message
    with pytest.raises(ConfigError, match=line):
        load_config(None, overrides)
    assert SplitConfig(counts=(0, 0, 3)).counts == (0, 0, 3)
    assert SplitConfig(ratios=(0, 0, 1)).ratios == (0, 0, 1)


@pytest.mark.parametrize(
    "override",
    [
        "data.pairs.per_scan=.inf",
        "loss.eps=.nan",
        "loss.kernel_sigma=.inf",
        "optim.lr=.inf",
        "optim.warmup_epochs=.nan",
        "classifier.lr=-.inf",
        "data.custom_scale.high=.inf",
    ],
)
def test_an_infinite_or_nan_setting_is_refused_in_one_line(override: str, cli) -> None:
    """``data.pairs.per_scan=.inf`` passed ``gt=0`` and ended in an OverflowError traceback; no float
    setting means anything at ±inf or NaN (data.split.ratios refuse them with their own message)."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^invalid config value for '{key}': Input should be a finite"):
        load_config(None, [override])
    code, _, err = cli(["pretrain", "--set", override, "--dry-run"])
    assert code == 2
    assert err.startswith(f"error: invalid config value for '{key}'")
    assert err.count("\n") == 1


def test_a_section_given_whole_merges_key_by_key() -> None:
    """``--set 'optim={lr: 0.01}'`` once replaced the file's whole section: demo's 3 epochs became the
    default 100 without a word. A mapping now merges key by key, as ``base:`` does."""
    demo = load_config("demo")
    assert load_config("demo", ["optim={lr: 0.01}"]).optim == demo.optim.model_copy(update={"lr": 0.01})
    nested = load_config("lus", ["data={size: 32, split: {ratios: [2, 1, 1]}}"])
    lus = load_config("lus")
    assert (nested.data.size, nested.data.frames, nested.data.crop) == (32, lus.data.frames, lus.data.crop)
    assert (nested.data.split.ratios, nested.data.split.counts) == ((2, 1, 1), None)
    assert nested.data.split.test_min_visits == lus.data.split.test_min_visits
    with pytest.raises(ConfigError, match=r"^unknown config key 'optim\.lrr'"):
        load_config("demo", ["optim={lrr: 1}"])


def test_the_last_of_ratios_and_counts_given_wins() -> None:
    """The lus preset sizes its split by counts: ``--set data.split.ratios=...`` over it was dropped without
    a word (counts take precedence over ratios in one file); an override of either now clears the other."""
    lus = load_config("lus", ["data.split.ratios=[2,1,1]"])
    assert (lus.data.split.ratios, lus.data.split.counts) == ((2, 1, 1), None)
    back = load_config("lus", ["data.split.ratios=[2,1,1]", "data.split.counts=[3,2,1]"])
    assert (back.data.split.ratios, back.data.split.counts) == (None, (3, 2, 1))
    ratios = apply_overrides(load_config("lus"), {"data.split.ratios": [1, 1, 1]})
    assert (ratios.data.split.ratios, ratios.data.split.counts) == ((1, 1, 1), None)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=017", r"--set seed: YAML reads 017 as the octal number 15; write the number without the "),
        (
            "seed=1:30",
            r"--set seed: YAML reads 1:30 as the base-60 number 90; write the number without colons",
        ),
        ("optim.lr=-0:30.5", r"--set optim\.lr: YAML reads -0:30\.5 as the base-60 number -30\.5"),
        ("data.channels=yes", r"invalid config value for 'data\.channels': .*got the boolean true"),
        ("experiment.seeds=[yes,no]", r"'experiment\.seeds': .*got the boolean true \(got \[True, False\]\)"),
        ("data.split.counts=[yes,2,1]", r"'data\.split\.counts': .*got the boolean true"),
        ("data.custom_scale.bins=[1,no]", r"'data\.custom_scale\.bins': .*got the boolean false"),
    ],
)
def test_yaml_1_1_readings_of_an_override_are_refused(override: str, message: str) -> None:
    """YAML 1.1 read ``seed=017`` as 15 (octal), ``1:30`` as 90 (base 60), ``yes`` as 1 for a number field
    (``data.channels``, a Literal) and ``[yes, no]`` as [1, 0] in a list of numbers: all without a word."""
    with pytest.raises(ConfigError, match=message) as error:
        load_experiment(None, [override])
    assert "\n" not in str(error.value)


def test_yaml_1_1_readings_of_a_config_file_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "mine.yaml"
    source.write_text("seed: 017\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: seed: YAML reads 017 as the octal number 15"):
        load_config(source)
    source.write_text("experiment:\n  seeds: [1, 2, 010]\n")
    with pytest.raises(
        ConfigError, match=r"mine\.yaml: experiment\.seeds: YAML reads 010 as the octal number 8"
    ):
        load_experiment(source)
    source.write_text("runtime:\n  launcher_options: {time: 1:30:00}\n")
    with pytest.raises(
        ConfigError, match=r"runtime\.launcher_options\.time: YAML reads 1:30:00 as the base-60"
    ):
        load_config(source)
    source.write_text("seed: '017'\nruntime:\n  launcher_options: {time: '1:30:00'}\n")  # quoted: as written
    config = load_config(source)
    assert (config.seed, config.runtime.launcher_options) == (17, {"time": "1:30:00"})
    assert load_config(None, ["seed=0", "optim.lr=0.5", "seed=10"]).seed == 10
