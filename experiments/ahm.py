"""AHM, the main job: reconstruction net -> RL masking policy -> AHM pretraining -> segmentation.

    python experiments/ahm.py                      # quick default: phantoms, local Ray, 2 CPUs
    python experiments/ahm.py segmentation.fractions=[0.05,0.1,0.5,1.0] policy.random_share=0
    python experiments/ahm.py seeds=[0,1,2]        # the results: 3 seeds, mean and spread
    python experiments/ahm.py +ablation=random_share    # AHM Table V: p in {0,...,50,100}%
    python experiments/ahm.py policy.checkpoint=/path/policy.pt data=lgg ...  # policy transfer
    # on a cluster (Ray 2.60 needs token auth for job submission, see README):
    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env configs/runtime_env.yaml -- python experiments/ahm.py cluster=ray

Each invocation is one MLflow study run; the stages (reconstruction, policy, pretrain-ahm,
segment-<method>-frac<k>) are nested runs; finished stages are reused on a re-run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    init_ray,
    make_tracker,
    mlflow_summary,
    scaling_settings,
    to_dict,
)

from medmask.train import AhmSettings, run_ahm_study, settings_from_dict

RESULT_COLUMNS = ("method", "fraction", "dice", "iou", "ppv", "sensitivity", "hd95",
                  "boundary_iou")


def ahm_settings(cfg: DictConfig, seed: int | None = None) -> AhmSettings:
    """The typed settings :func:`medmask.train.run_ahm_study` takes (unknown keys fail here,
    before Ray starts)."""
    return settings_from_dict(AhmSettings, {
        "study": cfg.study,
        "seed": int(cfg.seed if seed is None else seed),
        "data": to_dict(cfg.data),
        "model": to_dict(cfg.model),
        "ratio": float(cfg.masking.ratio),
        "pretrain": to_dict(cfg.train.pretrain),
        "policy": to_dict(cfg.policy),
        "segmentation": {**to_dict(cfg.segmentation), **to_dict(cfg.train.segmentation)},
        "cache_dir": str(Path(cfg.cache_dir).resolve()),
        "storage_dir": str(Path(cfg.storage_dir).resolve()),
        "scaling": scaling_settings(cfg.cluster),
    })


def policy_summary(check: dict[str, float]) -> str:
    """The policy diagnostics (test split) as a few readable lines."""
    if not check:
        return "policy diagnostics: none"
    losses = {k.removeprefix("test/").removesuffix("_mask_loss"): v for k, v in check.items()
              if k.startswith("test/") and k.endswith("_mask_loss")}
    lines = ["policy diagnostics (test split; masked-patch loss, higher = harder masks)"]
    lines += [f"  {name:<16} {value:.5f}" for name, value in losses.items()]
    lines.append(f"  captured share at p=0: {check.get('captured_share_p0', float('nan')):.3f} "
                 f"[{check.get('captured_share_p0_ci_low', float('nan')):.3f}, "
                 f"{check.get('captured_share_p0_ci_high', float('nan')):.3f}]; beats the "
                 f"position oracle: {bool(check.get('policy_p0_beats_position_oracle'))}")
    rarely = check.get("spearman_v_oracle_rarely_masked")
    rarely_text = (f"{rarely:.3f}" if rarely is not None
                   else "n/a, no image has 3 patches masked < 10% of the time")
    lines.append(f"  Spearman(V, oracle): {check.get('spearman_v_oracle', float('nan')):.3f} "
                 f"(rarely masked: {rarely_text}); compactness policy/random/oracle: "
                 + "/".join(f"{check.get(f'compactness/{m}', float('nan')):.2f}"
                            for m in ("policy_p0", "random", "oracle")))
    return "\n".join(lines)


SEED_METRICS = ("captured_share_p0", "hard_vs_random_ratio", "spearman_v_oracle",
                "policy_p0_beats_position_oracle", "test/random_mask_loss",
                "test/policy_p0_mask_loss", "test/position_oracle_mask_loss",
                "test/oracle_mask_loss")


def seed_summary(tables: list[Any], checks: list[dict[str, float]]) -> tuple[Any, str]:
    """Mean and spread over seeds of the Dice per method and label fraction and of the main
    policy diagnostics: (the aggregated Dice table, the printed text)."""
    import pandas as pd

    results = pd.concat(tables, ignore_index=True)
    dice = (results.groupby(["method", "fraction"])["dice"]
            .agg(["mean", "std", "count"]).reset_index())
    diagnostics = pd.DataFrame(checks)
    rows = [f"  {name:<32} {diagnostics[name].mean():.4f} +- {diagnostics[name].std():.4f}"
            for name in SEED_METRICS if name in diagnostics]
    text = (f"over {len(tables)} seeds (mean +- sd)\nDice\n"
            + dice.to_string(index=False, float_format=lambda v: f"{v:.4f}")
            + "\npolicy diagnostics\n" + "\n".join(rows))
    return dice, text


@hydra.main(config_path="../configs", config_name="ahm", version_base="1.3")
def main(cfg: DictConfig) -> Any:

    seeds = [int(s) for s in (cfg.get("seeds") or [cfg.seed])]
    settings = [ahm_settings(cfg, seed) for seed in seeds]  # every config error before Ray
    tracker = make_tracker(cfg.tracking)
    init_ray(cfg.cluster, verbose=bool(cfg.get("verbose", False)))
    tables, checks = [], []
    for seed, seed_settings in zip(seeds, settings, strict=True):  # one study run per seed
        table = run_ahm_study(seed_settings, tracker)
        check = table.attrs.get("policy_check", {})
        text = table[[c for c in RESULT_COLUMNS if c in table]].to_string(
            index=False, float_format=lambda v: f"{v:.4f}")
        summary = policy_summary(check)
        print(f"AHM segmentation results (test split, seed {seed})\n{text}\n{summary}")
        tables.append(table.assign(seed=seed))
        checks.append(dict(check))
    if len(seeds) > 1:
        dice, text = seed_summary(tables, checks)
        with tracker.study(f"{cfg.study}-seeds", tags={"seeds": str(seeds)}) as run:
            run.log_table(dice, "dice_over_seeds.csv")
            run.log_metrics({f"{k}/mean": float(np.mean([c[k] for c in checks if k in c]))
                             for k in SEED_METRICS if any(k in c for c in checks)})
        print(f"AHM {text}")
    print(mlflow_summary(tracker))
    return tables[-1]


if __name__ == "__main__":
    main()
