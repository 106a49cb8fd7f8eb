"""Reading image and mask files with errors that name the file.

Images decode to grayscale float32 in [0, 1] (8- or 16-bit PNG/JPEG/TIFF), optionally resized
with area interpolation; masks decode to uint8 and resize with nearest neighbour. Every failure
is an :class:`ImageReadError` (a ``ValueError``) whose message names the file and says what was
expected: missing, empty, undecodable, truncated, or a mask of another size than expected. A
mask of another size is resized only when the caller asks for it, and then counted in the
caller's ``counts`` mapping under ``"masks_resized"``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path

import cv2
import numpy as np

MASKS_RESIZED = "masks_resized"


class ImageReadError(ValueError):
    """An image or mask file is missing, unreadable, truncated or of an unexpected size."""


def read_image(path: str | Path, size: int | tuple[int, int] | None = None, *,
               channel: int | None = None) -> np.ndarray:
    """Decode ``path`` to float32 [H, W] in [0, 1], resized to ``size`` (int or (H, W)).

    Args:
        path: the image file.
        size: output size (int or (H, W)); None keeps the file's size.
        channel: None converts a colour file to grayscale; an int reads that one channel of a
            multi-channel file, counted in the file's RGB(A) order (0 = red, 1 = green,
            2 = blue), whatever order OpenCV decodes to (BGR).

    Raises:
        ImageReadError: the file is unreadable, or ``channel`` is given and the file has no
            such channel.
    """
    if channel is None:
        array = _decode(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    else:
        array = _channel(_decode(path, cv2.IMREAD_UNCHANGED), channel, path)
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    image = array.astype(np.float32) / np.float32(scale)
    if size is not None:
        h, w = _hw(size)
        if image.shape != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return image


def image_shape(path: str | Path) -> tuple[int, int]:
    """The (H, W) of an image file (decodes it: OpenCV has no header-only read)."""
    return tuple(_decode(path, cv2.IMREAD_GRAYSCALE).shape[:2])  # type: ignore[return-value]


def read_mask(
    path: str | Path,
    expected_shape: tuple[int, int] | None = None,
    *,
    resize: bool = False,
    counts: MutableMapping[str, int] | None = None,
) -> np.ndarray:
    """Decode a mask to uint8 [H, W].

    Args:
        path: the mask file.
        expected_shape: the (H, W) the mask must have (e.g. its image's size).
        resize: resize a mask of another size to ``expected_shape`` (nearest neighbour)
            instead of raising.
        counts: where resized masks are counted (key ``"masks_resized"``).

    Raises:
        ImageReadError: the file is missing/empty/undecodable/truncated, or its size differs
            from ``expected_shape`` and ``resize`` is False.
    """
    mask = _decode(path, cv2.IMREAD_GRAYSCALE)
    if expected_shape is not None and mask.shape != tuple(expected_shape):
        if not resize:
            raise ImageReadError(
                f"mask {path} is {mask.shape[0]}x{mask.shape[1]}, expected "
                f"{expected_shape[0]}x{expected_shape[1]} (pass resize=True to resize masks)"
            )
        h, w = expected_shape
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        if counts is not None:
            counts[MASKS_RESIZED] = counts.get(MASKS_RESIZED, 0) + 1
    return mask


def _channel(array: np.ndarray, channel: int, path: str | Path) -> np.ndarray:
    """Channel ``channel`` (RGB(A) order) of an OpenCV-decoded (BGR(A)) array."""
    channels = 1 if array.ndim == 2 else array.shape[2]
    if not 0 <= channel < channels or channels == 1:
        raise ImageReadError(f"image {path} has {channels} channel(s), cannot read channel "
                             f"{channel} (expected a multi-channel file with that channel)")
    bgr_index = 2 - channel if channel < 3 else channel
    return np.ascontiguousarray(array[..., bgr_index])


def _decode(path: str | Path, flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"image file is empty: {path}")
    if _truncated(path, data):
        raise ImageReadError(f"image file is truncated (no end marker): {path}")
    array = cv2.imdecode(data, flags)
    if array is None or array.size == 0:
        raise ImageReadError(f"cannot decode image file (unreadable or truncated): {path}")
    return array


def _truncated(path: Path, data: np.ndarray) -> bool:
    """OpenCV decodes some truncated files silently: check the format's end marker."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        return data[-12:].tobytes().find(b"IEND") < 0
    if suffix in (".jpg", ".jpeg"):
        return data[-64:].tobytes().rfind(b"\xff\xd9") < 0  # EOI, allowing trailing padding
    return False


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    return int(size[0]), int(size[1])
