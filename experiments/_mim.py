"""The shared main of mae.py, rgmim.py and contrastive.py: Hydra config -> typed settings ->
run_mim_study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from _common import ROOT, init_ray, make_tracker, mlflow_summary, scaling_settings, to_dict
from omegaconf import DictConfig

from medmask.train import MimSettings, run_mim_study, settings_from_dict

RESULT_COLUMNS = ("method", "mode", "fraction", "seeds", "accuracy", "auc_mean",
                  "diff_vs_scratch", "ci_low", "ci_high", "per_seed_diff", "valid_fraction",
                  "filled_share", "recon_mse", "inpaint_mse", "step_s", "peak_rss_mb",
                  "probe_auc_best", "convergence_epoch")


def mim_settings(cfg: DictConfig) -> MimSettings:
    """The typed :class:`MimSettings` of a MIM config; unknown keys fail here, listing the
    valid ones, before Ray starts."""
    return settings_from_dict(MimSettings, {
        "study": cfg.study,
        "seed": cfg.seed,
        "method": cfg.method.name,
        "method_params": to_dict(cfg.method.params) if cfg.method.get("params") else {},
        "crop": to_dict(cfg.method.crop) if cfg.method.get("crop") else None,
        "data": to_dict(cfg.data),
        "masking": to_dict(cfg.masking),
        "model": to_dict(cfg.model),
        "pretrain": to_dict(cfg.train.pretrain),
        "finetune": to_dict(cfg.train.finetune),
        "head": to_dict(cfg.head),
        "fractions": list(cfg.fractions),
        "modes": list(cfg.modes),
        "baselines": to_dict(cfg.baselines),
        "recipe": to_dict(cfg.train.recipe) if cfg.train.get("recipe") else {},
        "seeds": list(cfg.get("seeds") or []),
        "controls": to_dict(cfg.controls) if cfg.get("controls") else {},
        "probe": to_dict(cfg.probe) if cfg.get("probe") else {},
        "cache_dir": str(Path(cfg.cache_dir).resolve()),
        "storage_dir": str(Path(cfg.storage_dir).resolve()),
        "scaling": scaling_settings(cfg.cluster),
    })


def run(cfg: DictConfig) -> Any:
    """Run the MIM study of ``cfg`` and print its results table."""
    settings = mim_settings(cfg)  # bad keys fail before any compute
    tracker = make_tracker(cfg.tracking)
    init_ray(cfg.cluster, verbose=bool(cfg.get("verbose", False)))
    table = run_mim_study(settings, tracker)
    text = table[[c for c in RESULT_COLUMNS if c in table]].to_string(
        index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
    print(text)
    print(mlflow_summary(tracker))
    return table


def mim_main(config_name: str) -> None:
    """The Hydra entry point of ``configs/<config_name>.yaml`` (``mae``, ``rgmim``,
    ``contrastive``)."""
    hydra.main(config_path=str(ROOT / "configs"), config_name=config_name,
               version_base="1.3")(run)()
