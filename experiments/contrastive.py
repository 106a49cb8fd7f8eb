"""Contrastive SSL: SimCLR or a segmentation-guided option -> fine-tuning -> evaluation.

    python experiments/contrastive.py                            # simclr, tiny CNN, findings
    python experiments/contrastive.py method=masked_contrastive  # option 1 (lung-weighted)
    python experiments/contrastive.py method=seg_crop modes=[linear_probe,full]
    python experiments/contrastive.py method=multi_region +model.params.regions=6
    python experiments/contrastive.py method=simclr model=contrastive data.size=224
    python experiments/contrastive.py data=nih_cxr14 data.root=/data/CXR8 head=nih14 \
        method=masked_contrastive     # NIH ChestX-ray14: 14 labels, rule-based (Otsu) lungs

(Named contrastive.py, not ssl.py: experiments/ is sys.path[0] of the job, and an ssl.py there
would shadow the standard library module that pyarrow and urllib import.)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mim import mim_main  # noqa: E402

if __name__ == "__main__":
    mim_main("contrastive")
