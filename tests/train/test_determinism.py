"""The same config and seed give the same run: two Ray Train pretraining runs, bit for bit.

Each run builds its dataset afresh (16 phantom-generating Ray tasks on 2 CPUs, materialized):
without ``preserve_order`` the blocks land in the order the tasks finish, and the loop sees
another batch order (hence other batches' masks, another loss curve) on every run.
"""

import pytest
import torch
from mlflow.tracking import MlflowClient

from medmask.preprocess import phantom_dataset
from medmask.tracking import Tracker
from medmask.train import (
    ScalingSettings,
    build_trainer,
    load_checkpoint,
    pretrain_loop,
    steps_per_epoch,
    train_view,
)

TINY_MAE = {"name": "mae_vit_tiny_64",
            "params": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                       "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                       "decoder_num_heads": 2}}


def _run(name: str, tmp_path, mlflow_uri) -> tuple[list[float], dict[str, torch.Tensor]]:
    train = train_view(phantom_dataset(256, 32, seed=0, chunk=16)).materialize()
    with Tracker(mlflow_uri, "determinism").stage(name, parent=None) as stage:
        config = {
            "model": TINY_MAE, "masking": {"name": "random", "ratio": 0.75, "params": {}},
            "optim": {"base_lr": 1e-3, "warmup_epochs": 0}, "batch_size": 32, "epochs": 2,
            "steps_per_epoch": steps_per_epoch(256, 32, 1), "seed": 0,
            "mixed_precision": False, "shuffle_buffer": 64,
            "tracking": {"uri": stage.uri, "run_id": stage.run_id},
        }
        result = build_trainer(pretrain_loop, config, {"train": train},
                               scaling=ScalingSettings(num_workers=1),
                               storage_path=tmp_path / "ray", name=name).fit()
    history = MlflowClient(mlflow_uri).get_metric_history(stage.run_id, "train/loss")
    with result.checkpoint.as_directory() as directory:
        weights = load_checkpoint(directory)["model"]
    return [m.value for m in sorted(history, key=lambda m: m.step)], weights


@pytest.mark.e2e
def test_two_runs_with_the_same_seed_are_bit_identical(ray_session, tmp_path, mlflow_uri):
    losses_a, weights_a = _run("first", tmp_path, mlflow_uri)
    losses_b, weights_b = _run("second", tmp_path, mlflow_uri)
    assert len(losses_a) == 2 and losses_a == losses_b  # the loss curve, exactly
    assert weights_a.keys() == weights_b.keys()
    for key, value in weights_a.items():  # every step's batches and masks were the same
        assert torch.equal(value, weights_b[key]), key
