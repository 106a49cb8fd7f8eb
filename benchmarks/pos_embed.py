"""Sin-cos vs learnable position embeddings of the quick MAE at tiny budgets (in-process).

The quick MIM study's model (``configs/model/mae_tiny.yaml``: ``mae_vit_tiny_64``, patch 4,
64 px, 2 blocks) pretrained with random masks at 75 % on benchmark phantoms, with MAE's fixed
2-D sin-cos table (``pos_embed=sincos``) or RGMIM's learnable 1-D embeddings (the default),
the same seeds, images, masks and AdamW schedule. After each budget it prints, per seed:

- the masked-pixel MSE on held-out images against the visible-mean and Gaussian-inpainting
  baselines on the same masks (``medmask.eval``; lower is better);
- a linear probe (logistic regression on the frozen ``encode`` features) at 10 % of the
  labels, the quick study's low-label cell; step 0 is the same probe on the random
  initialisation (gate 1's baseline).

    python benchmarks/pos_embed.py                 # 2,048 images, 150 and 400 steps, 3 seeds
    python benchmarks/pos_embed.py --quick         # 1,024 images, 60 and 150 steps, 2 seeds
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]

from medmask import columns as C  # noqa: E402
from medmask.data import phantom  # noqa: E402
from medmask.eval import inpainting_loss, logistic_accuracy, visible_mean_loss  # noqa: E402
from medmask.masking import random_mask  # noqa: E402
from medmask.models import create_model  # noqa: E402

PARAMS = {"img_size": 64, "patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4,
          "decoder_embed_dim": 64, "decoder_depth": 1, "decoder_num_heads": 4}


def evaluate(model: torch.nn.Module, val: torch.Tensor, probe: dict[str, np.ndarray],
             seed: int) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        mask = random_mask(len(val), model.grid, 0.75,
                           generator=torch.Generator().manual_seed(10_000 + seed))
        out = model(val, mask)
        hidden = model.grid.unpool(mask.float())[:, None] > 0.5
        mse = (((out.prediction - val).square() * hidden).sum((1, 2, 3))
               / hidden.sum((1, 2, 3))).mean().item()
        features = {k: model.encode(torch.as_tensor(v[:, None])).numpy()
                    for k, v in (("train", probe["train"]), ("test", probe["test"]))}
    model.train()
    return {"mse": mse,
            "visible_mean": visible_mean_loss(val, hidden).mean().item(),
            "inpaint": inpainting_loss(val, hidden, 1.5).mean().item(),
            "probe10": logistic_accuracy(features["train"], probe["train_y"],
                                         features["test"], probe["test_y"])}


def run(pos_embed: str, seed: int, images: torch.Tensor, val: torch.Tensor,
        probe: dict[str, np.ndarray], budgets: list[int]) -> dict[int, dict[str, float]]:
    torch.manual_seed(seed)
    model = create_model("mae_vit_tiny_64", **PARAMS, pos_embed=pos_embed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-3, betas=(0.9, 0.95),
                                  weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    out, step = {0: evaluate(model, val, probe, seed)}, 0  # step 0: the random initialisation
    while step < budgets[-1]:
        order = torch.randperm(len(images), generator=generator)
        for lo in range(0, len(images) - 63, 64):
            batch = images[order[lo:lo + 64]]
            mask = random_mask(len(batch), model.grid, 0.75, generator=generator)
            loss = model(batch, mask).patch_loss[mask].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step in budgets:
                out[step] = evaluate(model, val, probe, seed)
            if step >= budgets[-1]:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, budgets, seeds = (1024, [60, 150], [0, 1]) if args.quick else (2048, [150, 400],
                                                                     [0, 1, 2])
    torch.set_num_threads(2)
    pool = phantom.generate(n, 64, seed=0)
    images = torch.as_tensor(pool[C.IMAGE][:, None])
    held = phantom.generate(1024 + 256, 64, seed=0, start=n)
    val = torch.as_tensor(held[C.IMAGE][:256, None])
    labels, test = held[C.LABEL][256:], held[C.IMAGE][256:]
    train_ids = np.arange(len(pool[C.LABEL]))[: n // 10]  # 10 % of the labels
    probe = {"train": pool[C.IMAGE][train_ids], "train_y": pool[C.LABEL][train_ids],
             "test": test, "test_y": labels}
    results = {kind: [run(kind, s, images, val, probe, budgets) for s in seeds]
               for kind in ("learnable", "sincos")}
    print(f"tiny MAE, {n} benchmark phantoms at 64 px, random masks 75 %, seeds {seeds}")
    print("pos_embed  steps  masked MSE (mean, per seed)        visible-mean  inpaint  "
          "probe@10% (mean, per seed)")
    for kind, runs in results.items():
        for b in [0, *budgets]:
            mse = [r[b]["mse"] for r in runs]
            acc = [r[b]["probe10"] for r in runs]
            print(f"{kind:<10} {b:>5}  {statistics.mean(mse):.4f} "
                  f"({', '.join(f'{v:.4f}' for v in mse)})  "
                  f"{statistics.mean(r[b]['visible_mean'] for r in runs):.4f}        "
                  f"{statistics.mean(r[b]['inpaint'] for r in runs):.4f}   "
                  f"{statistics.mean(acc):.3f} ({', '.join(f'{v:.3f}' for v in acc)})")


if __name__ == "__main__":
    main()
