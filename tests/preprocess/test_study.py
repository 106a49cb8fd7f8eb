import inspect
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from medmask import columns as C
from medmask.data.manifest import DATASET_ADAPTERS
from medmask.preprocess import (
    PIPELINE_KEYS,
    adapter_options,
    study_counts,
    study_manifest,
    study_splits,
)
from tests.data.fixtures import write_covid_radiography, write_lgg

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
# Data configs read by the contour-overlay study (medmask.data.findings, not study_splits):
# their keys, exactly (tests/tune/test_clip_overlay_sweep.py composes them into settings).
FINDINGS_READER = {"phantom_findings": {"name", "variant", "size", "n_train", "n_test"}}
THIRDS = {"train": 0.34, "val": 0.33, "test": 0.33}


def lgg_config(root: Path, **extra) -> dict:
    return {"name": "lgg_slices", "root": str(root), "size": 8, "chunk": 32,
            "on_bad_image": "raise", "split_fractions": THIRDS, **extra}


def test_lgg_manifest_split_by_patient_with_counts(tmp_path):
    write_lgg(tmp_path)  # 4 cases of 3 patients, 8 slices with target
    manifest = study_manifest(lgg_config(tmp_path), seed=0)
    per_patient = manifest.groupby(C.PATIENT)[C.SPLIT].nunique()
    assert (per_patient == 1).all() and set(manifest[C.SPLIT]) == set(C.SPLITS)
    assert sum(manifest.attrs["split_counts"].values()) == 8
    counts = study_counts(manifest)
    assert counts["dropped/no_target"] == 8 and counts["slices_total"] == 16
    assert counts["rows/train"] + counts["rows/val"] + counts["rows/test"] == 8
    again = study_manifest(lgg_config(tmp_path), seed=0)
    assert again[C.SPLIT].tolist() == manifest[C.SPLIT].tolist()


def test_bad_study_configs_fail_with_the_reason(tmp_path):
    write_lgg(tmp_path, cases=("TCGA_CS_4941_19960909",))
    with pytest.raises(ValueError, match="data.root must be set"):
        study_manifest(lgg_config("???"), 0)
    with pytest.raises(ValueError, match="sum to 1"):
        study_manifest(lgg_config(tmp_path, split_fractions={"train": 0.9, "val": 0.3,
                                                             "test": 0.1}), 0)
    with pytest.raises(ValueError, match=r"split\(s\) .* have no rows"):
        study_manifest(lgg_config(tmp_path), 0)  # one patient cannot fill three splits
    with pytest.raises(ValueError, match="lacks"):
        study_splits({"name": "phantom", "size": 32, "chunk": 4}, 0)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_data_config_passes_only_adapter_options(path):
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    assert "size" in cfg and "name" in cfg
    if path.stem in FINDINGS_READER:  # experiments/clip_overlay.data_settings reads these
        assert set(cfg) == FINDINGS_READER[path.stem], f"{path.name}: not its reader's keys"
        return
    if cfg["name"] == "phantom":
        assert {"n", "n_train", "n_val", "n_test", "chunk"} <= set(cfg)
        return
    loader = DATASET_ADAPTERS.get(cfg["name"])
    accepted = set(inspect.signature(loader).parameters)
    assert set(adapter_options(cfg)) <= accepted, f"{path.name}: not adapter options"
    assert "root" in cfg and set(PIPELINE_KEYS) & set(cfg) >= {"name", "root", "size"}


@pytest.mark.parametrize("variant", [None, "classic"])
def test_phantom_splits_are_consecutive_ranges_of_one_seed(ray_session, variant):
    from medmask.data import phantom

    data = {"name": "phantom", "n": 99, "size": 32, "chunk": 3, "n_train": 5, "n_val": 2,
            "n_test": 4}
    options = {} if variant is None else {"variant": variant}  # None: the default, benchmark
    splits = study_splits({**data, **options}, seed=7)
    assert list(splits) == ["train", "val", "test"]
    start = 0
    for split, dataset in splits.items():
        rows = sorted(dataset.take_all(), key=lambda r: r[C.ID])  # Ray Data may reorder
        n = data[f"n_{split}"]
        expected = phantom.generate(n, 32, seed=7, start=start, **options)
        order = np.argsort(expected[C.ID])
        assert [r[C.ID] for r in rows] == list(np.asarray(expected[C.ID])[order])
        for key in (C.IMAGE, C.LABEL, C.LESION):
            np.testing.assert_array_equal(np.stack([r[key] for r in rows]),
                                          np.asarray(expected[key])[order])
        start += n
    with pytest.raises(ValueError, match="valid variants: benchmark, classic, confounded"):
        study_splits({**data, "variant": "fancy"}, seed=7)


def test_covid_radiography_through_study_splits(ray_session, tmp_path):
    write_covid_radiography(tmp_path, per_class=3)
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "covid_radiography.yaml"))
    cfg.update(root=str(tmp_path), size=16,
               split_fractions={"train": 0.5, "val": 0.25, "test": 0.25})
    datasets = study_splits(cfg, seed=0)
    rows = {split: ds.take_all() for split, ds in datasets.items()}
    assert sum(len(r) for r in rows.values()) == 12 and all(rows.values())
    ids = [[r[C.ID] for r in part] for part in rows.values()]
    assert len(set().union(*ids)) == 12  # disjoint
    row = rows["train"][0]
    assert set(row) == {C.ID, C.PATIENT, C.IMAGE, C.IMAGE_KEY, C.LABEL, C.ORGANS, C.SPLIT,
                        C.SOURCE}
    assert row[C.IMAGE].shape == (16, 16) and row[C.IMAGE].dtype == np.float32
    assert row[C.ORGANS].shape == (16, 16) and isinstance(row[C.IMAGE_KEY], int | np.integer)
    assert {r[C.SPLIT] for r in rows["val"]} == {"val"}
    assert sorted({r[C.LABEL] for part in rows.values() for r in part}) == [0, 1, 2, 3]


def test_lgg_through_study_splits_has_lesions(ray_session, tmp_path):
    write_lgg(tmp_path)
    datasets = study_splits(lgg_config(tmp_path), seed=0)
    rows = {split: ds.take_all() for split, ds in datasets.items()}
    assert sum(len(r) for r in rows.values()) == 8
    patients = [{r[C.PATIENT] for r in part} for part in rows.values()]
    assert all(len(p) == 1 for p in patients) and len(set().union(*patients)) == 3
    for part in rows.values():
        for row in part:
            assert set(row) == {C.ID, C.PATIENT, C.IMAGE, C.IMAGE_KEY, C.LESION, C.SPLIT,
                                C.SOURCE}
            assert row[C.IMAGE].shape == (8, 8) and row[C.IMAGE].dtype == np.float32
            assert row[C.IMAGE].min() >= 0 and row[C.IMAGE].max() <= 1
            assert row[C.LESION].dtype == np.uint8 and row[C.LESION].any()


def test_decathlon_volumes_through_study_splits(ray_session, tmp_path):
    from tests.data.fixtures import write_decathlon

    root = write_decathlon(tmp_path, cases=tuple(f"BRATS_{k:03d}" for k in range(1, 7)))
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "decathlon.yaml"))
    cfg.update(root=str(root), size=16, split_fractions={"train": 0.5, "val": 0.17,
                                                          "test": 0.33})
    datasets = study_splits(cfg, seed=1, batch_size=3)  # batches span two volumes
    rows = {split: ds.take_all() for split, ds in datasets.items()}
    assert {s: len(r) for s, r in rows.items()} == {"train": 12, "val": 4, "test": 8}
    volumes = [{r[C.PATIENT] for r in part} for part in rows.values()]
    assert sum(len(v) for v in volumes) == len(set().union(*volumes)) == 6  # by volume
    for row in rows["train"]:
        assert row[C.IMAGE].shape == (16, 16) and row[C.LESION].any()
        assert abs(float(row[C.IMAGE].mean()) - 0.5) < 0.05
