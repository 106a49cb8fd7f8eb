"""Ray Data preprocessing vs the simplest alternative: a ``multiprocessing`` pool running the same
per-batch functions on the same PNG files (target: Ray at 2 CPUs >= 0.85x the 2-process pool).

The work is the real pipeline's: decode + resize (``DecodeImages``) -> rule-based lungs
(``AddOrgans``) -> region-guided masks (``MaskImages("rgmim")``), batches of 16 files. Ray runs
it as the study does (``manifest_dataset`` + ``build_dataset``, materialized); the pool maps the
three functions over the manifest's batches and gathers the arrays in the parent (``pool``:
through the pool's pipes, what a user writes first; ``pool-shm``: the workers write the
per-pixel arrays into shared memory the parent allocated and return only the small columns,
the fast version of the same pool, as Ray's object store is shared memory). Every process
runs one library thread (``cv2.setNumThreads(1)``, torch threads 1, OMP/MKL 1). Each
measurement is a fresh process (``--run``): 1-CPU runs are pinned to one core with
``taskset -c 0`` (the whole Ray cluster: driver, raylet, workers; or the pool and its
parent), 2-CPU runs are not; one warm-up pass (worker start-up, imports), then timed passes.
Configurations are interleaved round by round; the median over rounds is reported, with the CPU
time per image (user + system of the process tree over the pass).

Also, on a 2-CPU Ray: the manifest reader (``from_pandas`` + ``DecodeImages``) against
``ray.data.read_images`` and against ``read_binary_files`` + ``cv2.imdecode`` in
``map_batches`` (each followed by the same organ and mask stages).

    python benchmarks/ray_data_vs_pool.py --quick     # 512 images, 1 round: a few minutes
    python benchmarks/ray_data_vs_pool.py             # 4,608 images, 5 rounds (>= 30 CPU-s each)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [str(ROOT / "platform"), str(ROOT)]
sys.path[:0] = [str(Path(__file__).resolve().parent), *SOURCES]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMEXPR_NUM_THREADS": "1"}
os.environ.update(ONE_THREAD)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [*SOURCES, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

SIZE, BATCH, RATIO, PATCH = 224, 16, 0.75, 16
KINDS = (("ray", 2), ("pool", 2), ("pool-shm", 2), ("ray", 1), ("pool", 1), ("pool-shm", 1))


def tree_cpu_s() -> float:
    """User + system CPU seconds of this process and every live descendant (from /proc)."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(cpu.get(pid, 0.0) for pid in tree)


def stages() -> list[Any]:
    from medmask.data.decode import DecodeImages
    from medmask.preprocess import AddOrgans, MaskImages

    return [DecodeImages(SIZE), AddOrgans(), MaskImages("rgmim", RATIO, PATCH)]


_SHARED: dict[str, np.ndarray] = {}  # pool-shm: this worker's views of the parent's arrays


def _pool_init(layout: dict[str, tuple[str, tuple[int, ...], str]] | None = None) -> None:
    from multiprocessing import shared_memory

    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    for column, (name, shape, dtype) in (layout or {}).items():
        block = shared_memory.SharedMemory(name=name)
        _SHARED[column] = np.ndarray(shape, dtype, buffer=block.buf)
        _SHARED[f"_{column}_block"] = block  # keep the mapping alive


def _pool_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for stage in stages():
        batch = stage(batch)
    return batch


def _pool_batch_shared(item: tuple[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """pool-shm: the per-pixel arrays go to shared memory at the batch's rows."""
    start, batch = item
    out = _pool_batch(batch)
    for column in [c for c in _SHARED if not c.startswith("_")]:
        values = out.pop(column)
        _SHARED[column][start:start + len(values)] = values
    return out


def manifest_batches(manifest: Any) -> list[dict[str, np.ndarray]]:
    table = manifest[["id", "path"]].astype(str)
    return [{c: table[c].to_numpy()[lo:lo + BATCH] for c in table.columns}
            for lo in range(0, len(table), BATCH)]


def run_pool(manifest: Any, cpus: int, passes: int, shared: bool = False
             ) -> list[tuple[float, float]]:
    import multiprocessing
    from multiprocessing import shared_memory

    batches = manifest_batches(manifest)
    blocks, layout = [], None
    if shared:  # one array per per-pixel column, shaped from one batch computed here
        sample = _pool_batch(dict(batches[0]))
        layout = {}
        for column, values in sample.items():
            if values.dtype != object and values.ndim > 1:
                shape = (len(manifest), *values.shape[1:])
                blocks.append(shared_memory.SharedMemory(
                    create=True, size=int(np.prod(shape)) * values.dtype.itemsize))
                layout[column] = (blocks[-1].name, shape, values.dtype.str)
    work = ([(i * BATCH, b) for i, b in enumerate(batches)], _pool_batch_shared) if shared \
        else (batches, _pool_batch)
    try:
        with multiprocessing.get_context("forkserver").Pool(
                cpus, initializer=_pool_init, initargs=(layout,)) as pool:
            pool.map(work[1], work[0][: 2 * cpus])  # warm-up: start workers, import
            results = []
            for _ in range(passes):
                cpu, start = tree_cpu_s(), time.perf_counter()
                out = pool.map(work[1], work[0], chunksize=1)
                wall = time.perf_counter() - start
                assert sum(len(b["id"]) for b in out) == len(manifest)
                results.append((wall, tree_cpu_s() - cpu))
    finally:
        for block in blocks:
            block.close()
            block.unlink()
    return results


def ray_pass(manifest: Any, cpus: int, reader: str = "manifest", root: str = "") -> int:
    import ray.data

    from medmask.preprocess import build_dataset, configure_data_context, manifest_dataset

    configure_data_context()
    # no task cap (``concurrency`` None), as the study and experiments/preprocess.py run it: a
    # cap equal to the CPUs measured 218-250 images/s against 263-287 without (4,608 PNGs)
    if reader == "manifest":
        source = manifest_dataset(manifest, SIZE, batch_size=BATCH)
    elif reader == "read_images":
        source = ray.data.read_images(root, mode="L", size=(SIZE, SIZE), include_paths=True)
        source = source.map_batches(ToImageRows(), batch_size=BATCH, batch_format="numpy")
    else:
        source = ray.data.read_binary_files(root, include_paths=True).map_batches(
            DecodeBytes(), batch_size=BATCH, batch_format="numpy")
    dataset = build_dataset(source, strategy="rgmim", ratio=RATIO, patch_size=PATCH,
                            batch_size=BATCH).materialize()
    return dataset.count()


class ToImageRows:
    """``read_images`` rows (uint8 ``image``, ``path``) -> the pipeline's columns."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from medmask.keyed import image_keys

        ids = np.asarray([Path(p).stem for p in batch["path"]])
        return {"id": ids, "image": np.asarray(batch["image"], np.float32) / 255.0,
                "image_key": image_keys(ids)}


class DecodeBytes:
    """``read_binary_files`` rows (``bytes``, ``path``) -> decoded, resized images."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from medmask.keyed import image_keys

        cv2.setNumThreads(1)
        images = np.stack([cv2.resize(cv2.imdecode(np.frombuffer(b, np.uint8),
                                                   cv2.IMREAD_GRAYSCALE), (SIZE, SIZE),
                                      interpolation=cv2.INTER_AREA) for b in batch["bytes"]])
        ids = np.asarray([Path(p).stem for p in batch["path"]])
        return {"id": ids, "image": images.astype(np.float32) / 255.0,
                "image_key": image_keys(ids)}


def run_ray(manifest: Any, cpus: int, passes: int, readers: tuple[str, ...], root: str
            ) -> dict[str, list[tuple[float, float]]]:
    import ray

    from medmask.preprocess import TASK_ROWS

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": ONE_THREAD})
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        results: dict[str, list[tuple[float, float]]] = {}
        for reader in readers:
            # warm-up: two tasks per CPU, so every worker has started and imported
            ray_pass(manifest.head(2 * cpus * TASK_ROWS), cpus, reader, root)
            results[reader] = []
            for _ in range(passes):
                cpu, start = tree_cpu_s(), time.perf_counter()
                rows = ray_pass(manifest, cpus, reader, root)
                wall = time.perf_counter() - start
                assert rows == len(manifest), rows
                results[reader].append((wall, tree_cpu_s() - cpu))
    finally:
        ray.shutdown()
    return results


def measure(args: argparse.Namespace) -> None:
    """One measurement in this process (``--run``): prints a JSON line."""
    from medmask.data.manifest import load_manifest

    cv2.setNumThreads(1)
    manifest = load_manifest("folder", args.root)
    if args.run in ("pool", "pool-shm"):
        result = {args.run: run_pool(manifest, args.cpus, args.passes, args.run == "pool-shm")}
    else:
        readers = tuple(args.readers.split(","))
        result = run_ray(manifest, args.cpus, args.passes, readers, args.root)
    print("RESULT " + json.dumps(result), flush=True)


def launch(kind: str, cpus: int, root: Path, passes: int, readers: str = "manifest"
           ) -> dict[str, list[list[float]]]:
    command = [sys.executable, __file__, "--run", kind, "--cpus", str(cpus), "--root",
               str(root), "--passes", str(passes), "--readers", readers]
    if cpus == 1:
        command = ["taskset", "-c", "0", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} at {cpus} CPU failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4608)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="512 images, 1 round")
    parser.add_argument("--no-readers", action="store_true", help="skip the reader comparison")
    parser.add_argument("--run", choices=("ray", "pool", "pool-shm"), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--root", default="", help=argparse.SUPPRESS)
    parser.add_argument("--passes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--readers", default="manifest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        measure(args)
        return
    if args.quick:
        args.images, args.rounds = 512, 1
    from ray_data_preprocess import write_phantom_folder

    with tempfile.TemporaryDirectory(prefix="medmask-pool-bench-") as tmp:
        root = Path(tmp)
        write_phantom_folder(root, args.images, SIZE)
        print(f"{args.images} PNG images of {SIZE} px, batch {BATCH}, decode + segment_lungs + "
              f"rgmim; {args.rounds} interleaved round(s); {load_line()}")
        walls: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        for round_ in range(args.rounds):
            for kind, n in KINDS:
                wall, cpu = launch(kind, n, root, 1)["manifest" if kind == "ray" else kind][0]
                walls.setdefault(f"{kind}{n}", []).append(wall)
                cpus.setdefault(f"{kind}{n}", []).append(cpu)
                print(f"  round {round_ + 1}: {kind:<8} {n} CPU {wall:6.2f} s "
                      f"({args.images / wall:6.1f} images/s, {1e3 * cpu / args.images:5.1f} "
                      f"CPU-ms/image); {load_line()}", flush=True)
        rate = {k: args.images / statistics.median(v) for k, v in walls.items()}
        per_image = {k: 1e3 * statistics.median(v) / args.images for k, v in cpus.items()}
        for key in rate:
            print(f"{key:<9}: {rate[key]:7.1f} images/s, {per_image[key]:5.1f} CPU-ms/image "
                  "(median)")
        print(f"ray / pool : {rate['ray2'] / rate['pool2']:.2f}x at 2 CPUs (target >= 0.85)")
        print(f"ray / pool-shm : {rate['ray2'] / rate['pool-shm2']:.2f}x at 2 CPUs")
        print(f"pool 2 vs 1: {rate['pool2'] / rate['pool1']:.2f}x   "
              f"pool-shm 2 vs 1: {rate['pool-shm2'] / rate['pool-shm1']:.2f}x   "
              f"ray 2 vs 1: {rate['ray2'] / rate['ray1']:.2f}x")
        if not args.no_readers:
            readers = launch("ray", 2, root, 1, "manifest,read_images,read_binary_files")
            print("readers at 2 CPUs (one pass each, after a warm-up):")
            for reader, ((wall, cpu),) in readers.items():
                print(f"  {reader:<18} {args.images / wall:7.1f} images/s, "
                      f"{1e3 * cpu / args.images:5.1f} CPU-ms/image")
    print(f"done; {load_line()}")


if __name__ == "__main__":
    main()
