"""The shared body of mae.py and rgmim.py: Hydra config -> settings -> run_mim_study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _common import init_ray, log, make_tracker, scaling_settings, to_dict
from omegaconf import DictConfig

from medmask.train import run_mim_study


def mim_settings(cfg: DictConfig) -> dict[str, Any]:
    """The plain settings dict :func:`medmask.train.run_mim_study` takes."""
    data = cfg.data
    return {
        "study": cfg.study,
        "seed": int(cfg.seed),
        "data": to_dict(data),
        "masking": {"name": cfg.masking.name, "ratio": float(cfg.masking.ratio),
                    "params": to_dict(cfg.masking.params)},
        "model": to_dict(cfg.model),
        "pretrain": to_dict(cfg.train.pretrain),
        "finetune": to_dict(cfg.train.finetune),
        "head": to_dict(cfg.head),
        "fractions": [float(f) for f in cfg.fractions],
        "modes": list(cfg.modes),
        "baselines": to_dict(cfg.baselines),
        "cache_dir": str(Path(cfg.cache_dir).resolve()),
        "storage_dir": str(Path(cfg.storage_dir).resolve()),
        "scaling": scaling_settings(cfg.cluster),
    }


def run(cfg: DictConfig) -> Any:

    tracker = make_tracker(cfg.tracking)
    init_ray(cfg.cluster)
    table = run_mim_study(mim_settings(cfg), tracker)
    columns = [c for c in ("method", "mode", "fraction", "accuracy", "macro_f1", "auc_mean")
               if c in table]
    log.info("results:\n%s", table[columns].to_string(index=False))
    print(table[columns].to_string(index=False))
    return table
