"""How hard the benchmark phantom is: a linear shortcut against a small CNN.

Measured at 64 px on 2,048 train / 1,024 test phantoms of one seed (disjoint index ranges; the
test images follow the training ones), 4 classes (chance 0.25):

- ``shortcut``: multinomial logistic regression on the 16 x 16 grid of 4 x 4-px patch means
  (target <= 0.40: the class is not "where and how much extra density");
- ``mean+std``: the same on each patch's mean and standard deviation (reported: a high value
  says the class is a local texture statistic);
- ``cnn``: a 4-layer CNN (32-64 channels, global average pooling, a class head and a findings
  head), a fixed number of epochs on 2 torch threads (target >= 0.80 in <= 60 s of training),
  and its mean ROC AUC over the five findings (the ``labels`` column).

The logistic regressions standardize the features on the training set, pick the L2 weight
from a small grid on a held-out fifth of the training images, and refit on all of them (L-BFGS,
full batch, deterministic).

Usage::

    python benchmarks/phantom_difficulty.py                     # benchmark phantom, seed 0
    python benchmarks/phantom_difficulty.py --variant classic --seed 1
    python benchmarks/phantom_difficulty.py --train 1024 --test 512 --epochs 12
    python benchmarks/phantom_difficulty.py --variant classic --no-cnn   # shortcut rows only

Prints one line per measurement; no assertions (tests/data/test_phantom.py asserts a smaller
version).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from medmask import columns as C  # noqa: E402
from medmask.data.phantom import DEFAULT_VARIANT, NUM_CLASSES, generate  # noqa: E402
from medmask.eval import logistic_accuracy  # noqa: E402
from medmask.eval import patch_means as eval_patch_means  # noqa: E402

SIZE, PATCH = 64, 4


def patch_means(images: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """[n, (H / patch) * (W / patch)]: each patch's mean pixel value (the shortcut features)."""
    return eval_patch_means(images, patch)


def patch_means_and_stds(images: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """[n, 2 * patches]: each patch's mean and standard deviation."""
    n, h, w = images.shape
    blocks = images.reshape(n, h // patch, patch, w // patch, patch)
    return np.concatenate([blocks.mean(axis=(2, 4)).reshape(n, -1),
                           blocks.std(axis=(2, 4)).reshape(n, -1)], axis=1)


def _block(c_in: int, c_out: int, kernel: int, stride: int) -> list[torch.nn.Module]:
    return [torch.nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                            bias=False), torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()]


class SmallCNN(torch.nn.Module):
    """4 conv layers (32, 32, 64, 64 channels; 64 px -> 8 x 8), global average and max pooling
    (a lesion covers a few percent of the image), a class head and a multi-label findings head.
    """

    def __init__(self, classes: int = NUM_CLASSES, findings: int = len(C.PHANTOM_FINDINGS)):
        super().__init__()
        self.trunk = torch.nn.Sequential(
            *_block(1, 32, 5, 2), *_block(32, 32, 3, 2), *_block(32, 64, 3, 1),
            *_block(64, 64, 3, 2))
        self.classes = torch.nn.Linear(128, classes)
        self.findings = torch.nn.Linear(128, findings)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.trunk(images)
        features = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
        return self.classes(features), self.findings(features)


@dataclass(frozen=True)
class CNNResult:
    accuracy: float
    findings_auc: float  # mean ROC AUC over the findings
    confusion: np.ndarray  # [true class, predicted class] counts on the test set
    train_s: float  # wall-clock seconds of training
    train_cpu_s: float  # CPU seconds of training, all threads (spin-waits included)
    epochs: int


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula; ties get average ranks."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    pos = positive.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_cnn(train: dict[str, np.ndarray], test: dict[str, np.ndarray], *, epochs: int = 10,
              batch_size: int = 64, lr: float = 4e-3, seed: int = 0,
              threads: int = 2) -> CNNResult:
    """Train :class:`SmallCNN` (AdamW, one-cycle lr, class CE + findings BCE, horizontal-flip-free:
    the lungs are not symmetric) and evaluate it on ``test``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        x = torch.from_numpy(train[C.IMAGE])[:, None]
        y = torch.from_numpy(train[C.LABEL])
        z = torch.from_numpy(train[C.LABELS])
        net = SmallCNN()
        steps = epochs * -(-len(y) // batch_size)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
        generator = torch.Generator().manual_seed(seed)
        begin, begin_cpu = time.perf_counter(), time.process_time()
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(y), generator=generator)
            for i in range(0, len(y), batch_size):
                idx = order[i : i + batch_size]
                logits, finding_logits = net(x[idx])
                loss = (torch.nn.functional.cross_entropy(logits, y[idx])
                        + torch.nn.functional.binary_cross_entropy_with_logits(
                            finding_logits, z[idx]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        train_s, train_cpu_s = time.perf_counter() - begin, time.process_time() - begin_cpu
        net.eval()
        with torch.no_grad():
            logits, finding_logits = net(torch.from_numpy(test[C.IMAGE])[:, None])
    finally:
        torch.set_num_threads(previous)
    predicted = logits.argmax(1).numpy()
    accuracy = float((predicted == test[C.LABEL]).mean())
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(confusion, (test[C.LABEL], predicted), 1)
    aucs = [roc_auc(finding_logits[:, k].numpy(), test[C.LABELS][:, k])
            for k in range(test[C.LABELS].shape[1])]
    return CNNResult(accuracy, float(np.nanmean(aucs)), confusion, train_s, train_cpu_s,
                     epochs)


def split(n_train: int, n_test: int, seed: int,
          variant: str = DEFAULT_VARIANT) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Train and test phantoms: indices ``0 .. n_train - 1`` and the next ``n_test``."""
    return (generate(n_train, SIZE, seed, variant=variant),
            generate(n_test, SIZE, seed, start=n_train, variant=variant))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default=DEFAULT_VARIANT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--test", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cnn", action="store_true", help="the logistic regressions only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    train, test = split(args.train, args.test, args.seed, args.variant)
    print(f"phantom {args.variant!r} seed {args.seed}: {args.train} train / {args.test} test at "
          f"{SIZE} px, generated in {time.perf_counter() - begin:.1f} s")
    shortcut = logistic_accuracy(patch_means(train[C.IMAGE]), train[C.LABEL],
                                 patch_means(test[C.IMAGE]), test[C.LABEL])
    print(f"shortcut (logistic regression, 16x16 patch means): accuracy {shortcut:.3f}")
    texture = logistic_accuracy(patch_means_and_stds(train[C.IMAGE]), train[C.LABEL],
                                patch_means_and_stds(test[C.IMAGE]), test[C.LABEL])
    print(f"logistic regression, patch mean + std:              accuracy {texture:.3f}")
    if args.no_cnn:
        return
    cnn = train_cnn(train, test, epochs=args.epochs, seed=args.seed, threads=args.threads)
    print(f"4-layer CNN ({cnn.epochs} epochs):                   accuracy {cnn.accuracy:.3f}, "
          f"findings mean AUC {cnn.findings_auc:.3f}")
    print(f"CNN training: {cnn.train_s:.1f} s wall, {cnn.train_cpu_s:.1f} CPU-s on "
          f"{args.threads} threads (load average {os.getloadavg()[0]:.1f}: on a shared machine "
          f"both grow with the load)")
    print("confusion (rows: true Normal, COVID, Lung_Opacity, Viral Pneumonia; columns: "
          "predicted):")
    print(cnn.confusion)


if __name__ == "__main__":
    main()
