import cv2
import numpy as np
import pandas as pd
import pytest

from medmask import columns as C
from medmask.columns import BAD_IMAGE, IMAGE_KEY
from medmask.data.decode import DecodeImages
from medmask.data.imageio import ImageReadError
from medmask.data.phantom import generate
from medmask.keyed import image_keys
from medmask.preprocess import (
    TASK_ROWS,
    AddOrgans,
    MaskImages,
    build_dataset,
    drop_flagged,
    manifest_blocks,
    manifest_dataset,
    phantom_dataset,
    pipeline_counts,
)


def _phantom_batch(n=6, size=64):
    batch = generate(n, size, seed=2)
    batch[IMAGE_KEY] = image_keys(batch[C.ID])
    return batch


def test_image_keys_are_stable_int64():
    keys = image_keys(np.array(["a", "b", "a"], dtype=object))
    assert keys.dtype == np.int64 and keys[0] == keys[2] != keys[1]


def test_mask_stage_counts_and_epochs():
    batch = _phantom_batch()
    stage = MaskImages("rgmim", 0.75, patch_size=8, seed=0, epoch=0)
    out = stage(batch)
    assert out[C.MASK].shape == (6, 64) and (out[C.MASK].sum(1) == 48).all()
    pixels = _pixel_mask(out[C.MASK], 8, 8)
    assert pixels.reshape(6, -1).sum(1).tolist() == [48 * 64] * 6  # 48 patches of 8x8
    np.testing.assert_array_equal(out[C.MASKED_IMAGE], np.where(pixels, 0, batch[C.IMAGE]))
    assert out["mask_seed"].dtype == np.int64 and len(set(out["mask_seed"].tolist())) == 6
    np.testing.assert_array_equal(stage(batch)[C.MASK], out[C.MASK])  # deterministic
    later = MaskImages("rgmim", 0.75, patch_size=8, seed=0, epoch=1)(batch)
    assert not np.array_equal(later[C.MASK], out[C.MASK])  # new masks each epoch
    half = {k: v[3:] for k, v in batch.items()}
    np.testing.assert_array_equal(stage(half)[C.MASK], out[C.MASK][3:])  # layout-independent
    assert (out["valid_fraction"] > 0.2).all() and (out["filled_share"] >= 0).all()


def test_masked_image_zeroes_exactly_the_masked_patches():
    batch = _phantom_batch(2, 32)
    out = MaskImages("random", 0.5, patch_size=8)(batch)
    pixel_mask = np.kron(out[C.MASK].reshape(2, 4, 4), np.ones((8, 8))).astype(bool)
    assert (out[C.MASKED_IMAGE][pixel_mask] == 0).all()
    np.testing.assert_array_equal(out[C.MASKED_IMAGE][~pixel_mask], batch[C.IMAGE][~pixel_mask])


@pytest.mark.parametrize("ratio", [1.0, -0.2, float("nan")])
def test_bad_ratio_and_strategy_fail_at_construction(ratio):
    with pytest.raises(ValueError, match="ratio"):
        MaskImages("random", ratio, patch_size=8)
    with pytest.raises(ValueError, match="valid names"):
        MaskImages("no-such-strategy", 0.5, patch_size=8)


def _pixel_mask(mask, rows, cols, patch=8):
    """Patch mask [B, rows*cols] -> pixel mask [B, rows*patch, cols*patch] (square patches)."""
    return np.kron(mask.reshape(-1, rows, cols), np.ones((patch, patch))).astype(bool)


def test_add_organs_segments_only_missing_maps_and_counts_empty(monkeypatch):
    import medmask.preprocess._pipeline

    calls = []

    def fake_segment_lungs(images):  # lungs in the left half of non-blank images only
        calls.append(len(images))
        out = np.zeros(images.shape, np.uint8)
        out[images.reshape(len(images), -1).max(1) > 0, :, :16] = C.ORGAN_RIGHT_LUNG
        return out

    monkeypatch.setattr(medmask.preprocess._pipeline, "segment_lungs", fake_segment_lungs)
    batch = _phantom_batch(3, 32)
    batch[C.ORGANS][1] = 0  # missing organ map -> rule-based
    batch[C.IMAGE][2] = 0.0  # a blank image: nothing to segment
    batch[C.ORGANS][2] = 0
    truth = batch[C.ORGANS][0].copy()
    out = AddOrgans()(batch)
    assert calls == [2]  # one vectorized call for the two rows without organs
    assert out[C.ORGANS_RULE_BASED].tolist() == [False, True, True]
    assert out[C.EMPTY_ORGANS].tolist() == [False, False, True]
    np.testing.assert_array_equal(out[C.ORGANS][0], truth)  # ground truth kept
    assert (out[C.ORGANS][1] == C.ORGAN_RIGHT_LUNG).sum() == 32 * 16


def test_nan_heatmaps_are_zeroed_and_flagged():
    batch = _phantom_batch(3, 32)
    batch[C.GAZE][1, 4, 5] = np.nan
    batch[C.GAZE][2, 0, 0] = np.inf
    out = MaskImages("random", 0.5, patch_size=8)(batch)
    assert out["nonfinite_heatmap"].tolist() == [False, True, True]
    assert np.isfinite(out[C.GAZE]).all() and out[C.GAZE][1, 4, 5] == 0
    np.testing.assert_array_equal(out[C.GAZE][0], batch[C.GAZE][0])


def _write_folder(tmp_path, n=4, size=48):
    data = generate(n, size, seed=5)
    rows = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), (data[C.IMAGE][i] * 255).astype(np.uint8))
        rows.append({C.ID: f"img{i}", C.PATH: str(path), C.LABEL: int(data[C.LABEL][i])})
    return pd.DataFrame(rows)


def test_decode_stage_names_the_bad_file_or_flags_it(tmp_path):
    manifest = _write_folder(tmp_path)
    broken = tmp_path / "img1.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    batch = {k: manifest[k].to_numpy() for k in manifest.columns}
    with pytest.raises(ImageReadError, match="img1.png"):
        DecodeImages(32)(batch)
    out = DecodeImages(32, on_bad_image="flag")(batch)
    assert out[BAD_IMAGE].tolist() == [False, True, False, False]
    assert out[C.IMAGE].shape == (4, 32, 32) and out[C.IMAGE][0].max() > 0


def test_decode_flags_masks_of_another_size_and_bad_masks(tmp_path):
    manifest = _write_folder(tmp_path, n=3, size=48)
    lungs = np.zeros((48, 48), np.uint8)
    lungs[10:40, 5:20] = 255  # image-left half: the patient's right lung
    lungs[10:40, 28:44] = 255
    cv2.imwrite(str(tmp_path / "m0.png"), lungs)
    cv2.imwrite(str(tmp_path / "m1.png"), cv2.resize(lungs, (24, 24),
                                                      interpolation=cv2.INTER_NEAREST))
    (tmp_path / "m2.png").write_bytes(b"broken")
    manifest[C.ORGANS_PATH] = [str(tmp_path / f"m{i}.png") for i in range(3)]
    batch = {k: manifest[k].to_numpy() for k in manifest.columns}
    with pytest.raises(ImageReadError, match="m2.png"):
        DecodeImages(48)(batch)
    out = DecodeImages(48, on_bad_image="flag")(batch)
    assert out["mask_resized"].tolist() == [False, True, False]
    assert out["bad_mask"].tolist() == [False, False, True]
    assert out[BAD_IMAGE].tolist() == [False, False, False]
    assert (out[C.ORGANS][0] == C.ORGAN_RIGHT_LUNG).sum() == 30 * 15
    assert (out[C.ORGANS][0] == C.ORGAN_LEFT_LUNG).sum() == 30 * 16
    assert out[C.ORGANS][2].max() == 0  # no mask: segmented later, counted there


def test_decode_reads_chexmask_rle_organs(tmp_path):
    from medmask.data.chexmask import rle_encode

    manifest = _write_folder(tmp_path, n=2, size=48)
    right, left, heart = (np.zeros((48, 48), bool) for _ in range(3))
    right[8:40, 4:20], left[8:40, 28:44], heart[30:44, 18:34] = True, True, True
    manifest["rle_right_lung"] = [rle_encode(right), ""]
    manifest["rle_left_lung"] = [rle_encode(left), ""]
    manifest["rle_heart"] = [rle_encode(heart), "-1"]
    manifest["mask_height"], manifest["mask_width"] = [48, 96], [48, 96]
    batch = {k: manifest[k].to_numpy() for k in manifest.columns}
    out = DecodeImages(24)(batch)
    assert out["mask_resized"].tolist() == [False, True]
    organs = out[C.ORGANS]
    assert organs[1].max() == 0
    assert (organs[0] == C.ORGAN_HEART).sum() == 7 * 8  # heart painted over the lungs
    assert set(np.unique(organs[0]).tolist()) == {0, 1, 2, 3}


def test_phantom_pipeline_on_ray(ray_session):
    # the classic phantom: on the benchmark one, RGMIM at 0.75 masks some images' whole lung
    # field and their filler alike in every epoch, so their masks cannot change
    ds = build_dataset(phantom_dataset(40, 64, seed=1, chunk=16, variant="classic"),
                       strategy="rgmim", ratio=0.75, patch_size=8, seed=3).materialize()
    counts = pipeline_counts(ds)
    assert counts["images"] == 40 and counts["empty_organs"] == 0
    assert counts["bad_image"] == 0 and counts["nonfinite_heatmap"] == 0
    import ray.data  # one operator may use every CPU (no 50% per-operator reservation)

    assert not ray.data.DataContext.get_current().op_resource_reservation_enabled
    assert 0 < counts["mean_valid_fraction"] < 1
    rows = ds.take_all()
    ids = [r[C.ID] for r in rows]
    assert sorted(ids) == [f"phantom-s1-{i:06d}" for i in range(40)]
    assert all(r[C.MASK].sum() == 48 for r in rows)
    for r in rows:  # exactly the masked patches are zeroed, 48 x 64 pixels per row
        pixels = _pixel_mask(r[C.MASK], 8, 8)[0]
        assert pixels.sum() == 48 * 64
        np.testing.assert_array_equal(r[C.MASKED_IMAGE], np.where(pixels, 0, r[C.IMAGE]))
    # the same image gets the same mask whatever the block layout
    again = build_dataset(phantom_dataset(40, 64, seed=1, chunk=7, variant="classic"),
                          strategy="rgmim",
                          ratio=0.75, patch_size=8, seed=3).take_all()
    by_id = {r[C.ID]: r[C.MASK] for r in again}
    assert all(np.array_equal(by_id[r[C.ID]], r[C.MASK]) for r in rows)
    # ... and a new one in the next epoch
    later = build_dataset(phantom_dataset(40, 64, seed=1, chunk=16, variant="classic"),
                          strategy="rgmim",
                          ratio=0.75, patch_size=8, seed=3, epoch=1, batch_size=5).take_all()
    changed = sum(not np.array_equal({r[C.ID]: r[C.MASK] for r in later}[r[C.ID]], r[C.MASK])
                  for r in rows)
    assert changed == 40


def test_manifest_pipeline_counts_and_drops_flagged(ray_session, tmp_path):
    manifest = _write_folder(tmp_path, n=6)
    (tmp_path / "img2.png").write_bytes(b"not a png")
    ds = build_dataset(manifest_dataset(manifest, 32, on_bad_image="flag", batch_size=2),
                       strategy="random", ratio=0.5, patch_size=8).materialize()
    counts = pipeline_counts(ds)
    assert counts["images"] == 6 and counts[BAD_IMAGE] == 1
    assert counts["organs_rule_based"] == 6
    assert drop_flagged(ds).count() == 5


def test_manifest_blocks_hold_enough_rows_per_task_and_have_no_cap():
    # a Ray task costs ~0.1-0.2 s beside its work: blocks of 24 rows ran at half the speed
    assert manifest_blocks(100, 16) == 1  # below one block's size: one block
    assert manifest_blocks(3072, 16) == 3072 // TASK_ROWS
    assert manifest_blocks(3072, 256) == 12  # never below the batch size
    assert manifest_blocks(112_120, 32) == 112_120 // TASK_ROWS  # NIH: no cap of 64 blocks
