"""Can the quick study's tiny ViT learn the benchmark phantom's classes at a lesion scale?

The benchmark phantom's classes are the texture and shape of extra density at 1-3 lung sites
(``medmask.data.phantom``). At the first draft's site radius (0.14-0.20 in normalized units,
2.5 % of a lesioned image under the lesion mask) the quick study's ViT (patch 4 at 64 px, 2
blocks of width 64, token-mean readout) stayed at chance even fully supervised, so no
pretraining could show an effect; the small CNN of ``phantom_difficulty.py`` learned it. This
trains that ViT from scratch, supervised, on labelled benchmark phantoms at each lesion radius
range and prints its test accuracy beside the two logistic regressions of
``phantom_difficulty.py`` (the shortcut on 16 x 16 patch means, and patch mean + std).

    python benchmarks/vit_lesion_scale.py                     # radii 0.14-0.20 and 0.30-0.42
    python benchmarks/vit_lesion_scale.py --train 512 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

from benchmarks.phantom_difficulty import patch_means, patch_means_and_stds  # noqa: E402
from medmask import columns as C  # noqa: E402
from medmask.data import phantom  # noqa: E402
from medmask.eval import logistic_accuracy  # noqa: E402
from medmask.models import create_model  # noqa: E402

PARAMS = {"img_size": 64, "patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4,
          "decoder_embed_dim": 64, "decoder_depth": 1, "decoder_num_heads": 4}
RADII = ((0.14, 0.20), (0.30, 0.42))


def train_vit(x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor, *, epochs: int,
              seed: int, lr: float = 1e-3, batch: int = 64) -> np.ndarray:
    """Supervised tiny ViT (token mean -> linear head; AdamW, one-cycle lr); test predictions."""
    torch.manual_seed(seed)
    encoder = create_model("mae_vit_tiny_64", **PARAMS)
    head = torch.nn.Linear(PARAMS["embed_dim"], 4)
    params = [*encoder.parameters(), *head.parameters()]
    steps = epochs * (len(y) // batch)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return head(encoder.forward_encoder(images)[:, 1:].mean(1))

    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for lo in range(0, len(y) - batch + 1, batch):
            idx = order[lo:lo + batch]
            loss = torch.nn.functional.cross_entropy(logits(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    encoder.eval()
    with torch.no_grad():
        return torch.cat([logits(test_x[i:i + 256]) for i in range(0, len(test_x), 256)]
                         ).argmax(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--test", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"tiny ViT (patch 4, 64 px, 2 blocks, token mean), supervised from scratch, "
          f"{args.train} train / {args.test} test benchmark phantoms (data seed 1), "
          f"{args.epochs} epochs, seeds {args.seeds}; chance 0.25")
    print(f"{'lesion radius':>14} {'lesion share':>12} {'shortcut':>9} {'mean+std':>9} "
          f"{'ViT test accuracy (per seed)':>30} {'s':>5}")
    for radius in RADII:
        begin = time.perf_counter()
        held = phantom.generate(args.train + args.test, 64, seed=1, lesion_radius=radius)
        images, labels = held[C.IMAGE], held[C.LABEL]
        train, test = slice(0, args.train), slice(args.train, None)
        share = float(held[C.LESION][labels != phantom.NORMAL].mean())
        shortcut = logistic_accuracy(patch_means(images[train]), labels[train],
                                     patch_means(images[test]), labels[test])
        texture = logistic_accuracy(patch_means_and_stds(images[train]), labels[train],
                                    patch_means_and_stds(images[test]), labels[test])
        x = torch.as_tensor(images[:, None])
        y = torch.as_tensor(labels)
        accuracy = [float((train_vit(x[train], y[train], x[test], epochs=args.epochs, seed=s)
                           == labels[test]).mean()) for s in args.seeds]
        each = "/".join(f"{a:.3f}" for a in accuracy)
        print(f"{radius[0]:.2f}-{radius[1]:.2f}{'':>5} {share:>12.3f} {shortcut:>9.3f} "
              f"{texture:>9.3f} {statistics.mean(accuracy):>12.3f} ({each}){'':>4} "
              f"{time.perf_counter() - begin:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
