"""Evaluation protocols (medmask.eval registry) on any dataset, one MLflow study run.

    python experiments/evaluate.py                          # eval=masked_area on phantoms
    python experiments/evaluate.py eval.params.ratios=[0.2,0.5] data.n=64
    python experiments/evaluate.py data=eyegaze data.root=/data/eyegaze
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import init_ray, make_tracker, mlflow_summary, to_dict  # noqa: E402

from medmask import columns as C  # noqa: E402
from medmask.eval import protocol_needs, run_protocol  # noqa: E402
from medmask.preprocess import source_dataset  # noqa: E402


def evaluation_batches(cfg: DictConfig, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """The dataset of ``cfg.data`` as tensor batches of ``image`` and ``columns``."""
    dataset, _ = source_dataset(to_dict(cfg.data), int(cfg.seed),
                                batch_size=int(cfg.batch_size))
    names = set(dataset.schema().names)
    keep = [c for c in (C.IMAGE, *columns) if c in names]
    return [{k: torch.from_numpy(np.array(v)) for k, v in batch.items()}  # writable copies
            for batch in dataset.select_columns(keep).iter_batches(
                batch_size=int(cfg.batch_size), batch_format="numpy")]


def run(cfg: DictConfig) -> Any:
    """Run the protocol ``cfg.eval`` on ``cfg.data``; print and log its table."""
    name = str(cfg.eval.name)
    needs = protocol_needs(name)  # an unknown protocol fails before any compute
    tracker = make_tracker(cfg.tracking)
    init_ray(cfg.cluster, verbose=bool(cfg.get("verbose", False)))
    tags = {"protocol": name, "dataset": cfg.data.name, "seed": int(cfg.seed)}
    with tracker.study(f"eval-{name}-{cfg.data.name}", tags=tags) as study:
        study.log_params(to_dict(cfg))
        table = run_protocol(name, evaluation_batches(cfg, needs), **to_dict(cfg.eval.params))
        study.log_table(table, f"{name}.csv")
    print(f"{name} on {cfg.data.name}\n{table.to_string(index=False)}")
    print(mlflow_summary(tracker, f"run {study.run_id}"))
    return table


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    return run(cfg)


if __name__ == "__main__":
    main()
