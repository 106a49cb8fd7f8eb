"""The job of the two-node test (``test_two_node_job.py``), submitted with ``ray job submit``.

    ray job submit --working-dir . --runtime-env configs/runtime_env.yaml -- \
        python tests/experiments/two_node_job.py --tracking-uri sqlite:///... --storage DIR

Run on a cluster whose Python lacks the repository, it does what a study does, at the
smallest size: one Ray Data pass (64 phantoms, one task per chunk of 8) and one 2-worker Ray
Train epoch of the tiny MAE on them, in an MLflow study run with a ``pretrain`` stage. On that
stage it records where the work ran, from Ray's state API (the node ids of the Ray Data tasks
and of the Ray Train workers), and where a task on every node imported medmask and envs from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import ray  # noqa: E402
from _common import init_ray, make_tracker  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402
from ray.util.state import list_actors, list_tasks  # noqa: E402

from medmask.preprocess import phantom_dataset  # noqa: E402
from medmask.train import (  # noqa: E402
    ScalingSettings,
    build_trainer,
    pretrain_loop,
    steps_per_epoch,
    train_view,
)

TINY_MAE = {"name": "mae_vit_tiny_64",
            "params": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                       "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
                       "decoder_num_heads": 2}}
IMAGES, SIZE, CHUNK, BATCH = 64, 32, 8, 16
DATA_TASK = "GeneratePhantoms"  # the fused source operator's task name contains it
TRAIN_WORKER = "RayTrainWorker"


@ray.remote(num_cpus=0)
def imported_from() -> dict[str, str]:
    """Where this worker imports the shipped packages from."""
    import envs
    import medmask

    return {"node": ray.get_runtime_context().get_node_id(), "medmask": medmask.__file__,
            "envs": envs.__file__}


def imports_per_node() -> list[dict[str, str]]:
    """One task pinned to every alive node: where it imported medmask and envs from."""
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    return ray.get([imported_from.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        for node in nodes])


def nodes_of_job(job_id: str, min_data_tasks: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Node ids of this job's Ray Data tasks and Ray Train workers (Ray's state API; task
    events reach it with a delay, so it is polled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = [t for t in list_tasks(filters=[("job_id", "=", job_id)], limit=10_000,
                                       raise_on_missing_output=False) if DATA_TASK in t.name]
        workers = [a for a in list_actors(filters=[("job_id", "=", job_id),
                                                   ("class_name", "=", TRAIN_WORKER)],
                                          limit=1_000, raise_on_missing_output=False)]
        data_nodes = {t.node_id for t in tasks if t.node_id}
        if (len(tasks) >= min_data_tasks and len(workers) >= 2) or time.monotonic() > deadline:
            return {"data_tasks": len(tasks), "data_nodes": sorted(data_nodes),
                    "train_nodes": sorted({a.node_id for a in workers if a.node_id})}
        time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--storage", required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    tracker = make_tracker({"uri": args.tracking_uri, "experiment": "two-node"})
    init_ray({"address": "auto"})
    job_id = ray.get_runtime_context().get_job_id()
    with tracker.study("two-node") as study, tracker.stage("pretrain", parent=study) as stage:
        connected = time.perf_counter()
        train = train_view(phantom_dataset(IMAGES, SIZE, seed=0, chunk=CHUNK)).materialize()
        data_done = time.perf_counter()
        config = {"model": TINY_MAE, "masking": {"name": "random", "ratio": 0.75, "params": {}},
                  "optim": {"base_lr": 1e-3, "warmup_epochs": 0}, "batch_size": BATCH,
                  "epochs": 1, "steps_per_epoch": steps_per_epoch(IMAGES, BATCH, 2), "seed": 0,
                  "mixed_precision": False,
                  "tracking": {"uri": stage.uri, "run_id": stage.run_id}}
        trainer = build_trainer(pretrain_loop, config, {"train": train},
                                scaling=ScalingSettings(num_workers=2),
                                storage_path=args.storage, name="two-node")
        result = trainer.fit()
        if result.error is not None:
            raise RuntimeError(f"the 2-worker epoch failed: {result.error}")
        train_done = time.perf_counter()
        where = {**nodes_of_job(job_id, -(-IMAGES // CHUNK)), "imports": imports_per_node(),
                 "seconds": {"connect": round(connected - start, 1),
                             "data_pass": round(data_done - connected, 1),
                             "train_epoch": round(train_done - data_done, 1),
                             "job": round(time.perf_counter() - start, 1)}}
        stage.log_dict(where, "where.json")
        stage.set_tags({"rows": train.count(), "job_id": job_id})
    print("WHERE " + json.dumps(where))


if __name__ == "__main__":
    main()
