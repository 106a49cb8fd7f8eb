"""PatchGrid: the geometry of patches over an image.

Source: Mask Creation Methodology ("Training: Random Masking"). From a patch count N_p:
``N_cols = floor(sqrt(N_p))``, ``N_rows = ceil(N_p / N_cols)``, ``p_h = floor(H / N_rows)``,
``p_w = floor(W / N_cols)``; patch k sits at row ``k // N_cols``, column ``k % N_cols`` with box
``h0 = i * p_h, h1 = min((i + 1) * p_h, H)`` (same for w); only the first N_p grid cells are
patches. From a patch size P (the ViT convention): ``N_rows = H // P``, ``N_cols = W // P``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class PatchGrid:
    """Patches over an ``height`` x ``width`` image, from a patch size or a patch count.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        patch_size: square patch side (ViT convention); exclusive with ``num_patches``.
        num_patches: number of patches N_p laid out as in the Mask Creation Methodology.

    Example:
        >>> g = PatchGrid(518, 518, num_patches=1370)
        >>> (g.rows, g.cols, g.patch_h, g.patch_w)
        (38, 37, 13, 14)

    The source's N_p = 1370 is 37^2 + 1: the token count of a ViT-14 at 518 px *with* its CLS
    token. Its formula (kept here exactly as given) lays out 38 x 37 boxes of 13 x 14 px,
    which drift from that ViT's 37 x 37 patches of 14 x 14 px (the 1370th box is a lone
    patch on a 38th row). To mask a ViT-14's own patches, use the patch-size form:

        >>> v = PatchGrid(518, 518, patch_size=14)
        >>> (v.rows, v.cols, v.patch_h, v.patch_w, v.num_patches)
        (37, 37, 14, 14, 1369)
    """

    height: int
    width: int
    patch_size: int | None = None
    num_patches: int = field(default=0)
    rows: int = field(init=False)
    cols: int = field(init=False)
    patch_h: int = field(init=False)
    patch_w: int = field(init=False)

    def __init__(
        self,
        height: int,
        width: int,
        *,
        patch_size: int | None = None,
        num_patches: int | None = None,
    ) -> None:
        if int(height) < 1 or int(width) < 1:
            raise ValueError(f"PatchGrid needs a positive image size, got {height}x{width}")
        if (patch_size is None) == (num_patches is None):
            raise ValueError(
                "PatchGrid takes exactly one of patch_size or num_patches, "
                f"got patch_size={patch_size!r}, num_patches={num_patches!r}"
            )
        height, width = int(height), int(width)
        if patch_size is not None:
            if not 1 <= int(patch_size) <= min(height, width):
                raise ValueError(
                    f"patch_size must be in [1, {min(height, width)}] for a {height}x{width} "
                    f"image, got {patch_size!r}"
                )
            patch_h = patch_w = int(patch_size)
            rows, cols = height // patch_h, width // patch_w
            n = rows * cols
        else:
            n = int(num_patches)  # type: ignore[arg-type]
            if n < 1:
                raise ValueError(f"num_patches must be >= 1, got {num_patches!r}")
            cols = math.isqrt(n)
            rows = -(-n // cols)
            patch_h, patch_w = height // rows, width // cols
            if patch_h < 1 or patch_w < 1:
                raise ValueError(
                    f"{n} patches ({rows} rows x {cols} cols) do not fit a {height}x{width} image"
                )
        for name, value in (
            ("height", height),
            ("width", width),
            ("patch_size", patch_size),
            ("num_patches", n),
            ("rows", rows),
            ("cols", cols),
            ("patch_h", patch_h),
            ("patch_w", patch_w),
        ):
            object.__setattr__(self, name, value)

    @property
    def shape(self) -> tuple[int, int]:
        """Grid shape (rows, cols); ``rows * cols >= num_patches``."""
        return self.rows, self.cols

    @property
    def is_full(self) -> bool:
        """True when every grid cell is a patch (rows * cols == num_patches)."""
        return self.rows * self.cols == self.num_patches

    def boxes(self) -> np.ndarray:
        """Pixel boxes of the patches, int64 [N, 4] of (h0, h1, w0, w1), row-major order."""
        k = np.arange(self.num_patches)
        i, j = k // self.cols, k % self.cols
        h0, w0 = i * self.patch_h, j * self.patch_w
        h1 = np.minimum(h0 + self.patch_h, self.height)
        w1 = np.minimum(w0 + self.patch_w, self.width)
        return np.stack([h0, h1, w0, w1], axis=1).astype(np.int64)

    def pool(self, maps: Array, reduce: str = "mean") -> Array:
        """Pool pixel maps to per-patch values in one vectorized op.

        Integer and boolean maps (numpy, or torch on the CPU) are reduced with numpy ufuncs
        separably, first over each patch's rows (an elementwise op on whole image rows, the
        fast direction) then over its columns: several times faster than torch's reductions
        of uint8/bool tensors on the CPU (``Tensor.any`` over bool is the slowest). Float
        torch maps (e.g. a per-pixel loss that needs gradients) stay in torch.

        Args:
            maps: [..., H, W] pixel maps (numpy or torch; bool maps are pooled as 0/1).
            reduce: ``"mean"`` (e.g. organ coverage, mean gaze, mean loss), ``"sum"``,
                ``"max"``, ``"min"`` or ``"any"``.

        Returns:
            [..., N] per-patch values of the same library as ``maps`` (float32 for mean/sum,
            the input dtype for max/min, bool for any).
        """
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {', '.join(map(repr, _REDUCTIONS))}; "
                             f"got {reduce!r}")
        if tuple(maps.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"maps of spatial shape {tuple(maps.shape[-2:])} do not match the grid's "
                f"{self.height}x{self.width} image"
            )
        lead = tuple(maps.shape[:-2])
        cropped = maps[..., : self.rows * self.patch_h, : self.cols * self.patch_w]
        cells = cropped.reshape(*lead, self.rows, self.patch_h, self.cols, self.patch_w)
        if isinstance(maps, torch.Tensor):
            if maps.device.type == "cpu" and not (maps.is_floating_point() or maps.is_complex()):
                out = torch.from_numpy(_pool_cells_numpy(cells.numpy(), reduce))
            else:
                out = _pool_cells_torch(cells, reduce)
        else:
            out = _pool_cells_numpy(cells, reduce)
        if reduce == "mean":
            out = out / float(self.patch_h * self.patch_w)
        return out.reshape(*lead, -1)[..., : self.num_patches]

    def unpool(self, values: Array) -> Array:
        """Paint per-patch values [..., N] back to pixel maps [..., H, W] (0 outside patches)."""
        if values.shape[-1] != self.num_patches:
            raise ValueError(
                f"expected {self.num_patches} per-patch values, got {values.shape[-1]}"
            )
        lead = tuple(values.shape[:-1])
        is_torch = isinstance(values, torch.Tensor)
        pad = self.rows * self.cols - self.num_patches
        if is_torch:
            full = torch.nn.functional.pad(values, (0, pad))
            cells = full.reshape(*lead, self.rows, 1, self.cols, 1)
            cells = cells.expand(*lead, self.rows, self.patch_h, self.cols, self.patch_w)
            out = values.new_zeros(*lead, self.height, self.width)
        else:
            full = np.concatenate([values, np.zeros((*lead, pad), values.dtype)], axis=-1)
            cells = np.broadcast_to(
                full.reshape(*lead, self.rows, 1, self.cols, 1),
                (*lead, self.rows, self.patch_h, self.cols, self.patch_w),
            )
            out = np.zeros((*lead, self.height, self.width), values.dtype)
        out[..., : self.rows * self.patch_h, : self.cols * self.patch_w] = cells.reshape(
            *lead, self.rows * self.patch_h, self.cols * self.patch_w
        )
        return out

    def pixel_mask(self, mask: Array) -> Array:
        """Bool pixel mask [..., H, W] covering the boxes of the True patches of ``mask``."""
        return self.unpool(mask.bool() if isinstance(mask, torch.Tensor) else mask.astype(bool))

    def __repr__(self) -> str:
        return (
            f"PatchGrid({self.height}x{self.width}, {self.num_patches} patches = "
            f"{self.rows}x{self.cols} of {self.patch_h}x{self.patch_w} px)"
        )


_REDUCTIONS = ("mean", "sum", "max", "min", "any")


def _pool_cells_numpy(cells: np.ndarray, reduce: str) -> np.ndarray:
    """Reduce [..., rows, ph, cols, pw] cells to [..., rows, cols]: over ph, then over pw."""
    if reduce == "any":
        cells = cells.view(np.uint8) if cells.dtype == np.bool_ else (cells != 0).view(np.uint8)
        return _pool_cells_numpy(cells, "max").view(np.bool_)
    *lead, rows, patch_h, cols, patch_w = cells.shape
    # Merge (cols, pw) so the row reduction's inner loop runs over whole image rows.
    rows_view = cells.reshape(*lead, rows, patch_h, cols * patch_w)
    if reduce in ("mean", "sum"):
        acc = np.float32 if np.issubdtype(cells.dtype, np.floating) else np.int64
        ufunc = np.add
        by_row = np.add.reduce(rows_view, axis=-2, dtype=acc)
    else:
        ufunc = np.maximum if reduce == "max" else np.minimum
        by_row = ufunc.reduce(rows_view, axis=-2)
    by_row = by_row.reshape(*lead, rows, cols, patch_w)
    # The patch-column reduction runs as pw - 1 elementwise ops over strided views: numpy's
    # reduction along a short last axis is several times slower.
    out = by_row[..., 0].copy()
    for j in range(1, by_row.shape[-1]):
        ufunc(out, by_row[..., j], out=out)
    return out.astype(np.float32, copy=False) if reduce in ("mean", "sum") else out


def _pool_cells_torch(cells: torch.Tensor, reduce: str) -> torch.Tensor:
    """Reduce [..., rows, ph, cols, pw] cells to [..., rows, cols] in torch (any device)."""
    if reduce == "any":
        return cells.to(torch.uint8).amax((-3, -1)) > 0
    if reduce == "max":
        return cells.amax((-3, -1))
    if reduce == "min":
        return cells.amin((-3, -1))
    return cells.float().sum((-3, -1))
