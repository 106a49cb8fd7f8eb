"""Does longer MAE pretraining make the quick ViT's frozen features separate the classes?

Gate 1 of the MIM benchmark (issue 11) asks a linear probe on the MAE encoder's frozen
features to beat the same probe on the same random initialisation at 10 % of the labels. The
quick study pretrains for 576 steps (8 epochs of 4,608 images at batch 64) and its probe stays
at chance. This runs the quick study's model (``configs/model/mae_tiny.yaml``: patch 4, 64 px,
2 blocks) in-process on the same unlabelled pool of benchmark phantoms with random masks at
75 % for up to ``--steps`` steps, with MAE's pixel target or its per-patch normalized target
(``norm_pix_loss``), and after each budget probes the frozen features (logistic regression,
``medmask.eval.logistic_accuracy``) on 1,024 labelled images at 10 % and 100 % against 1,024
test images, with three readouts: the mean of the patch tokens (``encode``, the quick study's
probe), their mean and standard deviation (a texture statistic) and their maximum (a lesion
occupies a few percent of the tokens). Step 0 is the random initialisation: the gate's
baseline.

    python benchmarks/mae_probe_budget.py                    # 3,000 steps, seeds 0 and 1
    python benchmarks/mae_probe_budget.py --quick            # 400 steps, seed 0
    python benchmarks/mae_probe_budget.py --steps 1500 --seeds 0 --targets pixel
    python benchmarks/mae_probe_budget.py --patch-size 8 --steps 900   # tokens of 8 x 8 px
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

from medmask import columns as C  # noqa: E402
from medmask.data import phantom  # noqa: E402
from medmask.eval import logistic_accuracy  # noqa: E402
from medmask.masking import random_mask  # noqa: E402
from medmask.models import create_model  # noqa: E402

PARAMS = {"img_size": 64, "patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4,
          "decoder_embed_dim": 64, "decoder_depth": 1, "decoder_num_heads": 4}
POOL, LABELLED, TEST = 4608, 1024, 1024


@torch.no_grad()
def features(model: torch.nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    """Frozen features of [n, H, W] images: token mean (``gap``) and mean + std."""
    model.eval()
    tokens = torch.cat([model.forward_encoder(torch.as_tensor(images[i:i + 256, None]))[:, 1:]
                        for i in range(0, len(images), 256)])
    model.train()
    gap = tokens.mean(1)
    return {"gap": gap.numpy(), "gap+std": torch.cat([gap, tokens.std(1)], 1).numpy(),
            "max": tokens.amax(1).numpy()}


def probe(model: torch.nn.Module, data: dict[str, np.ndarray]) -> dict[str, float]:
    train, test = features(model, data["train"]), features(model, data["test"])
    tenth = len(data["train_y"]) // 10
    out = {}
    for readout in train:
        out[f"{readout}@10%"] = logistic_accuracy(train[readout][:tenth], data["train_y"][:tenth],
                                                  test[readout], data["test_y"])
        out[f"{readout}@100%"] = logistic_accuracy(train[readout], data["train_y"],
                                                   test[readout], data["test_y"])
    return out


def run(target: str, seed: int, pool: torch.Tensor, data: dict[str, np.ndarray],
        budgets: list[int], params: dict) -> dict[int, dict[str, float]]:
    torch.manual_seed(seed)
    model = create_model("mae_vit_tiny_64", **params, norm_pix_loss=target == "norm_pix")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-3, betas=(0.9, 0.95),
                                  weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    out, step, losses = {0: probe(model, data)}, 0, []
    while step < budgets[-1]:
        order = torch.randperm(len(pool), generator=generator)
        for lo in range(0, len(pool) - 63, 64):
            batch = pool[order[lo:lo + 64]]
            mask = random_mask(len(batch), model.grid, 0.75, generator=generator)
            loss = model(batch, mask).patch_loss[mask].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step in budgets:
                out[step] = {**probe(model, data), "loss": statistics.mean(losses[-50:])}
                print(f"  {target} seed {seed} step {step}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in out[step].items()), flush=True)
            if step >= budgets[-1]:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--targets", nargs="+", default=["pixel", "norm_pix"],
                        choices=["pixel", "norm_pix"])
    parser.add_argument("--patch-size", type=int, default=PARAMS["patch_size"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    params = {**PARAMS, "patch_size": args.patch_size}
    steps, seeds = (400, [0]) if args.quick else (args.steps, args.seeds)
    budgets = sorted({steps // 3, steps})
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pool = torch.as_tensor(phantom.generate(POOL, 64, seed=0)[C.IMAGE][:, None])
    held = phantom.generate(LABELLED + TEST, 64, seed=1)
    data = {"train": held[C.IMAGE][:LABELLED], "train_y": held[C.LABEL][:LABELLED],
            "test": held[C.IMAGE][LABELLED:], "test_y": held[C.LABEL][LABELLED:]}
    results = {t: [run(t, s, pool, data, budgets, params) for s in seeds] for t in args.targets}
    print(f"\ntiny MAE (quick model, patch {args.patch_size}), {POOL} benchmark phantoms at 64 px, "
          f"random masks 75 %, batch 64, seeds {seeds}; probe: {LABELLED} labelled "
          f"(10 % = {LABELLED // 10}), {TEST} test, chance 0.25; step 0 = the random "
          f"initialisation ({time.perf_counter() - start:.0f} s)")
    keys = list(next(iter(results.values()))[0][0])
    print(f"{'target':<9} {'steps':>5}  " + "  ".join(f"{k:>20}" for k in keys))
    for target, runs in results.items():
        for b in [0, *budgets]:
            cells = []
            for k in keys:
                values = [r[b][k] for r in runs]
                each = "/".join(f"{v:.3f}" for v in values)
                cells.append(f"{statistics.mean(values):.3f} ({each})")
            print(f"{target:<9} {b:>5}  " + "  ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
