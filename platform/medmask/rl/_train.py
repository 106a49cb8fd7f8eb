"""Training the AHM masking policy with RLlib, and checking that it learned its job.

:func:`train_policy` runs ``algo.train()`` until the paper's epoch budget (AHM V-B: at most 200
epochs; one epoch = ``images_per_epoch`` single-step episodes), an iteration cap or a time
budget, whichever comes first, handing every iteration's metrics (CleanRL-style names:
``charts/*``, ``losses/*``, ``charts/SPS``) to a callback (MLflow logging in the pipeline). The
algorithm is checkpointed every few iterations and a re-run continues from the last one.

:func:`policy_vs_random` is the policy's acceptance test: the mean reconstruction loss over the
masked patches of held-out images under policy masks vs random masks at the same ratio.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medmask.console import route_rllib_chatter
from medmask.masking import create_mask_strategy
from medmask.models import masked_mean_loss
from medmask.rl._config import trained_policy_net
from medmask.rl._module import MaskingPolicyNet
from medmask.rl._numerics import NonFiniteError, check_finite, check_finite_metrics

LEARNER_METRICS = {  # RLlib learner key -> logged name
    "policy_loss": "losses/policy_loss",
    "vf_loss": "losses/value_loss",
    "entropy": "losses/entropy",
    "mean_pick_loss": "charts/mean_pick_loss",
    "mean_pick_value": "charts/mean_pick_value",
    "mean_kl_loss": "losses/kl",
    "log_rho_mean": "charts/log_rho_mean",
    "log_rho_std": "charts/log_rho_std",
    "log_rho_product": "charts/log_rho_product",
    "gradients_default_optimizer_global_norm": "losses/grad_norm",
    "num_module_steps_trained": "charts/module_steps_trained",
}
TRAINED = "charts/module_steps_trained"
UPDATES = "charts/updates"  # trained updates so far (lifetime)
REWARD = "charts/mean_reward"
SPS = "charts/SPS"
ENV_STEPS = "charts/env_steps"
ALGO_DIR = "algo"
# Logged quantities that must be finite in an iteration that trained (RLlib reports NaN for the
# learner's metrics of an iteration without an update, and for the reward of one without an
# episode); inf is an error always.
MUST_BE_FINITE = ("losses/policy_loss", "losses/value_loss", "losses/entropy",
                  "losses/grad_norm", "charts/mean_pick_loss")


@dataclass(frozen=True)
class PolicyBudget:
    """When policy training stops: the first of the epoch cap, updates, iterations or time.

    Attributes:
        max_epochs: AHM's cap (200); one epoch = ``images_per_epoch`` env steps.
        images_per_epoch: env steps (images) per epoch.
        max_updates: cap on trained updates (trained steps / train batch; None = no cap):
            APPO drops or reuses sampled batches, so only this fixes how much was learned.
        max_iterations: cap on ``algo.train()`` calls (None = no cap).
        time_budget_s: wall-clock cap in seconds (None = no cap).
        checkpoint_every: iterations between algorithm checkpoints (0 = none).
    """

    max_epochs: int = 200
    images_per_epoch: int = 256
    max_updates: int | None = None
    max_iterations: int | None = None
    time_budget_s: float | None = None
    checkpoint_every: int = 10

    @property
    def max_env_steps(self) -> int:
        return int(self.max_epochs) * int(self.images_per_epoch)


def _count(value: Any) -> int | None:
    """A step count as an int, or None when missing, NaN or inf (RLlib reports NaN for
    counters of an iteration that sampled nothing)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def iteration_metrics(result: dict[str, Any], seconds: float, previous_steps: int
                      ) -> tuple[dict[str, float], int]:
    """The logged metrics of one ``algo.train()`` result and the lifetime env-step count.

    Tolerates iterations that sampled nothing: a missing or NaN ``num_env_steps_sampled``
    falls back to the lifetime counter's increase, then to 0; a missing episode mean is NaN
    (the tracker counts NaN metrics in a tag instead of logging them).
    """
    runners = result.get("env_runners", {}) or {}
    learner = (result.get("learners", {}) or {}).get("default_policy", {}) or {}
    # Count this iteration's steps (a restored algorithm may restart its lifetime counters).
    sampled = _count(runners.get("num_env_steps_sampled"))
    if sampled is None:
        lifetime = _count(runners.get("num_env_steps_sampled_lifetime"))
        sampled = max(lifetime - previous_steps, 0) if lifetime is not None else 0
    steps = previous_steps + max(sampled, 0)
    reward = runners.get("episode_return_mean")
    metrics: dict[str, Any] = {
        REWARD: math.nan if reward is None else reward, ENV_STEPS: steps,
        SPS: (steps - previous_steps) / max(seconds, 1e-9)}
    metrics.update({name: learner[key] for key, name in LEARNER_METRICS.items() if key in learner})
    return {k: float(v) for k, v in metrics.items() if v is not None}, steps


def check_iteration(metrics: dict[str, float], iteration: int, sampled: int) -> None:
    """Raise :class:`NonFiniteError` naming the iteration and the quantity that is NaN/inf.

    NaN is tolerated where RLlib has nothing to report: learner metrics of an iteration that
    trained no step, the reward of one that sampled none.
    """
    where = f"policy training, iteration {iteration}"
    trained = metrics.get(TRAINED, math.nan)
    if math.isfinite(trained) and trained > 0:
        check_finite_metrics(metrics, MUST_BE_FINITE, where)
    for name in MUST_BE_FINITE:
        if math.isinf(metrics.get(name, 0.0)):
            check_finite(name, metrics[name], where)
    reward = metrics.get(REWARD, math.nan)
    if math.isinf(reward) or (sampled > 0 and math.isnan(reward)):
        check_finite(REWARD, reward, where)


def train_policy(
    algo_config: Any,
    budget: PolicyBudget,
    *,
    checkpoint_dir: str | Path | None = None,
    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> tuple[MaskingPolicyNet, pd.DataFrame]:
    """Train the AHM policy; returns the trained network (CPU, eval mode) and the history.

    Args:
        algo_config: an ``APPOConfig`` (:func:`medmask.rl.ahm_appo_config`).
        budget: when to stop (:class:`PolicyBudget`).
        checkpoint_dir: where the algorithm is checkpointed every ``budget.checkpoint_every``
            iterations (and restored from on a re-run; the history continues too).
        on_iteration: called with (iteration, metrics) after every iteration.
        progress: show a tqdm bar over env steps.
    """
    from tqdm.auto import tqdm

    route_rllib_chatter()  # RLlib's console handler exists now (MEDMASK_VERBOSE=1: a no-op)
    algo = algo_config.build_algo()
    history: list[dict[str, float]] = []
    algo_dir = Path(checkpoint_dir) / ALGO_DIR if checkpoint_dir else None
    if algo_dir is not None and (algo_dir / "history.csv").is_file():
        algo.restore_from_path(str(algo_dir))
        history = pd.read_csv(algo_dir / "history.csv").to_dict("records")
    steps = int(history[-1][ENV_STEPS]) if history else 0
    updates = float(history[-1].get(UPDATES, 0.0)) if history else 0.0
    batch_size = max(int(getattr(algo_config, "train_batch_size_per_learner", None) or 1), 1)
    if updates:  # the lr schedule's clock (trained images) goes on where it stopped
        _set_trained_images(algo, int(updates * batch_size))
    start = time.perf_counter()
    bar = tqdm(total=budget.max_env_steps, initial=steps, desc="AHM policy", unit="img",
               disable=not progress)
    try:
        while steps < budget.max_env_steps:
            if budget.max_iterations is not None and len(history) >= budget.max_iterations:
                break
            if budget.max_updates is not None and updates >= budget.max_updates:
                break
            if budget.time_budget_s is not None and (
                    time.perf_counter() - start >= budget.time_budget_s):
                break
            tick = time.perf_counter()
            try:
                result = algo.train()
            except NonFiniteError as error:
                raise NonFiniteError(f"iteration {len(history)}: {error}") from error
            except Exception as error:  # a remote EnvRunner's FloatingPointError (NaN reward)
                cause = getattr(error, "cause", None)
                if isinstance(cause, FloatingPointError):
                    raise NonFiniteError(f"iteration {len(history)}: {cause}") from error
                raise
            metrics, new_steps = iteration_metrics(result, time.perf_counter() - tick, steps)
            check_iteration(metrics, len(history), new_steps - steps)
            bar.update(new_steps - steps)
            steps = new_steps
            trained = metrics.get(TRAINED, math.nan)
            updates += trained / batch_size if math.isfinite(trained) else 0.0
            metrics[UPDATES] = updates
            metrics["iteration"] = len(history)
            history.append(metrics)
            if on_iteration is not None:
                on_iteration(len(history) - 1, metrics)
            if algo_dir is not None and budget.checkpoint_every and (
                    len(history) % budget.checkpoint_every == 0):
                _checkpoint(algo, algo_dir, history)
        net = trained_policy_net(algo)
    finally:
        bar.close()
        algo.stop()
    return net, pd.DataFrame(history)


def _set_trained_images(algo: Any, images: int) -> None:
    def set_clock(learner: Any) -> None:
        learner.trained_images = images

    algo.learner_group.foreach_learner(set_clock)


def _checkpoint(algo: Any, algo_dir: Path, history: list[dict[str, float]]) -> None:
    """Save the algorithm, then the history (its presence marks a complete checkpoint)."""
    tmp = algo_dir.with_name(algo_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp))
    pd.DataFrame(history).to_csv(tmp / "history.csv", index=False)
    shutil.rmtree(algo_dir, ignore_errors=True)
    tmp.rename(algo_dir)


@torch.no_grad()
def policy_vs_random(
    policy: torch.nn.Module,
    reconstruction: torch.nn.Module,
    images: np.ndarray,
    *,
    ratio: float = 0.75,
    random_share: float = 0.3,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """Mean reconstruction loss over the masked patches: policy masks vs random masks.

    Both mask exactly floor(ratio * N) patches per image with the frozen ``reconstruction``
    network; the policy's masks come from the ``ahm`` strategy (share ``random_share`` random,
    the rest sampled by the policy). A policy that learned its job finds harder patches:
    ``policy_mask_recon_loss > random_mask_recon_loss``.

    Returns:
        ``{"policy_mask_recon_loss", "random_mask_recon_loss", "hard_vs_random_ratio"}``.
    """

    reconstruction = reconstruction.eval()
    strategies = {
        "policy": create_mask_strategy("ahm", policy=policy, random_share=random_share),
        "random": create_mask_strategy("random"),
    }
    x = torch.as_tensor(np.asarray(images, np.float32))
    if x.ndim == 3:
        x = x[:, None]
    sums = {name: 0.0 for name in strategies}
    generator = torch.Generator().manual_seed(seed)
    for begin in range(0, len(x), batch_size):
        chunk = x[begin:begin + batch_size]
        for name, strategy in strategies.items():
            mask = strategy({"image": chunk}, reconstruction.grid, ratio, generator=generator)
            loss = masked_mean_loss(reconstruction(chunk, mask).patch_loss, mask)
            sums[name] += float(loss) * len(chunk)
    result = {f"{name}_mask_recon_loss": total / len(x) for name, total in sums.items()}
    result["hard_vs_random_ratio"] = (result["policy_mask_recon_loss"]
                                      / max(result["random_mask_recon_loss"], 1e-12))
    return result
