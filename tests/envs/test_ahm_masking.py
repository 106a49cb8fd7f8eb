"""The AHM masking environment: ordered-draw actions, rewards = the masked patches' losses."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.ahm_masking import IMAGE_INDEX, MASKED_FRACTION, AHMMaskingEnv, AHMMaskingVectorEnv
from medmask import columns as C
from medmask.data import phantom
from tests.envs.reconstruction import TinyReconstruction


@pytest.fixture
def images() -> np.ndarray:
    return phantom.generate(12, 32, seed=3)[C.IMAGE]


def _draw(n: int, k: int, rows: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n)[:k] for _ in range(rows)])


def test_spaces_match_the_grid_and_the_ordered_draw(images: np.ndarray) -> None:
    env = AHMMaskingEnv(TinyReconstruction(32, 8), images)  # 16 patches, r = 0.75 -> 12
    assert env.observation_space.shape == (1, 32, 32)
    assert env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.MultiDiscrete([16] * 12)
    assert AHMMaskingEnv(TinyReconstruction(32, 8), images, mask_ratio=0.25).action_space == (
        gym.spaces.MultiDiscrete([16] * 4))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    step = env.step(_draw(16, 12)[0])
    assert env.observation_space.contains(step[0]) and step[2] and not step[3]


def test_invalid_draws_raise(images: np.ndarray) -> None:
    env = AHMMaskingEnv(TinyReconstruction(32, 8), images, mask_ratio=0.25)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="distinct"):
        env.step(np.array([1, 1, 2, 3]))
    with pytest.raises(ValueError, match="in \\[0, 16\\)"):
        env.step(np.array([1, 2, 3, 16]))


def test_reward_is_the_networks_loss_on_the_masked_patches_only(images: np.ndarray) -> None:
    model = TinyReconstruction(32, 8)
    env = AHMMaskingEnv(model, images, mask_ratio=0.5)
    obs, info = env.reset(seed=5)
    np.testing.assert_array_equal(obs[0], images[info[IMAGE_INDEX]])
    picks = np.array([9, 0, 15, 3, 5, 12, 6, 10])  # ordered; the set is what is masked
    _, reward, terminated, truncated, step_info = env.step(picks)
    action = np.zeros(16, np.int8)
    action[picks] = 1

    # The expected numbers straight from the network: zero the masked 8x8 boxes, reconstruct,
    # mean squared error per patch.
    x = torch.from_numpy(obs[None])
    masked = x.clone()
    for k in np.flatnonzero(action):
        r, c = divmod(int(k), 4)
        masked[..., r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 0
    with torch.no_grad():
        err = (model.net(masked) - x).pow(2)[0, 0]
    expected = err.reshape(4, 8, 4, 8).mean(dim=(1, 3)).flatten().numpy()

    expected = np.where(action == 1, expected, 0.0)  # visible patches carry no reward
    np.testing.assert_allclose(step_info[C.PATCH_REWARDS], expected, rtol=1e-5, atol=1e-7)
    assert reward == pytest.approx(float(expected[picks].mean()), rel=1e-5)
    assert terminated and not truncated
    assert step_info[MASKED_FRACTION] == 0.5


def test_reset_is_seeded(images: np.ndarray) -> None:
    env = AHMMaskingEnv(TinyReconstruction(), images)
    draws = [env.reset(seed=11)[1][IMAGE_INDEX] for _ in range(2)]
    assert draws[0] == draws[1]
    many = {env.reset(seed=s)[1][IMAGE_INDEX] for s in range(40)}
    assert len(many) > 6  # different seeds reach many of the 12 images


def test_vector_env_scores_all_sub_envs_in_one_forward(images: np.ndarray) -> None:
    model = TinyReconstruction(32, 8)
    venv = AHMMaskingVectorEnv(4, model, images)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (4, 1, 32, 32)
    actions = _draw(16, 12, rows=4)
    model.calls = 0
    _, rewards, terminated, _, step_info = venv.step(actions)
    assert model.calls == 1 and terminated.all()
    single = AHMMaskingEnv(model, images)
    for b in range(4):  # the batched rewards equal the single env's on the same image
        single._image, single._index = obs[b], int(info[IMAGE_INDEX][b])
        _, r, *_, one = single.step(actions[b])
        np.testing.assert_allclose(step_info[C.PATCH_REWARDS][b], one[C.PATCH_REWARDS],
                                   rtol=1e-5, atol=1e-7)
        assert rewards[b] == pytest.approx(r, rel=1e-5)
    # NEXT_STEP autoreset: the following step resets every sub-env without a forward pass.
    model.calls = 0
    obs2, rewards2, terminated2, _, info2 = venv.step(actions)
    assert model.calls == 0
    assert not terminated2.any() and (rewards2 == 0).all()
    assert not info2[f"_{C.PATCH_REWARDS}"].any()
    np.testing.assert_array_equal(obs2[:, 0], images[info2[IMAGE_INDEX]])


def test_registered_ids_build_single_and_vector_envs(images: np.ndarray) -> None:
    model = TinyReconstruction()
    env = gym.make(envs.ENV_ID, reconstruction=model, images=images)
    assert isinstance(env.unwrapped, AHMMaskingEnv)
    venv = gym.make_vec(envs.ENV_ID, num_envs=3, vectorization_mode="vector_entry_point",
                        reconstruction=model, images=images)
    assert isinstance(venv, AHMMaskingVectorEnv) and venv.num_envs == 3
    assert isinstance(envs.make_rllib_env({"reconstruction": model, "images": images,
                                           "num_envs": 2}), AHMMaskingVectorEnv)
    assert isinstance(envs.make_rllib_env({"reconstruction": model, "images": images}),
                      AHMMaskingEnv)


def test_image_sources_callable_and_phantom_default() -> None:
    pool = np.arange(5 * 32 * 32, dtype=np.float32).reshape(5, 32, 32) / (5 * 32 * 32)
    env = AHMMaskingEnv(TinyReconstruction(), lambda idx: pool[idx], num_images=5)
    obs, info = env.reset(seed=2)
    np.testing.assert_array_equal(obs[0], pool[info[IMAGE_INDEX]])
    default = AHMMaskingEnv(TinyReconstruction(), num_images=8, data_seed=4)
    obs, info = default.reset(seed=0)
    expected = phantom.generate(8, 32, seed=4, variant="classic")[C.IMAGE][info[IMAGE_INDEX]]
    np.testing.assert_array_equal(obs[0], expected)


def test_bad_inputs_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="grid"):
        AHMMaskingEnv(TinyReconstruction(32, 8), np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="num_images"):
        AHMMaskingEnv(TinyReconstruction(), lambda idx: idx)
    with pytest.raises(ValueError, match="nn.Module"):
        AHMMaskingEnv("not a model")  # type: ignore[arg-type]


def test_env_drives_the_tiny_unet_of_the_models_room() -> None:
    from medmask.models import create_model

    model = create_model("unet_tiny", img_size=32, patch_size=8)
    env = AHMMaskingEnv(model, num_images=4)
    obs, _ = env.reset(seed=0)
    action = np.zeros(16, np.int8)
    action[:12] = 1
    _, reward, _, _, info = env.step(np.arange(12))
    with torch.no_grad():
        out = model(torch.from_numpy(obs[None]), torch.from_numpy(action[None]).bool())
    np.testing.assert_allclose(info[C.PATCH_REWARDS][:12], out.patch_loss[0, :12].numpy(),
                               rtol=1e-5)
    assert (info[C.PATCH_REWARDS][12:] == 0).all()
    assert reward == pytest.approx(float(out.patch_loss[0, :12].mean()), rel=1e-5)


def test_epoch_walker_shards_are_disjoint_and_cover_the_pool_every_epoch() -> None:
    from envs.ahm_masking import EpochWalker

    walkers = [EpochWalker(10, seed=3, index=i, count=3) for i in range(3)]
    epochs = [[w.take(len(w.shard)) for w in walkers] for _ in range(2)]
    for shards in epochs:
        together = np.concatenate(shards)
        assert sorted(together.tolist()) == list(range(10))  # every image once, no overlap
    assert not all(np.array_equal(a, b) for a, b in zip(*epochs, strict=True))  # reshuffled
    again = EpochWalker(10, seed=3, index=1, count=3)
    np.testing.assert_array_equal(again.take(len(again.shard)), epochs[0][1])  # seeded
    with pytest.raises(ValueError, match="empty"):
        EpochWalker(2, index=2, count=3)


def test_sharded_vector_env_walks_its_shard(images: np.ndarray) -> None:
    venv = AHMMaskingVectorEnv(4, TinyReconstruction(32, 8), images)  # 12 images
    venv.set_shard(1, 2, seed=0)  # images 1, 3, ..., 11
    seen = []
    _, info = venv.reset(seed=0)
    seen += info[IMAGE_INDEX].tolist()
    for _ in range(2):  # score, then NEXT_STEP autoreset draws the next 4
        venv.step(_draw(16, 12, rows=4))
        _, _, _, _, info = venv.step(_draw(16, 12, rows=4))
        seen += info[IMAGE_INDEX].tolist()[:4]
    assert sorted(seen[:6]) == [1, 3, 5, 7, 9, 11]  # one epoch of the shard, no repeats


def test_rllib_callback_gives_each_env_runner_its_shard(images: np.ndarray) -> None:
    from types import SimpleNamespace

    from medmask.rl._config import shard_image_pool

    envs_ = [AHMMaskingVectorEnv(2, TinyReconstruction(32, 8), images) for _ in range(3)]
    for worker, env in enumerate(envs_):  # EnvRunners 1 and 2 of 2, and the local one (0)
        shard_image_pool(env_runner=None, env=env, seed=5,
                         env_context=SimpleNamespace(worker_index=worker, num_workers=2))
    assert envs_[0].core.walker.shard.tolist() == list(range(12))
    assert envs_[1].core.walker.shard.tolist() == [0, 2, 4, 6, 8, 10]
    assert envs_[2].core.walker.shard.tolist() == [1, 3, 5, 7, 9, 11]


def test_a_nan_loss_is_passed_on_for_the_learner_to_stop_the_run(images: np.ndarray) -> None:
    # Raised inside a remote EnvRunner, RLlib would restart the runner and carry on; passed on,
    # the learner and train_policy stop the run naming the iteration (tests/rl).
    class NaNReconstruction(TinyReconstruction):
        def forward(self, images: torch.Tensor, mask: torch.Tensor):  # noqa: ANN202
            out = super().forward(images, mask)
            return type(out)(out.prediction, out.patch_loss * float("nan"))

    env = AHMMaskingEnv(NaNReconstruction(32, 8), images)
    env.reset(seed=0)
    _, reward, *_, info = env.step(_draw(16, 12)[0])
    assert np.isnan(reward) and np.isnan(info[C.PATCH_REWARDS]).any()
