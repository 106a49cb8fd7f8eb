"""The RLlib APPO configuration of the AHM policy, built from plain parameters.

Source: AHM section V-B ("Adam, learning rate 3e-4, dropped by a factor of 0.9 every 25
epochs, batch size 4, at most 200 epochs"). RLlib's APPO (new API stack) is the asynchronous
actor-critic here: ``num_env_runners`` EnvRunners sample in parallel (A3C's workers), each
running ``num_envs_per_env_runner`` environments as ONE batched vector env (the reconstruction
network scores all of them in one forward).

An "epoch" is one pass over the image pool: ``images_per_epoch`` images. The schedules run on
TRAINED images (:class:`~medmask.rl._learner.AHMLearner` hands RLlib's schedulers that count
instead of sampled env steps, which APPO may drop or reuse), so the paper's step decay is a
piecewise schedule with a drop every ``25 * images_per_epoch`` trained images.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from medmask.rl._connector import AddPatchRewardsFromInfos, MarkAutoresetSteps
from medmask.rl._learner import AHMLearner, check_credit
from medmask.rl._module import AHMPolicyModule, MaskingPolicyNet


def step_decay_schedule(
    lr: float, decay: float, every_steps: int, max_steps: int
) -> list[list[float]]:
    """A piecewise-constant RLlib schedule: ``lr * decay ** k`` from step ``k * every_steps``.

    RLlib interpolates linearly between points, so each drop is a pair of points one env step
    apart. Ends at ``max_steps`` (AHM: 200 epochs).
    """
    if lr <= 0 or not 0 < decay <= 1 or every_steps < 1 or max_steps < 1:
        raise ValueError(
            f"need lr > 0, 0 < decay <= 1, every_steps >= 1, max_steps >= 1; got {lr}, "
            f"{decay}, {every_steps}, {max_steps}"
        )
    points: list[list[float]] = [[0, lr]]
    k = 1
    while k * every_steps <= max_steps:
        points += [[k * every_steps - 1, lr * decay ** (k - 1)], [k * every_steps, lr * decay**k]]
        k += 1
    if len(points) == 1:
        points.append([max_steps, lr])
    return points


def ahm_appo_config(
    env: Any,
    env_config: dict[str, Any],
    *,
    num_env_runners: int = 2,
    num_envs_per_env_runner: int = 4,
    num_cpus_per_env_runner: float = 0.5,
    train_batch_size: int = 4,
    lr: float = 3e-4,
    lr_decay: float = 0.9,
    lr_decay_every_epochs: int = 25,
    max_epochs: int = 200,
    images_per_epoch: int = 256,
    mask_ratio: float = 0.75,
    random_share: float = 0.3,
    credit: str = "myopic",
    channels: int = 16,
    head_depth: int = 3,
    trunk: str = "conv",
    patch_size: int | None = None,
    vf_loss_coeff: float = 1.0,
    entropy_coeff: float = 0.0,
    clip_param: float = 0.4,
    use_kl_loss: bool = False,
    grad_clip: float | None = 40.0,
    min_time_s_per_iteration: float = 1.0,
    seed: int | None = None,
) -> APPOConfig:
    """APPO with the AHM module, learner and per-patch reward connector.

    Args:
        env: the registered env id (``envs.ENV_ID``) or an env creator callable.
        env_config: the environment's parameters (reconstruction network, images, ...);
            ``mask_ratio`` is set from ``mask_ratio`` (the action's length follows it).
        num_env_runners: asynchronous EnvRunner actors (0 = sample on the driver).
        num_envs_per_env_runner: environments per EnvRunner, scored in one batched forward.
        num_cpus_per_env_runner: CPUs reserved per EnvRunner (0.5 lets 2 fit beside the
            driver's learner on 2 CPUs).
        train_batch_size: images (episodes) per update; the paper's batch is 4.
        lr, lr_decay, lr_decay_every_epochs, max_epochs, images_per_epoch: the paper's
            Adam schedule (see module docstring).
        mask_ratio, random_share: the action sampler (AHM: 0.75 and p = 0.3).
        credit: ``"myopic"`` or ``"to_go"`` (``medmask.rl._learner`` derives both).
        channels, head_depth, trunk, patch_size: the network (AHM Table III; tiny widths).
        vf_loss_coeff: weight of the value loss (1 = eq. 12's plain sum).
        entropy_coeff: per-pick entropy bonus (0 in the paper).
        clip_param: APPO's per-pick surrogate clip.
        use_kl_loss: APPO's KL penalty to the target network (per pick, averaged).
        grad_clip: global-norm gradient clip (None = off).
        min_time_s_per_iteration: lower bound of one ``algo.train()`` (RLlib default 10 s).
        seed: RLlib's seed for EnvRunners and the learner.
    """
    step = max(int(images_per_epoch), 1)
    schedule = step_decay_schedule(
        lr, lr_decay, lr_decay_every_epochs * step, max(max_epochs, 1) * step
    )
    model_config = {
        "channels": channels,
        "head_depth": head_depth,
        "trunk": trunk,
        "patch_size": patch_size,
        "mask_ratio": mask_ratio,
        "random_share": random_share,
    }
    check_credit(credit)
    return (
        APPOConfig()
        .framework("torch")
        # MultiDiscrete patch indices: nothing to unsquash or clip (RLlib would copy them per
        # step to find that out)
        .environment(env, env_config={**env_config, "mask_ratio": mask_ratio},
                     normalize_actions=False, clip_actions=False)
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            gym_env_vectorize_mode="vector_entry_point",
            num_cpus_per_env_runner=num_cpus_per_env_runner,
            rollout_fragment_length=1,  # every episode is one step
            # Ray 2.60: with APPO's default pull-based EnvRunnerStateServer the remote
            # EnvRunners returned no samples here (seen on 2 CPUs); push-based sync works.
            use_env_runner_state_server=False,
            # the policy forward before each NEXT_STEP autoreset step is skipped (half of
            # the EnvRunner's policy forwards: every episode is one decision)
            env_to_module_connector=lambda env, spaces, device: [MarkAutoresetSteps()],
        )
        .learners(
            num_learners=0,
            learner_class=AHMLearner,
            learner_connector=lambda obs_space, act_space: [AddPatchRewardsFromInfos()],
            learner_config_dict={"credit": credit},
        )
        .rl_module(rl_module_spec=RLModuleSpec(module_class=AHMPolicyModule,
                                               model_config=model_config))
        .training(
            lr=schedule,
            train_batch_size_per_learner=train_batch_size,
            vf_loss_coeff=vf_loss_coeff,
            entropy_coeff=entropy_coeff,
            clip_param=clip_param,
            use_kl_loss=use_kl_loss,
            grad_clip=grad_clip,
            gamma=0.0,  # single-step episodes: nothing to discount
        )
        .callbacks(on_environment_created=functools.partial(
            shard_image_pool, seed=0 if seed is None else int(seed)))
        .reporting(min_time_s_per_iteration=min_time_s_per_iteration)
        .debugging(seed=seed)
    )


def shard_image_pool(*, env_runner: Any, env: Any, env_context: Any, seed: int = 0,
                     **kwargs: Any) -> None:
    """RLlib's ``on_environment_created``: EnvRunner w (1..n) walks shard w - 1 of n of the
    pool, a new permutation per epoch seeded by (seed, epoch, runner): disjoint shards, every
    image once per epoch, as the paper counts epochs. The driver's local runner (w = 0, which
    samples only without remote runners) walks shard 0 of 1."""
    count = max(int(getattr(env_context, "num_workers", 0) or 0), 1)
    index = max(int(getattr(env_context, "worker_index", 0) or 0) - 1, 0)
    if int(getattr(env_context, "worker_index", 0) or 0) == 0:
        index, count = 0, 1
    target = getattr(env, "unwrapped", env)
    for candidate in (env, getattr(env, "env", None), target):
        if hasattr(candidate, "set_shard"):
            candidate.set_shard(index, count, seed)
            return


def trained_policy_net(algo: Algorithm, module_id: str = DEFAULT_MODULE_ID) -> MaskingPolicyNet:
    """A CPU copy (eval mode) of the learner's current policy network.

    Read it from the learner, not ``algo.get_module()``: APPO does not sync the driver's local
    EnvRunner, whose module keeps its initial weights. Save it with ``net.config`` and
    ``net.state_dict()``; the ``ahm`` mask strategy takes it as ``policy``.
    """
    results = algo.learner_group.foreach_learner(
        lambda learner: copy.deepcopy(learner.module[module_id].unwrapped().net).cpu().eval()
    )
    return next(iter(results)).get()
