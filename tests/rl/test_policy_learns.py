"""The AHM objective learns where to mask: a synthetic task whose hard patches move.

In-process, without Ray (:func:`medmask.rl._local.train_policy_local`: the learner's loss and
the sampler, on-policy), 3 seeds at r = 0.25 and p = 0 on the moving-square task
(``tests/rl/synthetic.py``): the policy must mask the hard patches at least twice as often as
random masks and as the position oracle (the best image-independent mask) on held-out images,
and its logits must not drift (the mean stays bounded while the spread grows).
"""

from __future__ import annotations

import time

import pytest
import torch

from medmask.masking import ahm_mask, random_mask
from medmask.rl import MaskingPolicyNet
from medmask.rl._local import train_policy_local
from tests.rl.synthetic import (
    SmoothingReconstruction,
    hard_hit_rate,
    moving_square_images,
    position_oracle_masks,
    reward_fn,
)

RATIO, COUNT = 0.25, 16  # 16 of 64 patches; each image has 4 hard ones


def _learn(seed: int, credit: str, steps: int) -> tuple[dict[str, float], list[dict]]:
    torch.manual_seed(seed)
    train, train_hard = moving_square_images(256, seed)
    test, test_hard = moving_square_images(128, seed + 100)
    model = SmoothingReconstruction()
    net = MaskingPolicyNet(1, model.grid, channels=8, head_depth=1)
    history = train_policy_local(net, reward_fn(model), train, steps=steps, batch_size=16,
                                 lr=3e-3, seed=seed, mask_ratio=RATIO, random_share=0.0,
                                 credit=credit)
    x = torch.as_tensor(test[:, None])
    generator = torch.Generator().manual_seed(seed)
    policy = ahm_mask(net.masking_logits(x).detach(), model.grid, RATIO, 0.0, generator)
    rates = {
        "policy": hard_hit_rate(policy, test_hard),
        "random": hard_hit_rate(random_mask(len(x), model.grid, RATIO, generator=generator),
                                test_hard),
        "position_oracle": hard_hit_rate(position_oracle_masks(train_hard, COUNT, len(x)),
                                         test_hard),
    }
    return rates, history


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Tiny convolutions: torch's thread pool only contends on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("credit", "steps"), [("myopic", 80), ("to_go", 150)])
def test_policy_masks_the_moving_hard_patches(credit: str, steps: int, one_thread: None
                                              ) -> None:
    start = time.perf_counter()
    for seed in range(3):
        rates, history = _learn(seed, credit, steps)
        print(f"{credit} seed {seed}: {rates}; logit mean {history[-1]['charts/logit_mean']:.3f}"
              f", spread {history[0]['charts/logit_spread']:.3f} -> "
              f"{history[-1]['charts/logit_spread']:.3f}")
        assert rates["policy"] >= 2 * rates["random"], (seed, rates)
        assert rates["policy"] >= 2 * rates["position_oracle"], (seed, rates)
        # No drift: a common shift gets no gradient, so the mean stays near its start (0)
        # while the per-image spread (the ranking) grows.
        assert abs(history[-1]["charts/logit_mean"]) < 1.0
        assert history[-1]["charts/logit_spread"] > 5 * max(history[0]["charts/logit_spread"],
                                                            0.05)
    print(f"{credit}: 3 seeds in {time.perf_counter() - start:.1f} s")
