"""Ray Train end to end: the pretraining loop on a real local Ray, killed and resumed."""

import pytest
from mlflow.tracking import MlflowClient

from medmask.preprocess import phantom_dataset
from medmask.tracking import Tracker
from medmask.train import ScalingSettings, build_trainer, pretrain_loop, steps_per_epoch, train_view
from medmask.train._trainer import EpochProgress

TINY_MAE = {"name": "mae_vit_tiny_64",
            "params": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                       "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                       "decoder_num_heads": 2}}


@pytest.mark.e2e
def test_killed_worker_resumes_from_its_checkpoint(ray_session, tmp_path, mlflow_uri):
    train = train_view(phantom_dataset(32, 32, seed=0, chunk=16)).materialize()
    tracker = Tracker(mlflow_uri, "resume-test")
    with tracker.stage("pretrain", parent=None) as stage:
        config = {
            "model": TINY_MAE,
            "masking": {"name": "rgmim", "ratio": 0.75, "params": {}},
            "optim": {"base_lr": 1e-3, "warmup_epochs": 0},
            "batch_size": 16,
            "epochs": 3,
            "steps_per_epoch": steps_per_epoch(32, 16, 1),
            "seed": 0,
            "mixed_precision": False,
            "tracking": {"uri": stage.uri, "run_id": stage.run_id},
            "inject_failure": {"epoch": 1, "marker": str(tmp_path / "killed")},
        }
        with EpochProgress("pretrain", 3) as progress:  # the driver's bar, fed by rank 0
            trainer = build_trainer(
                pretrain_loop, {**config, "progress": progress.queue}, {"train": train},
                scaling=ScalingSettings(num_workers=1, max_failures=1),
                storage_path=tmp_path / "ray", name="resume",
            )
            result = trainer.fit()
    assert sorted(set(progress.epochs)) == [0, 1, 2] and progress.bar.n == 3
    assert (tmp_path / "killed").read_text().startswith("killed at epoch 1")
    assert result.error is None and result.checkpoint is not None
    assert result.metrics["charts/epoch"] == 2
    assert result.metrics["charts/resumed_from_epoch"] == 1  # epoch 0 was not trained again
    assert result.metrics["train/steps"] == 2
    history = MlflowClient(mlflow_uri).get_metric_history(stage.run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
