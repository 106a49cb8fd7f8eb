"""Label fractions of a study's train split: stratified by class, or random without labels."""

from __future__ import annotations

import pandas as pd
import ray

from medmask import columns as C
from medmask.train import label_fraction_subset


def test_fractions_nest_with_and_without_class_labels(ray_session: None) -> None:
    table = pd.DataFrame({C.ID: [f"s{i:02d}" for i in range(40)],
                          C.LABEL: [i % 4 for i in range(40)]})
    for frame in (table, table[[C.ID]]):  # a segmentation set has no class label
        dataset = ray.data.from_pandas([frame])
        _, small = label_fraction_subset(dataset, 0.1, seed=3)
        subset, large = label_fraction_subset(dataset, 0.5, seed=3)
        assert set(small) < set(large)
        assert sorted(r[C.ID] for r in subset.take_all()) == large
    _, labelled = label_fraction_subset(ray.data.from_pandas([table]), 0.1, seed=3)
    assert len(labelled) == 4  # one of each class
    _, unlabelled = label_fraction_subset(ray.data.from_pandas([table[[C.ID]]]), 0.1, seed=3)
    assert len(unlabelled) == 4
