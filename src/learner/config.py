"""One typed configuration for a whole LEARNER run, loadable from YAML with ``key.sub=value`` overrides.

Defaults are the paper's (Table 2: batch 16, Adam, initial LR 1e-3, 100 epochs, cosine annealing;
λ = 0.9 in the pretraining loss). Every section forbids unknown keys, so a typo is an error that names the
key and lists the allowed ones, never a silently ignored setting.

Example::

    cfg = load_config("my.yaml", overrides=["optim.epochs=5", "loss.name=mse+wcl"])
    cfg = load_config("lus")  # a bundled config by name: demo, lus, adni
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from learner.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScaleConfig(_Section):
    """A generic score scale defined in config (used when ``data.scale == "custom"``)."""

    low: float = 0.0
    high: float = 1.0
    higher_is_better: bool = True
    bins: list[float] | None = Field(
        default=None, description="ascending bin edges; a value equal to an edge belongs to the lower bin"
    )
    threshold: float | None = Field(default=None, gt=0, description="|later − earlier| < threshold → stable")
    integer: bool = Field(default=False, description="scores must be whole numbers")

    @model_validator(mode="after")
    def _one_rule(self) -> ScaleConfig:
        if (self.bins is None) == (self.threshold is None):
            raise ValueError("set exactly one of 'bins' or 'threshold'")
        if self.high <= self.low:
            raise ValueError("'high' must be greater than 'low'")
        return self


class SplitConfig(_Section):
    """Patient-level split. Exactly one of ``ratios`` or ``counts`` (train, val, test patients)."""

    ratios: tuple[float, float, float] | None = (0.5, 0.25, 0.25)
    counts: tuple[int, int, int] | None = None
    stratify: bool = Field(default=True, description="stratify patients by their mean score")
    test_min_visits: int = Field(default=2, ge=1, description="test patients need at least this many visits")
    use_manifest_split: bool = Field(default=True, description="keep the manifest's split column if present")

    @model_validator(mode="after")
    def _ratios_or_counts(self) -> SplitConfig:
        if self.counts is not None:
            self.__dict__["ratios"] = None
        elif self.ratios is None:
            raise ValueError("set 'ratios' or 'counts'")
        elif any(r < 0 for r in self.ratios) or sum(self.ratios) <= 0:
            raise ValueError("'ratios' must be non-negative with a positive sum")
        return self


class PairConfig(_Section):
    """How the downstream pairs are formed (Section 2.1)."""

    per_scan: float = Field(
        default=3.0, gt=0, description="inter-patient pairs per scan (paper: 2103/701 ≈ 3)"
    )
    count_train: int | None = Field(
        default=None, ge=1, description="exact train pair count (overrides per_scan)"
    )
    count_val: int | None = Field(default=None, ge=1, description="exact val pair count (overrides per_scan)")
    balanced: bool = Field(default=False, description="class-balance the inter-patient pairs")
    intra: Literal["consecutive", "all"] = "consecutive"
    match_site: bool = Field(default=True, description="intra-patient pairs join scans of the same site")


class DataConfig(_Section):
    """Where the scans are and how they become clips of shape (T, C, H, W)."""

    manifest: Path | None = None
    scale: str = Field(default="sf", description="score scale: a registered name (sf, mmse) or 'custom'")
    custom_scale: ScaleConfig | None = None
    mmse_threshold: float = Field(default=2.0, gt=0, description="mmse: |Δ| < threshold → stable")
    frames: int = Field(default=8, ge=1, description="T: frames (or slices) sampled per clip (TSN segments)")
    size: int = Field(default=112, ge=16, description="H = W after resizing")
    channels: Literal[1, 3] = 1
    crop: Literal["none", "fan", "foreground"] = "fan"
    max_cached_frames: int = Field(default=64, ge=1, description="frames kept per scan in the cache")
    nifti_axis: Literal["axial", "coronal", "sagittal"] = "axial"
    augment: bool = True
    cache_dir: Path | None = Field(default=None, description="default: <manifest folder>/.learner-cache")
    num_workers: int = Field(default=2, ge=0)
    skip_bad_scans: bool = Field(default=False, description="skip unreadable scans (counted and reported)")
    split: SplitConfig = Field(default_factory=SplitConfig)
    pairs: PairConfig = Field(default_factory=PairConfig)


class ModelConfig(_Section):
    """The encoder θ_V and the regression head θ_M (Section 2.2)."""

    backbone: str = Field(default="tsm_resnet18", description="a registered encoder: tsm_resnet18, vit, swin")
    size: Literal["tiny", "small", "paper"] = Field(
        default="paper",
        description="encoder size preset (tiny for CPU tests; paper = ResNet-18 / ViT-B / Swin-T widths)",
    )
    init: Path | None = Field(default=None, description="local weights (safetensors or .pth) for the encoder")
    shift_fraction: float = Field(default=0.125, ge=0, le=0.5, description="TSM: fraction shifted each way")
    head_hidden: int = Field(default=256, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class LossConfig(_Section):
    """The pretraining objective: λ·MSE + (1 − λ)·contrastive (Eqs. 1–3)."""

    name: str = Field(default="mse+wcl", description="'mse', or 'mse+<contrastive>' with cl, wcl, wcl_scaled")
    lam: float = Field(default=0.9, ge=0, le=1, description="λ, the MSE weight")
    similarity: Literal["shifted_cosine", "exp_cosine"] = Field(
        default="shifted_cosine", description="maps cosine to (0, 1] before the log"
    )
    temperature: float = Field(default=1.0, gt=0, description="τ for exp_cosine")
    sim_floor: float = Field(default=1e-4, gt=0, lt=1, description="shifted_cosine is clamped to ≥ this")
    eps: float = Field(default=0.1, gt=0, description="ε in w = |Δ| + ε, on standardised scores")
    weight_max: float = Field(default=10.0, ge=1, description="upper bound on every contrastive weight")


class OptimConfig(_Section):
    """Optimisation (Table 2)."""

    batch_size: int = Field(default=16, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    epochs: int = Field(default=100, ge=1)
    scheduler: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(default=None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(default=True, description="mixed precision (GPU only)")
    channels_last: bool = True
    max_steps_per_epoch: int | None = Field(
        default=None, ge=1, description="cap steps per epoch (demo, tests)"
    )


class ClassifierConfig(_Section):
    """The downstream health-change classifier (Section 2.4)."""

    head: Literal["mlp", "mlp_large"] = "mlp"
    combine: Literal["difference", "concatenate"] = "difference"
    hidden: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    epochs: int = Field(default=200, ge=1)
    patience: int = Field(default=20, ge=1, description="early stopping on val inter-patient pairs")
    class_weights: bool = False
    clips_per_scan: int = Field(default=1, ge=1, description="embeddings averaged over this many clips")


class DatasetSpec(_Section):
    """One dataset column of an experiment table."""

    name: str
    manifest: Path
    scale: str = "sf"


class ExperimentConfig(_Section):
    """Experiment grids (Tables 3 and 4)."""

    losses: list[str] = Field(default_factory=lambda: ["mse", "mse+cl", "mse+wcl"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    datasets: list[DatasetSpec] = Field(default_factory=list)
    backbones: list[str] = Field(default_factory=lambda: ["tsm_resnet18", "vit", "swin"])
    combines: list[str] = Field(default_factory=lambda: ["difference", "concatenate"])
    classifiers: list[str] = Field(default_factory=lambda: ["mlp_large", "mlp"])
    bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples (patients) for CIs")


class Config(_Section):
    """Everything a run needs. ``seed`` seeds every RNG in one place."""

    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)

    def to_yaml(self) -> str:
        """The resolved config as YAML (what every run directory stores)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Build a :class:`Config` from defaults, then a YAML file, then ``key.sub=value`` overrides.

    Override values are parsed as YAML scalars/lists (``optim.lr=3e-4``, ``experiment.seeds=[0,1]``).
    Raises :class:`ConfigError` with a one-line message naming the key and what is allowed.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        source = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
        raw = loaded or {}
    for item in overrides or []:
        key, value = _split_override(item)
        _set_dotted(raw, key, value)
    return config_from_dict(raw)


BUNDLED_CONFIGS = Path(__file__).parent / "configs"
"""YAML configs shipped inside the package: ``demo`` (CPU demo), ``lus`` and ``adni`` (paper scale)."""


def bundled_configs() -> list[str]:
    """Names accepted wherever a config file is (``--config lus``)."""
    return sorted(path.stem for path in BUNDLED_CONFIGS.glob("*.yaml"))


def resolve_config_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it is a file, else the bundled config of that bare name (``lus`` → lus.yaml)."""
    source = Path(path)
    if source.is_file():
        return source
    if source.name == str(path) and source.suffix == "" and source.name in bundled_configs():
        return BUNDLED_CONFIGS / f"{source.name}.yaml"
    raise ConfigError(f"config file not found: {source} (bundled configs: {', '.join(bundled_configs())})")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a nested dict into a :class:`Config`, turning pydantic errors into one-line ConfigErrors."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with dotted-key overrides (``{"optim.epochs": 5}``) applied and validated."""
    raw = config.model_dump(mode="json")
    for key, value in overrides.items():
        _set_dotted(raw, key, value)
    return config_from_dict(raw)


def _split_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    model: type[BaseModel] | None = Config
    for depth, part in enumerate(parts[:-1]):
        _check_key(model, parts[: depth + 1])
        field = model.model_fields[part] if model else None
        model = _section_type(field.annotation) if field else None
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    _check_key(model, parts)
    node[parts[-1]] = value


def _check_key(model: type[BaseModel] | None, parts: list[str]) -> None:
    if model is None:
        raise ConfigError(f"unknown config key {'.'.join(parts)!r}: {'.'.join(parts[:-1])!r} has no sub-keys")
    if parts[-1] not in model.model_fields:
        where = ".".join(parts[:-1]) or "top level"
        allowed = ", ".join(model.model_fields)
        raise ConfigError(f"unknown config key {'.'.join(parts)!r}; allowed at {where}: {allowed}")


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(p) for p in error["loc"]) or "config"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        parent = _section_at(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"unknown config key {key!r}; allowed: {allowed}{more}"
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"invalid config value for {key!r}: {error['msg']}{got_text}{more}"


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _section_type(model.model_fields[part].annotation)
    return model
