"""The AHM masking environment: one image in, an ordered patch draw out, masked losses back.

Source: AHM (IEEE TMI), sections III-IV and Algorithm 1, with the action and reward of a
well-posed objective (``medmask.rl._distribution`` and ``_learner`` derive it). An episode is
a single decision (the paper's t = 1 setting): the observation is one image X (C x H x W
float32); the action is the ORDERED index vector of the fixed-count mask,
``MultiDiscrete([N] * k)`` with ``k = floor(mask_ratio * N)`` over the patches of the
reconstruction model's :class:`~medmask.masking.PatchGrid` (the random share first, then the
policy's picks in draw order; the environment only needs the set). The frozen
reconstruction network rebuilds the masked image and the reward is the reconstruction loss of
the MASKED patches only (the visible patches' outputs were never trained)::

    L_i = L_rec(X'_i, X_i) for masked i      (the model interface's ``patch_loss[b, i]``)
    r   = (1 / k) * sum_{i masked} L_i       (the scalar RLlib reward)

``info[PATCH_REWARDS]`` carries L as float32 [N], 0 on the visible patches; the learner reads
the picks' losses from it (see ``medmask.rl``). A NaN/inf loss is passed on as it is: raised
here, in a remote EnvRunner, RLlib would restart the runner and go on; the learner (and
``medmask.rl.train_policy``) stop the run on it instead, naming the iteration.

Two classes share one core:

- :class:`AHMMaskingEnv`, a plain ``gymnasium.Env`` (``check_env`` passes);
- :class:`AHMMaskingVectorEnv`, a native ``gymnasium.vector.VectorEnv`` that scores all of its
  sub-environments' masks with ONE batched forward of the reconstruction network. RLlib uses it
  through ``gym_env_vectorize_mode="vector_entry_point"`` with ``num_envs_per_env_runner`` > 1,
  so no EnvRunner ever runs the network one image at a time.

Any masked reconstruction model with a ``.grid`` serves (the U-Net, the MIM ViT, ...). The
images come from an array [M, H, W] / [M, C, H, W], a callable ``indices -> images``, or, by
default, a pool of procedural phantoms (``medmask.data.phantom``); each reset draws an index
from the env's seeded ``np_random``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from medmask import columns as C
from medmask.data import phantom
from medmask.masking import PatchGrid, num_masked

ENV_ID = "medmask/AHMMasking-v0"
IMAGE_INDEX = "image_index"  # info key: index of the observed image in the source
MASKED_FRACTION = "masked_fraction"  # info key: share of patches the action masked

ImageSource = np.ndarray | Callable[[np.ndarray], np.ndarray]
ModelSource = torch.nn.Module | Callable[[], torch.nn.Module]


class ReconstructionReward:
    """The frozen reconstruction network as a batched per-patch reward (AHM eq. 7).

    Args:
        model: a masked reconstruction model, ``model(images, mask) -> .patch_loss [B, N]``
            (``medmask.models`` interface), or a zero-argument callable building one (e.g. one
            that loads a checkpoint: cheap to ship to remote EnvRunners).
        device: where the network runs (``"auto"`` = CUDA when available).
    """

    def __init__(self, model: ModelSource, device: str = "cpu") -> None:
        if not isinstance(model, torch.nn.Module):
            if not callable(model):
                raise ValueError(
                    f"reconstruction must be an nn.Module or a callable building one, got "
                    f"{type(model)}"
                )
            model = model()
            if not isinstance(model, torch.nn.Module):
                raise ValueError(f"the reconstruction factory returned {type(model)}, not a Module")
        if not isinstance(getattr(model, "grid", None), PatchGrid):
            raise ValueError("the reconstruction model must expose its PatchGrid as `.grid`")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.grid: PatchGrid = model.grid

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Per-patch losses float32 [B, N] of images [B, C, H, W] under bool masks [B, N]."""
        with torch.inference_mode():
            out = self.model(
                torch.as_tensor(images, device=self.device),
                torch.as_tensor(masks, dtype=torch.bool, device=self.device),
            )
        return out.patch_loss.float().cpu().numpy()


class ImagePool:
    """Images by index: from an array, a callable ``indices -> images``, or phantoms.

    Args:
        images: array [M, H, W] or [M, C, H, W], a callable mapping int64 indices [k] to
            images [k, (C,) H, W], or None for ``num_images`` phantoms of ``image_size`` px.
        num_images: index range of a callable source; pool size of the phantom default.
        image_size: phantom side in pixels (default source only).
        data_seed: phantom dataset seed (default source only).
    """

    def __init__(
        self,
        images: ImageSource | None,
        *,
        num_images: int | None = None,
        image_size: int = 64,
        data_seed: int = 0,
    ) -> None:
        if images is None:
            # the classic phantom, the one AHM is tuned on (configs/ahm.yaml pins it too)
            images = phantom.generate(num_images or 256, image_size, data_seed,
                                      variant="classic")[C.IMAGE]
        if callable(images):
            if not num_images or num_images < 1:
                raise ValueError("a callable image source needs num_images >= 1")
            self._fetch, self.size = images, int(num_images)
            self.bounds = (-np.inf, np.inf)
        else:
            array = _as_chw(np.asarray(images), "images")
            if len(array) == 0:
                raise ValueError("the image array is empty")
            self._fetch, self.size = (lambda idx: array[idx]), len(array)
            self.bounds = (float(array.min()), float(array.max()))
        self.shape = self.get(np.zeros(1, np.int64)).shape[1:]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Images float32 [k, C, H, W] at ``indices``."""
        return _as_chw(np.asarray(self._fetch(np.asarray(indices, np.int64))), "image source")

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random (indices, images) drawn with ``rng``."""
        indices = rng.integers(0, self.size, size=n)
        return indices, self.get(indices)


class EpochWalker:
    """Walks one shard of the pool in a new permutation every epoch, as the paper counts epochs.

    Shard ``index`` of ``count`` holds the images ``i`` with ``i % count == index`` (disjoint
    shards, together the whole pool: one per EnvRunner); epoch e's order is a permutation
    seeded by (seed, e, index), so a run is reproducible and no image repeats within an epoch.
    """

    def __init__(self, size: int, seed: int = 0, index: int = 0, count: int = 1) -> None:
        if not 0 <= index < count:
            raise ValueError(f"shard index must be in [0, {count}), got {index}")
        self.shard = np.arange(index, size, count, dtype=np.int64)
        if len(self.shard) == 0:
            raise ValueError(f"shard {index} of {count} of a pool of {size} images is empty")
        self.seed, self.index = int(seed), int(index)
        self.epoch, self._order, self._next = -1, self.shard[:0], 0

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` indices (crossing into the next epoch's permutation if needed)."""
        out = []
        while len(out) < n:
            if self._next >= len(self._order):
                self.epoch += 1
                rng = np.random.default_rng([self.seed, self.epoch, self.index])
                self._order, self._next = rng.permutation(self.shard), 0
            step = min(n - len(out), len(self._order) - self._next)
            out.extend(self._order[self._next:self._next + step].tolist())
            self._next += step
        return np.asarray(out, np.int64)


def _as_chw(images: np.ndarray, what: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"{what} must be [M, H, W] or [M, C, H, W], got {images.shape}")
    return np.ascontiguousarray(images, dtype=np.float32)


class _MaskingCore:
    """What both env classes share: the image pool, the reward network and the spaces."""

    def __init__(
        self,
        reconstruction: ModelSource,
        images: ImageSource | None = None,
        *,
        num_images: int | None = None,
        data_seed: int = 0,
        device: str = "cpu",
        mask_ratio: float = 0.75,
        shard: tuple[int, int] | None = None,
        walk_seed: int = 0,
    ) -> None:
        # a callable with a grid (``envs.reward_server.RemoteReward``: the shared reward
        # actor) is used as it is; a network or a factory is wrapped here
        self.reward = (reconstruction if isinstance(getattr(reconstruction, "grid", None),
                                                    PatchGrid)
                       and not isinstance(reconstruction, torch.nn.Module)
                       else ReconstructionReward(reconstruction, device))
        self.grid = self.reward.grid
        self.pool = ImagePool(
            images, num_images=num_images, image_size=self.grid.height, data_seed=data_seed
        )
        _, height, width = self.pool.shape
        if (height, width) != (self.grid.height, self.grid.width):
            raise ValueError(
                f"images are {height}x{width} but the reconstruction model's grid is {self.grid}"
            )
        low, high = self.pool.bounds
        self.observation_space = gym.spaces.Box(low, high, self.pool.shape, np.float32)
        n = self.grid.num_patches
        self.count = num_masked(n, mask_ratio)
        if self.count < 1:
            raise ValueError(f"mask_ratio {mask_ratio} masks no patch of {n}")
        self.action_space = gym.spaces.MultiDiscrete(np.full(self.count, n, np.int64))
        self.walker = (EpochWalker(self.pool.size, walk_seed, *shard) if shard is not None
                       else None)

    def set_shard(self, index: int, count: int, seed: int = 0) -> None:
        """Walk shard ``index`` of ``count`` from now on (:class:`EpochWalker`)."""
        self.walker = EpochWalker(self.pool.size, seed, index, count)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n`` images: the shard's epoch walk, or random draws without a shard."""
        if self.walker is None:
            return self.pool.draw(rng, n)
        indices = self.walker.take(n)
        return indices, self.pool.get(indices)

    def masks(self, actions: np.ndarray) -> np.ndarray:
        """Bool masks [B, N] of ordered draws [B, k] (checked: indices in range, distinct)."""
        n = self.grid.num_patches
        draws = np.asarray(actions).reshape(-1, self.count).astype(np.int64)
        if draws.size and (draws.min() < 0 or draws.max() >= n):
            raise ValueError(f"patch indices must be in [0, {n}), got {draws.min()}..{draws.max()}")
        masks = np.zeros((len(draws), n), bool)
        np.put_along_axis(masks, draws, True, axis=1)
        repeated = masks.sum(axis=1) != self.count
        if repeated.any():
            raise ValueError(f"an action must pick {self.count} distinct patches; rows "
                             f"{np.flatnonzero(repeated).tolist()} repeat some")
        return masks

    def score(self, images: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(masked-patch losses [B, N] (0 where visible), scalar rewards [B]) of ordered draws."""
        masks = self.masks(actions)
        losses = self.reward(images, masks)
        losses = np.where(masks, losses, 0.0).astype(np.float32)
        return losses, losses.sum(axis=1, dtype=np.float64) / self.count


class AHMMaskingEnv(gym.Env):
    """Single-step masking decision on one image; reward = mean masked-patch loss.

    Args:
        reconstruction: the frozen reconstruction network (or a callable building it); its
            ``grid`` is the patch grid of the action.
        images: image source (see :class:`ImagePool`); None = phantoms at the grid's size.
        num_images: index range of a callable source / size of the phantom pool.
        data_seed: phantom dataset seed.
        device: where the reconstruction network runs.
        mask_ratio: r; the action picks floor(r * N) patches.
        shard: (index, count): walk that shard of the pool in a per-epoch permutation
            (:class:`EpochWalker`); None = random draws with the env's ``np_random``.
        walk_seed: the walk's seed (with the epoch and the shard index).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        reconstruction: ModelSource,
        images: ImageSource | None = None,
        *,
        num_images: int | None = None,
        data_seed: int = 0,
        device: str = "cpu",
        mask_ratio: float = 0.75,
        shard: tuple[int, int] | None = None,
        walk_seed: int = 0,
    ) -> None:
        self.core = _MaskingCore(
            reconstruction, images, num_images=num_images, data_seed=data_seed, device=device,
            mask_ratio=mask_ratio, shard=shard, walk_seed=walk_seed,
        )
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self._image = np.zeros(self.observation_space.shape, np.float32)
        self._index = -1

    def set_shard(self, index: int, count: int, seed: int = 0) -> None:
        """Walk shard ``index`` of ``count`` of the pool (one per EnvRunner; see
        :class:`EpochWalker`)."""
        self.core.set_shard(index, count, seed)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        indices, images = self.core.draw(self.np_random, 1)
        self._index, self._image = int(indices[0]), images[0]
        return self._image.copy(), {IMAGE_INDEX: self._index}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        patch_rewards, reward = self.core.score(self._image[None], np.asarray(action)[None])
        info = {
            C.PATCH_REWARDS: patch_rewards[0],
            IMAGE_INDEX: self._index,
            MASKED_FRACTION: self.core.count / self.core.grid.num_patches,
        }
        return self._image.copy(), float(reward[0]), True, False, info


class AHMMaskingVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` masking decisions scored by one batched reconstruction forward.

    Gymnasium's NEXT_STEP autoreset (what RLlib's EnvRunner expects): after the single real step
    every sub-env is done, and the next ``step`` resets it (new image, reward 0, action
    ignored, no forward pass). Infos are in the vector dict format (``key`` + ``_key`` masks);
    RLlib's ``DictInfoToList`` splits them per episode.

    Args:
        num_envs: sub-environments (images per batched forward).
        reconstruction, images, num_images, data_seed, device, mask_ratio: as
            :class:`AHMMaskingEnv`.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        reconstruction: ModelSource,
        images: ImageSource | None = None,
        *,
        num_images: int | None = None,
        data_seed: int = 0,
        device: str = "cpu",
        mask_ratio: float = 0.75,
        shard: tuple[int, int] | None = None,
        walk_seed: int = 0,
    ) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.core = _MaskingCore(
            reconstruction, images, num_images=num_images, data_seed=data_seed, device=device,
            mask_ratio=mask_ratio, shard=shard, walk_seed=walk_seed,
        )
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._images = np.zeros((self.num_envs, *self.core.pool.shape), np.float32)
        self._indices = np.full(self.num_envs, -1, np.int64)
        self._needs_reset = np.zeros(self.num_envs, bool)

    def set_shard(self, index: int, count: int, seed: int = 0) -> None:
        """Walk shard ``index`` of ``count`` of the pool (one per EnvRunner; see
        :class:`EpochWalker`)."""
        self.core.set_shard(index, count, seed)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed if not isinstance(seed, list) else seed[0])
        self._redraw(np.ones(self.num_envs, bool))
        self._needs_reset[:] = False
        return self._images.copy(), _vector_info({IMAGE_INDEX: self._indices.copy()})

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions).reshape(self.num_envs, -1)
        n = self.core.grid.num_patches
        fraction = np.full(self.num_envs, self.core.count / n)
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        patch_rewards = np.zeros((self.num_envs, n), np.float32)
        acting = ~self._needs_reset
        if acting.any():  # one batched forward for every sub-env that acts this step
            patch_rewards[acting], rewards[acting] = self.core.score(
                self._images[acting], actions[acting]
            )
            terminated[acting] = True
        resetting = self._needs_reset.copy()
        self._redraw(resetting)
        observations = self._images.copy()
        self._needs_reset = terminated.copy()
        info = _vector_info({IMAGE_INDEX: self._indices.copy()})
        info |= _vector_info(
            {C.PATCH_REWARDS: patch_rewards, MASKED_FRACTION: fraction}, acting
        )
        return observations, rewards, terminated, np.zeros(self.num_envs, bool), info

    def _redraw(self, which: np.ndarray) -> None:
        if which.any():
            indices, images = self.core.draw(self.np_random, int(which.sum()))
            self._indices[which], self._images[which] = indices, images


def _vector_info(values: dict[str, np.ndarray], present: np.ndarray | None = None) -> dict:
    """Gymnasium's vector info format: ``key`` -> values, ``_key`` -> which envs have it."""
    out: dict[str, np.ndarray] = {}
    for key, value in values.items():
        value = np.asarray(value)
        out[key] = value
        out[f"_{key}"] = np.ones(len(value), bool) if present is None else present.copy()
    return out


def make_rllib_env(config: dict[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    """RLlib env creator: the vector env when RLlib asks for ``num_envs``, else the single env.

    RLlib's EnvRunner with ``gym_env_vectorize_mode="vector_entry_point"`` calls the creator
    with ``env_config | {"num_envs": n}`` and uses the returned VectorEnv as is.
    """
    params = dict(config)
    num_envs = params.pop("num_envs", None)
    if num_envs is None:
        return AHMMaskingEnv(**params)
    return AHMMaskingVectorEnv(int(num_envs), **params)
