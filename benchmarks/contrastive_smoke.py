"""Smoke comparison, in-process (no Ray): simclr vs masked_contrastive vs MAE pretraining with
the same optimizer steps and batch size on phantoms, then the same linear probe (logistic
regression on frozen ``encode`` features) on the five findings: mean test AUC and wall time.

A smoke run: tiny models, one seed, few steps. The MAE row's backbone is the MIM ViT.

    python benchmarks/contrastive_smoke.py --size 32 --n-train 128 --steps 20 --seed 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medmask import columns as C
from medmask.data.phantom import generate
from medmask.keyed import image_keys
from medmask.masking import create_mask_strategy
from medmask.methods import create_method

MODELS = {"simclr": ("contrastive_cnn_tiny", {}),
          "masked_contrastive": ("contrastive_cnn_tiny", {}),
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = generate(args.n_train, args.size, args.seed)
    test = generate(args.n_test, args.size, args.seed, start=args.n_train)
    rows = []
    for name, (model_name, params) in MODELS.items():
        torch.manual_seed(args.seed)
        params = {k: (args.size if v is None else v) for k, v in params.items()}
        config = {"seed": args.seed, "mixed_precision": False, "method_params": {},
                  "model": {"name": model_name, "params": params},
                  "masking": {"name": "random", "ratio": 0.75, "params": {}}}
        method = create_method(name)
        strategy = create_mask_strategy("random") if method.uses_masks else None
        parts = method.build(config, torch.device("cpu"), strategy)
        optimizer = torch.optim.AdamW(parts.model.parameters(), lr=1e-3, weight_decay=0.05)
        generator = np.random.default_rng(args.seed)
        start = time.perf_counter()
        losses = []
        for step in range(args.steps):
            index = generator.choice(args.n_train, args.batch, replace=False)
            parts.model.train()
            loss, _ = parts.batch_loss(parts.model, batch_of(train, index),
                                       step * args.batch // args.n_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        pretrain_s = time.perf_counter() - start
        x_train, x_test = features(parts.model, train[C.IMAGE]), features(parts.model,
                                                                          test[C.IMAGE])
        aucs = []
        for k in range(train[C.LABELS].shape[1]):
            y, y_test = train[C.LABELS][:, k], test[C.LABELS][:, k]
            if len(np.unique(y)) < 2 or len(np.unique(y_test)) < 2:
                aucs.append(np.nan)
                continue
            probe = LogisticRegression(max_iter=2000).fit(x_train, y)
            aucs.append(roc_auc_score(y_test, probe.predict_proba(x_test)[:, 1]))
        rows.append((name, model_name, losses[0], losses[-1], np.nanmean(aucs),
                     int(np.isnan(aucs).sum()), pretrain_s, pretrain_s / args.steps))
    print(f"smoke run: seed {args.seed}, {args.size} px, {args.n_train} train / {args.n_test} "
          f"test phantoms, {args.steps} steps x batch {args.batch}, linear probe on findings")
    print("method              backbone              loss0    lossN   probe_auc_mean  nan  "
          "pretrain_s  step_s")
    for name, model, l0, ln, auc, nan, s, per in rows:
        print(f"{name:19s} {model:20s} {l0:7.4f} {ln:8.4f} {auc:15.4f} {nan:4d} {s:11.1f} "
              f"{per:7.3f}")


if __name__ == "__main__":
    main()
