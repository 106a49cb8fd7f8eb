"""The Ray Data pipeline: source -> decode/resize -> organ maps -> patch validity -> masks.

The preprocessing room: where Ray Data meets the data room's readers, the segmentation room's
organ maps and the masking room's strategies. Every stage is a batch-vectorized function
applied with ``map_batches`` (numpy batches), so Ray streams blocks through the stages in
parallel on every CPU it has. The stage functions are plain callables, testable without Ray.

Bad input never disappears silently. Each case is an error naming the file
or value, or a documented fallback flagged per row (a bool column) and summed by
:func:`pipeline_counts`:

- unreadable or truncated image or mask file: :class:`~medmask.data.imageio.ImageReadError`
  naming the file (``on_bad_image="raise"``, the default), or a kept row flagged ``bad_image``
  (zero image) / ``bad_mask`` (organs then segmented) that :func:`drop_flagged` removes before
  writing;
- a mask of another size than its image (the COVID-19 Radiography Database ships 256 px masks
  for 299 px images): resized nearest-neighbour to the output size, flagged ``mask_resized``;
- no ground-truth organ map: rule-based lungs, flagged ``organs_rule_based``;
- an empty organ map: flagged ``empty_organs``; region-guided masking then fills at random;
- a NaN/inf gaze heatmap: non-finite pixels set to 0, flagged ``nonfinite_heatmap``;
- a masking ratio outside [0, 1) or an unknown strategy: ``ValueError`` when the stage is built,
  before any data moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.decode import DecodeImages
from medmask.data.phantom import PhantomSpec, generate
from medmask.data.slices import DecodeSlices
from medmask.keyed import image_keys, mask_seeds
from medmask.masking import (
    PatchGrid,
    apply_patch_mask,
    check_ratio,
    create_mask_strategy,
    num_masked,
    patch_validity,
    strategy_reports,
)
from medmask.segmentation import segment_lungs, segmentation_guided_crop

# ------------------------------------------------------------------------------------------
# stages (plain batch functions)


class GeneratePhantoms:
    """Source stage: a batch of chunk start indices -> the phantoms of those chunks.

    ``variant``: the phantom variant (:data:`medmask.data.phantom.VARIANTS`); None: the
    generator's default (the benchmark phantom).
    """

    def __init__(self, total: int, size: int, seed: int, chunk: int, start: int = 0,
                 variant: str | None = None) -> None:
        self.total, self.size, self.seed, self.chunk = total, size, seed, chunk
        self.start, self.variant = start, variant

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        options = {} if self.variant is None else {"variant": self.variant}
        parts = []
        for offset in np.asarray(batch["id"]).astype(int) * self.chunk:  # ray.data.range's id
            n = min(self.chunk, self.total - offset)
            parts.append(generate(n, self.size, self.seed, start=int(self.start + offset),
                                  **options))
        out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        out[C.IMAGE_KEY] = image_keys(out[C.ID])
        return out


def finite_heatmaps(heatmaps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps [B, H, W] with NaN/inf pixels set to 0, and a per-row flag of the rows fixed."""
    maps = np.asarray(heatmaps, np.float32)
    finite = np.isfinite(maps)
    flagged = ~finite.reshape(len(maps), -1).all(1)
    if flagged.any():
        maps = np.where(finite, maps, np.float32(0))
    return maps, flagged


class AddOrgans:
    """Organ stage: keep ground-truth organ maps, segment the rest (rule-based), count empties."""

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cv2.setNumThreads(1)
        out = dict(batch)
        images = np.asarray(batch[C.IMAGE])
        organs = batch.get(C.ORGANS)
        if organs is None:
            organs = np.zeros(images.shape, np.uint8)
            missing = np.ones(len(images), bool)
        else:
            organs = np.asarray(organs).copy()
            missing = ~organs.reshape(len(organs), -1).any(1)
        if missing.any():
            organs[missing] = segment_lungs(images[missing])
        out[C.ORGANS] = organs
        out[C.ORGANS_RULE_BASED] = missing
        lungs = np.isin(organs, C.LUNG_LABELS).reshape(len(organs), -1)
        out[C.EMPTY_ORGANS] = ~lungs.any(1)
        return out


@dataclass
class CropToLungs:
    """Crop stage (segmentation-guided SSL, option 4): every image, its organ map and lesion
    mask cropped to the padded lung box of the organ map and resized back to the image size.

    ``padding`` is given at 224 px and scales with the image side (20 px at 224, 3 at 32);
    where no lung is found or the box is under ``min_crop_ratio`` of a side the whole image is
    kept, flagged ``crop_fallback``.
    """

    padding: int = 20
    min_crop_ratio: float = 0.5

    def padding_at(self, side: int) -> int:
        """The padding in pixels on an image of ``side`` pixels."""
        return int(round(self.padding * side / 224))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        torch.set_num_threads(1)
        out = dict(batch)
        images = np.asarray(batch[C.IMAGE], np.float32)
        if C.ORGANS not in batch:
            raise ValueError("the lung crop needs the 'organs' column (add the organ stage)")
        organs = np.asarray(batch[C.ORGANS])
        lungs = np.isin(organs, C.LUNG_LABELS)
        padding = self.padding_at(min(images.shape[-2:]))
        crop = segmentation_guided_crop(images, lungs, masks=organs, padding=padding,
                                        min_crop_ratio=self.min_crop_ratio)
        out[C.IMAGE] = crop.images.numpy()
        out[C.ORGANS] = crop.masks.numpy()
        if C.LESION in batch:
            lesion = segmentation_guided_crop(images, lungs, masks=np.asarray(batch[C.LESION]),
                                              padding=padding,
                                              min_crop_ratio=self.min_crop_ratio)
            out[C.LESION] = lesion.masks.numpy()
        out[C.CROP_FALLBACK] = crop.fallback.numpy()
        return out


@dataclass
class MaskImages:
    """Mask stage: any registered strategy, per-image seeds from (seed, epoch, image id).

    Adds ``mask`` (bool [N]), ``masked_image``, ``patch_valid`` (bool [N]), ``valid_fraction``
    and ``filled_share``.
    """

    strategy: str
    ratio: float
    patch_size: int | None = None
    num_patches: int | None = None
    seed: int = 0
    epoch: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ratio(self.ratio)
        self._strategy = create_mask_strategy(self.strategy, **self.params)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        torch.set_num_threads(1)
        images = np.asarray(batch[C.IMAGE])
        grid = PatchGrid(images.shape[-2], images.shape[-1], patch_size=self.patch_size,
                         num_patches=self.num_patches)
        keys = batch[C.IMAGE_KEY] if C.IMAGE_KEY in batch else image_keys(batch[C.ID])
        seeds = mask_seeds(np.asarray(keys), self.seed, self.epoch)
        out = dict(batch)
        out[C.MASK_SEED] = np.asarray(seeds, np.int64)
        if C.GAZE in batch:
            out[C.GAZE], out[C.NONFINITE_HEATMAP] = finite_heatmaps(batch[C.GAZE])
        view = {k: v for k, v in out.items() if isinstance(v, np.ndarray) and v.dtype != object}
        view[C.MASK_SEED] = seeds
        mask = self._strategy(view, grid, self.ratio)
        out[C.MASK] = mask.numpy()
        out[C.MASKED_IMAGE] = np.asarray(apply_patch_mask(images, grid, mask))
        if C.ORGANS in batch:
            valid = patch_validity(np.asarray(batch[C.ORGANS]), grid,
                                   tuple(self.params.get("valid_labels", C.LUNG_LABELS)),
                                   float(self.params.get("min_overlap", 0.0)))
            count = num_masked(grid.num_patches, self.ratio)
            n_valid = valid.sum(1).numpy()
            out[C.PATCH_VALID] = valid.numpy()
            out[C.VALID_FRACTION] = (n_valid / grid.num_patches).astype(np.float32)
            filled = (mask & ~valid).sum(1).numpy() / max(count, 1)  # masked outside it
            reports_filled = C.FILLED_SHARE in strategy_reports(self.strategy)
            out[C.FILLED_SHARE] = (filled.astype(np.float32) if reports_filled
                                   else np.zeros(len(images), np.float32))
        return out


# ------------------------------------------------------------------------------------------
# datasets


def configure_data_context() -> None:
    """The driver's Ray Data settings, set before a source is created (a dataset keeps the
    context it was created with).

    - Every CPU for one operator: Ray Data reserves ``op_resource_reservation_ratio`` (0.5)
      of the cluster for each operator's minimum share; on a small cluster that caps the fused
      decode/organs/mask operator at half the CPUs (one task at a time on 2 CPUs: measured
      2.8 s for 12 tasks of 0.2 s, 1.4 s without the reservation). The pipeline has one heavy
      operator, so the reservation is off.
    - Blocks in order (``preserve_order``): without it a materialized dataset holds its
      blocks in the order the tasks finished, so the same config and seed feed the loops in a
      different order on every run. Its cost is measured by ``benchmarks/preserve_order.py``.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.op_resource_reservation_enabled = False
    context.execution_options.preserve_order = True


def map_stage(dataset: Any, stage: Any, batch_size: int, *, num_cpus: float = 1.0,
              concurrency: int | None = None) -> Any:
    """``dataset.map_batches(stage)`` on numpy batches as Ray tasks (``num_cpus`` each, at
    most ``concurrency`` at once; None: as many as the cluster's CPUs allow).

    The cap goes to Ray Data as a task-pool ``compute`` strategy (Ray 2.51 deprecated
    ``map_batches(concurrency=...)`` and warns on every call).
    """
    import ray.data

    return dataset.map_batches(stage, batch_size=batch_size, batch_format="numpy",
                               num_cpus=num_cpus,
                               compute=ray.data.TaskPoolStrategy(size=concurrency))


def phantom_dataset(n: int, size: int, seed: int, chunk: int = 32, start: int = 0, *,
                    variant: str | None = None, num_cpus: float = 1.0,
                    concurrency: int | None = None) -> Any:
    """Phantoms ``start .. start + n - 1`` generated in parallel, one Ray task per chunk.

    ``ray.data.range`` gives one row per chunk; each task generates its chunk with
    :func:`medmask.data.phantom.generate` (image i depends only on ``(seed, start + i)``, so the
    result does not depend on the chunking). ``variant``: ``"benchmark"``, ``"classic"`` or
    ``"confounded"``; None: the generator's default (the benchmark phantom).
    """
    import ray.data

    if variant is not None:
        PhantomSpec(variant=variant)  # an unknown name fails here, listing the valid ones
    if n < 1:
        raise ValueError(f"the phantom dataset needs n >= 1 images, got {n}")
    if chunk < 1:
        raise ValueError(f"the phantom chunk size must be >= 1, got {chunk}")
    chunks = -(-n // chunk)
    configure_data_context()
    return map_stage(ray.data.range(chunks, override_num_blocks=chunks),
                     GeneratePhantoms(n, size, seed, chunk, start, variant), 1,
                     num_cpus=num_cpus, concurrency=concurrency)


# Rows per Ray Data task on the manifest path. A task costs Ray about 0.1-0.2 s beside its work
# (scheduling, the block's trip through the object store, the driver's bookkeeping), and decode +
# lungs + masks is about 5 ms per 224-px image: 1,536 PNGs on 2 CPUs ran at 121-136 images/s in
# tasks of 24 rows, 178 at 48, 219-230 at 96, 247-257 at 192 (benchmarks/ray_data_vs_pool.py).
TASK_ROWS = 128


def manifest_blocks(rows: int, batch_size: int) -> int:
    """How many blocks (one Ray task each) a manifest of ``rows`` rows is cut into: blocks of
    at least ``max(batch_size, TASK_ROWS)`` rows, so the per-task cost stays small beside the
    work, and no upper limit on their number, so a large dataset still streams in small
    steps (1 block below that size)."""
    return max(1, rows // max(int(batch_size), TASK_ROWS))


def manifest_dataset(manifest: pd.DataFrame, size: int, on_bad_image: str = "raise",
                     batch_size: int = 32, *, num_cpus: float = 1.0,
                     concurrency: int | None = None) -> Any:
    """Images listed in a manifest, decoded and resized in parallel (one Ray task per block
    of :func:`manifest_blocks` rows).

    Slice manifests (a ``lesion_path`` column: LGG slices, NIfTI volumes) decode with
    :class:`~medmask.data.slices.DecodeSlices` (normalized images and ``lesion`` maps), every
    other manifest with :class:`DecodeImages`.
    """
    import ray.data

    if C.PATH not in manifest.columns or C.ID not in manifest.columns:
        raise ValueError(f"a manifest needs '{C.ID}' and '{C.PATH}' columns, "
                         f"got {list(manifest.columns)}")
    if len(manifest) == 0:
        raise ValueError("the manifest is empty: no images to preprocess")
    keep = [c for c in manifest.columns if c not in ("labels_list",)]
    table = manifest[keep].copy()
    for column in table.columns:  # Arrow needs uniform types: text columns become strings
        if pd.api.types.is_object_dtype(table[column]) or pd.api.types.is_string_dtype(
                table[column]):
            table[column] = table[column].fillna("").astype(str)
    blocks = manifest_blocks(len(table), batch_size)
    bounds = np.linspace(0, len(table), blocks + 1).astype(int)
    parts = [table.iloc[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    configure_data_context()
    stage = (DecodeSlices.from_manifest(manifest, size, on_bad_image)
             if C.LESION_PATH in manifest.columns else DecodeImages(size, on_bad_image))
    return map_stage(ray.data.from_pandas(parts), stage, batch_size,
                     num_cpus=num_cpus, concurrency=concurrency)


def build_dataset(
    source: Any,
    *,
    strategy: str | None = "random",
    ratio: float = 0.75,
    patch_size: int | None = 16,
    num_patches: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    strategy_params: Mapping[str, Any] | None = None,
    segment: bool = True,
    batch_size: int = 32,
    num_cpus: float = 1.0,
    concurrency: int | None = None,
) -> Any:
    """Source dataset -> organs -> patch validity and masks, streamed stage by stage.

    Args:
        source: a dataset from :func:`phantom_dataset` or :func:`manifest_dataset`.
        strategy: a registered mask strategy (``create_mask_strategy``); None skips masking
            (training sets whose masks are drawn anew each epoch on the device).
        ratio: the masked share of patches, in [0, 1).
        patch_size, num_patches: the :class:`~medmask.masking.PatchGrid` (one of them).
        seed, epoch: with the image id, the per-image mask seed (``mask_seeds``).
        strategy_params: the strategy's own parameters (e.g. ``valid_labels``).
        segment: add organ maps (ground truth kept, rule-based lungs where missing).
        batch_size: rows per ``map_batches`` call.
        num_cpus, concurrency: CPUs per task and the cap on concurrent tasks per stage.

    Raises:
        ValueError: a ratio outside [0, 1) or an unknown strategy, before any data moves.
    """
    masker = None
    if strategy is not None:
        masker = MaskImages(strategy, ratio, patch_size, num_patches, seed, epoch,
                            dict(strategy_params or {}))
    dataset = source
    if segment:
        dataset = map_stage(dataset, AddOrgans(), batch_size, num_cpus=num_cpus,
                            concurrency=concurrency)
    if masker is not None:
        dataset = map_stage(dataset, masker, batch_size, num_cpus=num_cpus,
                            concurrency=concurrency)
    return dataset


def pipeline_counts(dataset: Any) -> dict[str, float]:
    """Rows, flagged rows (the sum of every flag column present) and mean mask statistics
    (``mean_valid_fraction``, ``mean_filled_share``) of a materialized dataset, in one pass."""
    names = set(dataset.schema().names)
    scalar = [c for c in (*C.COUNT_COLUMNS, C.VALID_FRACTION, C.FILLED_SHARE) if c in names]
    table = dataset.select_columns(scalar or [C.ID]).to_pandas()
    counts: dict[str, float] = {"images": float(len(table))}
    for column in C.COUNT_COLUMNS:  # an absent flag column means no row could be flagged
        counts[column] = float(table[column].sum()) if column in table else 0.0
    for column in (C.VALID_FRACTION, C.FILLED_SHARE):
        if column in table and len(table):
            counts[f"mean_{column}"] = float(table[column].mean())
    return counts


def drop_flagged(dataset: Any) -> Any:
    """Remove rows flagged ``bad_image`` (after :func:`pipeline_counts` has counted them)."""
    from ray.data.expressions import col

    if C.BAD_IMAGE not in set(dataset.schema().names):
        return dataset
    return dataset.filter(expr=~col(C.BAD_IMAGE))
