"""MAE: random patch masking -> fine-tuning -> evaluation, one MLflow study.

    python experiments/mae.py                       # quick default: phantoms, tiny ViT, 2 CPUs
    python experiments/mae.py fractions=[0.01,0.05,0.1,0.5,1.0] modes=[linear_probe,full]
    python experiments/mae.py +experiment=rgmim_paper data.root=/data/COVID-19_Radiography_Dataset
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mim import run  # noqa: E402


@hydra.main(config_path="../configs", config_name="mae", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
