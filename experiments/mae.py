"""MAE: random patch masking -> fine-tuning -> evaluation, one MLflow study.

    python experiments/mae.py                       # quick default: phantoms, tiny ViT, 2 CPUs
    python experiments/mae.py fractions=[0.01,0.05,0.1,0.5,1.0] modes=[linear_probe,full]
    python experiments/mae.py +experiment=rgmim_paper data.root=/data/COVID-19_Radiography_Dataset
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mim import mim_main  # noqa: E402

if __name__ == "__main__":
    mim_main("mae")
