"""Every command checks its config, flags, manifest and output folder before it creates a run directory or
decodes a scan; a run that fails before its first checkpoint leaves no directory behind."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.data.preprocess import Preprocessor
from learner.data.splits import read_splits
from learner.experiments import grid as engine
from learner.experiments import stages
from learner.training.pretrain import pretrain

Cli = Callable[[list[str]], tuple[int, str, str]]

pytestmark = pytest.mark.slow


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files decoded during the test (every decode goes through :meth:`Preprocessor.load`)."""
    calls: list[Path] = []
    real = Preprocessor.load

    def load(self: Preprocessor, path: Path) -> object:
        calls.append(Path(path))
        return real(self, path)

    monkeypatch.setattr(Preprocessor, "load", load)
    return calls


@pytest.fixture(scope="module")
def encoder_run(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A finished tiny pretraining (its scans already cached)."""
    run = tmp_path_factory.mktemp("encoder") / "run"
    pretrain(make_tiny_pretrain_config(**{"optim.epochs": 1}), run)
    return run


def _one_line_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0]


PRETRAIN_BAD = {
    "unknown loss term": (["--loss", "foo"], "'foo'"),
    "unknown backbone": (["--backbone", "resnet9000"], "model.backbone"),
    "batch larger than the split": (["--set", "optim.batch_size=1000"], "exceeds the"),
    "missing init weights": (["--init", "nowhere.safetensors"], "nowhere.safetensors"),
    "cuda without a device": (["--set", "runtime.device=cuda"], "runtime.device"),
    "bad loss setting": (["--set", "loss.lambda_mse=2"], "loss.lambda_mse"),
}


@pytest.mark.parametrize("case", PRETRAIN_BAD)
def test_pretrain_refuses_before_any_directory_or_decoding(
    case: str, tiny_lus_manifest: Path, tmp_path: Path, cli: Cli, decoded: list[Path]
) -> None:
    flags, expected = PRETRAIN_BAD[case]
    if case == "cuda without a device" and shutil.which("nvidia-smi"):
        pytest.skip("a CUDA device may be visible")
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["pretrain", "--out", str(out), "--manifest", str(tiny_lus_manifest), *flags]
    code, _, err = cli([*argv, "--set", f"runtime.cache_dir={cache}", "--set", "model.size=tiny"])
    _one_line_error(code, err, expected)
    assert not out.exists()
    assert not cache.exists()
    assert decoded == []


def test_a_bad_manifest_leaves_nothing(tmp_path: Path, cli: Cli, decoded: list[Path]) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("patient_id,scan_id,path,visit,score\n")  # a header and no scans
    code, _, err = cli(["pretrain", "--out", str(tmp_path / "run"), "--manifest", str(manifest)])
    _one_line_error(code, err, str(manifest))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]
    assert decoded == []


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_out_that_is_a_file_is_refused(
    where: str, tiny_lus_manifest: Path, tmp_path: Path, cli: Cli, decoded: list[Path]
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "run"
    code, _, err = cli(["pretrain", "--out", str(out), "--manifest", str(tiny_lus_manifest)])
    _one_line_error(code, err, f"run directory: {blocker}", "is a file, not a folder")
    assert blocker.read_text() == "keep me"
    assert decoded == []


def test_a_failure_after_the_directory_is_created_removes_it(
    tiny_lus_manifest: Path, tmp_path: Path, cli: Cli
) -> None:
    """An unreadable clip is found while decoding (after the run directory exists): it goes again."""
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_lus_manifest.parent, cohort, ignore=shutil.ignore_patterns(".learner-cache"))
    broken = sorted((cohort / "clips").glob("*.mp4"))[0]
    broken.write_bytes(b"not a video")
    out = tmp_path / "run"
    argv = ["pretrain", "--out", str(out), "--manifest", str(cohort / "manifest.csv")]
    code, _, err = cli([*argv, "--set", "model.size=tiny", "--set", "runtime.workers=0"])
    _one_line_error(code, err, broken.name)
    assert not out.exists()


def test_classify_checks_its_encoder_run_and_split_first(
    encoder_run: Path, tmp_path: Path, cli: Cli, decoded: list[Path]
) -> None:
    no_test = tmp_path / "no-test"
    shutil.copytree(encoder_run, no_test, ignore=shutil.ignore_patterns("embeddings"))
    splits = (no_test / "splits.csv").read_text().replace(",test", ",train")
    (no_test / "splits.csv").write_text(splits)  # no test patient: no test pair
    out = tmp_path / "classify"
    code, _, err = cli(["classify", str(no_test), "--out", str(out)])
    _one_line_error(code, err, "no test intra-patient pairs")
    assert not out.exists()
    code, _, err = cli(["classify", str(encoder_run), "--out", str(out), "--which", "first"])
    _one_line_error(code, err, "--which 'first'")
    assert not out.exists()
    (no_test / "splits.csv").unlink()
    code, _, err = cli(["classify", str(no_test), "--out", str(out)])
    _one_line_error(code, err, "splits.csv")
    assert not out.exists()
    assert decoded == []


def test_an_init_run_that_trained_on_test_patients_is_refused_first(
    encoder_run: Path,
    tiny_lus: DatasetSpec,
    tiny_experiment_config: Config,
    tmp_path: Path,
    cli: Cli,
    decoded: list[Path],
) -> None:
    """A start (``--init``, ``model.init``) made with another split, in which a test patient of this
    split was a train patient (as a VICReg stage made with another seed would have it): pretrain and every
    experiment refuse it, before any directory or decoding."""
    other_split = tmp_path / "other-split"
    shutil.copytree(encoder_run, other_split, ignore=shutil.ignore_patterns("embeddings"))
    splits = read_splits(other_split)
    leaked = sorted(p for p, split in splits.items() if split == "test")[0]
    text = (other_split / "splits.csv").read_text().replace(f"{leaked},test", f"{leaked},train")
    (other_split / "splits.csv").write_text(text)
    expected = ("model.init", str(other_split), "1 patient(s)", f"({leaked})")
    out = tmp_path / "run"
    argv = ["pretrain", "--out", str(out), "--manifest", str(tiny_lus.manifest), "--init", str(other_split)]
    code, _, err = cli([*argv, "--set", "model.size=tiny"])
    _one_line_error(code, err, *expected)
    assert not out.exists()
    out = tmp_path / "experiment"
    init = ["--set", f"model.init={other_split}"]
    code, _, err = cli(_grid_argv("table3", out, tiny_experiment_config, tiny_lus, *init))
    _one_line_error(code, err, *expected)
    assert not out.exists()
    assert decoded == []


@pytest.mark.parametrize("command", ["embed", "predict"])
def test_embed_and_predict_check_their_flags_first(
    command: str, encoder_run: Path, tiny_lus_manifest: Path, cli: Cli, decoded: list[Path]
) -> None:
    clip = str(sorted((tiny_lus_manifest.parent / "clips").glob("*.mp4"))[0])
    argv = {
        "embed": ["embed", str(encoder_run)],
        "predict": ["predict", clip, clip, "--encoder", str(encoder_run), "--classifier", str(encoder_run)],
    }[command]
    code, _, err = cli([*argv, "--which", "first"])
    _one_line_error(code, err, "--which 'first'")
    assert decoded == []
    assert not (encoder_run / "embeddings").exists()


def _grid_argv(kind: str, out: Path, settings: Config, dataset: DatasetSpec, *extra: str) -> list[str]:
    config_file = out.parent / "experiment.yaml"
    config_file.write_text(Experiment(settings, ExperimentConfig(losses=["mse"], seeds=[0])).to_yaml())
    argv = ["experiment", kind, "--out", str(out), "--config", str(config_file)]
    return [*argv, "--dataset", f"{dataset.name}={dataset.manifest}", *extra]


GRID_BAD = {
    "table3 unknown loss": ("table3", ["--set", "experiment.losses=[mse,foo]"], "'foo'"),
    "ablation unknown backbone": ("ablation", ["--set", "experiment.backbones=[nope]"], "model.backbone"),
    "sweep bad setting key": ("sweep", ["--setting", "a:optim.lrr=1"], "optim.lrr"),
    "table3 batch larger than the split": ("table3", ["--set", "optim.batch_size=1000"], "exceeds the"),
    "table3 missing manifest": ("table3", ["--dataset", "MRI=nowhere.csv"], "nowhere.csv"),
}


@pytest.mark.parametrize("case", GRID_BAD)
def test_experiments_refuse_before_any_directory_or_decoding(
    case: str,
    tiny_lus: DatasetSpec,
    tiny_experiment_config: Config,
    tmp_path: Path,
    cli: Cli,
    decoded: list[Path],
) -> None:
    kind, extra, expected = GRID_BAD[case]
    out = tmp_path / "experiment"
    code, _, err = cli(_grid_argv(kind, out, tiny_experiment_config, tiny_lus, *extra))
    _one_line_error(code, err, expected)
    assert not out.exists()
    assert decoded == []


def test_an_experiment_without_datasets_says_how_to_give_one(
    tiny_lus: DatasetSpec, tiny_experiment_config: Config, tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "experiment"
    argv = _grid_argv("table3", out, tiny_experiment_config, tiny_lus)
    code, _, err = cli(argv[: argv.index("--dataset")])
    expected = "experiment.datasets is empty; list at least one {name, manifest, scale} or pass --dataset"
    assert (code, err) == (2, f"error: {expected} NAME=MANIFEST[@SCALE]\n")
    assert not out.exists()


def test_demo_checks_its_dataset_before_rendering_a_cohort(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli(["demo", "--out", str(tmp_path / "demo"), "--dataset", "ct"])
    _one_line_error(code, err, "unknown demo dataset 'ct'")
    assert not (tmp_path / "demo").exists()


def test_a_refused_table3_resume_keeps_the_stored_config(
    tiny_lus: DatasetSpec, tiny_experiment_config: Config, tmp_path: Path, cli: Cli, decoded: list[Path]
) -> None:
    """A finished cell computed with 1 epoch; resuming with 2 is refused, and config.yaml still says 1."""
    out = tmp_path / "experiment"
    base = tiny_experiment_config
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0])
    engine.open_experiment(base, grid, out, resume=False, force=False)
    stored = (out / "config.yaml").read_text()
    encoder = out / "LUS" / "mse" / "seed-0" / "encoder"
    encoder.mkdir(parents=True)
    digest = stages.config_digest(stages.cell_config(base, tiny_lus, **{"loss.name": "mse", "seed": 0}))
    (encoder / "complete.json").write_text(f'{{"config_digest": "{digest}"}}')
    config_file = tmp_path / "experiment.yaml"
    config_file.write_text(Experiment(base, grid).to_yaml())
    argv = ["experiment", "table3", "--out", str(out), "--config", str(config_file), "--resume"]
    code, _, err = cli([*argv, "--set", "optim.epochs=2"])
    _one_line_error(code, err, f"{encoder} was computed with another config")
    assert (out / "config.yaml").read_text() == stored
    assert decoded == []
