"""What a sweep varies: its spec, Tune's search space, and each trial's resolved settings.

A sweep varies a few named hyperparameters (:data:`SWEEP_PARAMS`) of the MIM study's typed
settings (:class:`medmask.train.MimSettings`). Every trial gets the base settings
with its values applied by :func:`trial_settings`, and a readable name from
:func:`trial_name` (``rgmim-r0.75-frac10-s0``), never Ray's trial id.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from medmask.masking import MASK_STRATEGIES, strategy_requires
from medmask.tracking import run_name
from medmask.train import (
    CropSettings,
    MaskingSettings,
    MimSettings,
    ModelSettings,
    config_hash,
    pretrain_settings,
    settings_from_dict,
)

# sweep parameter -> what it sets in the settings
SWEEP_PARAMS: dict[str, str] = {
    "strategy": "masking.name (and masking.params from the strategy's params)",
    "ratio": "masking.ratio",
    "fraction": "fractions (the one label fraction fine-tuned on)",
    "mode": "modes (full | linear_probe)",
    "random_share": "masking.params.random_share (AHM's p, Table V; strategy ahm only)",
    "patch_size": "model.params.patch_size",
    "seed": "seed",
    "method": "method with its params, model, masking and crop (sweep.methods.<arm>; an arm "
              "with pretrain_epochs: 0 fine-tunes the untrained model: From Scratch)",
}
METHOD_ARM_KEYS = ("method", "params", "model", "masking", "crop", "pretrain_epochs")
SCRATCH = "scratch"
SEARCH_KINDS = ("grid", "random")
# what one trial runs: the MIM study's pretrain -> fine-tune -> test, or pretrain -> an
# in-process classifier -> the grounding protocol (issue 12's sweep=grounding)
TRIAL_KINDS = ("mim", "grounding")
AHM = "ahm"
RANDOM = "random"
POLICY_CHECKPOINT = "policy_checkpoint"  # a strategy param: the policy.pt an AHM trial loads


@dataclass(frozen=True)
class SchedulerSpec:
    """An optional early-stopping scheduler (``name``: fifo | asha)."""

    name: str = "fifo"
    metric: str = "finetune/val/accuracy"
    mode: str = "max"
    time_attr: str = "training_iteration"
    grace_period: int = 1
    max_t: int = 100
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class SweepSpec:
    """A sweep as the Hydra ``sweep`` group describes it.

    Args:
        name: the study's name (MLflow study run and Tune experiment).
        space: sweep parameter -> a list of values (grid points, or choices for random
            search) or, for random search, a range ``{low, high, log}``.
        search: ``grid`` (every combination, ``num_samples`` times) or ``random``.
        num_samples: Tune's ``num_samples`` (random search: trials drawn).
        strategies: strategy name -> its masking params (``ahm`` needs
            ``policy_checkpoint``).
        metric: the test metric the summary compares (``accuracy``, ``auc_mean``, ...).
        x: the summary's x axis (a column of the trial table, e.g. ``ratio``).
        group: one plot line per value of this column (e.g. ``strategy``).
        scheduler: optional early stopping (ASHA).
        methods: arm name -> ``{method, params, model, masking, crop, pretrain_epochs}`` (a
            swept ``method`` takes these; ``method`` defaults to the arm's name).
        plot: ``line`` (metric vs x, one line per group) or ``bars`` (the guide's comparison
            summary: mean metric per group, one bar per x, std error bars).
        smoke: label the table and plot a smoke run (tiny models).
        baseline: the ``group`` value the bars sweep's comparison table and the grounding
            table's paired differences are relative to.
        modes: the fine-tuning modes every trial runs from its one pretrained encoder, in
            ONE Ray Train run (:func:`medmask.train.finetune_cells`; each mode trains exactly
            as it would alone); the trial table gets one row per mode (column ``mode``).
            Empty: the base settings' single mode, or ``mode`` swept as a parameter (one
            trial per mode: a pretraining and a fine-tuning launch each, the pretraining
            shared through the cache).
        probe_every: the convergence probe of every trial's pretraining every this many
            epochs (the base ``probe.every`` when None; needs multi-label findings).
        trial: what a trial runs (:data:`TRIAL_KINDS`): ``mim`` (fine-tune + test metrics)
            or ``grounding`` (the grounding score of a classifier fine-tuned in-process
            from the trial's encoder; its metric ``grounding_score``).
        grounding: for ``trial=grounding``: ``finetune`` (:class:`medmask.train.FitSettings`
            fields) and ``eval`` (:class:`medmask.eval.GroundingSettings` fields).
    """

    name: str
    space: Mapping[str, Any]
    search: str = "grid"
    num_samples: int = 1
    strategies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metric: str = "accuracy"
    x: str = "ratio"
    group: str = "strategy"
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    plot: str = "line"
    smoke: bool = False
    baseline: str = "simclr"
    probe_every: int | None = None
    trial: str = "mim"
    grounding: Mapping[str, Any] = field(default_factory=dict)
    modes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.modes and "mode" in self.space:
            raise ValueError("sweep.modes (every trial fine-tunes in each mode) and "
                             "sweep.space.mode (one trial per mode) exclude each other; keep one")
        if self.modes and self.trial != "mim":
            raise ValueError(f"sweep.modes needs trial=mim (fine-tuning), got {self.trial!r}")
        if self.plot not in ("line", "bars"):
            raise ValueError(f"sweep.plot must be 'line' or 'bars', got {self.plot!r}")
        for arm, entry in self.methods.items():
            unknown = sorted(set(entry) - set(METHOD_ARM_KEYS))
            if unknown:
                raise ValueError(f"sweep.methods.{arm}: unknown key(s) {unknown}; valid: "
                                 f"{list(METHOD_ARM_KEYS)}")
        if self.trial not in TRIAL_KINDS:
            raise ValueError(f"sweep.trial must be one of {TRIAL_KINDS}, got {self.trial!r}")
        if self.trial == "grounding" and self.scheduler.name != "fifo":
            raise ValueError("a grounding sweep reports once per trial: sweep.scheduler.name "
                             f"must be fifo, got {self.scheduler.name!r}")
        if self.search not in SEARCH_KINDS:
            raise ValueError(f"sweep.search must be one of {SEARCH_KINDS}, got {self.search!r}")
        unknown = sorted(set(self.space) - set(SWEEP_PARAMS))
        if unknown:
            raise ValueError(
                f"unknown sweep parameter(s) {unknown}; valid: {sorted(SWEEP_PARAMS)}")
        if not self.space:
            raise ValueError("sweep.space is empty: name at least one of "
                             f"{sorted(SWEEP_PARAMS)}")
        for key, values in self.space.items():
            _check_values(key, values, self.search)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> SweepSpec:
        """From the plain dict of the Hydra ``sweep`` group (unknown keys are ignored)."""
        scheduler = dict(config.get("scheduler") or {})
        return cls(
            name=str(config["name"]),
            space=dict(config["space"]),
            search=str(config.get("search", "grid")),
            num_samples=int(config.get("num_samples", 1)),
            strategies={k: dict(v or {}) for k, v in (config.get("strategies") or {}).items()},
            metric=str(config.get("metric", "accuracy")),
            x=str(config.get("x", "ratio")),
            group=str(config.get("group", "strategy")),
            scheduler=SchedulerSpec(**scheduler),
            methods={k: dict(v or {}) for k, v in (config.get("methods") or {}).items()},
            plot=str(config.get("plot", "line")),
            smoke=bool(config.get("smoke", False)),
            baseline=str(config.get("baseline", "simclr")),
            probe_every=(None if config.get("probe_every") is None
                         else int(config["probe_every"])),
            trial=str(config.get("trial", "mim")),
            grounding=dict(config.get("grounding") or {}),
            modes=tuple(str(m) for m in (config.get("modes") or ())),
        )


def _check_values(key: str, values: Any, search: str) -> None:
    if isinstance(values, Mapping):
        if search != "random":
            raise ValueError(f"sweep.space.{key}: a range {dict(values)} needs search=random; "
                             "grid search takes a list of values")
        missing = {"low", "high"} - set(values)
        if missing:
            raise ValueError(f"sweep.space.{key}: a range needs low and high, got {dict(values)}")
        return
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"sweep.space.{key} must be a non-empty list of values, got {values!r}")


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's ``param_space``: grid_search lists, or choice/uniform/loguniform for random."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, values in spec.space.items():
        if isinstance(values, Mapping):
            low, high = float(values["low"]), float(values["high"])
            space[key] = tune.loguniform(low, high) if values.get("log") else tune.uniform(
                low, high)
        elif spec.search == "grid":
            space[key] = tune.grid_search(list(values))
        else:
            space[key] = tune.choice(list(values))
    return space


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the listed values (ranges contribute their bounds)."""
    keys = list(spec.space)
    options = [
        [v["low"], v["high"]] if isinstance(v, Mapping) else list(v)
        for v in spec.space.values()
    ]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]


def trial_settings(
    base: MimSettings, params: Mapping[str, Any], strategies: Mapping[str, Any],
    methods: Mapping[str, Mapping[str, Any]] | None = None,
    *, policies: Mapping[str, str] | None = None, require_policy: bool = True,
) -> MimSettings:
    """The base settings with one trial's sweep parameters applied (see :data:`SWEEP_PARAMS`).

    Args:
        policies: the policies the sweep trained itself (:func:`policy_slot` -> ``policy.pt``,
            :func:`medmask.tune.prepare_policies`): a strategy that needs a policy and has no
            ``policy_checkpoint`` takes the one of its slot.
        require_policy: False only where the sweep will train the missing policies (its
            settings validated before they exist).

    Raises:
        ValueError: for an unknown parameter or strategy, a ``random_share`` on a strategy
            without a random share, a strategy that needs a policy without
            ``policy_checkpoint`` (given or trained by the sweep), or several label fractions
            or modes in one trial.
    """
    unknown = sorted(set(params) - set(SWEEP_PARAMS))
    if unknown:
        raise ValueError(f"unknown sweep parameter(s) {unknown}; valid: {sorted(SWEEP_PARAMS)}")
    masking, changes = base.masking, {}
    if "strategy" in params:
        name = str(params["strategy"])
        if name not in strategies:
            raise ValueError(f"unknown strategy {name!r} in the sweep; configured strategies: "
                             f"{sorted(strategies)} (sweep.strategies)")
        masking = replace(masking, name=name, params=copy.deepcopy(dict(strategies[name])))
    if "ratio" in params:
        masking = replace(masking, ratio=float(params["ratio"]))
    if "random_share" in params:
        if not _accepts(masking.name, "random_share"):
            raise ValueError(f"random_share is AHM's p: it needs a strategy with a random "
                             f"share ({AHM}), got strategy={masking.name!r}")
        masking = replace(masking, params={**masking.params,
                                           "random_share": float(params["random_share"])})
    if "patch_size" in params:
        changes["model"] = replace(base.model, params={**base.model.params,
                                                       "patch_size": int(params["patch_size"])})
    if "seed" in params:
        changes["seed"] = int(params["seed"])
    if "method" in params:
        masking, arm_changes = _method_arm(base, str(params["method"]), methods or {}, masking)
        changes.update(arm_changes)
    if "fraction" in params:
        changes["fractions"] = (float(params["fraction"]),)
    if "mode" in params:
        changes["modes"] = (str(params["mode"]),)
    settings = replace(base, masking=masking, **changes)
    if policies is not None and needs_policy(settings):
        settings = _with_trained_policy(settings, policies)
    _check_trial(settings, require_policy)
    return settings


def needs_policy(settings: MimSettings) -> bool:
    """Whether the trial's strategy needs a trained policy and none is named for it."""
    masking = settings.masking
    return ("policy" in strategy_requires(masking.name)
            and not masking.params.get(POLICY_CHECKPOINT))


def policy_reconstruction(settings: MimSettings) -> MimSettings:
    """The trial whose encoder is the frozen reconstruction network of the policy an AHM
    trial needs: the same settings (model, patch grid, data, seed, ratio) pretrained with
    random masks, so that the sweep's own random-mask trial of that seed shares it (the
    pretraining cache). AHM (IEEE TMI), Sec. IV: the reward network is a MIM model
    pretrained with random masking."""
    return replace(settings, masking=MaskingSettings(RANDOM, settings.masking.ratio))


def policy_slot(settings: MimSettings) -> str:
    """What tells apart the policies a sweep trains for its AHM trials: the hash of the
    reconstruction network's pretraining key (seed, ratio, model and its grid, data, code)."""
    return config_hash(pretrain_settings(policy_reconstruction(settings).pretraining()))


def _with_trained_policy(settings: MimSettings, policies: Mapping[str, str]) -> MimSettings:
    slot = policy_slot(settings)
    if slot not in policies:
        raise ValueError(f"no trained policy for the trial's reconstruction network "
                         f"(slot {slot}, seed {settings.seed}, ratio {settings.masking.ratio}); "
                         f"the sweep trained: {sorted(policies)}")
    params = {**settings.masking.params, POLICY_CHECKPOINT: str(policies[slot])}
    return replace(settings, masking=replace(settings.masking, params=params))


def _method_arm(base: MimSettings, arm: str, methods: Mapping[str, Mapping[str, Any]],
                masking: MaskingSettings) -> tuple[MaskingSettings, dict[str, Any]]:
    """The masking and the other changes of one ``sweep.methods`` arm."""
    if arm not in methods:
        raise ValueError(f"unknown method arm {arm!r} in the sweep; configured arms: "
                         f"{sorted(methods)} (sweep.methods)")
    entry = methods[arm]
    changes: dict[str, Any] = {"method": str(entry.get("method", arm)),
                               "method_params": dict(entry.get("params") or {})}
    if entry.get("model"):
        changes["model"] = settings_from_dict(ModelSettings, entry["model"],
                                              f"sweep.methods.{arm}.model")
    if entry.get("masking"):
        masking = settings_from_dict(MaskingSettings, entry["masking"],
                                     f"sweep.methods.{arm}.masking")
    changes["crop"] = (settings_from_dict(CropSettings, entry["crop"], f"sweep.methods.{arm}.crop")
                       if entry.get("crop") else None)
    if entry.get("pretrain_epochs") is not None:
        changes["pretrain"] = replace(base.pretrain, epochs=int(entry["pretrain_epochs"]))
    return masking, changes


def _check_trial(settings: MimSettings, require_policy: bool = True) -> None:
    if len(settings.fractions) != 1:
        raise ValueError(f"a sweep trial fine-tunes one label fraction: set fractions to one "
                         f"value or sweep it, got fractions={list(settings.fractions)}")
    if not settings.modes:
        raise ValueError("a sweep trial fine-tunes in at least one mode: set modes, "
                         "sweep.modes or sweep.space.mode")
    name = settings.masking.name
    if require_policy and needs_policy(settings):
        raise ValueError(f"strategy {name} needs a trained policy: set "
                         f"sweep.strategies.{name}.policy_checkpoint=PATH (saved with "
                         "medmask.rl), or give the sweep policy settings to train one")


def trial_values(settings: MimSettings, arm: str | None = None) -> dict[str, Any]:
    """The values a trial is compared by (the trial table's columns and the run's tags).

    ``method`` is the ``sweep.methods`` arm where the trial has one (``arm``: e.g.
    ``mae_scratch``, the untrained MIM ViT), else the method (``scratch`` at 0 pretraining
    epochs); ``backbone`` the registered model; ``mode`` the modes joined by ``+`` when a trial
    fine-tunes in several (:attr:`SweepSpec.modes`)."""
    masking = settings.masking
    method = SCRATCH if settings.pretrain.epochs == 0 else settings.method
    values = {
        "method": arm if arm is not None else method,
        "backbone": settings.model.name,
        "strategy": masking.name,
        "ratio": float(masking.ratio),
        "fraction": float(settings.fractions[0]),
        "mode": "+".join(settings.modes),
        "seed": int(settings.seed),
        "patch_size": settings.model.params.get("patch_size"),
    }
    if _accepts(masking.name, "random_share"):
        values["random_share"] = float(masking.params.get("random_share", 0.3))
    return values


def _accepts(strategy: str, parameter: str) -> bool:
    """Whether the factory of mask strategy ``strategy`` takes ``parameter``."""
    return parameter in inspect.signature(MASK_STRATEGIES.get(strategy)).parameters


def trial_name(settings: MimSettings, swept: Sequence[str] = (), arm: str | None = None
               ) -> str:
    """``rgmim-r0.75-frac10-s0``; AHM's p and the patch size join when they are swept; a
    method sweep names the trial by its arm (``arm``)."""

    values = trial_values(settings, arm)
    if "method" in swept:
        mode = {"m": values["mode"]} if "mode" in swept else {}
        return run_name(values["method"], fraction=values["fraction"], seed=values["seed"],
                        **mode)
    extra: dict[str, Any] = {}
    if "random_share" in swept:
        extra["p"] = f"{values['random_share']:g}"
    if "patch_size" in swept:
        extra["patch"] = values["patch_size"]
    if "mode" in swept:
        extra["m"] = values["mode"]
    return run_name(values["strategy"], ratio=values["ratio"], fraction=values["fraction"],
                    seed=values["seed"], **extra)


def validate_sweep(base: MimSettings, spec: SweepSpec, *, train_policies: bool = False) -> int:
    """Resolve every grid point before any compute; returns the number of grid points.

    ``train_policies``: the sweep trains the policies its AHM trials lack (given policy
    settings); their values must then be listed (a range has no points to train for).
    """
    points = grid_points(spec)
    for point in points:
        settings = trial_settings(base, point, spec.strategies, spec.methods,
                                  require_policy=not train_policies)
        if train_policies and needs_policy(settings):
            _check_listed(spec)
    return len(points)


def _check_listed(spec: SweepSpec) -> None:
    ranges = sorted(k for k, v in spec.space.items() if isinstance(v, Mapping))
    if ranges:
        raise ValueError(f"the sweep trains one AHM policy per reconstruction network before "
                         f"its trials: sweep.space.{ranges[0]} must list its values, got a "
                         f"range {dict(spec.space[ranges[0]])} (or give "
                         "sweep.strategies.ahm.policy_checkpoint=PATH)")
