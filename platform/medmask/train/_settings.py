"""Typed, frozen settings: the library boundary of the training studies and the sweeps.

The entry points in ``experiments/`` build these from their Hydra config with
:func:`settings_from_dict`; a misspelled or unknown key fails there, before Ray starts, with
the valid keys listed (never deep inside a Ray worker). Inside the library the settings are
attributes, not paths into a config tree. Keys that no code reads are not part of them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from medmask.train._optim import OptimizerConfig
from medmask.train._trainer import ScalingSettings

T = TypeVar("T")


def check_mixed_precision(value: Any) -> None:
    """``mixed_precision`` is true (bf16 autocast where CUDA is present), false (fp32) or
    ``"bf16"`` (bf16 autocast on any device, the CPU included)."""
    if not (isinstance(value, bool) or value == "bf16"):
        raise ValueError(f"mixed_precision must be true, false or 'bf16', got {value!r}")


@dataclass(frozen=True)
class ModelSettings:
    """A registered model (``medmask.models.create_model(name, **params)``)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MaskingSettings:
    """A registered mask strategy, its masked share of patches and its parameters."""

    name: str
    ratio: float
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSettings:
    """One training stage's budget and optimizer (``configs/train/*.yaml``)."""

    epochs: int
    batch_size: int
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    mixed_precision: bool | str = True  # bf16 autocast on CUDA; "bf16": on any device
    inject_failure: Mapping[str, Any] | None = None  # tests: kill a worker once at an epoch

    def __post_init__(self) -> None:
        check_mixed_precision(self.mixed_precision)


@dataclass(frozen=True)
class HeadSettings:
    """The classification head (``configs/head/*.yaml``)."""

    num_classes: int
    multilabel: bool = False
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TransferSettings:
    """The Transfer baseline: an encoder initialised from a local weights file."""

    weights: str | None = None
    prefix: str = ""


@dataclass(frozen=True)
class BaselineSettings:
    """The baselines fine-tuned without masked pretraining."""

    from_scratch: bool = True
    transfer: TransferSettings = field(default_factory=TransferSettings)


@dataclass(frozen=True)
class CropSettings:
    """Crop every split to its lungs (segmentation-guided SSL, option 4; ``method=seg_crop``).

    The padded lung box of the organ map (:func:`medmask.segmentation.segmentation_guided_crop`),
    resized back to the image size; ``padding`` is given at 224 px and scales with the image
    side (20 px at 224, 3 px at 32); the whole image where no lung is found or the box is under
    ``min_crop_ratio`` of a side (counted fallbacks).
    """

    padding: int = 20
    min_crop_ratio: float = 0.5


@dataclass(frozen=True)
class AugmentSettings:
    """Light training augmentation for fine-tuning (:class:`medmask.segmentation.AugmentConfig`
    fields; no noise by default). ``flip_p`` = 0 where the label is not mirror-invariant."""

    flip_p: float = 0.5
    max_rotation_deg: float = 5.0
    brightness: float = 0.1
    contrast: float = 0.1
    noise_sigma: float = 0.0
    noise_p: float = 0.0


@dataclass(frozen=True)
class FinetuneRecipe:
    """MAE's fine-tuning recipe (``main_finetune.py``) beside the optimizer's layer-wise lr
    decay (``finetune.optim.layer_decay``): drop path, label smoothing, augmentation, a local
    shuffle every epoch, the epoch selected on validation, and an lr grid selected on
    validation (``lr_grid``: the base learning rates tried per cell; empty = only
    ``finetune.optim.base_lr``), so no method wins because of a shared lr, and a floor on the
    optimizer steps (``min_steps``: a 10 % label fraction otherwise trains for a handful).
    The defaults switch everything off: ``configs/train/*.yaml`` set the recipe.
    """

    drop_path: float = 0.0
    label_smoothing: float = 0.0
    augment: AugmentSettings | None = None
    shuffle_buffer: int = 0
    select_on: str | None = None  # a val metric: "accuracy", "auc_mean", ...
    lr_grid: tuple[float, ...] = ()
    min_steps: int = 0  # a small label fraction repeats inside each epoch to reach this


@dataclass(frozen=True)
class ProbeSettings:
    """The per-epoch convergence probe of pretraining (:mod:`medmask.train._probe`): a linear
    probe of the frozen ``encode`` features on the multi-label findings, every ``every``
    epochs and at the last (0 = off), on at most ``images`` labelled images (the training
    split's first ``images // 2`` fitted, the validation split's first ``images // 2``
    scored), L2 weight ``l2``. Part of the pretraining cache key (the entry keeps the curve's
    summary)."""

    every: int = 0
    images: int = 1024
    l2: float = 1e-3


@dataclass(frozen=True)
class PretrainSettings:
    """Everything a pretraining stage needs (and what its cache key is made of)."""

    seed: int
    data: Mapping[str, Any]  # a ``configs/data`` group: adapter options are the adapter's
    model: ModelSettings
    masking: MaskingSettings
    pretrain: StageSettings
    cache_dir: str
    storage_dir: str
    method: str = "mae"
    method_params: Mapping[str, Any] = field(default_factory=dict)  # e.g. temperature, weight
    crop: CropSettings | None = None
    probe: ProbeSettings = field(default_factory=ProbeSettings)


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything a classification fine-tuning stage needs."""

    seed: int
    model: ModelSettings
    finetune: StageSettings
    head: HeadSettings
    storage_dir: str
    method: str = "mae"
    crop: CropSettings | None = None  # fine-tune and test on lung crops (option 4)
    recipe: FinetuneRecipe = field(default_factory=FinetuneRecipe)


@dataclass(frozen=True)
class ControlSettings:
    """The controls every MIM study table carries besides From Scratch.

    Attributes:
        shortcut: the shortcut baseline, a logistic regression on the 16 x 16 grid of patch
            means (:func:`medmask.eval.shortcut_baseline`): what needs no representation.
        oracle: the "lesion-first" masking row: the same pretraining with the ground-truth
            lesion patches masked first (``masking=lesion_first``, phantoms only): a bound
            on what choosing *where* to mask can gain.
    """

    shortcut: bool = True
    oracle: bool = False


@dataclass(frozen=True)
class MimSettings:
    """A masked-image-modeling study (``experiments/mae.py``, ``rgmim.py``, the sweeps)."""

    study: str
    seed: int
    data: Mapping[str, Any]
    model: ModelSettings
    masking: MaskingSettings
    pretrain: StageSettings
    finetune: StageSettings
    head: HeadSettings
    cache_dir: str
    storage_dir: str
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    fractions: tuple[float, ...] = (1.0,)
    modes: tuple[str, ...] = ("full",)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    method: str = "mae"
    method_params: Mapping[str, Any] = field(default_factory=dict)
    crop: CropSettings | None = None  # every split cropped to the lungs, both stages
    recipe: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    seeds: tuple[int, ...] = ()  # the study's seed axis; empty = (seed,)
    controls: ControlSettings = field(default_factory=ControlSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)

    def seed_axis(self) -> tuple[int, ...]:
        """The seeds the study runs (every method seeded the same way at each)."""
        return tuple(self.seeds) or (self.seed,)

    def pretraining(self) -> PretrainSettings:
        """The settings of this study's pretraining stage."""
        return PretrainSettings(self.seed, self.data, self.model, self.masking, self.pretrain,
                                self.cache_dir, self.storage_dir, self.method,
                                self.method_params, self.crop, self.probe)

    def finetuning(self) -> FinetuneSettings:
        """The settings of this study's fine-tuning stages."""
        return FinetuneSettings(self.seed, self.model, self.finetune, self.head,
                                self.storage_dir, self.method, self.crop, self.recipe)


SEGMENTATION_METHODS = ("ahm", "random", "scratch")  # the AHM study's encoders
SEGMENTATION_TARGETS = ("lesion", "organs")
REWARD_SERVER_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class PolicyBudgetSettings:
    """When policy training stops (:class:`medmask.rl.PolicyBudget`); ``images_per_epoch``
    None = one pass over the EnvRunners' image pool."""

    max_epochs: int = 200
    images_per_epoch: int | None = None
    max_updates: int | None = None
    max_iterations: int | None = None
    time_budget_s: float | None = None
    checkpoint_every: int = 10


@dataclass(frozen=True)
class PolicySettings:
    """AHM's masking policy, trained with RLlib APPO (``configs/rl/*.yaml``).

    The fields from ``num_env_runners`` to ``min_time_s_per_iteration`` are the options of
    :func:`medmask.rl.ahm_appo_config` (see there); ``checkpoint`` reuses a ``policy.pt``
    trained elsewhere (AHM's transfer study) instead of training; ``eval_images`` and
    ``pool_images`` cap the held-out diagnostics and the EnvRunners' image pool (None = all);
    ``reward_server``: ``on`` = one shared reward actor scores every EnvRunner's masks in
    batches (:func:`envs.start_reward_server`, on a GPU when the cluster has one), ``off`` =
    each EnvRunner runs its own copy of the network, ``auto`` = on when the cluster has a GPU.
    """

    checkpoint: str | None = None
    num_env_runners: int = 2
    num_envs_per_env_runner: int = 4
    num_cpus_per_env_runner: float = 0.5
    train_batch_size: int = 4
    lr: float = 3e-4
    lr_decay: float = 0.9
    lr_decay_every_epochs: int = 25
    random_share: float = 0.3
    credit: str = "myopic"
    channels: int = 16
    head_depth: int = 3
    trunk: str = "conv"
    entropy_coeff: float = 0.0
    min_time_s_per_iteration: float = 1.0
    eval_images: int | None = None
    pool_images: int | None = None
    reward_server: str = "auto"
    budget: PolicyBudgetSettings = field(default_factory=PolicyBudgetSettings)

    def __post_init__(self) -> None:
        if self.reward_server not in REWARD_SERVER_MODES:
            raise ValueError(f"policy.reward_server must be one of {list(REWARD_SERVER_MODES)}, "
                             f"got {self.reward_server!r}")

    def appo_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`medmask.rl.ahm_appo_config` these settings set."""
        options = dataclasses.asdict(self)
        for other in ("checkpoint", "eval_images", "pool_images", "reward_server", "budget"):
            options.pop(other)
        return options


@dataclass(frozen=True)
class SegmentationSettings:
    """The AHM study's segmentation fine-tuning (``segmentation`` and ``train.segmentation``).

    Attributes:
        target: ``lesion`` (binary) or ``organs`` (background, right lung, left lung, heart).
        fractions: the label fractions, each fine-tuned from every encoder in ``methods``.
        methods: the encoders: ``ahm``, ``random`` (the reconstruction pretraining) and
            ``scratch`` (AHM's "Fully Supervised").
        min_steps: a small label fraction repeats within an epoch up to this many steps.
    """

    epochs: int
    batch_size: int
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    target: str = "lesion"
    fractions: tuple[float, ...] = (1.0,)
    methods: tuple[str, ...] = SEGMENTATION_METHODS
    min_steps: int = 0
    mixed_precision: bool | str = True

    def __post_init__(self) -> None:
        check_mixed_precision(self.mixed_precision)
        unknown = [m for m in self.methods if m not in SEGMENTATION_METHODS]
        if unknown:
            raise ValueError(f"segmentation.methods must be among {list(SEGMENTATION_METHODS)}, "
                             f"got {unknown}")
        if self.target not in SEGMENTATION_TARGETS:
            raise ValueError(f"segmentation.target must be one of {list(SEGMENTATION_TARGETS)},"
                             f" got {self.target!r}")


@dataclass(frozen=True)
class AhmSettings:
    """The AHM study (``experiments/ahm.py``): reconstruction pretraining, the policy, AHM
    pretraining and segmentation fine-tuning, all at one masking ``ratio`` and ``seed``."""

    study: str
    seed: int
    data: Mapping[str, Any]
    model: ModelSettings
    ratio: float
    pretrain: StageSettings
    policy: PolicySettings
    segmentation: SegmentationSettings
    cache_dir: str
    storage_dir: str
    scaling: ScalingSettings = field(default_factory=ScalingSettings)

    def pretraining(self, method: str, masking: MaskingSettings) -> PretrainSettings:
        """The settings of one of the study's pretraining stages."""
        return PretrainSettings(self.seed, self.data, self.model, masking, self.pretrain,
                                self.cache_dir, self.storage_dir, method)


def settings_from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a plain mapping, recursively.

    Raises:
        ValueError: an unknown key (the message lists the valid ones) or a missing required
            key, naming where in the config it is (``pretrain.optim``).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys: "
                         f"{sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        if name not in data:
            required = (spec.default is dataclasses.MISSING
                        and spec.default_factory is dataclasses.MISSING)
            if required:
                raise ValueError(f"{where or cls.__name__}: missing key {name!r}")
            continue
        values[name] = _convert(hints[name], data[name], f"{where}.{name}" if where else name)
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value, where) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else settings_from_dict(hint, value, where)
    if origin is tuple:
        item = args[0] if args else Any
        return tuple(_convert(item, v, where) for v in value)
    if origin in (Mapping, dict) or hint is Mapping:
        return dict(value)
    if hint in (int, float, str, bool):
        return hint(value)
    return value
