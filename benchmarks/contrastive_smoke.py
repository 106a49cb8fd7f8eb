"""Smoke comparison, in-process (no Ray): every contrastive method (the baseline, its
reconstruction control, options 1-5), MAE and the untrained CNN (From Scratch) with the same
optimizer steps and batch size on phantoms, then the same linear probe (logistic regression on
frozen, standardized ``encode`` features: the pretraining loop's convergence probe,
:func:`medmask.eval.multilabel_logistic_probabilities`) on the five findings: mean test AUC over
seeds (mean, sample std) and the step time relative to simclr (on a loaded machine a noisy
figure: compare runs on an idle one).

A smoke run: tiny models, few steps. The MAE row's backbone is the MIM ViT. seg_crop is left
out: its lung crops are the stages' (``sweep=seg_guided_ssl`` has it).

    python benchmarks/contrastive_smoke.py --size 32 --n-train 128 --steps 20 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from medmask import columns as C
from medmask.data.phantom import generate
from medmask.eval import multilabel_logistic_probabilities, per_class_auc
from medmask.keyed import image_keys
from medmask.masking import create_mask_strategy
from medmask.methods import create_method

MODELS = {"simclr": ("contrastive_cnn_tiny", {}),
          "simclr_recon": ("contrastive_cnn_tiny", {"img_size": None}),
          "masked_contrastive": ("contrastive_cnn_tiny", {}),
          "multi_region": ("contrastive_cnn_tiny", {"regions": 6}),
          "pathology_aware": ("contrastive_cnn_tiny", {}),
          "seg_attention": ("seg_attention_cnn_tiny", {"img_size": None}),
          "scratch": ("contrastive_cnn_tiny", {}),
          "mae": ("mae_vit_tiny_64", {"img_size": None, "patch_size": 4, "embed_dim": 64,
                                      "depth": 2, "num_heads": 4, "decoder_embed_dim": 64,
                                      "decoder_depth": 1, "decoder_num_heads": 4})}


def batch_of(rows: dict, index: np.ndarray) -> dict[str, torch.Tensor]:
    return {C.IMAGE: torch.from_numpy(rows[C.IMAGE][index]),
            C.ORGANS: torch.from_numpy(rows[C.ORGANS][index]),
            C.IMAGE_KEY: torch.from_numpy(image_keys(rows[C.ID][index]))}


def features(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model.encode(torch.from_numpy(images[i:i + 64])[:, None])
                          for i in range(0, len(images), 64)]).numpy()


def run_arm(name: str, args: argparse.Namespace, seed: int, train: dict,
            test: dict) -> tuple[float, int, float, float, float]:
    """(probe mean AUC, NaN labels, first loss, last loss, s per step) of one arm and seed."""
    model_name, params = MODELS[name]
    method_name = "simclr" if name == "scratch" else name
    torch.manual_seed(seed)
    params = {k: (args.size if v is None else v) for k, v in params.items()}
    config = {"seed": seed, "mixed_precision": False, "method_params": {},
              "model": {"name": model_name, "params": params},
              "masking": {"name": "random", "ratio": 0.75, "params": {}}}
    method = create_method(method_name)
    strategy = create_mask_strategy("random") if method.uses_masks else None
    parts = method.build(config, torch.device("cpu"), strategy)
    optimizer = torch.optim.AdamW(parts.model.parameters(), lr=1e-3, weight_decay=0.05)
    generator = np.random.default_rng(seed)
    steps = 0 if name == "scratch" else args.steps
    losses = [np.nan]
    start = time.perf_counter()
    for step in range(steps):
        index = generator.choice(args.n_train, args.batch, replace=False)
        parts.model.train()
        loss, _ = parts.batch_loss(parts.model, batch_of(train, index),
                                   step * args.batch // args.n_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    per_step = (time.perf_counter() - start) / max(steps, 1)
    x_train, x_test = features(parts.model, train[C.IMAGE]), features(parts.model, test[C.IMAGE])
    probs = multilabel_logistic_probabilities(x_train.astype(np.float64),
                                              train[C.LABELS].astype(np.float64),
                                              x_test.astype(np.float64))
    aucs = per_class_auc(probs, test[C.LABELS], multilabel=True)  # NaN: no positive, left out
    return (float(np.nanmean(aucs)), int(np.isnan(aucs).sum()), losses[min(1, steps)],
            losses[-1], per_step)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[tuple[float, int, float, float, float]]] = {}
    start = time.perf_counter()
    for seed in args.seeds:
        train = generate(args.n_train, args.size, seed)
        test = generate(args.n_test, args.size, seed, start=args.n_train)
        for name in args.methods:
            results.setdefault(name, []).append(run_arm(name, args, seed, train, test))
    print(f"SMOKE RUN (tiny models): seeds {args.seeds}, {args.size} px, {args.n_train} train / "
          f"{args.n_test} test phantoms, {args.steps} steps x batch {args.batch}, linear probe "
          f"on the findings; {time.perf_counter() - start:.0f} s in all")
    reference = np.mean([r[4] for r in results.get("simclr", [(0, 0, 0, 0, np.nan)])])
    print("method              backbone                probe_auc mean   std   nan  "
          "loss0    lossN   step_s  vs simclr")
    for name, rows in results.items():
        auc = np.array([r[0] for r in rows])
        step = np.mean([r[4] for r in rows])
        spread = auc.std(ddof=1) if len(auc) > 1 else np.nan
        print(f"{name:19s} {MODELS[name][0]:22s} {auc.mean():14.4f} {spread:6.4f} "
              f"{sum(r[1] for r in rows):4d} {np.mean([r[2] for r in rows]):7.4f} "
              f"{np.mean([r[3] for r in rows]):7.4f} {step:8.3f} "
              f"{'-' if name == 'scratch' else f'{100 * (step / reference - 1):+.0f}%'}")


if __name__ == "__main__":
    main()
