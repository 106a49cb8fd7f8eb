"""Pretraining images/s on whatever device there is: ViT-B/16 MAE at 224 px (the RGMIM setting)
and the paper U-Net at 256 px (AHM), bare loop vs Ray Train (target >= 0.9x on a GPU), and
peak memory.

On CUDA: bf16 autocast (``mixed_precision``), channels-last parameters, and in the Ray Train
loop pinned-memory prefetch from Ray Data; ``mae_vit_base_224`` (batch 128) and ``unet``
(batch 32). On a CPU it runs a tiny smoke size instead (``mae_vit_tiny_64`` and ``unet_tiny``
at 32 px, batch 16): the figures then say only that the path runs.

    python benchmarks/gpu_pretrain.py                 # the device it finds
    python benchmarks/gpu_pretrain.py --images 2048 --epochs 3

Each model: the bare loop (``ray_train_overhead.bare_images_per_s``) after a warm-up epoch,
then the same loop config through ``TorchTrainer`` (1 worker; a GPU and 4 CPUs on CUDA),
epoch to epoch after its warm-up epoch. Peak memory is the bare loop's (torch's peak
allocation on CUDA, the process's peak resident set on the CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_train_overhead import (  # noqa: E402  (also puts this clone's sources on the path)
    all_rows,
    bare_images_per_s,
    load_line,
    loop_config,
    peak_memory_mb,
    phantoms,
    ray_images_per_s,
)

from medmask.train import ScalingSettings  # noqa: E402

# (label, model config, image size, batch size) on CUDA and for the CPU smoke run
CUDA_MODELS = (
    ("ViT-B/16 MAE", {"name": "mae_vit_base_224", "params": {}}, 224, 128),
    ("U-Net (paper)", {"name": "unet", "params": {}}, 256, 32),
)
CPU_MODELS = (
    ("tiny MAE ViT", {"name": "mae_vit_tiny_64",
                      "params": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                                 "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                                 "decoder_num_heads": 2}}, 32, 16),
    ("tiny U-Net", {"name": "unet_tiny", "params": {"img_size": 32, "patch_size": 8}}, 32, 16),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="1024 on CUDA, 64 on a CPU")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after 1 warm-up)")
    args = parser.parse_args()
    import ray

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    models = CUDA_MODELS if cuda else CPU_MODELS
    images = args.images or (1024 if cuda else 64)
    name = torch.cuda.get_device_name(device) if cuda else "CPU (smoke size only)"
    print(f"device: {name}; {images} phantoms, {args.epochs} timed epochs; {load_line()}")
    ray.init(include_dashboard=False, log_to_driver=False,
             num_cpus=None if cuda else max(2, os.cpu_count() or 1))
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for label, model, size, batch_size in models:
            model = {"name": model["name"], "params": {**model["params"], "img_size": size}}
            dataset = phantoms(images, size)
            config = loop_config(model, images, batch_size, args.epochs + 1)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            bare, threads = bare_images_per_s(config, all_rows(dataset), args.epochs, device)
            peak = peak_memory_mb(device)
            resources = {"CPU": 4, "GPU": 1} if cuda else {"CPU": 1}
            scaling = ScalingSettings(num_workers=1, use_gpu=cuda, resources_per_worker=resources,
                                      keep_checkpoints=args.epochs + 2, max_failures=0)
            with tempfile.TemporaryDirectory(prefix="medmask-gpu-bench-") as tmp:
                through_ray, _, in_loop = ray_images_per_s(config, dataset, args.epochs,
                                                           scaling, Path(tmp))
            print(f"{label:<14} {size} px, batch {batch_size}: bare {bare:8.1f} images/s "
                  f"(torch threads {threads}), Ray Train {through_ray:8.1f} images/s "
                  f"(inside its epochs {in_loop:.1f}); Ray Train / bare {through_ray / bare:.2f}x"
                  f"{' (target >= 0.9)' if cuda else ''}; peak memory {peak:,.0f} MiB")
    finally:
        ray.shutdown()
    print(f"done; {load_line()}")


if __name__ == "__main__":
    main()
