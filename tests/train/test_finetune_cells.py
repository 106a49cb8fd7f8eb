"""Several fine-tuning cells in one Ray Train run (finetune_cells): a worker killed inside the
second cell resumes there without training the first again, and the second cell still gives
exactly what it gives trained alone (real local Ray Train, real MLflow store)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from medmask.preprocess import study_splits
from medmask.tracking import Tracker
from medmask.train import FinetuneCell, MimSettings, finetune_cells, settings_from_dict
from medmask.train._trainer import ScalingSettings

MODEL = {"name": "mae_vit_tiny_64",
         "params": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                    "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                    "decoder_num_heads": 2}}


def _settings(tmp_path, inject_failure=None):
    optim = {"base_lr": 4e-3, "weight_decay": 0.05, "warmup_epochs": 1}
    return settings_from_dict(MimSettings, {
        "study": "cells", "seed": 0,
        "data": {"name": "phantom", "size": 32, "chunk": 32, "n_train": 64, "n_val": 32,
                 "n_test": 32},
        "masking": {"name": "random", "ratio": 0.75, "params": {}},
        "model": MODEL,
        "pretrain": {"epochs": 1, "batch_size": 32, "mixed_precision": False, "optim": optim},
        "finetune": {"epochs": 2, "batch_size": 16, "mixed_precision": False, "optim": optim,
                     "inject_failure": inject_failure},
        "head": {"num_classes": 4, "multilabel": False},
        # two lrs: each cell is two runs of the loop, the better on validation kept
        "recipe": {"drop_path": 0.1, "label_smoothing": 0.1, "select_on": "accuracy",
                   "lr_grid": [1e-3, 4e-3], "augment": {"flip_p": 0.5},
                   "shuffle_buffer": 32, "min_steps": 0},
        "cache_dir": str(tmp_path / "cache"), "storage_dir": str(tmp_path / "ray"),
    })


@pytest.mark.e2e
@pytest.mark.slow
def test_cells_in_one_run_equal_each_cell_alone_and_resume_inside_a_cell(
        ray_session, tmp_path, mlflow_uri):
    settings = _settings(tmp_path)
    datasets = {k: v.materialize() for k, v in study_splits(settings.data, 0).items()}
    scaling = ScalingSettings(num_workers=1, max_failures=1)
    tracker = Tracker(mlflow_uri, "cells-test")
    specs = [(0.5, "full"), (1.0, "linear_probe")]

    def run(settings, specs):
        with tracker.study("cells", tags={}) as study, contextlib.ExitStack() as stack:
            cells = [FinetuneCell(fraction, mode, stack.enter_context(
                tracker.stage(f"{mode}-{fraction}", parent=study, tags={})))
                for fraction, mode in specs]
            return finetune_cells(settings.finetuning(), datasets, cells, scaling, None)

    # both cells in one run, the worker killed inside the second (its first lr, epoch 1)
    marker = tmp_path / "killed"
    failing = _settings(tmp_path, {"epoch": 1, "cell": 2, "marker": str(marker)})
    together = run(failing, specs)
    assert marker.exists()  # the worker was killed in cell 2 and Ray Train restarted it
    alone = run(settings, specs[1:])[0]  # the second cell without the first, never killed
    # the second cell resumed inside itself and gives exactly what it gives alone
    assert alone.base_lr == together[1].base_lr and alone.grid == together[1].grid
    np.testing.assert_array_equal(alone.probs, together[1].probs)
    assert all(one.metrics["num_samples"] == 32 for one in together)
    assert set(together[0].grid) == {1e-3, 4e-3}
    # the two cells differ (another fraction, another mode): not one result copied twice
    assert not np.array_equal(together[0].probs, together[1].probs)
