"""Phantom generation throughput: 2,000 chest X-ray phantoms at 224 px, 1 process vs 2.

The target: a 2,000-image 224 px set generates in well under a minute on 2 cores. The
1-process run generates everything in the main process; the 2-process run splits the index range
into chunks that two worker processes (``multiprocessing``, spawn) generate in parallel, which is
what Ray Data does with :func:`medmask.preprocess.phantom_dataset`. Every process is pinned to
one thread for numpy's BLAS, torch and OpenCV. The parallel result is checked equal to the serial
one (chunk invariance), compared by a hash of each chunk's arrays.

Usage::

    python benchmarks/phantom_generation.py                  # 2000 images, 224 px, 2 processes
    python benchmarks/phantom_generation.py --n 500 --size 512 --processes 4

Prints the seconds and images/s of each run and the speed-up ratio; no assertions on time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # inherited by the spawned workers before numpy loads

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

import multiprocessing as mp  # noqa: E402

import numpy as np  # noqa: E402

from medmask import columns as C  # noqa: E402
from medmask.data.phantom import generate  # noqa: E402


def _pin_one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


_CHECKED = (C.IMAGE, C.ORGANS, C.LESION, C.GAZE, C.LABEL, C.LABELS)


def _digest(data: dict[str, np.ndarray]) -> str:
    """One hash of a range's arrays: workers return it instead of ~1 GB of pixels through
    pipes (Ray Data keeps blocks in shared memory; a Pool would pickle them)."""
    h = hashlib.sha1()
    for key in _CHECKED:
        h.update(np.ascontiguousarray(data[key]).tobytes())
    return h.hexdigest()


def _generate_range(args: tuple[int, int, int, int]) -> str:
    start, n, size, seed = args
    return _digest(generate(n, size, seed, start=start))


def _timed_serial(n: int, size: int, seed: int) -> tuple[float, dict[str, np.ndarray]]:
    begin = time.perf_counter()
    data = generate(n, size, seed)
    return time.perf_counter() - begin, data


def _jobs(n: int, size: int, seed: int, chunk: int) -> list[tuple[int, int, int, int]]:
    return [(lo, min(chunk, n - lo), size, seed) for lo in range(0, n, chunk)]


def _timed_parallel(n: int, size: int, seed: int, processes: int,
                    chunk: int) -> tuple[float, list[str]]:
    jobs = _jobs(n, size, seed, chunk)
    with mp.get_context("spawn").Pool(processes, initializer=_pin_one_thread) as pool:
        pool.map(_generate_range, [(0, processes, 32, seed)] * processes)  # warm the imports
        begin = time.perf_counter()
        digests = pool.map(_generate_range, jobs, chunksize=1)
        elapsed = time.perf_counter() - begin
    return elapsed, digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=100, help="images per parallel task")
    args = parser.parse_args()
    _pin_one_thread()
    generate(8, args.size, args.seed)  # warm-up (imports, caches)

    serial_s, serial = _timed_serial(args.n, args.size, args.seed)
    print(f"1 process : {args.n} images at {args.size} px in {serial_s:6.2f} s "
          f"= {args.n / serial_s:7.1f} images/s")
    parallel_s, parallel = _timed_parallel(args.n, args.size, args.seed, args.processes,
                                           args.chunk)
    print(f"{args.processes} processes: {args.n} images at {args.size} px in {parallel_s:6.2f} s "
          f"= {args.n / parallel_s:7.1f} images/s")
    print(f"speed-up {args.processes} vs 1 process: {serial_s / parallel_s:.2f}x "
          f"(cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
    serial_digests = [_digest({k: v[lo : lo + count] for k, v in serial.items()})
                      for lo, count, _, _ in _jobs(args.n, args.size, args.seed, args.chunk)]
    same = serial_digests == parallel
    print(f"parallel result identical to serial: {same}")


if __name__ == "__main__":
    main()
