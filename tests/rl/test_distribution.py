"""PlackettLuceMask: the exact log-prob of the ordered draw, the random share excluded."""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import pytest
import torch

from medmask.rl import PlackettLuceMask, mask_distribution


def _brute_force_logp(logits: list[float], draw: tuple[int, ...], n_random: int) -> float:
    """Successive draws by hand: each policy pick j has weight exp(z_j) among the untaken."""
    taken = set(draw[:n_random])
    total = 0.0
    for pick in draw[n_random:]:
        weights = {j: math.exp(z) for j, z in enumerate(logits) if j not in taken}
        total += math.log(weights[pick] / sum(weights.values()))
        taken.add(pick)
    return total


@pytest.mark.parametrize(("ratio", "share"), [(0.8, 0.0), (0.8, 0.5), (0.6, 0.34)])
def test_logp_equals_a_brute_force_enumeration(ratio: float, share: float) -> None:
    logits = [0.3, -1.2, 2.0, 0.0, 0.7]
    cls = mask_distribution(ratio, share)
    dist = cls(torch.tensor([logits], dtype=torch.float64))
    k, n_random = dist.count, dist.num_random
    draws = list(itertools.permutations(range(5), k))
    batch = cls(torch.tensor([logits] * len(draws), dtype=torch.float64))
    got = batch.logp(torch.tensor(draws))
    want = torch.tensor([_brute_force_logp(logits, d, n_random) for d in draws],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # Given the random picks, the policy's orders are a distribution: they sum to 1.
    for random_part in {d[:n_random] for d in draws}:
        rows = [i for i, d in enumerate(draws) if d[:n_random] == random_part]
        assert got[rows].exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_random_picks_have_no_term() -> None:
    cls = mask_distribution(0.5, 0.5)  # N = 8: k = 4 picks, 2 random
    logits = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    draw = torch.tensor([[0, 1, 2, 3], [7, 6, 5, 4], [1, 3, 5, 7]])
    dist = cls(logits)
    assert dist.pick_logp(draw).shape == (3, 2)
    # Changing the order of the random picks changes nothing; their own logits only enter
    # through the availability of the later picks.
    swapped = draw[:, [1, 0, 2, 3]]
    torch.testing.assert_close(dist.logp(draw), dist.logp(swapped))
    assert dist.pick_entropy(draw).shape == (3, 2)
    assert (dist.pick_probs(draw).sum(dim=-1) - 1).abs().max() < 1e-6
    probs = dist.pick_probs(draw)
    for row in range(3):  # no probability on the random or already taken patches
        assert probs[row, 0, draw[row, :2]].abs().max() == 0
        assert probs[row, 1, draw[row, :3]].abs().max() == 0


@pytest.mark.parametrize(("ratio", "share"), [(0.95, 0.0), (0.95, 1.0), (0.5, 0.0), (0.5, 1.0)])
def test_extremes_stay_finite_with_finite_gradients(ratio: float, share: float) -> None:
    n = 10  # r = 0.95: k = 9 of 10 (k = N is the next test: the ratio must stay below 1)
    logits = (torch.randn(4, n, generator=torch.Generator().manual_seed(1)) * 30
              ).requires_grad_(True)
    cls = mask_distribution(ratio, share)
    dist = cls(logits)
    draw = dist.sample()
    logp, entropy = dist.logp(draw), dist.pick_entropy(draw).sum(-1)
    assert torch.isfinite(logp).all() and torch.isfinite(entropy).all()
    (logp.sum() + entropy.sum()).backward()
    assert torch.isfinite(logits.grad).all()
    if share == 1.0:  # every pick random: no policy action at all
        assert dist.pick_logp(draw).shape == (4, 0) and (logp == 0).all()


def test_k_equal_n_last_pick_is_certain() -> None:
    # k = N: the plain log-prob helper on a full permutation; the last pick has S_t = {i_t}.
    from medmask.masking import plackett_luce_log_prob

    logits = torch.tensor([[50.0, -50.0, 0.0, 3.0]], requires_grad=True)
    draw = torch.tensor([[1, 0, 2, 3]])
    per_pick = plackett_luce_log_prob(logits, draw, 0)
    assert torch.isfinite(per_pick).all() and per_pick[0, -1].item() == 0.0
    per_pick.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert plackett_luce_log_prob(logits, draw, 4).shape == (1, 0)


def test_a_common_shift_of_the_logits_gets_zero_gradient() -> None:
    logits = torch.randn(5, 16, generator=torch.Generator().manual_seed(2), requires_grad=True)
    dist = mask_distribution(0.75, 0.3)(logits)
    draw = dist.sample()
    dist.logp(draw).sum().backward()
    # d/dc log P(z + c) = sum_j dlogP/dz_j = 0: no "mask everything" drift.
    assert logits.grad.sum(dim=1).abs().max() < 1e-5
    assert logits.grad.abs().max() > 1e-2


def test_samples_are_ordered_draws_and_greedy_takes_the_top() -> None:
    logits = torch.linspace(-3, 3, 16).repeat(5, 1)
    cls = mask_distribution(0.75, 0.3)
    sample = cls.from_logits(logits).sample()
    assert sample.dtype == torch.int64 and sample.shape == (5, 12)
    assert all(len(set(row.tolist())) == 12 for row in sample)
    greedy = cls.from_logits(logits).to_deterministic().sample()
    assert greedy.tolist() == [list(range(15, 3, -1))] * 5
    assert cls.required_input_dim(gym.spaces.MultiDiscrete([16] * 12)) == 16
    with pytest.raises(ValueError, match="MultiDiscrete"):
        cls.required_input_dim(gym.spaces.MultiBinary(16))


def test_configured_classes_are_cached_and_validated() -> None:
    assert mask_distribution(0.5, 0.1) is mask_distribution(0.5, 0.1)
    assert issubclass(mask_distribution(0.5, 0.1), PlackettLuceMask)
    assert mask_distribution(0.5, 0.1).random_share == 0.1
    with pytest.raises(ValueError):
        mask_distribution(1.0, 0.3)
    with pytest.raises(ValueError):
        mask_distribution(0.5, -0.1)
