"""Slice datasets: manifest build time and decode-stage throughput, LGG TIFFs and NIfTI volumes.

Writes synthetic data in the real layouts and sizes to a temporary folder (LGG: 256 x 256
3-channel TIFF slices with 0/255 masks; Decathlon Task01: 240 x 240 x 155 x 4 float32 image and
uint8 label volumes, gzipped), then times, on one process without Ray:

- ``load_manifest`` (it reads every mask / label volume once to remove slices without target);
- the :class:`~medmask.data.slices.DecodeSlices` stage on batches of 32 rows, in slices/s;
- for NIfTI, the slab read (one read per volume per batch, what the stage does) against one
  ``read_volume_slices`` call per slice (a gzip volume is decompressed up to the slice each
  time): the printed ratio is what grouping buys.

Usage::

    python benchmarks/slice_decode.py                 # 10 LGG cases x 20 slices, 2 volumes
    python benchmarks/slice_decode.py --cases 40 --volumes 4 --size 224
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from medmask import columns as C  # noqa: E402
from medmask.data.manifest import load_manifest  # noqa: E402
from medmask.data.slices import DecodeSlices, read_volume_slices  # noqa: E402


def write_lgg(root: Path, cases: int, slices: int, rng: np.random.Generator) -> None:
    for k in range(cases):
        case = f"TCGA_CS_{4000 + k}_19960909"
        folder = root / case
        folder.mkdir(parents=True)
        for n in range(1, slices + 1):
            image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
            mask = np.zeros((256, 256), np.uint8)
            if n % 3:  # a third of the slices without lesion
                mask[100:140, 90:150] = 255
            cv2.imwrite(str(folder / f"{case}_{n}.tif"), image)
            cv2.imwrite(str(folder / f"{case}_{n}_mask.tif"), mask)


def write_decathlon(root: Path, volumes: int, rng: np.random.Generator) -> None:
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    for k in range(volumes):
        image = rng.normal(0, 1, (240, 240, 155, 4)).astype(np.float32)
        labels = np.zeros((240, 240, 155), np.uint8)
        labels[80:160, 90:150, 40:110] = 2
        nib.Nifti1Image(image, np.eye(4)).to_filename(str(root / "imagesTr" / f"BRATS_{k}.nii.gz"))
        nib.Nifti1Image(labels, np.eye(4)).to_filename(str(root / "labelsTr" / f"BRATS_{k}.nii.gz"))


def decode_rate(manifest, size: int, batch: int = 32) -> float:
    stage = DecodeSlices.from_manifest(manifest, size)
    start = time.perf_counter()
    for lo in range(0, len(manifest), batch):
        part = manifest.iloc[lo:lo + batch]
        stage({k: part[k].to_numpy() for k in part.columns})
    return len(manifest) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--volumes", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        lgg, dec = Path(tmp) / "kaggle_3m", Path(tmp) / "Task01_BrainTumour"
        write_lgg(lgg, args.cases, args.slices, rng)
        write_decathlon(dec, args.volumes, rng)

        start = time.perf_counter()
        manifest = load_manifest("lgg_slices", lgg)
        elapsed = time.perf_counter() - start
        print(f"lgg_slices manifest: {manifest.attrs['slices_total']} slices "
              f"({manifest.attrs['dropped']}) in {elapsed:.2f} s "
              f"({manifest.attrs['slices_total'] / elapsed:.0f} masks/s)")
        print(f"lgg_slices decode: {decode_rate(manifest, args.size):.0f} slices/s "
              f"(size {args.size})")

        start = time.perf_counter()
        manifest = load_manifest("nifti_volumes", dec)
        elapsed = time.perf_counter() - start
        print(f"nifti_volumes manifest: {args.volumes} volumes, "
              f"{manifest.attrs['slices_total']} slices ({manifest.attrs['dropped']}) in "
              f"{elapsed:.2f} s ({elapsed / args.volumes:.2f} s per label volume)")
        grouped = decode_rate(manifest, args.size)
        print(f"nifti_volumes decode: {grouped:.0f} slices/s (size {args.size}, batches of 32)")
        rows = manifest[manifest[C.PATIENT] == "BRATS_0"].head(32)
        start = time.perf_counter()
        for index in rows[C.SLICE_INDEX]:
            read_volume_slices(rows[C.PATH].iloc[0], [int(index)], 0)
        single = len(rows) / (time.perf_counter() - start)
        start = time.perf_counter()
        read_volume_slices(rows[C.PATH].iloc[0], rows[C.SLICE_INDEX].tolist(), 0)
        slab = len(rows) / (time.perf_counter() - start)
        print(f"nifti read, 32 slices of one volume: slab {slab:.0f} slices/s vs one read per "
              f"slice {single:.0f} slices/s: ratio {slab / single:.1f}x")


if __name__ == "__main__":
    main()
