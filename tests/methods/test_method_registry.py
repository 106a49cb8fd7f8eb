"""The methods registry: MIM entries, errors, and a non-MIM method through the loop skeleton
and the public stage functions on a real local Ray (Train) with a real MLflow store."""

from __future__ import annotations

import pytest
import torch

from medmask.methods import create_method, list_methods
from medmask.models import create_model
from medmask.preprocess import study_splits
from medmask.tracking import Tracker
from medmask.train import (
    MimSettings,
    load_checkpoint,
    run_finetuning,
    run_pretraining,
    settings_from_dict,
)
from medmask.train._trainer import ScalingSettings
from tests.methods.toy_contrastive import MODEL

TOY = "tests.methods.toy_contrastive:toy_contrastive"


def test_mim_methods_are_registered_with_their_masks():
    assert {"mae", "rgmim", "ahm"} <= set(list_methods())
    assert create_method("mae").default_masking == "random"
    assert create_method("rgmim").default_masking == "rgmim"
    assert all(create_method(n).uses_masks for n in ("mae", "rgmim", "ahm"))
    with pytest.raises(ValueError, match=r"unknown learning method 'simclr2'.*valid names: ahm"):
        create_method("simclr2")
    with pytest.raises(ValueError, match="cannot import"):
        create_method("tests.methods.nowhere:method")


def test_a_method_is_named_by_its_import_path():
    method = create_method(TOY)
    assert method.name == "toy_contrastive" and not method.uses_masks
    assert method.default_model == MODEL


@pytest.mark.e2e
def test_a_contrastive_method_runs_through_the_skeleton_and_the_stages(
        ray_session, tmp_path, mlflow_uri):
    optim = {"base_lr": 1e-2, "weight_decay": 0.0, "warmup_epochs": 0}
    settings = settings_from_dict(MimSettings, {
        "study": "toy", "seed": 0, "method": TOY,
        "data": {"name": "phantom", "size": 32, "chunk": 32, "n_train": 64, "n_val": 32,
                 "n_test": 32},
        "masking": {"name": "random", "ratio": 0.0, "params": {}},
        "model": {"name": MODEL, "params": {}},
        "pretrain": {"epochs": 2, "batch_size": 32, "mixed_precision": False, "optim": optim},
        "finetune": {"epochs": 1, "batch_size": 32, "mixed_precision": False, "optim": optim},
        "head": {"num_classes": 4, "multilabel": False},
        "cache_dir": str(tmp_path / "cache"), "storage_dir": str(tmp_path / "ray"),
    })
    scaling = ScalingSettings(num_workers=1, max_failures=0)
    datasets = {k: v.materialize() for k, v in study_splits(settings.data, 0).items()}
    tracker = Tracker(mlflow_uri, "methods-test")
    with tracker.study("toy", tags={}) as study, \
            tracker.stage("pretrain", parent=study, tags={}) as stage:
        checkpoint = run_pretraining(settings.pretraining(), datasets, stage, scaling)
        again = run_pretraining(settings.pretraining(), datasets, stage, scaling)  # cached
    assert again == checkpoint
    state = load_checkpoint(checkpoint)
    assert state["model_name"] == MODEL and state["epoch"] == 1
    fresh = create_model(MODEL).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in state["model"].items())
    with tracker.stage("finetune", parent=study, tags={}) as stage:
        metrics = run_finetuning(settings.finetuning(), datasets, stage, scaling, checkpoint, 1.0,
                                 "linear_probe")
    assert metrics["num_samples"] == 32 and 0.0 <= metrics["accuracy"] <= 1.0
