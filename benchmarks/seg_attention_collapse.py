"""Does option 5's predicted mask collapse? In-process (no Ray) pretraining of seg_attention on
phantoms in each consistency mode, with and without the labelled BCE deviation
(``lung_bce_weight``), printing per epoch the training views' mask Dice against the phantom
lungs and its spatial std (the loop's ``train/seg_mask_*``), then the same on held-out,
unaugmented phantoms in eval mode. Collapse: std < 0.05 or Dice < 0.3.

    python benchmarks/seg_attention_collapse.py --size 64 --n-train 256 --epochs 6 --seed 0
    python benchmarks/seg_attention_collapse.py --variant classic   # Otsu lungs Dice ~0.9 there
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from medmask import columns as C
from medmask.data.phantom import generate
from medmask.keyed import image_keys
from medmask.methods import create_method
from medmask.methods._seg_attention import is_collapsed, mask_dice, mask_spatial_std
from medmask.segmentation import lung_mask

RUNS = (("warped", 0.0), ("literal", 0.0), ("warped", 0.2), ("literal", 0.2))


def held_out(model: torch.nn.Module, rows: dict) -> tuple[float, float]:
    """Eval-mode mask Dice against the lungs and spatial std on unaugmented images."""
    model.eval()
    images = torch.from_numpy(rows[C.IMAGE])[:, None]
    lungs = torch.from_numpy(np.isin(rows[C.ORGANS], C.LUNG_LABELS))
    with torch.no_grad():
        mask = model(images).mask
    return mask_dice(mask, lungs).mean().item(), mask_spatial_std(mask).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="benchmark", help="phantom variant (classic: the "
                        "one whose Otsu lungs are good)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = generate(args.n_train, args.size, args.seed, variant=args.variant)
    test = generate(args.n_test, args.size, args.seed, start=args.n_train, variant=args.variant)
    truth = np.isin(test[C.ORGANS], C.LUNG_LABELS)
    otsu = lung_mask(test[C.IMAGE])
    otsu_dice = 2 * (otsu & truth).sum((1, 2)) / (otsu.sum((1, 2)) + truth.sum((1, 2)))
    print(f"seg_attention collapse, in-process: {args.variant} phantoms, seed {args.seed}, "
          f"{args.size} px, "
          f"{args.n_train} train / {args.n_test} held-out phantoms, {args.epochs} epochs x "
          f"batch {args.batch}, AdamW lr {args.lr}; Otsu lungs vs phantom lungs Dice "
          f"{otsu_dice.mean():.3f} (the BCE target's quality)")
    for mode, bce in RUNS:
        torch.manual_seed(args.seed)
        config = {"seed": args.seed, "mixed_precision": False,
                  "method_params": {"consistency": mode, "lung_bce_weight": bce},
                  "model": {"name": "seg_attention_cnn_tiny", "params": {"img_size": args.size}}}
        parts = create_method("seg_attention").build(config, torch.device("cpu"), None)
        optimizer = torch.optim.AdamW(parts.model.parameters(), lr=args.lr, weight_decay=0.05)
        order = np.random.default_rng(args.seed)
        start, curve = time.perf_counter(), []
        for epoch in range(args.epochs):
            parts.model.train()
            for index in np.array_split(order.permutation(args.n_train),
                                        args.n_train // args.batch):
                batch = {C.IMAGE: torch.from_numpy(train[C.IMAGE][index]),
                         C.ORGANS: torch.from_numpy(train[C.ORGANS][index]),
                         C.IMAGE_KEY: torch.from_numpy(image_keys(train[C.ID][index]))}
                loss, _ = parts.batch_loss(parts.model, batch, epoch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            m = parts.epoch_metrics()
            curve.append(f"{m['train/seg_mask_dice']:.2f}/{m['train/seg_mask_std']:.3f}")
        dice, std = held_out(parts.model, test)
        verdict = "COLLAPSED" if is_collapsed(std, dice) else "ok"
        print(f"consistency={mode:7s} lung_bce_weight={bce:.1f}: held-out Dice {dice:.3f} std "
              f"{std:.3f} -> {verdict}; per epoch (train views, Dice/std) {' '.join(curve)}; "
              f"last consistency {m['train/loss_consistency']:.4f}, "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
