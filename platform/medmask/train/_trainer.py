"""Building and running a ``TorchTrainer`` from plain settings (Ray's examples' shape).

The loops are plain functions of a config dict; the trainer, the scaling and the run config are
built here, so the same loop runs on 1 CPU and on N GPUs by changing :class:`ScalingSettings`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmask.train._checkpoint import load_checkpoint

POLL_INTERVAL_ENV, POLL_INTERVAL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


@dataclass(frozen=True)
class ScalingSettings:
    """What Hydra's ``cluster`` group says about the workers."""

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1})
    max_failures: int = 1
    keep_checkpoints: int = 2
    # how the loops use their device: channels-last parameters (None: where CUDA is present)
    # and an opt-in torch.compile of the prepared model (never on by default: it compiles for
    # minutes on a small CPU)
    channels_last: bool | None = None
    compile: bool = False
    # torch CPU threads in each Train worker (None: Ray's default, the CPUs the worker
    # reserves: 1 thread for a 1-CPU worker, which leaves a laptop's other cores idle while it
    # trains; the experiments' cluster.torch_threads=auto gives each worker its share of the
    # machine's cores)
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.torch_threads is not None and int(self.torch_threads) < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads!r}")


def build_trainer(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    datasets: Mapping[str, Any],
    *,
    scaling: ScalingSettings,
    storage_path: str | Path,
    name: str,
    split_datasets: tuple[str, ...] = ("train",),
    callbacks: Sequence[Any] = (),
) -> Any:
    """A ``TorchTrainer`` for ``loop`` with checkpoints kept and resume after worker failure.

    ``callbacks`` are Ray Train ``UserCallback`` s (e.g. Tune's report callback when the
    trainer runs inside a Tune trial). The scaling's device options reach the loop as
    ``loop_config["device_options"]``.
    """
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    # Ray Train's controller polls its workers every 2 s by default and noticed a finished
    # loop 4-5 s after it returned; at 0.5 s a tiny TorchTrainer.fit() measured 16-18 s
    # instead of 22-27 s (read from the driver's environment when fit() starts the controller)
    os.environ.setdefault(POLL_INTERVAL_ENV, POLL_INTERVAL_S)
    loop_config = {**loop_config, "device_options": {"channels_last": scaling.channels_last,
                                                     "compile": scaling.compile,
                                                     "torch_threads": scaling.torch_threads}}
    resources = dict(scaling.resources_per_worker)
    if not scaling.use_gpu:
        resources.pop("GPU", None)
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=scaling.keep_checkpoints),
            callbacks=list(callbacks),
        ),
        datasets=dict(datasets),
        # the shards keep the datasets' order: the same config and seed, the same batches
        dataset_config=ray.train.DataConfig(datasets_to_split=list(split_datasets),
                                            execution_options=ExecutionOptions(
                                                preserve_order=True)),
    )


class EpochProgress:
    """A progress bar on the driver over a Ray Train run's epochs.

    The workers' own output stays in Ray's log files (``experiments/`` start Ray with
    ``log_to_driver`` off unless ``verbose=true``), so the console shows this bar per stage
    instead: rank 0 of the loop puts every finished epoch on a Ray queue (the loop config's
    ``progress``, see :func:`medmask.train.run_epochs`) and a thread on the driver draws it::

        with EpochProgress("pretraining", epochs) as progress:
            trainer = build_trainer(loop, {**loop_config, "progress": progress.queue}, ...)
            result = trainer.fit()
    """

    def __init__(self, desc: str, total: int) -> None:
        self.desc, self.total = desc, int(total)
        self.queue: Any = None
        self.epochs: list[int] = []  # the epochs drawn, in arrival order

    def __enter__(self) -> EpochProgress:
        from ray.util.queue import Queue  # defer: ray
        from tqdm.auto import tqdm  # defer: tqdm

        self.queue = Queue(actor_options={"num_cpus": 0})
        self.bar = tqdm(total=self.total, desc=self.desc, unit="epoch", dynamic_ncols=True,
                        disable=os.environ.get("MEDMASK_PROGRESS") == "0")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        return self

    def _drain(self) -> None:
        from ray.util.queue import Empty  # defer: ray

        while not self._stop.is_set():
            try:
                self._show(self.queue.get(timeout=0.5))
            except (Empty, queue.Empty):
                continue
            except Exception:  # the queue's actor went away with the run: stop drawing
                return

    def _show(self, item: dict[str, Any]) -> None:
        self.epochs.append(int(item["epoch"]))
        self.bar.n = min(int(item["epoch"]) + 1, self.total)
        loss = item.get("loss")
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc: Any) -> None:
        import ray  # defer: ray

        self._stop.set()
        self._thread.join(timeout=5)
        try:
            for item in self.queue.get_nowait_batch(self.queue.qsize()):
                self._show(item)
        except Exception:  # noqa: S110 (the run is over; the bar only loses its last ticks)
            pass
        self.bar.close()
        ray.kill(self.queue.actor)


def steps_per_epoch(num_rows: int, batch_size: int, num_workers: int) -> int:
    """Optimizer steps per epoch on each worker for a global ``batch_size``."""
    per_worker_rows = -(-num_rows // max(num_workers, 1))
    per_worker_batch = max(1, batch_size // max(num_workers, 1))
    return max(1, -(-per_worker_rows // per_worker_batch))


def fit_and_load(trainer: Any, model: Any, what: str) -> Any:
    """Run ``trainer.fit()`` and load its last reported checkpoint's weights into ``model``:
    the best validation epoch's (``best``) when the loop selected on validation, else the last
    epoch's.

    Raises:
        RuntimeError: the run reported no checkpoint (with Ray's error, if any).
    """

    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{what} reported no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as directory:
        state = load_checkpoint(directory)
    best = state.get("best")
    model.load_state_dict(best["model"] if best else state["model"])
    return model
