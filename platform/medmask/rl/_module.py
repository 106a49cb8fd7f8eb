"""The adaptive hard masking network (AHM Table III) as an RLlib RLModule.

Source: AHM section IV-A and Table III. A feature extraction network (conv + norm + ReLU; an
input layer, log2(P) stride-2 downsampling layers to the patch grid's resolution, an output
layer; a VGG16 trunk by config) feeds two heads of the same shape: the policy head (3 x
conv-norm-ReLU, a conv to one channel: the logit z_i of the Plackett-Luce draw,
:mod:`medmask.rl._distribution`) and the value head (3 x conv-norm-ReLU, a conv: V_i, the
reconstruction loss patch i would have if masked, AHM Fig. 8's predicted loss). Every patch is
an agent and all agents share these parameters (section IV-B).

Normalization is GroupNorm (the paper's BatchNorm has two modes: EnvRunners would compute the
behaviour policy in eval mode and the learner the current and target policies with batch
statistics over a few images, so importance ratios would differ from 1 even on-policy).
GroupNorm has one mode: behaviour, current and target policies compute the same function.

:class:`MaskingPolicyNet` is the plain torch network (what a pretraining run loads for the
``ahm`` mask strategy); :class:`AHMPolicyModule` wraps it for RLlib (``ValueFunctionAPI`` and
``TargetNetworkAPI`` for APPO).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import (
    TARGET_NETWORK_ACTION_DIST_INPUTS,
    TargetNetworkAPI,
    ValueFunctionAPI,
)
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from medmask import columns as C
from medmask.masking import PatchGrid, num_masked
from medmask.rl._distribution import PlackettLuceMask, mask_distribution

TRUNKS = ("conv", "vgg16")


def norm_groups(channels: int) -> int:
    """GroupNorm groups for ``channels``: the largest of 8, 4, 2, 1 that divides it."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def conv_norm_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Conv2d(3x3) + GroupNorm + ReLU, the unit of every layer of AHM Table III (module
    docstring: GroupNorm in place of BatchNorm, one mode everywhere)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(norm_groups(out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


def downsampling_stages(grid: PatchGrid) -> tuple[int, bool]:
    """(number of stride-2 stages, whether adaptive pooling must finish the job).

    Square power-of-two patches tiling the image exactly (16 px -> four stages, the paper's
    setting) need no pooling; other grids (odd sizes, non-square patches, a patch count) take
    floor(log2(min patch side)) stages and then adaptive average pooling to rows x cols.
    """
    side = min(grid.patch_h, grid.patch_w)
    stages = int(math.floor(math.log2(side))) if side > 1 else 0
    exact = (
        grid.patch_h == grid.patch_w == 2**stages
        and grid.is_full
        and grid.rows * grid.patch_h == grid.height
        and grid.cols * grid.patch_w == grid.width
    )
    return stages, not exact


class MaskingPolicyNet(nn.Module):
    """Feature extractor + policy head + value head, one output per patch of ``grid``.

    Args:
        in_chans: image channels C.
        grid: the consumer model's patch grid (the action has one entry per patch).
        channels: width c of every layer (AHM Table III's c; tiny by default for CPUs).
        head_depth: conv-BN-ReLU layers per head (3 in the paper).
        trunk: ``"conv"`` (Table III) or ``"vgg16"`` (torchvision's VGG16 feature layers,
            random init, cut after log2(P) pools, then conv-BN-ReLU to ``channels``).
    """

    def __init__(
        self,
        in_chans: int,
        grid: PatchGrid,
        channels: int = 16,
        head_depth: int = 3,
        trunk: str = "conv",
    ) -> None:
        super().__init__()
        if trunk not in TRUNKS:
            raise ValueError(f"trunk must be one of {TRUNKS}, got {trunk!r}")
        if channels < 1 or head_depth < 0:
            raise ValueError(f"channels must be >= 1 and head_depth >= 0, got {channels}, "
                             f"{head_depth}")
        self.grid, self.in_chans = grid, in_chans
        self.config = {  # plain values: rebuild with MaskingPolicyNet.from_config(config)
            "in_chans": in_chans, "height": grid.height, "width": grid.width,
            "patch_size": grid.patch_size,
            "num_patches": None if grid.patch_size else grid.num_patches,
            "channels": channels, "head_depth": head_depth, "trunk": trunk,
        }
        stages, self._pool = downsampling_stages(grid)
        self._pool = self._pool or (trunk == "vgg16" and stages > 5)  # VGG16 has 5 pools
        self.trunk = (
            self._conv_trunk(in_chans, channels, stages)
            if trunk == "conv"
            else self._vgg16_trunk(in_chans, channels, stages)
        )
        self.policy_head = self._head(channels, head_depth)
        self.value_head = self._head(channels, head_depth)
        # channels-last weights make every activation channels-last (the same function):
        # oneDNN's NCHW kernels for the full-resolution input layer ran 1.3x slower per forward
        self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MaskingPolicyNet:
        """The network described by :attr:`config` (e.g. saved beside a state dict)."""
        cfg = dict(config)
        grid = PatchGrid(cfg.pop("height"), cfg.pop("width"), patch_size=cfg.pop("patch_size"),
                         num_patches=cfg.pop("num_patches"))
        return cls(cfg.pop("in_chans"), grid, **cfg)

    @staticmethod
    def _conv_trunk(in_chans: int, channels: int, stages: int) -> nn.Sequential:
        layers = [conv_norm_relu(in_chans, channels)]  # input layer
        layers += [conv_norm_relu(channels, channels, stride=2) for _ in range(stages)]
        layers.append(conv_norm_relu(channels, channels))  # output layer
        return nn.Sequential(*layers)

    @staticmethod
    def _vgg16_trunk(in_chans: int, channels: int, stages: int) -> nn.Sequential:
        from torchvision.models.vgg import cfgs, make_layers  # VGG16 = config "D"

        body, pools = [], 0
        for layer in make_layers(cfgs["D"]):  # random init, no classifier; up to pool #stages
            if pools == min(stages, 5):
                break
            body.append(layer)
            pools += isinstance(layer, nn.MaxPool2d)
        out_in = [m.out_channels for m in body if isinstance(m, nn.Conv2d)][-1] if body else 3
        first = nn.Conv2d(in_chans, 3, 1) if in_chans != 3 else nn.Identity()
        return nn.Sequential(first, *body, conv_norm_relu(out_in, channels))

    @staticmethod
    def _head(channels: int, depth: int) -> nn.Sequential:
        """conv-norm-ReLU x depth, then a 1x1 conv to one channel that starts at zero.

        Zero-initialized output: equal logits (a uniform first draw) and V = 0 on every patch
        at the start; a default init puts V around 0.1-0.5 while per-patch L2 losses are
        ~1e-2, and the critic would need many updates to come down.
        """
        layers = [conv_norm_relu(channels, channels) for _ in range(depth)]
        out = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        return nn.Sequential(*layers, out)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] -> features [B, c, rows, cols] on the patch grid."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (
            self.in_chans, self.grid.height, self.grid.width
        ):
            raise ValueError(
                f"images must be [B, {self.in_chans}, {self.grid.height}, {self.grid.width}], "
                f"got {tuple(images.shape)}"
            )
        out = self.trunk(images)
        if self._pool:
            out = nn.functional.adaptive_avg_pool2d(out, self.grid.shape)
        return out

    def _per_patch(self, head: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return head(features).flatten(1)[:, : self.grid.num_patches]

    def policy_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Per-patch logits z [B, N] of the Plackett-Luce draw (weights exp(z))."""
        return self._per_patch(self.policy_head, features)

    def patch_values(self, features: torch.Tensor) -> torch.Tensor:
        """V_i, the predicted masked reconstruction loss of every patch, [B, N]."""
        return self._per_patch(self.value_head, features)

    def masking_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits z [B, N] on images [B, C, H, W] (what the ``ahm`` mask strategy draws on)."""
        return self.policy_logits(self.features(images))

    def predicted_loss(self, images: torch.Tensor) -> torch.Tensor:
        """V [B, N] on images: the value head's per-patch masked-loss prediction."""
        return self.patch_values(self.features(images))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy logits [B, N], values [B, N])."""
        feats = self.features(images)
        return self.policy_logits(feats), self.patch_values(feats)


class AHMPolicyModule(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI):
    """RLlib wrapper of :class:`MaskingPolicyNet` for APPO/IMPALA on the AHM environment.

    ``model_config`` keys (all optional): ``channels`` (16), ``head_depth`` (3), ``trunk``
    (``"conv"``), ``patch_size`` (else the grid is laid out from the action's patch count),
    ``mask_ratio`` (0.75) and ``random_share`` (0.3) of the action sampler. The action space
    is ``MultiDiscrete([N] * k)``, ``k = floor(mask_ratio * N)`` (the ordered draw).

    Outputs: ``ACTION_DIST_INPUTS`` = per-patch logits [B, N] (the sampler and the log-probs
    of :class:`~medmask.rl._distribution.PlackettLuceMask`); ``EMBEDDINGS`` = trunk features,
    reused by the value head in the loss. :meth:`compute_values` gives the mean over patches
    [B] (the value of RLlib's scalar reward), :meth:`compute_patch_values` the per-patch [B, N]
    that the AHM loss uses.
    """

    def setup(self) -> None:
        cfg = dict(self.model_config or {})
        chans, height, width = self.observation_space.shape
        if not isinstance(self.action_space, gym.spaces.MultiDiscrete):
            raise ValueError(f"the AHM module needs a MultiDiscrete([N] * k) action space (the "
                             f"ordered draw), got {self.action_space}")
        nvec = np.asarray(self.action_space.nvec).reshape(-1)
        n, k = int(nvec[0]), len(nvec)
        patch_size = cfg.get("patch_size")
        grid = (
            PatchGrid(height, width, patch_size=int(patch_size))
            if patch_size
            else PatchGrid(height, width, num_patches=n)
        )
        if grid.num_patches != n:
            raise ValueError(f"{grid} has {grid.num_patches} patches, the action space has {n}")
        self.mask_ratio = float(cfg.get("mask_ratio", 0.75))
        self.random_share = float(cfg.get("random_share", 0.3))
        if "weighting" in cfg:
            raise ValueError("the AHM policy has no 'weighting' option any more: the draw is "
                             "Plackett-Luce on the logits (weights exp(z))")
        if num_masked(n, self.mask_ratio) != k:
            raise ValueError(f"the action has {k} picks but floor({self.mask_ratio} * {n}) = "
                             f"{num_masked(n, self.mask_ratio)}: env and module disagree on "
                             "the mask ratio")
        self._dist_cls = mask_distribution(self.mask_ratio, self.random_share)
        self.net = MaskingPolicyNet(
            chans, grid, channels=int(cfg.get("channels", 16)),
            head_depth=int(cfg.get("head_depth", 3)), trunk=str(cfg.get("trunk", "conv")),
        )
        if self.inference_only:  # an EnvRunner's copy: never trained (see :meth:`train`)
            self.eval()

    # -- forward passes -------------------------------------------------------------------
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Policy logits [B, N] of the EnvRunner's (and inference) forward passes.

        Rows with ``ACTION_USED`` False (:class:`~medmask.rl._connector.MarkAutoresetSteps`:
        the env's next step is an autoreset that ignores the action, and the EnvRunner stores
        nothing of it) get zero logits without running the network; when no row is used (the
        AHM vector env's sub-envs act in step), placeholder actions (patches 0..k-1) and
        log-probs (0) come too, so that RLlib's ``GetActions`` draws nothing. A batch without
        the column computes every row.
        """
        obs = batch[Columns.OBS]
        used = batch.get(C.ACTION_USED)
        if used is None or bool(used.all()):
            return {Columns.ACTION_DIST_INPUTS: self.net.masking_logits(obs)}
        used = torch.as_tensor(used, dtype=torch.bool, device=obs.device)
        logits = obs.new_zeros((len(obs), self.net.grid.num_patches))
        if bool(used.any()):
            logits[used] = self.net.masking_logits(obs[used])
            return {Columns.ACTION_DIST_INPUTS: logits}
        count = num_masked(self.net.grid.num_patches, self.mask_ratio)
        return {
            Columns.ACTION_DIST_INPUTS: logits,
            Columns.ACTIONS: torch.arange(count, device=obs.device).expand(len(obs), count),
            Columns.ACTION_LOGP: obs.new_zeros(len(obs)),
        }

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        feats = self.net.features(batch[Columns.OBS])
        return {
            Columns.ACTION_DIST_INPUTS: self.net.policy_logits(feats),
            Columns.EMBEDDINGS: feats,
        }

    def masking_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits z [B, N] (what the ``ahm`` mask strategy draws on)."""
        return self.net.masking_logits(images)

    def train(self, mode: bool = True) -> AHMPolicyModule:
        """``nn.Module.train``, a no-op when the module is already in ``mode``.

        RLlib's ``forward_exploration`` / ``forward_inference`` call ``eval()`` (and
        ``train()`` after, when the module was training) on every EnvRunner forward: walks
        over the network's ~50 submodules each time. An EnvRunner's (inference-only) module
        starts in eval mode (:meth:`setup`) and keeps it. The modes are switched only here,
        as a whole, and no layer of the network depends on them (GroupNorm, no dropout).
        """
        if bool(mode) == self.training:
            return self
        return super().train(mode)

    # -- ValueFunctionAPI -----------------------------------------------------------------
    def compute_patch_values(
        self, batch: dict[str, Any], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """V(s_i) per patch, [B, N] (AHM eq. 8's V(s))."""
        feats = self.net.features(batch[Columns.OBS]) if embeddings is None else embeddings
        return self.net.patch_values(feats)

    def compute_values(
        self, batch: dict[str, Any], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean of the per-patch values, [B]: the value of the scalar reward r."""
        return self.compute_patch_values(batch, embeddings).mean(dim=-1)

    # -- TargetNetworkAPI (APPO) ----------------------------------------------------------
    def make_target_networks(self) -> None:
        self._target_net = make_target_network(self.net)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.net, self._target_net)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        feats = self._target_net.features(batch[Columns.OBS])
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self._target_net.policy_logits(feats)}

    # -- action distributions -------------------------------------------------------------
    def get_inference_action_dist_cls(self) -> type[PlackettLuceMask]:
        return self._dist_cls

    def get_exploration_action_dist_cls(self) -> type[PlackettLuceMask]:
        return self._dist_cls

    def get_train_action_dist_cls(self) -> type[PlackettLuceMask]:
        return self._dist_cls
