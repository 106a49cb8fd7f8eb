"""The classifiers of the grounding study: fitted in-process, cached in the stage cache.

The grounding protocol (:mod:`medmask.eval._grounding`) needs a trained classifier. With no
model given, ``experiments/grounding.py`` evaluates three (issue 12):

- the **study classifier**: a random-mask MAE encoder pretrained through the public
  :func:`~medmask.train.run_pretraining` stage (Ray Train, cached), then fine-tuned here
  (:func:`build_classifier` + :func:`fit_classifier`, in-process) on the phantom classes;
- two **controls** that show the measure works, small CNN classifiers trained from scratch:
  one on the classic phantom, whose label lives in the lungs (lesions; its score should be
  > 0), and one on the ``shortcut_marker`` phantom, whose label is a marker outside the
  anatomy (its score should be < 0).

Each fitted classifier is a stage-cache entry (kind ``grounding_classifier``) keyed by
everything that determines it (data, model, recipe, seed, the code digest), so a re-run
reuses it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medmask import columns as C
from medmask.data import phantom
from medmask.models import EncoderClassifier, create_model
from medmask.train._checkpoint import StageCache, code_version, load_checkpoint, save_checkpoint
from medmask.train._finetune import build_classifier

CACHE_KIND = "grounding_classifier"
CONTROL_MODEL = {"name": "contrastive_cnn_tiny", "params": {}}
CONTROL_VARIANTS = {"inside_anatomy": phantom.CLASSIC, "shortcut": phantom.SHORTCUT_MARKER}


@dataclass(frozen=True)
class FitSettings:
    """An in-process classification recipe (AdamW, one-cycle schedule, cross-entropy) with
    occlusion augmentation.

    Occlusion (cutout): each training image, with probability ``occlusion_prob``, gets up to
    ``occlusion_boxes`` black rectangles (sides 10-40% of the image) anywhere, anatomy or not.
    A classifier that never saw black rectangles drops under *any* masking, the out-of-
    distribution edges alone; trained with them, its drop measures the information the masked
    pixels held, which is what the grounding score compares.

    Attributes:
        epochs: passes over the training images.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        occlusion_prob: share of training images occluded (0: no augmentation).
        occlusion_boxes: the most rectangles per occluded image.
        seed: initialisation, shuffling and augmentation seed.
        threads: torch CPU threads while fitting (None: as set); a tiny CNN trains ~10x
            faster on 1 thread than on 2 of a shared 2-core machine (measured).
    """

    epochs: int = 8
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    occlusion_prob: float = 0.5
    occlusion_boxes: int = 3
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, "
                             f"{self.batch_size}")
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= float(self.occlusion_prob) <= 1.0 or int(self.occlusion_boxes) < 1:
            raise ValueError(f"occlusion_prob must be in [0, 1] and occlusion_boxes >= 1, got "
                             f"{self.occlusion_prob!r}, {self.occlusion_boxes!r}")


@dataclass(frozen=True)
class PhantomData:
    """Phantom train/test images for a grounding classifier (disjoint index ranges).

    Attributes:
        variant: the phantom variant (``classic``, ``shortcut_marker``, ``benchmark``, ...).
        size: image side in pixels.
        n_train, n_test: images in each split (the test split follows the train split).
        seed: the phantom seed.
    """

    variant: str = phantom.CLASSIC
    size: int = 48
    n_train: int = 512
    n_test: int = 128
    seed: int = 0

    def split(self, name: str) -> dict[str, np.ndarray]:
        """The ``train`` or ``test`` columns (``image``, ``label``, ``gaze``, ``organs``)."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        start, n = (0, self.n_train) if name == "train" else (self.n_train, self.n_test)
        return phantom.generate(n, self.size, self.seed, start=start, variant=self.variant)

    def batches(self, name: str = "test", batch_size: int = 64,
                keys: tuple[str, ...] = (C.IMAGE, C.LABEL, C.GAZE, C.ORGANS)
                ) -> list[dict[str, torch.Tensor]]:
        """The split as tensor batches of ``keys`` (default: what the grounding protocol
        reads; the contour-overlay protocol reads ``image``, ``organs``, ``labels``)."""
        rows = self.split(name)
        return [{k: torch.from_numpy(np.ascontiguousarray(rows[k][lo:lo + batch_size]))
                 for k in keys} for lo in range(0, len(rows[C.IMAGE]), batch_size)]


@dataclass(frozen=True)
class FittedClassifier:
    """A fitted classifier and where it is cached."""

    model: torch.nn.Module
    path: Path
    cache_hit: bool
    train_accuracy: float
    test_accuracy: float
    info: dict[str, Any] = field(default_factory=dict)


def fit_classifier(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   settings: FitSettings) -> torch.nn.Module:
    """Train ``model`` (images [N, 1, H, W] -> logits) by cross-entropy, in-process."""
    with torch_threads(settings.threads):
        return _fit(model, images, labels, settings)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
         settings: FitSettings) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(int(settings.seed))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * -(-len(images) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=steps,
                                                   pct_start=0.15)
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(images), generator=generator)
        for lo in range(0, len(images), settings.batch_size):
            rows = order[lo:lo + settings.batch_size]
            batch = occlude(images[rows], settings, generator)
            loss = F.cross_entropy(model(batch), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def occlude(images: torch.Tensor, settings: FitSettings,
            generator: torch.Generator) -> torch.Tensor:
    """Images [B, C, H, W] with random black rectangles (cutout), vectorized over the batch."""
    if settings.occlusion_prob <= 0:
        return images
    b, _, height, width = images.shape
    k = int(settings.occlusion_boxes)
    shape = (b, k, 1, 1)
    sides = 0.1 + 0.3 * torch.rand((2, *shape), generator=generator)
    h, w = (sides[0] * height).long().clamp_min(1), (sides[1] * width).long().clamp_min(1)
    y0 = (torch.rand(shape, generator=generator) * (height - h + 1)).long()
    x0 = (torch.rand(shape, generator=generator) * (width - w + 1)).long()
    count = torch.randint(1, k + 1, (b, 1, 1, 1), generator=generator)
    used = torch.arange(k)[None, :, None, None] < count
    occluded = torch.rand((b, 1, 1, 1), generator=generator) < settings.occlusion_prob
    yy, xx = torch.arange(height)[:, None], torch.arange(width)[None, :]
    boxes = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w) & used & occluded
    return images * ~boxes.any(1, keepdim=True)


@torch.no_grad()
def accuracy_of(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                batch_size: int = 128) -> float:
    """Top-1 accuracy of ``model`` on images [N, 1, H, W]."""
    model.eval()
    hits = sum(int((model(images[lo:lo + batch_size]).argmax(1)
                    == labels[lo:lo + batch_size]).sum())
               for lo in range(0, len(images), batch_size))
    return hits / max(1, len(images))


def _tensors(rows: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(rows[C.IMAGE]))[:, None].float(),
            torch.from_numpy(np.array(rows[C.LABEL])).long())


def control_classifier_model(num_classes: int = phantom.NUM_CLASSES,
                             model: Mapping[str, Any] | None = None,
                             seed: int = 0) -> torch.nn.Module:
    """A from-scratch classifier over a registered encoder (the controls: the tiny CNN),
    initialised from ``seed`` (the global torch RNG is left as it was)."""
    spec = dict(model or CONTROL_MODEL)
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        encoder = create_model(spec["name"], **spec.get("params", {}))
        return EncoderClassifier(encoder, num_classes)


def fitted_classifier(data: PhantomData, fit: FitSettings, cache_dir: str | Path | None,
                      model: Mapping[str, Any] | None = None,
                      pretrained: Path | None = None) -> FittedClassifier:
    """Fit (or reuse from the stage cache) a classifier on ``data``'s train split.

    ``model`` ({name, params}) is the encoder (default: the controls' tiny CNN, from
    scratch); ``pretrained`` a pretraining checkpoint folder whose encoder it starts from
    (:func:`build_classifier`). ``cache_dir`` None: fit without caching.
    """
    spec = dict(model or CONTROL_MODEL)
    key = {"data": dataclasses.asdict(data), "fit": dataclasses.asdict(fit), "model": spec,
           "pretrained": _checkpoint_key(pretrained), "code": code_version()}
    cache = StageCache(cache_dir, CACHE_KIND) if cache_dir is not None else None
    classifier = (build_classifier({"model": spec, "pretrained": str(pretrained),
                                    "head": {"num_classes": phantom.NUM_CLASSES}})
                  if pretrained else control_classifier_model(model=spec, seed=fit.seed))
    hit = cache.lookup(key) if cache is not None else None
    if hit is not None:
        state = load_checkpoint(hit)
        classifier.load_state_dict(state["model"])
        info = dict(state["info"])
        return FittedClassifier(classifier.eval(), hit, True, info["train_accuracy"],
                                info["test_accuracy"], info)
    train_x, train_y = _tensors(data.split("train"))
    test_x, test_y = _tensors(data.split("test"))
    fit_classifier(classifier, train_x, train_y, fit)
    info = {"train_accuracy": accuracy_of(classifier, train_x, train_y),
            "test_accuracy": accuracy_of(classifier, test_x, test_y), "key": key}
    info = json.loads(json.dumps(info, default=str))
    path = Path()
    if cache is not None:
        with cache.build(key) as partial:
            save_checkpoint(partial, {"model": classifier.state_dict(), "info": info})
        path = cache.entry(key)
    return FittedClassifier(classifier, path, False, info["train_accuracy"],
                            info["test_accuracy"], info)


def load_classifier(path: str | Path, model: Mapping[str, Any] | None = None,
                    num_classes: int = phantom.NUM_CLASSES) -> torch.nn.Module:
    """A classifier checkpoint (a folder or ``checkpoint.pt`` holding ``{"model": state}``, as
    :func:`fitted_classifier` writes) loaded into ``EncoderClassifier(model)``; ``model``
    ({name, params}) defaults to the one recorded in the checkpoint.

    Raises:
        ValueError: no checkpoint there, no model given or recorded, or tensors that do not
            fit the model (naming some).
    """
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    try:
        state = load_checkpoint(folder)
    except FileNotFoundError as error:
        raise ValueError(f"no classifier checkpoint at {str(path)!r} ({error})") from None
    recorded = state.get("info", {}).get("key", {}).get("model")
    spec = dict(model) if model else recorded
    if not spec:
        raise ValueError(f"checkpoint {str(path)!r} records no model: give its encoder "
                         "({name, params})")
    classifier = control_classifier_model(num_classes, spec)
    own = classifier.state_dict()
    saved = state.get("model", {})
    bad = sorted(set(own) ^ set(saved)) + sorted(
        k for k in set(own) & set(saved) if own[k].shape != saved[k].shape)
    if bad:
        raise ValueError(f"checkpoint {str(path)!r} does not fit model {spec} with "
                         f"{num_classes} classes: {len(bad)} tensors missing, unexpected or "
                         f"of another shape, e.g. {bad[:3]}")
    classifier.load_state_dict(saved)
    return classifier.eval()


def _checkpoint_key(path: Path | None) -> str | None:
    """A pretraining checkpoint's identity: its cache key file when it has one, else the path."""
    if path is None:
        return None
    config = Path(path) / "config.json"
    return config.read_text() if config.is_file() else str(path)
