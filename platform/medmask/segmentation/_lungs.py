"""Rule-based lung segmentation (Segmentation-Guided SSL guide, option 1).

Otsu threshold, morphological closing (elliptical 20 x 20) and opening (10 x 10), keep the two
largest connected components; optional bilateral filter first. Kernel sizes are the guide's for
224 px and scale with the image size. Lungs are the *dark* class *inside the body*: the body is
found first (Otsu on the whole image, largest bright component, holes filled), Otsu is then run
on the body's pixels only, and dark components touching the image border are discarded.
"""

from __future__ import annotations

import cv2
import numpy as np

from medmask import columns as C

REFERENCE_SIZE = 224
CLOSE_KERNEL = 20
OPEN_KERNEL = 10


def scaled_kernel(size_224: int, image_size: int) -> np.ndarray:
    """An elliptical structuring element of the guide's 224-px size scaled to the image."""
    k = max(1, int(round(size_224 * image_size / REFERENCE_SIZE)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def segment_lungs_single(image: np.ndarray, *, bilateral: bool = False) -> np.ndarray:
    """Lung label map uint8 [H, W] of one image (1: image-left component, 2: image-right).

    Returns an all-zero map when no lung-like component is found (callers count these).
    """
    if image.ndim != 2:
        raise ValueError(f"segment_lungs_single takes one [H, W] image, got {image.shape}")
    u8 = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    if bilateral:
        u8 = cv2.bilateralFilter(u8, 9, 75, 75)
    h, w = u8.shape
    side = min(h, w)
    body = _body_mask(u8)
    if body.sum() == 0:
        return np.zeros((h, w), np.uint8)
    threshold, _ = cv2.threshold(u8[body > 0].reshape(-1, 1), 0, 255,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = ((u8 <= threshold) & (body > 0)).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, scaled_kernel(CLOSE_KERNEL, side))
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, scaled_kernel(OPEN_KERNEL, side))
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(dark, connectivity=8)
    candidates = []
    for k in range(1, count):
        x, y, bw, bh, area = stats[k]
        touches = x == 0 or y == 0 or x + bw >= w or y + bh >= h
        if not touches and area >= 0.01 * h * w:
            candidates.append((area, k))
    out = np.zeros((h, w), np.uint8)
    for _, k in sorted(candidates, reverse=True)[:2]:
        on_left = centroids[k][0] < w / 2
        out[labels == k] = C.ORGAN_RIGHT_LUNG if on_left else C.ORGAN_LEFT_LUNG
    return out


def segment_lungs(images: np.ndarray, *, bilateral: bool = False) -> np.ndarray:
    """Lung label maps uint8 [B, H, W] for images [B, H, W] in [0, 1].

    OpenCV's thresholding, morphology and connected components have no batch form: this is
    the one per-image loop of the data path, kept to OpenCV calls.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"segment_lungs takes images [B, H, W], got shape {images.shape}")
    return np.stack([segment_lungs_single(im, bilateral=bilateral) for im in images]) if len(
        images) else np.zeros(images.shape, np.uint8)


def lung_mask(images: np.ndarray, *, bilateral: bool = False) -> np.ndarray:
    """Both lungs as one bool mask [B, H, W] (``segment_lungs(images) > 0``)."""
    return segment_lungs(images, bilateral=bilateral) > 0


def _body_mask(u8: np.ndarray) -> np.ndarray:
    """The body: the largest bright component of a whole-image Otsu split, holes filled."""
    _, bright = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright.astype(np.uint8), 8)
    if count <= 1:
        return np.zeros_like(u8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    body = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(body, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(body)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled
