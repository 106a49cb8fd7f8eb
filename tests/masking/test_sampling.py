import pytest
import torch

from medmask.masking import PatchGrid, mask_lowest, sample_from_scores


def test_mask_lowest_selects_the_smallest_keys():
    keys = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.0, 1.0, 2.0, -1.0]])
    assert mask_lowest(keys, 2).tolist() == [[False, True, False, True], [True, False, False, True]]
    with pytest.raises(ValueError):
        mask_lowest(keys, 5)


def test_sample_from_scores_fixed_count_zero_weights_and_proportions():
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([[0.0, 1.0, 3.0, 0.0, 6.0]]).expand(20000, 5).contiguous()
    one = sample_from_scores(scores, 1, g)
    assert (one.sum(1) == 1).all() and not one[:, [0, 3]].any()  # zero weight never drawn
    freq = one.float().mean(0)  # first draw ~ w / sum w = 0.1, 0.3, 0.6
    assert torch.allclose(freq[[1, 2, 4]], torch.tensor([0.1, 0.3, 0.6]), atol=0.015)
    four = sample_from_scores(scores, 4, g)  # more than the positive ones: zeros fill
    assert (four.sum(1) == 4).all() and four[:, [1, 2, 4]].all()
    with pytest.raises(ValueError, match="non-negative"):
        sample_from_scores(torch.tensor([[1.0, -1.0]]), 1)


def test_pool_min_and_numpy_path_match_torch():
    g = PatchGrid(518, 518, num_patches=1370)
    maps = torch.randint(0, 200, (2, 518, 518), dtype=torch.uint8)
    cells = maps[:, :494, :518].reshape(2, 38, 13, 37, 14)
    assert torch.equal(g.pool(maps, "min"), cells.amin((2, 4)).reshape(2, -1)[:, :1370])
    assert torch.equal(g.pool(maps, "max"), cells.amax((2, 4)).reshape(2, -1)[:, :1370])
    assert torch.allclose(g.pool(maps, "sum"), cells.float().sum((2, 4)).reshape(2, -1)[:, :1370])
    expected_any = (cells > 100).any(4).any(2).reshape(2, -1)[:, :1370]
    assert torch.equal(g.pool(maps > 100, "any"), expected_any)
