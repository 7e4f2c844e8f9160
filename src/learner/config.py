"""One typed configuration for a whole LEARNER run, loadable from YAML with ``key.sub=value`` overrides.

Defaults are the paper's (Table 2: batch 16, Adam, initial LR 1e-3, 100 epochs, cosine annealing;
λ = 0.9 in the pretraining loss). Every section forbids unknown keys, so a typo is an error that names the
key and lists the allowed ones, never a silently ignored setting.

Two kinds of settings are kept apart:

* everything but ``runtime`` decides what a run computes: it is hashed into the results digest of an
  experiment cell, and a resumed pretraining must match it exactly (:meth:`Config.result_settings`);
* ``runtime`` (device, workers, cache folder, mixed precision, memory layout) decides only where and how
  fast a run goes; it may change between a run and its resumption.

A config file may also carry an ``experiment:`` section, the grid of an experiment (Tables 3 and 4).
:func:`load_experiment` reads it into :class:`Experiment`; :func:`load_config` (one run) validates it like
every other section and leaves it out of the run's :class:`Config`, and refuses ``experiment.*``
overrides, which a single run would not use.

Allowed names: a closed set fixed here (``optim.optimizer``, ``classifier.head``, …) is a ``Literal``
alias below that the matching registry is keyed by (a test asserts they agree); a name of an open registry
(``model.backbone``, ``loss.name``, ``data.scale``) is a plain ``str`` that
:func:`learner.training.names.check_names` looks up in the registry itself.

Example::

    cfg = load_config("my.yaml", overrides=["optim.epochs=5", "loss.name=mse+wcl"])
    cfg = load_config("lus")  # a bundled config by name: demo, lus, adni, paper, small-cohort
    experiment = load_experiment("lus", overrides=["experiment.seeds=[0]"])
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from learner.errors import ConfigError
from learner.layout import RunLayout

Device = Literal["auto", "cpu", "cuda"]
LoggerName = Literal["csv", "tensorboard", "mlflow"]
LauncherName = Literal["inline", "submitit", "submitit-local"]
"""``runtime.device``: ``auto`` is CUDA when visible, else CPU."""
Crop = Literal["none", "fan", "foreground"]
"""``data.crop``: the keys of :data:`learner.data.preprocess.CROPS`."""
Sampling = Literal["segments", "resample"]
"""``data.sampling``: TSN segments of the cached frames, or the whole scan resampled to T slices
(:mod:`learner.data.sampling`)."""
NiftiAxis = Literal["axial", "coronal", "sagittal"]
"""``data.nifti_axis``: the RAS+ axis a volume is sliced along (:mod:`learner.data.readers`)."""
IntraPairing = Literal["consecutive", "all"]
"""``data.pairs.intra``: which visits of a test patient are paired (:mod:`learner.data.pairs`)."""
ModelSize = Literal["tiny", "small", "paper"]
"""``model.size``: :data:`learner.models.registry.SIZES`."""
Norm = Literal["batch", "group", "frozen_bn"]
"""``model.norm``: the keys of :data:`learner.models.tsm_resnet.NORM_LAYERS`."""
EmbedNorm = Literal["none", "l2", "layer"]
"""``model.embed_norm``: the keys of :data:`learner.models.encoder.EMBEDDING_NORMS`."""
Similarity = Literal["shifted_cosine", "exp_cosine"]
"""``loss.similarity``: the keys of :data:`learner.losses.similarity.SIMILARITIES`."""
FeatureSimilarity = Literal["cosine", "neg_l2"]
"""``loss.feature_similarity``: the logits of :func:`learner.losses.similarity.feature_logits`."""
Reduction = Literal["mean", "sum"]
"""``loss.reduction``: average Eqs. 1–3 over the batch (and pairs), or sum them as the paper writes them."""
WithinPatientTerm = Literal["difference", "rank"]
"""``loss.within_patient_term``: the within-patient term's form (:mod:`learner.losses.within_patient`)."""
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
"""``runtime.compile``: off, or a ``torch.compile`` mode (:mod:`learner.training.compiled`)."""
Optimizer = Literal["adam", "adamw"]
"""``optim.optimizer``: the keys of :data:`learner.training.pretrain.OPTIMIZERS`."""
Schedule = Literal["cosine", "constant"]
"""``optim.scheduler``: the keys of :data:`learner.training.pretrain.LR_SCHEDULES`."""
ClassifierHead = Literal["mlp", "mlp_large"]
"""``classifier.head``: the keys of :data:`learner.models.heads.CLASSIFIER_DEPTHS`."""
Combine = Literal["difference", "concatenate"]
"""``classifier.combine``: the keys of :data:`learner.evaluation.pair_classifier.COMBINES`."""

SEED_MAX = 2**32 - 1
"""Seeds run from 0 to 2³² − 1: what every RNG the toolkit seeds (numpy, torch, data-loader workers) takes."""
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


def check_seed(value: int, flag: str = "--seed") -> int:
    """``value`` when it is a valid seed; else a one-line :class:`ConfigError` naming ``flag``."""
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{flag} {value} is outside the seed range 0 … 2**32 - 1 ({SEED_MAX})")
    return value


CLASSIFICATION_ONLY: dict[str, Any] = {"classifier": True, "data": {"pairs": True}}
"""The keys only the classify stage reads (the classifier and the pairs it is trained and tested on), as
a pydantic ``exclude``: a setting that changes only these reuses an encoder
(:meth:`Config.pretraining_settings`)."""


_Model = TypeVar("_Model", bound=BaseModel)

CUSTOM_SCALE_EXAMPLE = (
    "data: {scale: custom, custom_scale: {low: 0, high: 3, higher_is_better: true, threshold: 1}}"
)
"""A working ``custom`` scale in YAML (flow style, one line), shown by every error about a custom scale."""


class _Section(BaseModel):
    # no float setting means anything at ±inf or NaN (``per_scan: .inf`` once ended in an OverflowError)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``optim.epochs=true`` is a mistake, not 1: pydantic's lax mode would read a boolean as 1 or 0
        wherever a number is expected (``data.channels: yes`` as 1, ``seeds: [yes, no]`` as [1, 0]), so a
        boolean is refused for a field, or an item of a list field, that takes numbers but no boolean."""
        if info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool):
            flag, accepted = value, _types_of(annotation)
        elif isinstance(value, list | tuple) and (flags := [v for v in value if isinstance(v, bool)]):
            flag, accepted = flags[0], _types_of(annotation, items=True)
        else:
            return value
        if bool not in accepted and accepted & {int, float}:
            raise ValueError(f"expected a number, got the boolean {str(flag).lower()}")
        return value


def _types_of(annotation: Any, *, items: bool = False) -> set[Any]:
    """The plain types an annotation accepts (``int | None`` → {int, NoneType}; ``Annotated`` unwrapped;
    ``Literal[1, 3]`` → {int}), or with ``items`` those its lists and tuples hold."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _types_of(args[0], items=items)
    if origin in (Union, UnionType):
        return set().union(*(_types_of(arg, items=items) for arg in args))
    if origin in (list, tuple):
        return set().union(*(_types_of(arg) for arg in args if arg is not Ellipsis)) if items else {origin}
    if items:
        return set()
    return {type(arg) for arg in args} if origin is Literal else {annotation}


class ScaleConfig(_Section):
    """A generic score scale defined in config (used when ``data.scale == "custom"``)."""

    low: float = Field(default=0.0, description="the lowest score the scale allows")
    high: float = Field(default=1.0, description="the highest score the scale allows")
    higher_is_better: bool | None = Field(
        default=None,
        description="required: true when a rising score is an improvement (S/F, MMSE), false when it is a "
        "worsening (a severity score); never guessed, since a wrong guess swaps improved and deteriorated",
    )
    bins: list[float] | None = Field(
        default=None,
        description="ascending bin edges; a value equal to an edge belongs to the lower bin unless the edge "
        "is in upper_edges",
    )
    upper_edges: list[float] = Field(
        default_factory=list,
        description="bin edges whose own value belongs to the bin above (bins written '< e' below and "
        "'e-…' or '≥ e' above, as the S/F scale's 180); each must be one of bins",
    )
    threshold: float | None = Field(default=None, gt=0, description="|later − earlier| < threshold → stable")
    integer: bool = Field(default=False, description="scores must be whole numbers")

    @model_validator(mode="after")
    def _one_rule(self) -> ScaleConfig:
        if (self.bins is None) == (self.threshold is None):
            raise ValueError(f"set exactly one of 'bins' or 'threshold', e.g. {CUSTOM_SCALE_EXAMPLE}")
        if self.high <= self.low:
            raise ValueError(f"'high' must be greater than 'low', e.g. {CUSTOM_SCALE_EXAMPLE}")
        if outside := [edge for edge in self.upper_edges if edge not in (self.bins or [])]:
            raise ValueError(f"'upper_edges' {outside} are not among 'bins' {self.bins or []}")
        if self.higher_is_better is None:
            raise ValueError(
                "set 'higher_is_better': true when a rising score is an improvement, false when it is a "
                f"worsening (a severity score); it is never guessed. E.g. {CUSTOM_SCALE_EXAMPLE}"
            )
        return self


class SplitConfig(_Section):
    """Patient-level split. Exactly one of ``ratios`` or ``counts`` (train, val, test patients)."""

    model_config = ConfigDict(allow_inf_nan=True)  # _ratios_or_counts refuses them, naming the sizes

    ratios: tuple[float, float, float] | None = Field(
        default=(0.5, 0.25, 0.25),
        description="train, val, test patient ratios (non-negative, positive sum); unset when counts is set",
    )
    counts: tuple[int, int, int] | None = Field(
        default=None,
        description="exact train, val, test patient counts; take precedence over ratios in a file (a --set "
        "of either clears the other)",
    )
    stratify: bool = Field(default=True, description="stratify patients by their mean score")
    test_min_visits: int = Field(default=2, ge=1, description="test patients need at least this many visits")
    use_manifest_split: bool = Field(default=True, description="keep the manifest's split column if present")

    @model_validator(mode="before")
    @classmethod
    def _counts_replace_ratios(cls, raw: Any) -> Any:
        """Given ``counts``, the (default) ``ratios`` are dropped, so exactly one of the two is set."""
        if isinstance(raw, dict) and raw.get("counts") is not None:
            return {**raw, "ratios": None}
        return raw

    @model_validator(mode="after")
    def _ratios_or_counts(self) -> SplitConfig:
        """Sizes the split can meet: a negative count would reach numpy as an empty slice ("low >= high"),
        and a NaN or infinite ratio would round to a split of every patient into one part."""
        if self.counts is not None:
            if any(c < 0 for c in self.counts):
                raise ValueError(f"'counts' must be non-negative whole numbers, got {self.counts}")
            return self
        if self.ratios is None:
            raise ValueError("set 'ratios' or 'counts'")
        # NaN fails every comparison, so the chained test refuses NaN as well as ±inf and negatives
        if not all(0 <= r < float("inf") for r in self.ratios) or sum(self.ratios) <= 0:
            raise ValueError(
                f"'ratios' must be finite and non-negative with a positive sum, got {self.ratios}"
            )
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
    class_mix: list[float] | Literal["within"] | None = Field(
        default=None,
        description="shares of deteriorated, stable, improved among the inter-patient (train and val) pairs, "
        "e.g. [0.1, 0.8, 0.1] for a cohort whose consecutive scans are mostly stable (a stated prior), or "
        "'within': the shares of the train and val patients' own consecutive-visit pairs (a cohort with "
        "repeat visits); unset: as drawn",
    )

    @model_validator(mode="after")
    def _one_mix(self) -> PairConfig:
        if self.class_mix is not None and self.balanced:
            raise ValueError("set balanced or class_mix, not both (balanced is class_mix [1/3, 1/3, 1/3])")
        mix = self.class_mix
        if isinstance(mix, list) and (len(mix) != 3 or min(mix) < 0 or abs(sum(mix) - 1) > 1e-6):
            raise ValueError(
                f"class_mix should be three shares ≥ 0 (deteriorated, stable, improved) summing to 1, "
                f"got {mix}"
            )
        return self

    intra: IntraPairing = Field(
        default="consecutive", description="test pairs: consecutive visits of a patient, or all visit pairs"
    )
    match_site: bool = Field(default=True, description="intra-patient pairs join scans of the same site")
    within_patient: bool = Field(
        default=False,
        description="train and val also get the intra-patient pairs of their own patients with 2+ visits "
        "(the test pairs' rule: intra, match_site), beside the inter-patient ones; beyond the paper, which "
        "trains on pairs of different patients only",
    )


class DataConfig(_Section):
    """Where the scans are and how they become clips of shape (T, C, H, W)."""

    manifest: Path | None = Field(default=None, description="the manifest (CSV or Parquet), one row per scan")
    scale: str = Field(
        default="sf", description="score scale: a name registered in learner.data.scales, or 'custom'"
    )
    custom_scale: ScaleConfig | None = Field(default=None, description="the scale when scale is 'custom'")
    mmse_threshold: float = Field(default=2.0, gt=0, description="mmse: |Δ| < threshold → stable")
    frames: int = Field(
        default=8,
        ge=1,
        description="T: frames (or slices) per clip: TSN segments, or the depth of the resampled grid",
    )
    size: int = Field(default=112, ge=16, description="H = W after resizing")
    channels: Literal[1, 3] = Field(
        default=1, description="C: 1 (grey) or 3 (grey repeated, for RGB weights)"
    )
    crop: Crop = Field(
        default="fan", description="crop before resizing: none, the ultrasound fan, or foreground"
    )
    sampling: Sampling = Field(
        default="segments",
        description="how a scan becomes T frames: one per TSN segment, or the whole scan resampled "
        "(trilinear) to T × size × size, the fixed grid of a 3-D encoder",
    )
    max_cached_frames: int = Field(default=64, ge=1, description="frames kept per scan in the cache")
    nifti_axis: NiftiAxis = Field(default="axial", description="the axis a NIfTI volume is sliced along")
    augment: bool = Field(default=True, description="clip-consistent augmentation of the train clips")
    skip_bad_scans: bool = Field(default=False, description="skip unreadable scans (counted and reported)")
    device_data: bool = Field(
        default=False,
        description="the GPU path of pretraining: the train scans held on the device as one uint8 tensor, "
        "frame picks and augmentation of whole batches there, and a step that never waits for the device "
        "(a non-finite step skips its update and fails at the epoch's end); other random draws than the "
        "loader path (so part of the results digest), results agree within seed-to-seed spread, not bit "
        "for bit (docs/training.md)",
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    pairs: PairConfig = Field(default_factory=PairConfig)


class ModelConfig(_Section):
    """The encoder θ_V and the regression head θ_M (Section 2.2)."""

    backbone: str = Field(
        default="tsm_resnet18", description="the encoder: a name in learner.models.registry.ENCODERS"
    )
    size: ModelSize = Field(
        default="paper",
        description="encoder size preset (tiny for CPU tests; paper = ResNet-18 / ViT-B / Swin-T widths)",
    )
    init: Path | None = Field(default=None, description="local weights (safetensors or .pth) for the encoder")
    shift_fraction: float = Field(default=0.125, ge=0, le=0.5, description="TSM: fraction shifted each way")
    norm: Norm = Field(
        default="batch",
        description="tsm_resnet18's normalisation layers: batch (BatchNorm), group (GroupNorm, 32 groups or "
        "one per channel below 32 channels), frozen_bn (BatchNorm always normalising with its stored "
        "statistics, never updated: meant for model.init weights); vit and swin take only batch",
    )
    embed_norm: EmbedNorm = Field(
        default="none",
        description="applied to the embedding u (N, D) after the temporal average, so the contrastive term, "
        "θ_M, `learner embed` and the classifier all see it: none, l2 (unit length) or layer (LayerNorm)",
    )
    head_hidden: int = Field(default=256, ge=1, description="hidden width of the regression head θ_M")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout in the regression head")


class LossConfig(_Section):
    """The pretraining objective: λ·MSE + (1 − λ)·contrastive (Eqs. 1–3)."""

    name: str = Field(
        default="mse+wcl",
        description="'mse', or 'mse+<term>' with a contrastive term of learner.losses.registry.LOSSES",
    )
    lam: float = Field(default=0.9, ge=0, le=1, description="λ, the MSE weight")
    similarity: Similarity = Field(
        default="shifted_cosine", description="maps cosine to (0, 1] before the log"
    )
    temperature: float | None = Field(
        default=None,
        gt=0,
        description="τ of exp_cosine and of the rnc, yaware and supcon_bins logits; unset: each term's "
        "authors' τ (learner.losses.registry.AUTHORS_SETTINGS: rnc 2, yaware 0.1, supcon_bins 0.1, "
        "exp_cosine 1)",
    )
    sim_floor: float = Field(default=1e-4, gt=0, lt=1, description="shifted_cosine is clamped to ≥ this")
    eps: float = Field(default=0.1, gt=0, description="ε in w = |Δ| + ε, on standardised scores")
    weight_max: float = Field(default=10.0, ge=1, description="upper bound on every contrastive weight")
    feature_similarity: FeatureSimilarity | None = Field(
        default=None,
        description="logit of rnc, yaware, supcon_bins: cos(u_i, u_j)/τ, or −‖u_i − u_j‖/τ; unset: each "
        "term's authors' choice (rnc: neg_l2, the others: cosine)",
    )
    reduction: Reduction = Field(
        default="mean",
        description="mean: Eqs. 1–3 averaged over the batch and pairs (λ's balance independent of B); "
        "sum: the paper's Eqs. 1–3 literally (mse, cl, wcl, wcl_scaled only)",
    )
    kernel_sigma: float = Field(
        default=1.0,
        gt=0,
        description="yaware's Gaussian kernel σ in STANDARDISED score units (σ in score units / train std)",
    )
    memory: int = Field(
        default=0,
        ge=0,
        description="cross-batch memory: the last N (embedding, score) pairs of earlier steps join every "
        "contrastive term as extra references (0: off)",
    )
    within_patient: float = Field(
        default=0.0,
        ge=0,
        description="μ, the weight of a within-patient term added to the objective (beyond the paper): the "
        "head's change between two visits of one patient at one site against the scores' change; batches "
        "then hold visit pairs of train patients with 2+ visits (learner.losses.within_patient; 0: off)",
    )
    within_patient_term: WithinPatientTerm = Field(
        default="difference",
        description="difference: MSE of the predicted against the observed change; rank: RankNet on their "
        "order",
    )


class OptimConfig(_Section):
    """Optimisation (Table 2)."""

    batch_size: int = Field(default=16, ge=2, description="the global batch, split over the processes")
    lr: float = Field(default=1e-3, gt=0, description="initial learning rate")
    optimizer: Optimizer = Field(default="adam", description="the optimiser")
    weight_decay: float = Field(default=0.0, ge=0, description="the optimiser's weight decay")
    epochs: int = Field(default=100, ge=1, description="pretraining epochs")
    scheduler: Schedule = Field(
        default="cosine", description="LR per step: cosine annealing towards 0, or constant"
    )
    warmup_epochs: float = Field(
        default=0.0,
        ge=0,
        description="linear LR warm-up over this many epochs (rounded to whole steps), then the scheduler "
        "over the remaining steps; 0: none",
    )
    grad_clip: float | None = Field(default=None, gt=0, description="clip the gradient norm to this")
    max_steps_per_epoch: int | None = Field(
        default=None, ge=1, description="cap steps per epoch (demo, tests)"
    )

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> OptimConfig:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"'warmup_epochs' ({self.warmup_epochs}) exceeds 'epochs' ({self.epochs})")
        return self


class ClassifierConfig(_Section):
    """The downstream health-change classifier (Section 2.4)."""

    head: ClassifierHead = Field(default="mlp", description="mlp: 1 hidden layer; mlp_large: 3")
    combine: Combine = Field(
        default="difference", description="pair feature: u_later − u_earlier, or both concatenated"
    )
    hidden: int = Field(default=128, ge=1, description="hidden width of the classifier")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="dropout in the classifier")
    lr: float = Field(default=1e-3, gt=0, description="the classifier's learning rate")
    batch_size: int = Field(default=64, ge=1, description="pairs per classifier step")
    epochs: int = Field(default=200, ge=1, description="maximum classifier epochs")
    patience: int = Field(default=20, ge=1, description="early stopping on val inter-patient pairs")
    class_weights: bool = Field(default=False, description="weight the loss by inverse class frequency")
    clips_per_scan: int = Field(default=1, ge=1, description="embeddings averaged over this many clips")
    bootstrap: int = Field(
        default=1000, ge=0, description="patient-bootstrap resamples for the test CIs (0: no intervals)"
    )


class RuntimeConfig(_Section):
    """Where and how fast a run goes, never what it computes: not part of any results digest, and the one
    section a resumed pretraining may change. (GPU and mixed precision round differently from CPU float32;
    the computation is the same.)"""

    device: Device = Field(default="auto", description="auto (CUDA when visible), cpu or cuda")
    workers: int = Field(
        default=2, ge=0, description="data-loading and cache-decoding processes (0: in-process)"
    )
    cache_dir: Path | None = Field(
        default=None, description="decoded-scan cache folder; default: <manifest folder>/.learner-cache"
    )
    data_root: Path | None = Field(
        default=None,
        description="refuse manifest paths that resolve (.. and symlinks followed) outside this folder; "
        "unset: paths are trusted",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op CPU threads of a command; unset: OMP_NUM_THREADS when set, else every "
        "core for a CPU run and the cores left after runtime.workers loader processes for a GPU run "
        "(docs/training.md)",
    )
    amp: bool = Field(default=True, description="mixed precision on GPU (bf16 where supported, else fp16)")
    checkpoint_every: int = Field(
        default=1,
        ge=1,
        description="write checkpoints/last every k epochs (and at the last one) instead of every epoch; "
        "k > 1 writes in a background thread. checkpoints/best is still chosen every epoch (kept in memory "
        "until the next save); a kill loses at most k - 1 epochs, --resume stays exact (docs/training.md)",
    )
    channels_last: bool = Field(default=True, description="channels-last (NHWC) weights on GPU")
    cuda_graph: bool = Field(
        default=False,
        description="data.device_data on a GPU: record the training step once as a CUDA graph (after 3 "
        "eager steps) and replay it, one launch per step instead of one per kernel; needs a bf16 GPU or "
        "runtime.amp=false, and loss.memory=0 (docs/training.md; its GPU speed-up is still to be measured: "
        "BENCHMARKS.md)",
    )
    compile: CompileMode = Field(
        default="off",
        description="torch.compile the network of the training steps in this mode (off, default, "
        "reduce-overhead, max-autotune, max-autotune-no-cudagraphs): for long GPU runs, whose steps are "
        "launch-bound; the first steps compile (about 100 s on a GPU); reduce-overhead and max-autotune not "
        "with runtime.cuda_graph (docs/training.md)",
    )
    cpu_channels_last: bool = Field(
        default=False,
        description="channels-last (NHWC) weights on CPU too: TSM training steps 9-18% faster at 64-112 px, "
        "10% slower at 32 px (BENCHMARKS.md), equal within float tolerance but not bit for bit, so off by "
        "default",
    )
    vector_figures: bool = Field(
        default=True,
        description="write .svg copies (and .pdf for Fig. 1) beside every PNG figure; false: PNG only, "
        "up to 60% less time drawing figures (a grid draws Fig. 1 per dataset; docs/experiments.md)",
    )
    logger: LoggerName = Field(
        default="csv",
        description="also record runs in a tracker: csv (no: metrics.csv only), tensorboard or mlflow "
        "(pretraining epochs, classification metrics, a grid's cells as nested runs; docs/training.md)",
    )
    launcher: LauncherName = Field(
        default="inline",
        description="experiment grids: inline (this process), submitit (one SLURM job per cell) or "
        "submitit-local (one local process per cell)",
    )
    launcher_options: dict[str, str] = Field(
        default_factory=dict,
        description="submitit executor parameters, e.g. {slurm_partition: gpu, timeout_min: '120'}",
    )
    cells_side_by_side: bool = Field(
        default=False,
        description="experiment grids (inline launcher, data.device_data): pretrain the new encoders of "
        "the cells that share a dataset together in this process, their steps taking turns (each on its "
        "own CUDA stream); every cell computes what it computes alone (docs/training.md)",
    )


class Config(_Section):
    """Everything one run needs. ``seed`` seeds every RNG in one place."""

    seed: Seed = Field(
        default=0, description="seeds every RNG: split, initialisation, sampling, augmentation"
    )
    data: DataConfig = Field(default_factory=DataConfig, description="scans, clips, split and pairs")
    model: ModelConfig = Field(default_factory=ModelConfig, description="encoder and regression head")
    loss: LossConfig = Field(default_factory=LossConfig, description="the pretraining objective")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="pretraining optimisation")
    classifier: ClassifierConfig = Field(
        default_factory=ClassifierConfig, description="the downstream classifier and its test intervals"
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig, description="where and how fast the run goes (never its results)"
    )

    @model_validator(mode="after")
    def _one_clip_per_resampled_scan(self) -> Config:
        if self.data.sampling == "resample" and self.classifier.clips_per_scan > 1:
            raise ValueError(
                f"classifier.clips_per_scan={self.classifier.clips_per_scan} needs data.sampling=segments: "
                "a scan resampled to one grid gives one clip"
            )
        return self

    def to_yaml(self) -> str:
        """The resolved config as YAML (what every run directory stores)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def result_settings(self) -> dict[str, Any]:
        """Everything that decides what the run computes (all but ``runtime``), as plain JSON values."""
        return self.model_dump(mode="json", exclude={"runtime"})

    def pretraining_settings(self) -> dict[str, Any]:
        """Everything that decides what a pretraining computes: :meth:`result_settings` without the keys
        only the classify stage reads (:data:`CLASSIFICATION_ONLY`). Two configs that agree here train
        the same encoder."""
        return self.model_dump(mode="json", exclude={"runtime": True, **CLASSIFICATION_ONLY})


def _all_combines() -> list[Combine]:
    return ["difference", "concatenate"]


def _all_classifier_heads() -> list[ClassifierHead]:
    return ["mlp_large", "mlp"]


class DatasetSpec(_Section):
    """One dataset column of an experiment table."""

    name: str = Field(description="the column's name in the tables and the cells' folder name")
    manifest: Path = Field(description="the dataset's manifest")
    scale: str = Field(default="sf", description="its score scale (data.scale of its cells)")


class ExperimentConfig(_Section):
    """The grid of an experiment (Tables 3 and 4): the ``experiment:`` section of an experiment file.

    Every cell is the file's run settings with one value of each axis."""

    losses: list[str] = Field(
        default_factory=lambda: ["mse", "mse+cl", "mse+wcl"],
        description="loss.name of the cells (Table 3 rows)",
    )
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], description="seed of the cells")
    datasets: list[DatasetSpec] = Field(default_factory=list, description="the dataset columns")
    backbones: list[str] = Field(
        default_factory=lambda: ["tsm_resnet18", "vit", "swin"], description="model.backbone (Table 4)"
    )
    combines: list[Combine] = Field(default_factory=_all_combines, description="classifier.combine (Table 4)")
    classifiers: list[ClassifierHead] = Field(
        default_factory=_all_classifier_heads, description="classifier.head (Table 4)"
    )
    settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="the sweep's named settings: name → dotted config overrides, e.g. "
        "{small: {data.size: 32, data.frames: 4}} (`learner experiment sweep`)",
    )
    init: str | None = Field(
        default=None,
        description="a self-supervised objective (vicreg): one stage per dataset and seed (and encoder "
        "settings) on the train and val scans, no scores, whose encoder starts every cell (model.init)",
    )
    init_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted overrides of that stage only, e.g. {optim.epochs: 10} (not its split, seed, "
        "manifest, model or loss.name: the cells' own)",
    )


class _ExperimentFile(Config):
    """The layout of a config file: a run's sections plus the optional ``experiment`` grid."""

    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig, description="the experiment grid")


@dataclass(frozen=True)
class Experiment:
    """An experiment: the run settings every cell starts from and the grid of cells over them."""

    config: Config
    grid: ExperimentConfig

    def to_yaml(self) -> str:
        """The run sections and ``experiment:`` as one YAML file (read back by :func:`load_experiment`)."""
        raw = self.config.model_dump(mode="json") | {"experiment": self.grid.model_dump(mode="json")}
        return yaml.safe_dump(raw, sort_keys=False)


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Build one run's :class:`Config` from defaults, then a YAML file, then ``key.sub=value`` overrides.

    Override values are parsed as YAML scalars/lists (``optim.lr=3e-4``, ``data.split.counts=[3,2,1]``).
    A file's ``experiment:`` section is validated but is not part of a run (see :func:`load_experiment`);
    an ``experiment.*`` override is refused.
    Raises :class:`ConfigError` with a one-line message naming the key and what is allowed.
    """
    for item in overrides or []:
        key, _ = split_override(item)
        if key.split(".")[0] == "experiment":
            raise ConfigError(
                f"{key} is an experiment grid key; a single run does not use it (see `learner experiment`)"
            )
    return load_experiment(path, overrides).config


def check_custom_scale(config: Config) -> Config:
    """``config``, refused in one line when it sets ``data.custom_scale`` beside another ``data.scale``: a
    single run reads that scale only with ``data.scale: custom``, so it would be ignored without a word. (No
    rule of :class:`Config`: an experiment's settings carry it for the grid's ``@custom`` datasets, and
    ``--scale custom`` is applied after the file and ``--set``.)"""
    if config.data.custom_scale is not None and config.data.scale != "custom":
        raise ConfigError(
            f"data.custom_scale is set but data.scale is {config.data.scale!r}, which ignores it; set "
            "data.scale=custom to use it, or drop data.custom_scale"
        )
    return config


def load_experiment(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> Experiment:
    """Build an :class:`Experiment` like :func:`load_config`, with the file's ``experiment:`` grid and
    ``experiment.*`` overrides (``experiment.seeds=[0,1]``) as its grid. A file may extend a preset or
    another file with ``base: NAME_OR_PATH`` (:func:`read_config_file`).

    Raises :class:`ConfigError` with a one-line message naming the key and what is allowed.
    """
    raw: dict[str, Any] = read_config_file(resolve_config_path(path)) if path is not None else {}
    for item in overrides or []:
        key, value = split_override(item)
        _set_dotted(raw, key, value, _ExperimentFile)
    parsed = _validate(_ExperimentFile, raw)
    return Experiment(Config.model_validate(parsed.model_dump(exclude={"experiment"})), parsed.experiment)


BASE_KEY = "base"
"""A config file's ``base: demo`` (a bundled preset) or ``base: ../common.yaml`` (a path relative to the
file) extends that config: the file's keys replace the base's, section by section, key by key."""


YAML_MAX_VALUES = 100_000
"""The most values (scalars, lists, mappings) a YAML document may expand to, aliases counted each time they
are used: a config has hundreds; a "billion laughs" of nested aliases is refused before it is built."""


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, refused in one line (naming ``where``) when it would expand to more than
    :data:`YAML_MAX_VALUES` values or nest too deeply to walk.

    Raises:
        ConfigError: not valid YAML, or too large once expanded.
    """
    try:
        _refuse_expansion(text, where)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None


def _refuse_expansion(text: str, where: str) -> None:
    """A one-line ConfigError when ``text`` expands past :data:`YAML_MAX_VALUES` values (or nests too deeply
    to count); ``yaml.YAMLError`` when it is not YAML at all."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        too_big = node is not None and _expanded_size(node, {}) > YAML_MAX_VALUES
        _refuse_misreadings(node, where)
    except RecursionError:
        raise ConfigError(f"{where}: the YAML nests too deeply") from None
    if too_big:
        raise ConfigError(
            f"{where}: the YAML expands to more than {YAML_MAX_VALUES:,} values (nested aliases)"
        )


def _refuse_misreadings(node: yaml.Node | None, where: str) -> None:
    """A one-line ConfigError for what YAML would read without a word as something else than was meant: a
    mapping that names one key twice (the last value is kept, so ``lr: 0.1`` … ``lr: 0.2`` in one section
    silently trains at 0.2), and a YAML 1.1 number with a leading zero (octal: ``seed: 017`` is 15) or
    colons (base 60: ``1:30`` is 90)."""
    pending: list[tuple[yaml.Node | None, str]] = [(node, "")]
    seen: set[int] = set()
    while pending:
        current, path = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in current.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                if isinstance(key, yaml.ScalarNode) and name != "<<":
                    if name in keys:
                        line = key.start_mark.line + 1
                        raise ConfigError(f"{where}: line {line}: the key {name[:40]!r} appears twice")
                    keys.add(name)
                pending += [(key, path), (value, path if name == "<<" else f"{path}.{name}".lstrip("."))]
        elif isinstance(current, yaml.SequenceNode):
            pending += [(item, path) for item in current.value]
        elif isinstance(current, yaml.ScalarNode) and (base := _misread_base(current)):
            text, read = current.value, yaml.safe_load(current.value)
            mark = "colons" if base == "base-60" else "the leading zero"
            raise ConfigError(
                f"{where}: {path + ': ' if path else ''}YAML reads {text} as the {base} number {read}; write "
                f"the number without {mark}, or quote it for text"
            )


def _misread_base(node: yaml.ScalarNode) -> str | None:
    """``"octal"`` or ``"base-60"`` for a number YAML 1.1 reads so (``017``, ``1:30``), else None."""
    if node.style is not None or node.tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        return None  # quoted (text), or not a number
    if ":" in node.value:
        return "base-60"
    return "octal" if re.fullmatch(r"[-+]?0[0-9_]+", node.value) else None


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` becomes when every alias is expanded (shared nodes counted per use)."""
    if id(node) in memo:
        return memo[id(node)]
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(key, memo) + _expanded_size(value, memo) for key, value in node.value)
    memo[id(node)] = size
    return size


def read_config_file(source: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's sections, with its ``base:`` chain merged in (the file's own keys win).

    Raises:
        ConfigError: unreadable YAML, a top level that is not a mapping, a ``base`` that is not a name or
            path, or a circle of bases (one line naming the files).
    """
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a text file (byte {exc.start} is not UTF-8)") from exc
    loaded = load_yaml(text, str(source))
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    raw: dict[str, Any] = loaded or {}
    if source == RunLayout(source.parent).config:  # a run's config.yaml: paths relative to its folder
        resolve_run_paths(raw, source.parent)
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{source}: base: should name a bundled config or a file, got {base!r}")
    beside = source.parent / base
    if beside.is_file():
        parent = beside
    elif base in bundled_configs():
        parent = BUNDLED_CONFIGS / f"{base}.yaml"
    else:  # never a file of the working folder: the path is relative to the file, as README says
        raise ConfigError(
            f"{source}: base: {base} is neither a file beside it ({beside}) nor a bundled config "
            f"({', '.join(bundled_configs())})"
        )
    if parent.resolve() in (*chain, source.resolve()):
        circle = " → ".join(str(p) for p in (*chain, source.resolve(), parent.resolve()))
        raise ConfigError(f"{source}: base: makes a circle ({circle})")
    return _merged(read_config_file(parent, (*chain, source.resolve())), raw)


PATH_KEYS: tuple[str, ...] = ("data.manifest", "model.init", "runtime.cache_dir", "runtime.data_root")
"""The config's file-system paths: a run directory's ``config.yaml`` stores them relative to the run
directory and ``run.json["paths"]`` records each as typed and absolute (:mod:`learner.runs`)."""


def resolve_run_paths(raw: dict[str, Any], root: Path) -> None:
    """Resolve in place the :data:`PATH_KEYS` of ``raw``, the ``config.yaml`` of the run directory ``root``,
    so that the run reads the same files from any working folder: against ``root``, or the absolute path
    ``run.json`` recorded when only that exists (the run moved without its data). Only the paths
    ``run.json`` records were written relative: a run of an earlier version keeps the others as typed, and an
    experiment's file (its ``experiment:`` grid beside the paths as given) is left as it is."""
    try:
        record = json.loads(RunLayout(root).record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    recorded = record.get("paths") if isinstance(record, dict) else None
    if not isinstance(recorded, dict) or "experiment" in raw:
        return
    for key in PATH_KEYS:
        section, name = key.split(".")
        values, given = raw.get(section), recorded.get(key)
        if isinstance(values, dict) and isinstance(values.get(name), str) and isinstance(given, dict):
            stored = Path(values[name])
            candidate = stored if stored.is_absolute() else (root / stored).resolve()
            absolute = given.get("absolute")
            if not candidate.exists() and isinstance(absolute, str) and Path(absolute).exists():
                candidate = Path(absolute)
            values[name] = str(candidate)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


BUNDLED_CONFIGS = Path(__file__).parent / "configs"
"""YAML configs shipped inside the package: ``paper`` (Table 2, no dataset), ``lus`` and ``adni`` (paper
scale with the paper's datasets), ``demo`` (CPU demo on the phantom), ``small-cohort`` (a few hundred real
scans on a CPU)."""


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
    return _validate(Config, raw)


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with dotted-key overrides (``{"optim.epochs": 5}``) applied and validated."""
    raw = config.model_dump(mode="json")
    for key, value in overrides.items():
        _set_dotted(raw, key, value, Config)
    return config_from_dict(raw)


def _validate(model: type[_Model], raw: dict[str, Any]) -> _Model:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model)) from None


def split_override(item: str) -> tuple[str, Any]:
    """``section.key=value`` → (key, value), the value parsed as a YAML scalar or list."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        _refuse_expansion(text, f"--set {key.strip()}")
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # not YAML: the text as it is
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any, root: type[BaseModel]) -> None:
    parts = key.split(".")
    node = raw
    model: type[BaseModel] | None = root
    for depth, part in enumerate(parts[:-1]):
        model = _section_type(_check_key(model, parts[: depth + 1]).model_fields[part].annotation)
        child = node.get(part)
        if child is not None and not isinstance(child, dict):  # a config file's `optim: [...]`: refuse,
            # rather than replace it with the override alone (which would drop it without a word)
            section = ".".join(parts[: depth + 1])
            what = "a list" if isinstance(child, list) else f"the value {str(child)[:40]!r}"
            raise ConfigError(
                f"{section} is {what} in the config, not a section of key: value lines; --set {key} "
                "cannot be merged into it"
            )
        if child is None:  # absent, or an empty `optim:` in the file
            child = {}
            node[part] = child
        node = child
    model = _check_key(model, parts)
    annotation = model.model_fields[parts[-1]].annotation
    if isinstance(value, dict) and get_origin(annotation) is not list and _section_type(annotation):
        for name, item in value.items():  # a whole section merges key by key, as `base:` does
            _set_dotted(raw, f"{key}.{name}", item, root)
        return
    node[parts[-1]] = value
    if model is SplitConfig and parts[-1] in _EITHER_SIZE and value is not None:
        node[_EITHER_SIZE[parts[-1]]] = None  # of ratios and counts, the one given last wins


_EITHER_SIZE = {"ratios": "counts", "counts": "ratios"}
"""``data.split``'s two ways to size a split: setting one clears the other, so that a ``--set`` of ratios
is not dropped in silence when the file (or preset) gives counts."""


def _check_key(model: type[BaseModel] | None, parts: list[str]) -> type[BaseModel]:
    """``model``, the section that holds the key ``parts``; a one-line ConfigError when none does."""
    if model is None:
        raise ConfigError(f"unknown config key {'.'.join(parts)!r}: {'.'.join(parts[:-1])!r} has no sub-keys")
    if parts[-1] not in model.model_fields:
        where = ".".join(parts[:-1]) or "top level"
        allowed = ", ".join(model.model_fields)
        raise ConfigError(f"unknown config key {'.'.join(parts)!r}; allowed at {where}: {allowed}")
    return model


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe(exc: ValidationError, root: type[BaseModel]) -> str:
    error = exc.errors()[0]
    key = ".".join(str(p) for p in error["loc"]) or "config"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        parent = _section_at(error["loc"][:-1], root)
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"unknown config key {key!r}; allowed: {allowed}{more}"
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"invalid config value for {key!r}: {error['msg']}{got_text}{more}"


def _section_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _section_type(model.model_fields[part].annotation)
    return model
