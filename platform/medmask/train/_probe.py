"""The convergence probe of pretraining: a linear probe of the frozen encoder every k epochs.

Segmentation-guided SSL issue, "Evaluation": the same probe for every method (contrastive or
MIM, anything with ``encode``): on rank 0, the features ``encode(images)`` of a fixed set of
labelled images (read once from the loop's ``probe_fit`` / ``probe_score`` datasets and kept in
memory; at most ``ProbeSettings.images`` of them, half fitted, half scored) are computed in eval
mode without gradients, one binary logistic regression per label is fitted on the first half
(:func:`medmask.eval.multilabel_logistic_probabilities`) and the per-label AUC measured on the
second; labels with no positive (or no negative) among the scored images are NaN, counted
(``probe/auc_nan_count``) and left out of ``probe/auc_mean``.

The convergence epoch of a run (:func:`convergence_epoch`) is the first probed epoch whose mean
AUC reaches 95 % of the run's best.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medmask import columns as C
from medmask.eval import multilabel_logistic_probabilities, per_class_auc
from medmask.models import images_nchw

PROBE_FIT, PROBE_SCORE = "probe_fit", "probe_score"
CONVERGED_SHARE = 0.95


def convergence_epoch(curve: Mapping[int, float], share: float = CONVERGED_SHARE) -> int | None:
    """The first epoch of ``{epoch: probe mean AUC}`` reaching ``share`` x the best (None: no
    finite value)."""
    finite = {e: v for e, v in curve.items() if math.isfinite(v)}
    if not finite:
        return None
    best = max(finite.values())
    return min(e for e, v in finite.items() if v >= share * best)


def probe_scores(model: torch.nn.Module, fit: Sequence[torch.Tensor],
                 score: Sequence[torch.Tensor], device: torch.device, batch_size: int = 256,
                 l2: float = 1e-3) -> dict[str, float]:
    """``probe/auc_mean``, ``probe/auc_nan_count``, ``probe/auc_<k>`` of a linear probe of
    ``model.encode`` fitted on ``fit`` = (images, multi-hot labels), scored on ``score``."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features = [torch.cat([model.encode(images[i:i + batch_size].to(device)).float().cpu()
                               for i in range(0, len(images), batch_size)]).double().numpy()
                    for images in (fit[0], score[0])]
    model.train(was_training)
    probs = multilabel_logistic_probabilities(features[0], fit[1].numpy(), features[1], l2)
    aucs = per_class_auc(probs, score[1].numpy(), multilabel=True)
    defined = aucs[~np.isnan(aucs)]
    return {"probe/auc_mean": float(defined.mean()) if defined.size else math.nan,
            "probe/auc_nan_count": float(np.isnan(aucs).sum()),
            **{f"probe/auc_{k}": float(a) for k, a in enumerate(aucs)}}


class EpochProbe:
    """The probe inside the loop skeleton (rank 0): its images read once, probed every
    ``every`` epochs and at the last one."""

    def __init__(self, spec: Mapping[str, Any] | None, rank: int, epochs: int) -> None:
        spec = dict(spec or {})
        self.every = int(spec.get("every") or 0) if rank == 0 else 0
        self.l2 = float(spec.get("l2", 1e-3))
        self.epochs = epochs
        self.data: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None
        self.curve: dict[int, float] = {}

    def due(self, epoch: int) -> bool:
        return bool(self.every) and ((epoch + 1) % self.every == 0 or epoch == self.epochs - 1)

    def __call__(self, model: torch.nn.Module, epoch: int, device: torch.device
                 ) -> dict[str, float]:
        """The probe's metrics at ``epoch`` ({} when it is not due); at the last epoch also
        ``probe/best_auc_mean`` and ``probe/convergence_epoch`` of the epochs probed (by this
        worker: after a restart from a checkpoint, those since the restart)."""
        if not self.due(epoch):
            return {}
        import ray.train

        start = time.perf_counter()
        if self.data is None:
            self.data = tuple(_read(ray.train.get_dataset_shard(name))
                              for name in (PROBE_FIT, PROBE_SCORE))
        metrics = probe_scores(model, *self.data, device, l2=self.l2)
        self.curve[epoch] = metrics["probe/auc_mean"]
        if epoch == self.epochs - 1:
            converged = convergence_epoch(self.curve)
            finite = [v for v in self.curve.values() if math.isfinite(v)]
            metrics["probe/best_auc_mean"] = max(finite) if finite else math.nan
            metrics["probe/convergence_epoch"] = math.nan if converged is None else converged
        return {**metrics, "probe/s": time.perf_counter() - start}


def _read(shard: Any) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for batch in shard.iter_torch_batches(batch_size=256):
        images.append(images_nchw(batch).float())
        labels.append(batch[C.LABELS].float())
    return torch.cat(images), torch.cat(labels)
