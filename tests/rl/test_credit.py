"""The two credits, checked exactly: enumerate every ordered draw of N = 6, k = 4.

With fixed per-patch losses L the expected reward is J(z) = sum over ordered draws of
P(draw; z) * sum of the drawn L. ``to_go`` must give exactly the gradient of J (whatever the
value head predicts: its baseline only lowers the variance); ``myopic`` is biased but must
point uphill (positive cosine).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from medmask.rl import mask_distribution, pick_advantages

N, K = 6, 4
RATIO = 0.7  # floor(0.7 * 6) = 4
DRAWS = torch.tensor(list(itertools.permutations(range(N), K)))  # 360 ordered draws


def expected_reward(logits: torch.Tensor, losses: torch.Tensor, share: float) -> torch.Tensor:
    """J(z) by enumeration (the random picks uniform over the orders of the front)."""
    dist = mask_distribution(RATIO, share)(logits.expand(len(DRAWS), N))
    probs = torch.exp(log_front(dist.num_random) + dist.logp(DRAWS))
    return (probs * losses[DRAWS].sum(dim=1)).sum()


def expected_score_gradient(logits: torch.Tensor, losses: torch.Tensor, values: torch.Tensor,
                            share: float, credit: str) -> torch.Tensor:
    """E[sum_t grad log pi_t(i_t) A_t] by enumeration."""
    z = logits.clone().requires_grad_(True)
    dist = mask_distribution(RATIO, share)(z.expand(len(DRAWS), N))
    n_random = dist.num_random
    with torch.no_grad():
        weights = torch.exp(log_front(n_random) + dist.logp(DRAWS))
        baselines = (dist.pick_probs(DRAWS) * values).sum(dim=-1)
        advantages = pick_advantages(losses[DRAWS][:, n_random:], baselines, credit)
    surrogate = (weights[:, None] * dist.pick_logp(DRAWS) * advantages).sum()
    (grad,) = torch.autograd.grad(surrogate, z)
    return grad


def log_front(n_random: int) -> torch.Tensor:
    """log P(the random picks): uniform over the (N - n_r)! / N! ordered n_r-tuples."""
    return -(torch.lgamma(torch.tensor(N + 1.0, dtype=torch.float64))
             - torch.lgamma(torch.tensor(N - n_random + 1.0, dtype=torch.float64)))


def finite_difference_gradient(logits: torch.Tensor, losses: torch.Tensor, share: float,
                               h: float = 1e-5) -> torch.Tensor:
    grad = torch.zeros(N, dtype=torch.float64)
    for j in range(N):
        step = torch.zeros(N, dtype=torch.float64)
        step[j] = h
        grad[j] = (expected_reward(logits + step, losses, share)
                   - expected_reward(logits - step, losses, share)) / (2 * h)
    return grad


@pytest.mark.parametrize("share", [0.0, 0.25])  # 0 or 1 of the 4 picks random
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_to_go_is_the_exact_gradient_and_myopic_points_uphill(share: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, generator=g, dtype=torch.float64)
    losses = torch.rand(N, generator=g, dtype=torch.float64)
    wrong_values = torch.rand(N, generator=g, dtype=torch.float64)  # a bad critic
    truth = finite_difference_gradient(logits, losses, share)
    assert truth.abs().max() > 1e-3  # a non-trivial gradient to match
    assert truth.sum().abs() < 1e-8  # a common logit shift changes nothing
    for values in (losses, wrong_values, torch.zeros(N, dtype=torch.float64)):
        to_go = expected_score_gradient(logits, losses, values, share, "to_go")
        torch.testing.assert_close(to_go, truth, rtol=0, atol=1e-6)
    for values in (losses, wrong_values):
        myopic = expected_score_gradient(logits, losses, values, share, "myopic")
        cosine = torch.nn.functional.cosine_similarity(myopic, truth, dim=0)
        assert cosine > 0.0, f"myopic credit points away from the gradient: cos {cosine:.3f}"
