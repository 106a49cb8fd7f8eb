"""The study's diagnostics on the moving-square task, where the right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medmask.masking import PatchGrid
from medmask.rl._diagnostics import compactness, policy_diagnostics, spearman_rows
from tests.rl.synthetic import SmoothingReconstruction, moving_square_images


class _VariancePolicy(nn.Module):
    """Logits and values from each patch's pixel variance (the square's patches light up)."""

    def __init__(self, grid: PatchGrid, sign: float = 1.0) -> None:
        super().__init__()
        self.grid, self.sign = grid, sign

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        var = self.grid.pool(images.pow(2).mean(1)) - self.grid.pool(images.mean(1)).pow(2)
        return self.sign * 200.0 * var, var


def test_diagnostics_rank_a_seeing_policy_above_position_and_random() -> None:
    train, _ = moving_square_images(32, seed=0)
    test, _ = moving_square_images(32, seed=1)
    model = SmoothingReconstruction()
    good = policy_diagnostics(_VariancePolicy(model.grid), model, train, test, ratio=0.25,
                              random_share=0.3, oracle_draws=32, bootstrap=100)
    bad = policy_diagnostics(_VariancePolicy(model.grid, -1.0), model, train, test, ratio=0.25,
                             random_share=0.3, oracle_draws=32, bootstrap=100)
    print(good)
    assert good["test/oracle_mask_loss"] > good["test/random_mask_loss"]
    assert good["captured_share_p0"] > 0.8
    assert good["captured_share_p0_ci_low"] <= good["captured_share_p0"] <= (
        good["captured_share_p0_ci_high"])
    assert good["policy_p0_beats_position_oracle"] == 1.0
    assert good["test/policy_p0_mask_loss"] >= good["test/policy_mask_loss"]  # p = 0.3 dilutes
    assert good["spearman_v_oracle"] > 0.3
    assert all(np.isfinite(v) for v in good.values())  # nothing NaN in the study's logs
    assert bad["captured_share_p0"] < 0  # unclipped: worse than random shows as negative
    assert bad["policy_p0_beats_position_oracle"] == 0.0
    assert good["hard_vs_random_ratio"] > 1.5


def test_compactness_counts_masked_neighbours() -> None:
    grid = PatchGrid(16, 16, patch_size=4)  # 4 x 4
    block = torch.zeros(1, 16, dtype=torch.bool)
    block[0, [0, 1, 4, 5]] = True  # a 2 x 2 block: every patch has 2 masked neighbours
    assert compactness(block, grid) == pytest.approx(2.0)
    spread = torch.zeros(1, 16, dtype=torch.bool)
    spread[0, [0, 2, 8, 10]] = True
    assert compactness(spread, grid) == 0.0


def test_spearman_rows_match_scipy_with_ties() -> None:
    from scipy.stats import spearmanr

    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [0.3, 0.1, 0.2, 0.9]])
    want = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(3)]
    torch.testing.assert_close(spearman_rows(a, b), torch.tensor(want, dtype=torch.float64))
