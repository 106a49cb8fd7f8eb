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
    mixed_precision: bool = True
    inject_failure: Mapping[str, Any] | None = None  # tests: kill a worker once at an epoch


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
    min_steps: int = 0  # epochs are raised (warm-up scaled alike) to reach this many steps


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
