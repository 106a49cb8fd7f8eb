"""Decoding of listed image files: a manifest batch (``path``, optional ``organs_path`` or
CheXmask RLE columns) -> resized images and organ maps, with every fallback flagged per row.

A plain batch function (numpy in, numpy out) that the preprocessing room applies with Ray Data.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from medmask import columns as C

# CheXmask manifests carry RLE strings and the masks' size instead of mask files
from medmask.data.chexmask import (
    MASK_HEIGHT,
    MASK_WIDTH,
    RLE_HEART,
    RLE_LEFT_LUNG,
    RLE_RIGHT_LUNG,
    organ_map,
)
from medmask.data.imageio import ImageReadError, read_image, read_mask
from medmask.keyed import image_keys

INTERPOLATIONS = {"area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC}


class DecodeImages:
    """Decode stage for manifests: ``path`` (+ optional ``organs_path``) -> arrays.

    Args:
        size: output side in pixels (images resized by ``interpolation``, masks nearest).
        on_bad_image: ``"raise"`` (error naming the file) or ``"flag"`` (keep the row with a
            zero image / no mask, flagged ``bad_image`` / ``bad_mask``, counted, and dropped
            before writing).
        interpolation: ``"area"`` (default) or ``"bicubic"`` (clipped back to [0, 1]: cubic
            kernels overshoot at edges).
    """

    def __init__(self, size: int, on_bad_image: str = "raise",
                 interpolation: str = "area") -> None:
        if on_bad_image not in ("raise", "flag"):
            raise ValueError(f"on_bad_image must be 'raise' or 'flag', got {on_bad_image!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got "
                             f"{interpolation!r}")
        self.size, self.on_bad_image = size, on_bad_image
        self.interpolation = interpolation

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cv2.setNumThreads(1)
        paths = np.asarray(batch[C.PATH])
        n, side = len(paths), (self.size, self.size)
        images = np.zeros((n, *side), np.float32)
        native = np.zeros((n, 2), np.int64)
        bad = np.zeros(n, bool)
        for i, path in enumerate(paths):  # file decoding is per file by nature
            try:
                image = read_image(path)
            except ImageReadError:
                if self.on_bad_image == "raise":
                    raise
                bad[i] = True
                continue
            native[i] = image.shape
            images[i] = cv2.resize(image, side[::-1],
                                   interpolation=INTERPOLATIONS[self.interpolation])
        if self.interpolation == "bicubic":
            np.clip(images, 0.0, 1.0, out=images)
        out = {k: np.asarray(v) for k, v in batch.items()}
        out[C.IMAGE], out[C.BAD_IMAGE] = images, bad
        organ_paths = batch.get(C.ORGANS_PATH)
        if organ_paths is not None:
            out[C.ORGANS], out[C.BAD_MASK], out[C.MASK_RESIZED] = self._masks(
                np.asarray(organ_paths), native, bad)
        elif RLE_RIGHT_LUNG in batch:
            out[C.ORGANS], out[C.MASK_RESIZED] = self._rle_masks(batch, native, bad)
        out[C.IMAGE_KEY] = image_keys(out[C.ID])
        return out

    def _rle_masks(self, batch: Mapping[str, np.ndarray], native: np.ndarray,
                   bad_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CheXmask rows: RLE lungs and heart at the mask's Height x Width -> output size."""
        organs = np.zeros((len(native), self.size, self.size), np.uint8)
        resized = np.zeros(len(native), bool)
        shapes = np.stack([np.asarray(batch[MASK_HEIGHT]), np.asarray(batch[MASK_WIDTH])], 1)
        for i in np.flatnonzero(~bad_image):  # RLE decoding is per row by nature
            full = organ_map(batch[RLE_RIGHT_LUNG][i], batch[RLE_LEFT_LUNG][i],
                             batch[RLE_HEART][i], int(shapes[i, 0]), int(shapes[i, 1]))
            resized[i] = tuple(shapes[i]) != tuple(native[i])
            organs[i] = cv2.resize(full, (self.size, self.size),
                                   interpolation=cv2.INTER_NEAREST)
        return organs, resized

    def _masks(self, paths: np.ndarray, native: np.ndarray, bad_image: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Binary lung mask files -> organ codes at the output size, bad and resized flags."""
        organs = np.zeros((len(paths), self.size, self.size), np.uint8)
        bad = np.zeros(len(paths), bool)
        resized = np.zeros(len(paths), bool)
        for i, path in enumerate(paths):
            if not (isinstance(path, str) and path) or bad_image[i]:
                continue
            try:
                mask = read_mask(path)
            except ImageReadError:
                if self.on_bad_image == "raise":
                    raise
                bad[i] = True
                continue
            resized[i] = mask.shape != tuple(native[i])
            mask = cv2.resize(mask, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
            organs[i] = _lungs_from_binary(mask)
        return organs, bad, resized


def _lungs_from_binary(mask: np.ndarray) -> np.ndarray:
    """A binary lung mask (both lungs one label) -> organ codes by image half.

    On a PA view the patient's right lung (code 1) lies on the image's left half, the left lung
    (code 2) on the right half.
    """
    lungs = mask > 0
    organs = np.zeros(mask.shape, np.uint8)
    half = mask.shape[1] // 2
    organs[:, :half][lungs[:, :half]] = C.ORGAN_RIGHT_LUNG
    organs[:, half:][lungs[:, half:]] = C.ORGAN_LEFT_LUNG
    return organs
