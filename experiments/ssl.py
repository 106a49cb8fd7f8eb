"""Contrastive SSL: SimCLR or a segmentation-guided option -> fine-tuning -> evaluation.

    python experiments/ssl.py                                  # simclr, tiny CNN, findings
    python experiments/ssl.py method=masked_contrastive        # option 1 (lung-weighted)
    python experiments/ssl.py method=seg_crop modes=[linear_probe,full]
    python experiments/ssl.py method=simclr model=contrastive data.size=224
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mim import mim_main  # noqa: E402

if __name__ == "__main__":
    mim_main("ssl")
