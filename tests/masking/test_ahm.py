"""AHM's fixed-count sampler: exact counts, the random share, the ordered Plackett-Luce draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medmask.masking import (
    PatchGrid,
    ahm_draw,
    ahm_mask,
    create_mask_strategy,
    inclusion_rate,
    num_masked,
    plackett_luce_log_prob,
)
from medmask.masking._ahm import num_random

GRID = PatchGrid(32, 32, patch_size=8)  # 16 patches


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@settings(max_examples=30, deadline=None)
@given(
    ratio=st.floats(0.0, 0.95),
    share=st.floats(0.0, 1.0),
    batch=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_every_row_masks_exactly_floor_ratio_n(ratio: float, share: float, batch: int,
                                                seed: int) -> None:
    logits = torch.randn(batch, 16, generator=_gen(seed)) * 3
    mask = ahm_mask(logits, GRID, ratio, share, _gen(seed + 1))
    assert mask.dtype == torch.bool and mask.shape == (batch, 16)
    assert (mask.sum(dim=1) == num_masked(16, ratio)).all()
    draw = ahm_draw(logits, num_masked(16, ratio), share, _gen(seed + 1))
    assert draw.dtype == torch.int64 and draw.shape == (batch, num_masked(16, ratio))
    assert all(len(set(row.tolist())) == draw.shape[1] for row in draw)  # distinct picks


def test_share_one_is_uniform_whatever_the_logits() -> None:
    logits = torch.full((20000, 16), -20.0)
    logits[:, 0] = 20.0  # a patch the policy's part would always take
    mask = ahm_mask(logits, GRID, 0.25, random_share=1.0, generator=_gen(0))
    freq = mask.float().mean(dim=0)  # each patch: 4/16 = 0.25 under uniform sampling
    assert torch.allclose(freq, torch.full((16,), 0.25), atol=0.015)


def test_share_zero_first_pick_is_the_softmax_of_the_logits() -> None:
    grid = PatchGrid(4, 4, num_patches=4)
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).expand(40000, 4)
    mask = ahm_mask(logits, grid, 0.25, random_share=0.0, generator=_gen(1))  # one patch
    freq = mask.float().mean(dim=0)
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.01)


def test_ordered_draws_follow_their_exact_plackett_luce_probability() -> None:
    # N = 4, k = 2, p = 0: 12 ordered draws; their frequencies match exp(sum of log-probs).
    logits = torch.tensor([[0.5, -1.0, 1.5, 0.0]])
    draws = ahm_draw(logits.expand(60000, 4), 2, 0.0, _gen(5))
    codes = (draws[:, 0] * 4 + draws[:, 1]).bincount(minlength=16).float() / len(draws)
    for i in range(4):
        for j in range(4):
            if i == j:
                assert codes[i * 4 + j] == 0
                continue
            exact = plackett_luce_log_prob(logits, torch.tensor([[i, j]]), 0).sum().exp()
            assert codes[i * 4 + j].item() == pytest.approx(exact.item(), abs=0.006)


def test_share_zero_strongly_prefers_high_logits() -> None:
    logits = torch.full((2000, 16), -4.0)
    logits[:, :12] = 4.0  # 12 hard patches, 12 to mask
    mask = ahm_mask(logits, GRID, 0.75, random_share=0.0, generator=_gen(2))
    assert mask[:, :12].float().mean() > 0.9
    random = ahm_mask(logits, GRID, 0.75, random_share=1.0, generator=_gen(2))
    assert random[:, :12].float().mean() == pytest.approx(0.75, abs=0.02)


def test_the_random_share_comes_first_and_is_round_p_times_count() -> None:
    # Patches with a very low logit are (almost) only masked by the uniform part: 8 masked,
    # p = 0.5 -> 4 uniform picks over 16 patches, half of them "never" -> 2 per row on average.
    logits = torch.full((20000, 16), -30.0)
    logits[:, :8] = 0.0
    draw = ahm_draw(logits, 8, 0.5, _gen(3))
    never = draw >= 8
    assert never[:, :4].sum(dim=1).float().mean().item() == pytest.approx(2.0, abs=0.05)
    assert not never[:, 4:].any()  # the policy's picks (the last 4) avoid them
    assert num_random(12, 0.3) == 4 and num_random(48, 0.3) == 14 and num_random(8, 1.0) == 8


def test_inclusion_rate_estimates_how_often_a_patch_is_masked() -> None:
    logits = torch.full((2, 16), -30.0)
    logits[:, :4] = 0.0
    rate = inclusion_rate(logits, 4, 0.0, draws=64, generator=_gen(6))
    assert rate.shape == (2, 16)
    torch.testing.assert_close(rate[:, :4], torch.ones(2, 4))
    assert (rate.sum(dim=1) == 4).all()


def test_seeded_draws_repeat_and_differ_across_seeds() -> None:
    logits = torch.randn(8, 16, generator=_gen(4))
    a = ahm_mask(logits, GRID, 0.75, 0.3, _gen(7))
    b = ahm_mask(logits, GRID, 0.75, 0.3, _gen(7))
    c = ahm_mask(logits, GRID, 0.75, 0.3, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        ahm_mask(torch.rand(2, 15), GRID, 0.5)
    with pytest.raises(ValueError, match="finite"):
        ahm_mask(torch.full((2, 16), float("nan")), GRID, 0.5)
    with pytest.raises(ValueError, match="random_share"):
        ahm_mask(torch.rand(2, 16), GRID, 0.5, random_share=1.5)


class _FixedPolicy(torch.nn.Module):
    """A policy whose per-patch logits are the images' patch means times 40."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: tuple[int, ...] = ()

    def masking_logits(self, images: torch.Tensor) -> torch.Tensor:
        self.seen = tuple(images.shape)
        return GRID.pool(images[:, 0]) * self.scale * 40.0


def test_registered_ahm_strategy_reads_images_through_the_policy() -> None:
    policy = _FixedPolicy()
    strategy = create_mask_strategy("ahm", policy=policy, random_share=0.0)
    images = np.zeros((3, 32, 32), np.float32)
    images[:, :16, :] = 1.0  # the top 8 patches are "hard" (logit 40), the bottom 8 logit 0
    mask = strategy({"image": images}, GRID, 0.5, generator=_gen(0))
    assert policy.seen == (3, 1, 32, 32)
    assert (mask.sum(dim=1) == 8).all()
    assert mask[:, :8].all()  # p = 0: exp(-40) leaves the others no chance
    with pytest.raises(ValueError, match="nn.Module"):
        create_mask_strategy("ahm", policy="checkpoint.pt")


def test_keyed_seeds_make_masks_independent_of_batch_layout() -> None:
    grid = PatchGrid(32, 32, patch_size=8)
    scores = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    seeds = np.array([10, 11, 12, 13], dtype=np.int64)
    whole = ahm_mask(scores, grid, 0.5, random_share=0.3, seeds=seeds)
    tail = ahm_mask(scores[2:], grid, 0.5, random_share=0.3, seeds=seeds[2:])
    assert torch.equal(whole[2:], tail)
    assert (whole.sum(1) == 8).all()
    other = ahm_mask(scores, grid, 0.5, random_share=0.3, seeds=seeds + 100)
    assert not torch.equal(whole, other)
