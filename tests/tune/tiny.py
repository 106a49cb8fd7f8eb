"""Tiny sweep settings for the Tune tests: 64-px phantoms, the tiny ViT, 1 + 1 epochs."""

from __future__ import annotations

from pathlib import Path

from medmask.train import MimSettings, settings_from_dict

STRATEGIES = {"random": {}, "rgmim": {"valid_labels": [1, 2], "min_overlap": 0.0}}


def tiny_settings(tmp_path: Path) -> MimSettings:
    """The MIM study settings of tests/train/test_mim_study_e2e.py, shrunk to seconds."""
    optim = {"base_lr": 8e-3, "weight_decay": 0.05, "warmup_epochs": 0}
    return settings_from_dict(MimSettings, {
        "study": "sweep-test",
        "seed": 0,
        "data": {"name": "phantom", "size": 64, "chunk": 64, "n_train": 64, "n_val": 32,
                 "n_test": 32},
        "masking": {"name": "random", "ratio": 0.75, "params": {}},
        "model": {"name": "mae_vit_tiny_64",
                  "params": {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
                             "decoder_embed_dim": 32, "decoder_depth": 1,
                             "decoder_num_heads": 2}},
        "pretrain": {"epochs": 1, "batch_size": 32, "mixed_precision": False,
                     "optim": {**optim, "betas": [0.9, 0.95]}},
        "finetune": {"epochs": 1, "batch_size": 32, "mixed_precision": False, "optim": optim},
        "head": {"num_classes": 4, "multilabel": False,
                 "class_names": ["Normal", "COVID", "Lung_Opacity", "Viral Pneumonia"]},
        "fractions": [1.0],
        "modes": ["full"],
        "baselines": {"from_scratch": False},
        "cache_dir": str(tmp_path / "cache"),
        "storage_dir": str(tmp_path / "ray"),
        "scaling": {"num_workers": 1, "use_gpu": False, "resources_per_worker": {"CPU": 1},
                    "max_failures": 0},
    })
