import numpy as np
import pytest
import torch

from medmask.masking import (
    PatchGrid,
    create_mask_strategy,
    patch_validity,
    region_guided_mask,
)


def _half_lung_map(batch: int, size: int) -> torch.Tensor:
    organs = torch.zeros(batch, size, size, dtype=torch.uint8)
    organs[:, :, : size // 2] = 1  # right lung on the image's left half
    organs[:, : size // 4, size // 2 :] = 3  # heart: not a valid label by default
    return organs


def test_fill_when_fewer_valid_than_m():
    g = PatchGrid(224, 224, patch_size=16)  # 196 patches, 98 valid (left 7 columns)
    organs = _half_lung_map(4, 224)
    mask, stats = region_guided_mask(organs, g, 0.75, torch.Generator().manual_seed(0),
                                     return_stats=True)
    valid = patch_validity(organs, g)
    assert valid.sum(1).tolist() == [98] * 4
    assert mask.sum(1).tolist() == [147] * 4  # floor(0.75 * 196)
    assert mask[valid].all()  # every valid patch masked before any fill
    assert torch.allclose(stats.valid_fraction, torch.full((4,), 0.5))
    assert torch.allclose(stats.filled_share, torch.full((4,), 49 / 147))


def test_only_valid_patches_when_enough():
    g = PatchGrid(518, 518, num_patches=1370)
    organs = torch.ones(3, 518, 518, dtype=torch.uint8)
    organs[:, :, 300:] = 0  # columns 0..21 (w0 < 300) are valid: 22 of 37 columns
    mask, stats = region_guided_mask(organs, g, 0.4, torch.Generator().manual_seed(1),
                                     return_stats=True)
    valid = patch_validity(organs, g)
    assert mask.sum(1).tolist() == [548] * 3  # floor(0.4 * 1370)
    assert not (mask & ~valid).any()
    assert stats.filled_share.tolist() == [0.0] * 3
    assert not torch.equal(mask[0], mask[1])


def test_min_overlap_and_labels():
    g = PatchGrid(8, 8, patch_size=4)  # 4 patches
    organs = torch.zeros(1, 8, 8, dtype=torch.uint8)
    organs[0, 0, 0] = 2  # 1 pixel of 16 in patch 0
    organs[0, :4, 4:] = 2  # all of patch 1
    organs[0, 4:, :4] = 3  # heart fills patch 2
    assert patch_validity(organs, g).tolist() == [[True, True, False, False]]
    assert patch_validity(organs, g, min_overlap=0.5).tolist() == [[False, True, False, False]]
    assert patch_validity(organs, g, valid_labels=(3,)).tolist() == [[False, False, True, False]]
    assert patch_validity(organs.bool(), g).tolist() == [[True, True, True, False]]


def test_strategy_reads_organs_and_keyed_seeds():
    g = PatchGrid(64, 64, patch_size=8)
    organs = _half_lung_map(3, 64).numpy()
    strategy = create_mask_strategy("rgmim", valid_labels=[1, 2])
    seeds = np.array([5, 6, 7])
    a = strategy({"organs": organs, "mask_seed": seeds}, g, 0.5)
    b = strategy({"organs": organs[1:], "mask_seed": seeds[1:]}, g, 0.5)
    assert torch.equal(a[1:], b) and (a.sum(1) == 32).all()
    with pytest.raises(ValueError, match="organs"):
        strategy({"image": np.zeros((3, 64, 64))}, g, 0.5)


def test_empty_region_falls_back_to_random_with_full_fill():
    g = PatchGrid(64, 64, patch_size=8)
    mask, stats = region_guided_mask(torch.zeros(2, 64, 64, dtype=torch.uint8), g, 0.5,
                                     return_stats=True)
    assert mask.sum(1).tolist() == [32, 32]
    assert stats.filled_share.tolist() == [1.0, 1.0]


def test_fast_validity_matches_reference_per_pixel_test():
    g = PatchGrid(518, 518, num_patches=1370)
    organs = torch.randint(0, 4, (2, 518, 518), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    organs[:, 100:300] = 0
    organs[0, 150, 150] = 2  # one lung pixel in an empty band
    for labels in [(1, 2), (3,), (0, 1), (1, 3)]:
        region = torch.isin(organs, torch.tensor(labels, dtype=torch.uint8))
        reference = region[:, : 38 * 13, : 37 * 14].reshape(2, 38, 13, 37, 14).any(4).any(2)
        assert torch.equal(patch_validity(organs, g, labels), reference.reshape(2, -1)[:, :1370])


def test_no_fill_when_exactly_m_valid_and_stats_exact():
    g = PatchGrid(8, 8, patch_size=2)  # 16 patches, m = floor(0.5 * 16) = 8
    organs = torch.zeros(2, 8, 8, dtype=torch.uint8)
    organs[0, :4] = 1  # image 0: 8 valid patches (top two patch rows)
    organs[1, 0, 0] = 2  # image 1: 1 valid patch -> 7 filled
    mask, stats = region_guided_mask(organs, g, 0.5, torch.Generator().manual_seed(3),
                                     return_stats=True)
    assert mask[0].tolist() == [True] * 8 + [False] * 8
    assert mask[1, 0] and mask.sum(1).tolist() == [8, 8]
    assert stats.valid_fraction.tolist() == [0.5, 1 / 16]
    assert stats.filled_share.tolist() == [0.0, 7 / 8]


def test_region_priority_one_is_random_masking_and_inf_the_paper_rule():
    from medmask.masking import random_mask

    grid = PatchGrid(32, 32, patch_size=4)
    organs = _half_lung_map(6, 32)
    seeds = np.arange(6, dtype=np.int64) * 977 + 5
    random = random_mask(6, grid, 0.5, seeds=seeds)
    assert torch.equal(region_guided_mask(organs, grid, 0.5, seeds=seeds, region_priority=1.0),
                       random)
    rule = region_guided_mask(organs, grid, 0.5, seeds=seeds)
    assert torch.equal(region_guided_mask(organs, grid, 0.5, seeds=seeds,
                                          region_priority=float("inf")), rule)
    valid = patch_validity(organs, grid)
    assert bool((rule <= valid).all())  # 32 of 64 valid, m = 32: exactly the lungs
    with pytest.raises(ValueError, match="region_priority"):
        region_guided_mask(organs, grid, 0.5, region_priority=0.5)


def test_region_priority_moves_the_lung_share_between_random_and_the_rule():
    grid = PatchGrid(32, 32, patch_size=4)
    organs = _half_lung_map(4000, 32)  # half of the patches valid, m = 16 of 64
    valid = patch_validity(organs, grid)
    g = torch.Generator().manual_seed(0)
    shares = []
    for priority in (1.0, 3.0, float("inf")):
        mask, stats = region_guided_mask(organs, grid, 0.25, g, region_priority=priority,
                                         return_stats=True)
        inside = float((mask & valid).sum() / mask.sum())
        assert float(stats.filled_share.mean()) == pytest.approx(1 - inside)
        shares.append(inside)
    # random: ~ the valid fraction 0.5; the rule: 1.0; w = 3 in between
    assert shares[0] == pytest.approx(0.5, abs=0.01)
    assert 0.6 < shares[1] < 0.9 and shares[2] == 1.0


def test_region_guided_masks_are_uniform_over_the_valid_patches():
    grid = PatchGrid(16, 16, patch_size=4)  # 16 patches
    organs = torch.zeros(20000, 16, 16, dtype=torch.uint8)
    organs[:, :8, :] = 1  # patches 0..7 valid
    mask = region_guided_mask(organs, grid, 0.25, torch.Generator().manual_seed(1))  # m = 4
    freq = mask.float().mean(0)
    assert torch.allclose(freq[:8], torch.full((8,), 0.5), atol=0.015)  # 4 of 8, uniformly
    assert float(freq[8:].max()) == 0.0
    random = create_mask_strategy("random")({"image": torch.zeros(20000, 16, 16)}, grid, 0.25,
                                            generator=torch.Generator().manual_seed(2))
    assert torch.allclose(random.float().mean(0), torch.full((16,), 0.25), atol=0.015)


def test_lesion_first_masks_the_lesion_patches_first():
    grid = PatchGrid(16, 16, patch_size=4)
    lesion = torch.zeros(3, 16, 16, dtype=torch.uint8)
    lesion[:, 0:2, 0:2] = 1  # patch 0
    lesion[1, 12:16, 12:16] = 1  # and patch 15 in image 1
    strategy = create_mask_strategy("lesion_first")
    mask = strategy({"lesion": lesion, "mask_seed": np.arange(3, dtype=np.int64)}, grid, 0.25)
    assert mask.sum(1).tolist() == [4, 4, 4] and bool(mask[:, 0].all()) and bool(mask[1, 15])
    with pytest.raises(ValueError, match="lesion"):
        strategy({"image": torch.zeros(1, 16, 16)}, grid, 0.25)


def test_source_000_grid_note_the_vit14_alternative():
    formula = PatchGrid(518, 518, num_patches=1370)
    vit = PatchGrid(518, 518, patch_size=14)
    assert (formula.rows, formula.cols, formula.patch_h, formula.patch_w) == (38, 37, 13, 14)
    assert (vit.rows, vit.cols, vit.patch_h, vit.num_patches) == (37, 37, 14, 37 ** 2)
    assert 1370 == 37 ** 2 + 1  # a ViT-14's tokens at 518 px plus its CLS token


@pytest.mark.parametrize("name", ["random", "rgmim"])
def test_epoch_masks_are_per_image_whatever_the_layout_and_new_each_epoch(name):
    from medmask.keyed import image_keys
    from medmask.masking import epoch_masks

    grid = PatchGrid(32, 32, patch_size=4)
    organs = _half_lung_map(8, 32)
    organs[:, :, :4] = 0  # 56 valid patches: m = 48 < 56, so the rgmim draw is random
    batch = {"image": torch.zeros(8, 32, 32), "organs": organs,
             "image_key": torch.from_numpy(image_keys(np.array([f"im{i}" for i in range(8)])))}
    strategy = create_mask_strategy(name)
    whole = epoch_masks(strategy, batch, grid, 0.75, seed=0, epoch=1)
    order = torch.tensor([6, 2, 5])
    part = epoch_masks(strategy, {k: v[order] for k, v in batch.items()}, grid, 0.75, seed=0,
                       epoch=1)
    assert torch.equal(whole[order], part)
    following = epoch_masks(strategy, batch, grid, 0.75, seed=0, epoch=2)
    assert (following != whole).any(1).all()  # every image gets a new mask
