"""2-D slices with lesion masks: per-image normalization and the decode stage of slice manifests.

Slice manifests (:mod:`medmask.data.lgg`, :mod:`medmask.data.nifti`) list one row per 2-D
image: ``path`` plus ``lesion_path`` (the lesion mask file, or the label volume), and where they
apply ``slice_index`` (index along a volume's last spatial axis; -1 for a 2-D file) and
``image_channel`` (the channel of a multi-channel file; -1 for grayscale). Their ``attrs`` say
how the decode stage normalizes (``normalize``, ``zscore_clip``) and which label values are
target (``target_labels``); :func:`medmask.preprocess.manifest_dataset` picks
:class:`DecodeSlices` for any manifest with a ``lesion_path`` column.

Normalization (AHM paper, section V-A: "z-score normalization" per image). The pipeline's
``image`` is float32 in [0, 1] (DESIGN.md, and the MAE's reconstruction is clamped to [0, 1]),
so a z-scored image is mapped there by one fixed affine map:

    z = (x - mean(x)) / std(x)              per 2-D image, over all its pixels, after resizing
    image = (clip(z, -c, c) + c) / (2 c)    c = ``zscore_clip`` (default 3)

so the image's mean lands at 0.5 and one standard deviation spans 1 / (2 c) (1/6 by default);
values beyond c standard deviations are clipped (and counted nowhere: it is the definition). A
constant image (std 0) maps to 0.5 everywhere. ``normalize="minmax"`` maps each image's
[min, max] to [0, 1] instead. The statistics are computed per slice, not per volume, so an
image's normalization never depends on which other slices were kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from medmask import columns as C
from medmask.data.imageio import ImageReadError, read_image, read_mask
from medmask.keyed import image_keys

NORMALIZATIONS = ("zscore", "minmax")
ATTR_NORMALIZE = "normalize"
ATTR_ZSCORE_CLIP = "zscore_clip"
ATTR_TARGET_LABELS = "target_labels"
ATTR_SLICES_TOTAL = "slices_total"
DROPPED_NO_TARGET = "no_target"  # attrs["dropped"] key: slices without any target pixel
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def check_normalize(normalize: str, zscore_clip: float) -> None:
    """``ValueError`` unless ``normalize`` is a known scheme and ``zscore_clip`` > 0."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if not float(zscore_clip) > 0:
        raise ValueError(f"zscore_clip must be > 0 (standard deviations), got {zscore_clip}")


def zscore_unit(images: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """Per-image z-score of [B, H, W] images, clipped to +-``clip`` and mapped to [0, 1].

    See the module docstring: ``(clip(z, -c, c) + c) / (2 c)``; a constant image gives 0.5.
    """
    x = np.asarray(images, np.float32)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)
    z = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1), 0)
    c = np.float32(clip)
    return ((np.clip(z, -c, c) + c) / (2 * c)).astype(np.float32)


def minmax_unit(images: np.ndarray) -> np.ndarray:
    """Per-image [min, max] of [B, H, W] images mapped to [0, 1] (a constant image gives 0)."""
    x = np.asarray(images, np.float32)
    low = x.min(axis=(-2, -1), keepdims=True)
    span = x.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (x - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def normalize_images(images: np.ndarray, normalize: str = "zscore",
                     zscore_clip: float = 3.0) -> np.ndarray:
    """Apply ``normalize`` (``"zscore"`` or ``"minmax"``) to a batch [B, H, W]."""
    check_normalize(normalize, zscore_clip)
    if normalize == "zscore":
        return zscore_unit(images, zscore_clip)
    return minmax_unit(images)


def is_target(labels: np.ndarray, target_labels: Sequence[int] | None) -> np.ndarray:
    """Boolean target map: label > 0, or label in ``target_labels`` when given."""
    labels = np.asarray(labels)
    if target_labels is None:
        return labels > 0
    return np.isin(labels, np.asarray(list(target_labels)))


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """``BRATS_001.nii.gz`` -> ``BRATS_001``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def load_nifti(path: str | Path) -> Any:
    """``nibabel.load`` with an :class:`ImageReadError` naming the file on failure."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"NIfTI file not found: {path}")
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises several unrelated types
        raise ImageReadError(f"cannot read NIfTI file {path}: {error}") from error


def read_volume_slices(path: str | Path, indices: Sequence[int], channel: int = -1
                       ) -> np.ndarray:
    """Slices ``indices`` along the last spatial axis (axis 2) of a NIfTI volume, [n, X, Y].

    Reads one slab from the smallest to the largest index (a gzip file is decompressed up to
    the slab once, not once per slice). ``channel`` picks the 4th axis of a 4-D (multi-modal)
    volume; -1 requires a 3-D volume.

    Raises:
        ImageReadError: unreadable, truncated or of an unexpected dimensionality, naming the file.
    """
    image = load_nifti(path)
    shape = image.shape
    idx = np.asarray(indices, np.int64)
    if len(shape) not in (3, 4) or (len(shape) == 4) != (channel >= 0):
        want = "a 4-D volume (channel given)" if channel >= 0 else "a 3-D volume"
        raise ImageReadError(f"NIfTI file {path} has shape {shape}, expected {want}")
    if channel >= shape[-1] and len(shape) == 4:
        raise ImageReadError(f"NIfTI file {path} has {shape[-1]} channels, asked for {channel}")
    if idx.min() < 0 or idx.max() >= shape[2]:
        raise ImageReadError(f"NIfTI file {path} has {shape[2]} slices, asked for "
                             f"{idx.min()}..{idx.max()}")
    lo, hi = int(idx.min()), int(idx.max()) + 1
    try:
        slab = image.dataobj[:, :, lo:hi] if channel < 0 else image.dataobj[:, :, lo:hi, channel]
        slab = np.asarray(slab)
    except Exception as error:  # truncated gzip (EOFError), bad data (ValueError), ...
        raise ImageReadError(f"cannot read NIfTI data of {path} (unreadable or truncated): "
                             f"{error}") from error
    return np.moveaxis(slab[:, :, idx - lo], -1, 0)


class DecodeSlices:
    """Decode stage for slice manifests: image slice + lesion mask -> ``image``, ``lesion``.

    Reads each file (a 2-D TIFF/PNG channel, or a slab of a NIfTI volume, one read per volume
    per batch), resizes images with area interpolation and lesion maps nearest-neighbour to
    ``size``, then normalizes the whole batch at once (:func:`normalize_images`). ``lesion`` is
    uint8 {0, 1}: the target pixels (:func:`is_target`).

    Flags, as :class:`~medmask.data.decode.DecodeImages`: ``bad_image`` (zero image, kept and
    counted; only with ``on_bad_image="flag"``), ``bad_mask`` (lesion unreadable: empty lesion),
    ``mask_resized`` (a 2-D mask of another size than its image).

    Args:
        size: output side in pixels.
        on_bad_image: ``"raise"`` (:class:`ImageReadError` naming the file) or ``"flag"``.
        normalize, zscore_clip: see the module docstring.
        target_labels: label values that count as lesion (None: any value > 0).
    """

    def __init__(self, size: int, on_bad_image: str = "raise", normalize: str = "zscore",
                 zscore_clip: float = 3.0, target_labels: Sequence[int] | None = None) -> None:
        if on_bad_image not in ("raise", "flag"):
            raise ValueError(f"on_bad_image must be 'raise' or 'flag', got {on_bad_image!r}")
        check_normalize(normalize, zscore_clip)
        self.size, self.on_bad_image = int(size), on_bad_image
        self.normalize, self.zscore_clip = normalize, float(zscore_clip)
        self.target_labels = None if target_labels is None else [int(v) for v in target_labels]

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame, size: int,
                      on_bad_image: str = "raise") -> DecodeSlices:
        """The stage with the normalization and target labels the manifest's adapter set."""
        attrs = manifest.attrs
        return cls(size, on_bad_image, attrs.get(ATTR_NORMALIZE, "zscore"),
                   attrs.get(ATTR_ZSCORE_CLIP, 3.0), attrs.get(ATTR_TARGET_LABELS))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cv2.setNumThreads(1)
        paths = np.asarray(batch[C.PATH]).astype(str)
        n = len(paths)
        slices = _int_column(batch, C.SLICE_INDEX, n)
        channels = _int_column(batch, C.IMAGE_CHANNEL, n)
        lesion_paths = np.asarray(batch.get(C.LESION_PATH, np.full(n, ""))).astype(str)
        images = np.zeros((n, self.size, self.size), np.float32)
        lesions = np.zeros((n, self.size, self.size), np.uint8)
        bad_image, bad_mask, resized = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        volume = slices >= 0
        self._decode_files(paths, channels, lesion_paths, ~volume, images, lesions,
                           bad_image, bad_mask, resized)
        self._decode_volumes(paths, slices, channels, lesion_paths, volume, images, lesions,
                             bad_image, bad_mask)
        out = {k: np.asarray(v) for k, v in batch.items()}
        normalized = normalize_images(images, self.normalize, self.zscore_clip)
        out[C.IMAGE] = np.where(bad_image[:, None, None], np.float32(0), normalized)
        out[C.LESION] = lesions
        out[C.BAD_IMAGE], out[C.BAD_MASK], out[C.MASK_RESIZED] = bad_image, bad_mask, resized
        out[C.IMAGE_KEY] = image_keys(out[C.ID])
        return out

    def _resize(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        if array.shape == (self.size, self.size):
            return array
        return cv2.resize(array, (self.size, self.size), interpolation=interpolation)

    def _decode_files(self, paths: np.ndarray, channels: np.ndarray, lesion_paths: np.ndarray,
                      rows: np.ndarray, images: np.ndarray, lesions: np.ndarray,
                      bad_image: np.ndarray, bad_mask: np.ndarray, resized: np.ndarray) -> None:
        """2-D files, one by one (file decoding is per file by nature)."""
        for i in np.flatnonzero(rows):
            channel = None if channels[i] < 0 else int(channels[i])
            try:
                image = read_image(paths[i], channel=channel)
            except ImageReadError:
                if self.on_bad_image == "raise":
                    raise
                bad_image[i] = True
                continue
            images[i] = self._resize(image, cv2.INTER_AREA)
            if not lesion_paths[i]:
                continue
            try:
                mask = read_mask(lesion_paths[i])
            except ImageReadError:
                if self.on_bad_image == "raise":
                    raise
                bad_mask[i] = True
                continue
            resized[i] = mask.shape != image.shape
            target = is_target(mask, self.target_labels).astype(np.uint8)
            lesions[i] = self._resize(target, cv2.INTER_NEAREST)

    def _decode_volumes(self, paths: np.ndarray, slices: np.ndarray, channels: np.ndarray,
                        lesion_paths: np.ndarray, rows: np.ndarray, images: np.ndarray,
                        lesions: np.ndarray, bad_image: np.ndarray, bad_mask: np.ndarray
                        ) -> None:
        """NIfTI rows grouped by volume: one slab read per image and label volume."""
        if not rows.any():
            return
        keys = pd.Series(paths[rows]).astype(str) + "\0" + pd.Series(channels[rows]).astype(str)
        for _, group in pd.Series(np.flatnonzero(rows)).groupby(keys.to_numpy()):
            members = group.to_numpy()
            first = members[0]
            try:
                stack = read_volume_slices(paths[first], slices[members], int(channels[first]))
            except ImageReadError:
                if self.on_bad_image == "raise":
                    raise
                bad_image[members] = True
                continue
            images[members] = self._resize_stack(stack.astype(np.float32), cv2.INTER_AREA)
            if not lesion_paths[first]:
                continue
            try:
                labels = read_volume_slices(lesion_paths[first], slices[members])
            except ImageReadError:
                if self.on_bad_image == "raise":
                    raise
                bad_mask[members] = True
                continue
            target = is_target(labels, self.target_labels).astype(np.uint8)
            lesions[members] = self._resize_stack(target, cv2.INTER_NEAREST)

    def _resize_stack(self, stack: np.ndarray, interpolation: int) -> np.ndarray:
        """[n, H, W] -> [n, size, size]: one cv2 call on the slices stacked as channels."""
        if stack.shape[1:] == (self.size, self.size):
            return stack
        out = np.empty((len(stack), self.size, self.size), stack.dtype)
        for lo in range(0, len(stack), 512):  # OpenCV takes at most 512 channels
            part = np.ascontiguousarray(np.moveaxis(stack[lo:lo + 512], 0, -1))
            resized = cv2.resize(part, (self.size, self.size), interpolation=interpolation)
            out[lo:lo + 512] = np.moveaxis(resized.reshape(self.size, self.size, -1), -1, 0)
        return out


def _int_column(batch: Mapping[str, np.ndarray], name: str, n: int) -> np.ndarray:
    if name not in batch:
        return np.full(n, -1, np.int64)
    return np.asarray(batch[name]).astype(np.int64)
