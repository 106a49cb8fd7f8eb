"""The CLIP models of the contour-overlay study (protocol ``clip_overlay``), in-process.

Source: Anatomical Masking as Lightweight Visual Priors (Sec. 3.3-3.4): BiomedCLIP's image
encoder with a randomly initialised linear head over the 5 findings, trained by binary
cross-entropy (eq. 2) either as linear probing (LP: the encoder frozen, ``y = sigma(W z +
b)``) or joint fine-tuning (JFT: encoder and head), each on original or overlay images.

The embedded default has no BiomedCLIP, so :func:`phantom_clip` builds a CLIP that knows
something (issue 12): a tiny open_clip model (a small ViT image tower; a Hugging Face BERT text
tower of 2 layers of 64 dimensions with a WordPiece ``vocab.txt`` built from the caption
templates, saved with ``save_pretrained``) trained contrastively on benchmark phantoms paired
with templated report sentences of each image's findings ("a chest x-ray showing edema in the
perihilar region", "no acute findings"), saved and loaded through the same local-folder path
as BiomedCLIP (:func:`medmask.models.load_clip`) and cached in the stage cache (kind
``phantom_clip``). It exercises the protocol, not the paper's claim: a phantom CLIP has never
seen real contours.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medmask import columns as C
from medmask.data import phantom
from medmask.eval import (
    CELLS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    READINGS,
    OverlaySettings,
    clip_inputs,
    readings,
    standardized_clip,
)
from medmask.eval.classification import per_class_auc
from medmask.models import CLIPEncoder, load_clip
from medmask.train._checkpoint import StageCache, code_version
from medmask.train._grounding import torch_threads

log = logging.getLogger(__name__)

CLIP_CACHE_KIND = "phantom_clip"
# Where each phantom finding is drawn (medmask.data.phantom), the <zone> of its caption.
FINDING_ZONES = {"Atelectasis": "lower zone", "Cardiomegaly": "cardiac silhouette",
                 "Consolidation": "upper lobe", "Edema": "perihilar region",
                 "Pleural Effusion": "lung base"}
REPORT_TEMPLATE = "a chest x-ray showing {findings}"
NO_FINDING = "no acute findings"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CLIP_FOLDER = "clip"  # the open_clip folder inside the cache entry
PRETRAIN_START = 1_000_000  # phantom indices of the CLIP's images: disjoint from the splits
SELECTIONS = ("auc", *READINGS)  # what validation selects the epoch (and lr) on


@dataclass(frozen=True)
class PhantomClipSettings:
    """The phantom CLIP: its towers, its images and its contrastive training.

    Attributes:
        n_images: benchmark phantoms it is trained on (indices from ``PRETRAIN_START``).
        image_size: image side (the phantoms are drawn at this side).
        variant: the phantom variant of its images.
        embed_dim: the joint embedding width.
        width, layers, patch_size: the ViT image tower.
        text_width, text_layers: the BERT text tower (issue 12: 2 layers of 64).
        context_length: text tokens.
        epochs, batch_size, lr, weight_decay: AdamW on the CLIP loss.
        statement_share: share of captions that state one finding (present: "... showing
            <finding>"; absent: "... showing no <finding>") instead of the whole report.
        seed: phantom, initialisation and caption seed.
        threads: torch CPU threads while training (None: as set).
    """

    n_images: int = 2048
    image_size: int = 64
    variant: str = phantom.BENCHMARK
    embed_dim: int = 64
    width: int = 128
    layers: int = 4
    patch_size: int = 8
    text_width: int = 64
    text_layers: int = 2
    context_length: int = 32
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    statement_share: float = 0.5
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if min(self.n_images, self.epochs, self.batch_size) < 1:
            raise ValueError("n_images, epochs and batch_size must be >= 1")
        if not 0.0 <= float(self.statement_share) <= 1.0:
            raise ValueError(f"statement_share must be in [0, 1], got {self.statement_share!r}")


@dataclass(frozen=True)
class HeadFitSettings:
    """The LP / JFT recipe (AdamW, BCE of eq. 2, cosine schedule), in-process, with the epoch
    (and learning rate, where a grid is given) selected on a validation set.

    Attributes:
        lp_epochs, lp_lr: linear probing on the frozen encoder's features (full passes);
            ``lp_lr`` a number or a grid (a list: each is fitted, the best on validation
            kept).
        jft_epochs, jft_lr, jft_encoder_lr: joint fine-tuning (the head's and the
            encoder's learning rates; ``jft_encoder_lr`` a number or a grid).
        batch_size: images per step.
        weight_decay: AdamW weight decay.
        select: what picks the epoch and lr on validation: ``auc`` (mean AUC over the
            findings with both classes in validation) or a reading (``binary``, ``exact``,
            ``top1``: :func:`medmask.eval.readings`); ties go to the earlier epoch.
        threads: torch CPU threads while fitting (None: as set).
    """

    lp_epochs: int = 200
    lp_lr: float | tuple[float, ...] = 1e-2
    jft_epochs: int = 6
    jft_lr: float = 1e-3
    jft_encoder_lr: float | tuple[float, ...] = 1e-4
    batch_size: int = 64
    weight_decay: float = 1e-4
    select: str = "auc"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("lp_lr", "jft_encoder_lr"):  # a Hydra list -> a tuple (hashable, frozen)
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) or hasattr(value, "__len__"):
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if min(self.lp_epochs, self.jft_epochs, self.batch_size) < 1:
            raise ValueError(f"lp_epochs, jft_epochs and batch_size must be >= 1, got "
                             f"{self.lp_epochs}, {self.jft_epochs}, {self.batch_size}")
        rates = [*self.lp_lrs, self.jft_lr, *self.jft_encoder_lrs]
        if not rates or min(rates) <= 0 or not self.lp_lrs or not self.jft_encoder_lrs:
            raise ValueError(f"learning rates must be > 0 (grids non-empty), got "
                             f"lp_lr={self.lp_lr}, jft_lr={self.jft_lr}, "
                             f"jft_encoder_lr={self.jft_encoder_lr}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")

    @property
    def lp_lrs(self) -> tuple[float, ...]:
        """The linear probe's learning-rate grid (one value when not a grid)."""
        return _grid(self.lp_lr)

    @property
    def jft_encoder_lrs(self) -> tuple[float, ...]:
        """Joint fine-tuning's encoder learning-rate grid (one value when not a grid)."""
        return _grid(self.jft_encoder_lr)


def _grid(value: float | tuple[float, ...]) -> tuple[float, ...]:
    return tuple(value) if isinstance(value, tuple) else (float(value),)


def validation_score(probs: np.ndarray, targets: np.ndarray, select: str,
                     threshold: float = 0.5) -> float:
    """The selection score of validation probabilities [N, K]: the mean AUC over findings
    with both classes present (``auc``), or the mean of a per-image reading."""
    if select == "auc":
        auc = per_class_auc(probs, targets, multilabel=True)
        if np.isnan(auc).all():
            raise ValueError("validation has no finding with both positives and negatives: "
                             "no AUC to select on (use a larger validation set or "
                             "fit.select=binary)")
        return float(np.nanmean(auc))
    return float(readings(probs, targets, threshold)[select].mean())


def report(labels: np.ndarray, findings: Sequence[str] = C.PHANTOM_FINDINGS) -> list[str]:
    """Each image's templated report: its findings in their zones, or "no acute findings"."""
    phrases = np.array([f"{name.lower()} in the {FINDING_ZONES[name]}" for name in findings],
                       dtype=object)
    present = np.asarray(labels) > 0.5
    return [REPORT_TEMPLATE.format(findings=" and ".join(phrases[row])) if row.any()
            else NO_FINDING for row in present]


def vocabulary(texts: Sequence[str]) -> list[str]:
    """The WordPiece vocabulary of ``texts`` (BERT's basic tokenization: lower-cased words and
    punctuation), after BERT's special tokens."""
    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    return [*SPECIAL_TOKENS, *words]


def caption_texts(settings: OverlaySettings) -> list[str]:
    """Every sentence the phantom CLIP may read: reports, statements and prompts."""
    findings = settings.findings
    one_each = np.eye(len(findings))
    return [*report(np.ones((1, len(findings))), findings), *report(one_each, findings),
            NO_FINDING, *settings.prompts()]


def write_clip_folder(folder: Path, settings: PhantomClipSettings,
                      overlay: OverlaySettings) -> None:
    """An open_clip folder (config, BERT config + tokenizer, randomly initialised weights)."""
    import open_clip  # defer: open_clip
    from transformers import BertConfig, BertTokenizerFast  # defer: transformers

    vocab = vocabulary(caption_texts(overlay))
    BertConfig(vocab_size=len(vocab), hidden_size=settings.text_width,
               num_hidden_layers=settings.text_layers, num_attention_heads=2,
               intermediate_size=2 * settings.text_width,
               max_position_embeddings=settings.context_length).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    model_cfg = {
        "embed_dim": settings.embed_dim,
        "vision_cfg": {"image_size": settings.image_size, "patch_size": settings.patch_size,
                       "width": settings.width, "layers": settings.layers,
                       "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {"hf_model_name": ".", "hf_tokenizer_name": ".", "hf_proj_type": "linear",
                     "hf_pooler_type": "cls_pooler",
                     "context_length": settings.context_length},
    }
    text_cfg = {**model_cfg["text_cfg"], "hf_model_name": str(folder),
                "hf_tokenizer_name": str(folder), "hf_model_pretrained": False}
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = open_clip.CustomTextCLIP(settings.embed_dim, model_cfg["vision_cfg"], text_cfg)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    # ImageNet statistics, as the paper standardizes (Sec. 4.1): its own = the protocol's.
    preprocess = {"size": settings.image_size, "mean": list(IMAGENET_MEAN),
                  "std": list(IMAGENET_STD), "interpolation": "bicubic"}
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2))


def captions_for(labels: np.ndarray, settings: PhantomClipSettings, overlay: OverlaySettings,
                 generator: np.random.Generator) -> list[str]:
    """One caption per image: its report, or (``statement_share``) a statement about one
    random finding, present or absent (the zero-shot prompts' wording)."""
    reports = report(labels, overlay.findings)
    prompts = np.array(overlay.prompts(), dtype=object).reshape(len(overlay.findings), 2)
    pick = generator.integers(0, len(overlay.findings), len(labels))
    absent = (np.asarray(labels)[np.arange(len(labels)), pick] < 0.5).astype(int)
    statements = prompts[pick, absent]
    use = generator.random(len(labels)) < settings.statement_share
    return np.where(use, statements, np.array(reports, dtype=object)).tolist()


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
              captions: Sequence[str]) -> torch.Tensor:
    """The symmetric CLIP loss with identical captions as shared positives (soft targets:
    a template repeats within a batch)."""
    ids = torch.as_tensor(np.unique(np.asarray(captions, dtype=object), return_inverse=True)[1])
    same = (ids[:, None] == ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    logits = scale * image @ text.T
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def train_clip(clip: CLIPEncoder, images: torch.Tensor, labels: np.ndarray,
               settings: PhantomClipSettings, overlay: OverlaySettings) -> list[float]:
    """Contrastive training of ``clip`` on images [N, 1, H, W]; returns each epoch's loss."""
    generator = np.random.default_rng(settings.seed)
    order_gen = torch.Generator().manual_seed(settings.seed)
    model = clip.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    steps = settings.epochs * -(-len(images) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=steps,
                                                   pct_start=0.1)
    losses = []
    for _ in range(settings.epochs):
        order, total = torch.randperm(len(images), generator=order_gen), 0.0
        for lo in range(0, len(images), settings.batch_size):
            rows = order[lo:lo + settings.batch_size]
            captions = captions_for(labels[rows.numpy()], settings, overlay, generator)
            loss = clip_loss(clip.encode(images[rows], normalize=True),
                             clip.encode_text(captions, normalize=True),
                             model.logit_scale.exp().clamp(max=100.0), captions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(images))
        log.info("phantom CLIP epoch %d/%d: contrastive loss %.4f", len(losses),
                 settings.epochs, losses[-1])
    model.eval()
    return losses


def phantom_clip(settings: PhantomClipSettings, overlay: OverlaySettings,
                 cache_dir: str | Path) -> tuple[CLIPEncoder, Path, bool]:
    """The phantom CLIP (module docstring), trained or reused from the stage cache; returns
    (the loaded CLIP, its folder, cache hit)."""
    cache = StageCache(cache_dir, CLIP_CACHE_KIND)
    key = {"clip": dataclasses.asdict(settings), "findings": list(overlay.findings),
           "prompts": overlay.prompts(), "code": code_version()}
    hit = cache.lookup(key)
    if hit is not None:
        return load_clip(hit / CLIP_FOLDER), hit / CLIP_FOLDER, True
    rows = phantom.generate(settings.n_images, settings.image_size, settings.seed,
                            start=PRETRAIN_START, variant=settings.variant)
    images = torch.from_numpy(np.ascontiguousarray(rows[C.IMAGE]))[:, None].float()
    with cache.build(key) as entry, torch_threads(settings.threads):
        folder = entry / CLIP_FOLDER  # the entry's own config.json is the cache key
        folder.mkdir()
        write_clip_folder(folder, settings, overlay)
        clip = load_clip(folder)
        losses = train_clip(clip, images, rows[C.LABELS], settings, overlay)
        torch.save(clip.model.state_dict(), folder / "open_clip_pytorch_model.bin")
        (folder / "training.json").write_text(json.dumps({"loss": losses}))
    folder = cache.entry(key) / CLIP_FOLDER
    return load_clip(folder), folder, False


class FindingsClassifier(nn.Module):
    """A CLIP image encoder and a linear head: RGB inputs [B, 3, S, S] in [0, 1] -> logits
    [B, K] (``y = sigma(W z + b)``, Sec. 3.3)."""

    def __init__(self, encoder: CLIPEncoder, head: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.encode(inputs))


@dataclass(frozen=True)
class Selection:
    """Which epoch (and lr) of a fit validation chose, and what validation said.

    Attributes:
        lr: the selected learning rate (LP: the head's; JFT: the encoder's).
        epoch: the selected epoch (1-based).
        epochs: epochs trained.
        score: the validation score of the selected model (``select``).
        last_score: the validation score after the last epoch of the selected lr.
        select: what was selected on (``auc`` or a reading).
        curve: the validation score after each epoch, per lr (``{lr: [score per epoch]}``).
    """

    lr: float
    epoch: int
    epochs: int
    score: float
    last_score: float
    select: str
    curve: dict[float, list[float]]

    def row(self) -> dict[str, Any]:
        """A flat row for the selection table (no curve)."""
        return {"lr": self.lr, "epoch": self.epoch, "epochs": self.epochs,
                "val_score": self.score, "val_last_score": self.last_score,
                "select": self.select}


def _bce_fit(params: list[dict[str, Any]], forward: Any, inputs: torch.Tensor,
             targets: torch.Tensor, epochs: int, batch_size: int, weight_decay: float,
             seed: int, after_epoch: Any = None) -> None:
    """AdamW on BCE (eq. 2) with a cosine schedule; ``after_epoch(epoch)`` after each epoch."""
    optimizer = torch.optim.AdamW(params, weight_decay=weight_decay)
    steps = epochs * -(-len(inputs) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(inputs), generator=generator)
        for lo in range(0, len(inputs), batch_size):
            rows = order[lo:lo + batch_size]
            loss = F.binary_cross_entropy_with_logits(forward(inputs[rows]), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if after_epoch is not None:
            after_epoch(epoch)


def _encode(clip: CLIPEncoder, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([clip.encode(inputs[lo:lo + 256]) for lo in range(0, len(inputs), 256)])


def fit_findings_classifier(clip: CLIPEncoder, inputs: torch.Tensor, targets: torch.Tensor,
                            method: str, fit: HeadFitSettings, seed: int,
                            val_inputs: torch.Tensor, val_targets: torch.Tensor
                            ) -> tuple[FindingsClassifier, Selection]:
    """LP (``method="lp"``: features of the frozen encoder, then the head) or JFT (``"jft"``:
    a copy of the encoder and the head together) on RGB ``inputs`` and multi-hot ``targets``,
    at each learning rate of the method's grid; after every epoch the model is scored on
    ``val_inputs`` / ``val_targets`` (``fit.select``) and the best (lr, epoch) is returned,
    restored to its weights at that epoch (ties: the earlier epoch, the first lr)."""
    if method not in ("lp", "jft"):
        raise ValueError(f"method must be 'lp' or 'jft', got {method!r}")
    val_y = np.asarray(val_targets, np.float64)
    if len(val_y) == 0:
        raise ValueError("fit_findings_classifier needs a non-empty validation set")
    best: tuple[float, float, int, dict[str, torch.Tensor], FindingsClassifier] | None = None
    curves: dict[float, list[float]] = {}
    with torch_threads(fit.threads):
        features = val_features = None
        if method == "lp":
            features, val_features = _encode(clip, inputs), _encode(clip, val_inputs)
        for lr in (fit.lp_lrs if method == "lp" else fit.jft_encoder_lrs):
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                head = nn.Linear(clip.embed_dim, targets.shape[1])
                if method == "lp":
                    model = FindingsClassifier(clip, head)

                    def val_logits(model: FindingsClassifier = model) -> torch.Tensor:
                        return model.head(val_features)

                    params = [{"params": head.parameters(), "lr": lr}]
                    forward, train_inputs, epochs, state_of = (
                        head, features, fit.lp_epochs, head)
                else:
                    model = FindingsClassifier(copy.deepcopy(clip), head).train()

                    def val_logits(model: FindingsClassifier = model) -> torch.Tensor:
                        return model(val_inputs)

                    params = [{"params": head.parameters(), "lr": fit.jft_lr},
                              {"params": model.encoder.model.visual.parameters(), "lr": lr}]
                    forward, train_inputs, epochs, state_of = (
                        model, inputs, fit.jft_epochs, model)
                curve = curves.setdefault(float(lr), [])

                def after_epoch(epoch: int, lr: float = float(lr), model: Any = model,
                                val_logits: Any = val_logits, state_of: Any = state_of,
                                curve: list[float] = curve) -> None:
                    nonlocal best
                    model.eval()
                    with torch.no_grad():
                        probs = torch.sigmoid(val_logits().double()).numpy()
                    model.train()
                    score = validation_score(probs, val_y, fit.select)
                    curve.append(score)
                    if best is None or score > best[0]:
                        state = {k: v.detach().clone() for k, v in
                                 state_of.state_dict().items()}
                        best = (score, lr, epoch, state, model)

                _bce_fit(params, forward, train_inputs, targets, epochs, fit.batch_size,
                         fit.weight_decay, seed, after_epoch)
    assert best is not None
    score, lr, epoch, state, model = best
    (model.head if method == "lp" else model).load_state_dict(state)
    selection = Selection(lr=lr, epoch=epoch, epochs=len(curves[lr]), score=score,
                          last_score=curves[lr][-1], select=fit.select, curve=curves)
    return model.eval(), selection


@dataclass(frozen=True)
class GridModels:
    """Table 2's trained models and what validation selected for each.

    Attributes:
        classifiers: ``{(lp | jft, original | overlay): [model per seed]}``.
        selections: one row per (method, train, seed): the selected lr and epoch, its
            validation score and the last epoch's (:meth:`Selection.row`).
    """

    classifiers: dict[tuple[str, str], list[FindingsClassifier]]
    selections: pd.DataFrame


def positive_rows(split: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    """``image``, ``organs`` and ``labels`` of the rows with at least one positive finding
    (the paper keeps only those)."""
    labels = torch.as_tensor(np.asarray(split[C.LABELS], np.float32))
    keep = labels.amax(1) > 0.5
    return (torch.as_tensor(np.asarray(split[C.IMAGE]))[keep],
            torch.as_tensor(np.asarray(split[C.ORGANS]))[keep], labels[keep])


def fit_cell(clip: CLIPEncoder, train: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray],
             overlay: OverlaySettings, fit: HeadFitSettings, method: str, condition: str,
             seed: int) -> tuple[FindingsClassifier, Selection]:
    """One trained cell of Table 2 at one seed: ``method`` (lp | jft) trained on
    ``condition`` (original | overlay) inputs of ``train``'s images with a positive finding,
    selected on ``val``'s (the same condition)."""
    clip = standardized_clip(clip, overlay)
    images, organs, labels = positive_rows(train)
    val_images, val_organs, val_labels = positive_rows(val)
    inputs = clip_inputs(images, organs, clip.image_size, condition, overlay)
    val_inputs = clip_inputs(val_images, val_organs, clip.image_size, condition, overlay)
    return fit_findings_classifier(clip, inputs, labels, method, fit, int(seed), val_inputs,
                                   val_labels)


def grid_classifiers(clip: CLIPEncoder, train: Mapping[str, np.ndarray],
                     val: Mapping[str, np.ndarray], overlay: OverlaySettings,
                     fit: HeadFitSettings, seeds: Sequence[int]) -> GridModels:
    """Table 2's eight trained models per seed (:func:`fit_cell`), each selected on ``val``."""
    out: dict[tuple[str, str], list[FindingsClassifier]] = {}
    rows = []
    for method, condition in dict.fromkeys((m, t) for m, t, _ in CELLS if t is not None):
        for seed in seeds:
            model, selection = fit_cell(clip, train, val, overlay, fit, method, condition,
                                        int(seed))
            out.setdefault((method, condition), []).append(model)
            rows.append({"method": method, "train": condition, "seed": int(seed),
                         **selection.row()})
            log.info("%s on %s, seed %d: selected lr %g, epoch %d of %d (validation %s "
                     "%.4f; last epoch %.4f)", method, condition, seed, selection.lr,
                     selection.epoch, selection.epochs, selection.select, selection.score,
                     selection.last_score)
    return GridModels(out, pd.DataFrame(rows))
