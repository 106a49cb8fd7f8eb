"""How the per-patch rewards reach the learner: a Learner connector reading the episodes' infos.

The AHM environment returns r_i (AHM eq. 7) in ``info[PATCH_REWARDS]`` of every step; RLlib
stores infos in the episode aligned with the observations (info 0 comes from ``reset``, info
t + 1 from the step that took action t). This piece adds a ``PATCH_REWARDS`` column [B, N]
aligned with the REWARDS column: row t gets info t + 1.

It runs after APPO/IMPALA's ``AddOneTsToEpisodesAndTruncate`` (which RLlib prepends to every
Learner pipeline and which duplicates each episode's last observation and info, with
``loss_mask`` False), so the appended bootstrap row gets a copy of the last real row's rewards
and is masked out of the loss.

:class:`MarkAutoresetSteps` is an env-to-module piece for the EnvRunner: with gymnasium's
NEXT_STEP autoreset (the AHM vector env) every single-decision episode costs two env steps, and
RLlib's ``SingleAgentEnvRunner`` runs the RLModule before both, although the env ignores the
action of the autoreset step and the runner stores nothing of it (the new episode starts with
``add_env_reset``). The piece marks those rows (``ACTION_USED`` False) so that
:class:`~medmask.rl.AHMPolicyModule` skips their forward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2

from medmask import columns as C


class AddPatchRewardsFromInfos(ConnectorV2):
    """Adds the per-patch rewards column ``PATCH_REWARDS`` ([B, N] float32) to the batch."""

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[Any],
        explore: bool | None = None,
        shared_data: dict | None = None,
        **kwargs: Any,
    ) -> Any:
        if C.PATCH_REWARDS in batch:
            return batch
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            steps = len(episode)
            if steps == 0:
                continue
            infos = episode.get_infos(slice(1, steps + 1))
            missing = [t for t, info in enumerate(infos) if C.PATCH_REWARDS not in info]
            if missing:
                raise ValueError(
                    f"episode {episode.id_}: the infos of steps {missing} carry no "
                    f"{C.PATCH_REWARDS!r}; the AHM learner needs the environment's per-patch "
                    "rewards (envs.ahm_masking)"
                )
            rows = np.stack([np.asarray(info[C.PATCH_REWARDS], np.float32) for info in infos])
            self.add_n_batch_items(
                batch, C.PATCH_REWARDS, items_to_add=rows, num_items=steps,
                single_agent_episode=episode,
            )
        return batch


class MarkAutoresetSteps(ConnectorV2):
    """Adds ``ACTION_USED`` (bool [B]) to the env-to-module batch: False for a done episode.

    A done episode's next env step is gymnasium's NEXT_STEP autoreset: the env ignores the
    action, and the EnvRunner records neither it nor its model outputs. The module may put
    anything in those rows (:class:`~medmask.rl.AHMPolicyModule` gives zero logits).
    """

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[Any],
        explore: bool | None = None,
        shared_data: dict | None = None,
        **kwargs: Any,
    ) -> Any:
        if C.ACTION_USED in batch:
            return batch
        # the same episodes, in the same order, as RLlib's AddObservationsFromEpisodesToBatch
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=True):
            self.add_batch_item(batch, C.ACTION_USED, item_to_add=np.bool_(not episode.is_done),
                                single_agent_episode=episode)
        return batch
