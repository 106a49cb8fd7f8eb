"""Ray Data preprocessing throughput on 2 CPUs vs 1 CPU (target >= 1.7x).

The pipeline is the real one: a folder manifest of PNG files -> decode + resize
(``DecodeImages``) -> rule-based lungs (``AddOrgans`` -> ``segment_lungs``) -> region-guided
masks (``MaskImages("rgmim")``). Every Ray task is pinned to one thread (OMP/MKL/OpenBLAS env
vars in the runtime env, ``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)`` inside the
stage functions), so the 1-CPU run really uses one core and the 2-CPU run two.

    python benchmarks/ray_data_preprocess.py                 # 384 images of 224 px
    python benchmarks/ray_data_preprocess.py --images 768 --rounds 5

One local Ray of 2 CPUs runs the pipeline with at most 1 task at a time (``concurrency=1``: one
core busy) and with 2, alternating, after one warm-up pass of each (worker start-up and imports
are not preprocessing). Alternating rounds keep a shared machine's changing load from favouring
one setting; the ratio reported is the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from medmask import columns as C
from medmask.data.manifest import load_manifest
from medmask.data.phantom import generate
from medmask.preprocess import build_dataset, manifest_dataset

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


def write_phantom_folder(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``root/<class>/<id>.png``: the folder layout that ``load_manifest("folder")`` reads."""
    data = generate(n, size, seed)
    pixels = (np.clip(data[C.IMAGE], 0, 1) * 255).round().astype(np.uint8)
    for image_id, label_name, image in zip(data[C.ID], data[C.LABEL_NAME], pixels, strict=True):
        folder = root / str(label_name)
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{image_id}.png"), image)


def preprocess_once(manifest, size: int, batch_size: int, concurrency: int) -> float:
    """Decode + segment + mask every image once with at most ``concurrency`` tasks at a time;
    the wall seconds of the whole pass."""
    start = time.perf_counter()
    source = manifest_dataset(manifest, size, batch_size=batch_size, concurrency=concurrency)
    dataset = build_dataset(source, strategy="rgmim", ratio=0.75, patch_size=16,
                            batch_size=batch_size, segment=True,
                            concurrency=concurrency).materialize()
    rows = dataset.count()
    elapsed = time.perf_counter() - start
    if rows != len(manifest):
        raise RuntimeError(f"the pipeline returned {rows} rows for {len(manifest)} images")
    return elapsed


def alternating_rounds(manifest, size: int, batch_size: int, rounds: int
                       ) -> list[tuple[float, float]]:
    """(seconds with 1 task, seconds with 2 tasks) per round, on one 2-CPU local Ray."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": SINGLE_THREAD_ENV})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for concurrency in (1, 2):  # warm-up: start both workers, import everything
            preprocess_once(manifest.head(4 * batch_size), size, batch_size, concurrency)
        results = []
        for _ in range(rounds):
            one = preprocess_once(manifest, size, batch_size, 1)
            two = preprocess_once(manifest, size, batch_size, 2)
            print(f"  round: 1 CPU {one:.2f} s, 2 CPUs {two:.2f} s -> {one / two:.2f}x")
            results.append((one, two))
    finally:
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(SINGLE_THREAD_ENV)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory(prefix="medmask-bench-") as tmp:
        root = Path(tmp)
        write_phantom_folder(root, args.images, args.size)
        manifest = load_manifest("folder", root)
        print(f"{len(manifest)} PNG images of {args.size} px, batch {args.batch_size}, "
              f"decode + segment_lungs + rgmim (ratio 0.75, patch 16)")
        rounds = alternating_rounds(manifest, args.size, args.batch_size, args.rounds)
    one = len(manifest) / min(r[0] for r in rounds)
    two = len(manifest) / min(r[1] for r in rounds)
    ratio = float(np.median([r[0] / r[1] for r in rounds]))
    print(f"1 CPU : {one:8.1f} images/s (best round)")
    print(f"2 CPUs: {two:8.1f} images/s (best round)")
    print(f"ratio : {ratio:.2f}x, median over {len(rounds)} rounds (target >= 1.7x)")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        print(f"note: load average {load:.1f} on {cores} cores at the end: other processes "
              "shared the CPUs, so the figures are noisy (2 CPUs cannot both be ours)")


if __name__ == "__main__":
    main()
