"""The same config and seed give the same run, bit for bit, even through a worker failure.

Two Ray Train pretraining runs of the same config: the first runs straight through, the
second's worker is killed at epoch 1 and Ray Train restarts it from its last checkpoint. Both
must give the same loss curve and every weight equal: the data order, the masks and the
augmentations are keyed (not drawn from a global stream), and the checkpoint carries the
weights, the optimizer and the scheduler, so a resumed run continues exactly where it stopped.

Each run builds its dataset afresh (16 phantom-generating Ray tasks on 2 CPUs, materialized):
without ``preserve_order`` the blocks land in the order the tasks finish, and the loop sees
another batch order (hence other batches' masks, another loss curve) on every run.
"""

from pathlib import Path

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
from medmask.train._trainer import EpochProgress

TINY_MAE = {"name": "mae_vit_tiny_64",
            "params": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                       "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                       "decoder_num_heads": 2}}
EPOCHS = 3


def _run(name: str, tmp_path: Path, mlflow_uri: str, *, kill_at: int | None = None):
    train = train_view(phantom_dataset(256, 32, seed=0, chunk=16)).materialize()
    with Tracker(mlflow_uri, "determinism").stage(name, parent=None) as stage:
        config = {
            "model": TINY_MAE, "masking": {"name": "random", "ratio": 0.75, "params": {}},
            "optim": {"base_lr": 1e-3, "warmup_epochs": 1}, "batch_size": 32,
            "epochs": EPOCHS, "steps_per_epoch": steps_per_epoch(256, 32, 1), "seed": 0,
            "mixed_precision": False, "shuffle_buffer": 64,
            "tracking": {"uri": stage.uri, "run_id": stage.run_id},
        }
        if kill_at is not None:
            config["inject_failure"] = {"epoch": kill_at, "marker": str(tmp_path / "killed")}
        with EpochProgress(name, EPOCHS) as progress:  # the driver's bar, fed by rank 0
            result = build_trainer(
                pretrain_loop, {**config, "progress": progress.queue}, {"train": train},
                scaling=ScalingSettings(num_workers=1, max_failures=1),
                storage_path=tmp_path / "ray", name=name).fit()
    history = MlflowClient(mlflow_uri).get_metric_history(stage.run_id, "train/loss")
    with result.checkpoint.as_directory() as directory:
        weights = load_checkpoint(directory)["model"]
    losses = {m.step: m.value for m in history}  # a resumed run logs each epoch once
    return result, progress, [losses[e] for e in sorted(losses)], weights, len(history)


@pytest.mark.e2e
def test_same_seed_same_run_bit_for_bit_through_a_killed_worker(ray_session, tmp_path,
                                                                  mlflow_uri):
    _, _, losses_a, weights_a, _ = _run("straight", tmp_path, mlflow_uri)
    result, progress, losses_b, weights_b, logged = _run("killed", tmp_path, mlflow_uri,
                                                         kill_at=1)
    # the second run really was killed at epoch 1 and resumed there (epoch 0 not trained again)
    assert (tmp_path / "killed").read_text().startswith("killed at epoch 1")
    assert result.error is None and result.metrics["charts/epoch"] == EPOCHS - 1
    assert result.metrics["charts/resumed_from_epoch"] == 1
    assert result.metrics["train/steps"] == steps_per_epoch(256, 32, 1)
    assert logged == EPOCHS  # one loss per epoch in MLflow: nothing logged twice
    assert sorted(set(progress.epochs)) == [0, 1, 2] and progress.bar.n == EPOCHS
    # ... and continued exactly: the same loss curve and every weight equal
    assert len(losses_a) == EPOCHS and losses_a == losses_b
    assert weights_a.keys() == weights_b.keys()
    for key, value in weights_a.items():  # every step's batches, masks and updates the same
        assert torch.equal(value, weights_b[key]), key
