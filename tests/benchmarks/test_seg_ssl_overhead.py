"""The overhead benchmark's functions on a tiny batch (no timings asserted: the script prints
them, ``benchmarks/seg_ssl_overhead.py``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from benchmarks.seg_ssl_overhead import (
    METHODS,
    MethodStep,
    high_water_mb,
    interleaved_step_times,
    peak_rss_mb,
    ratios,
)


def test_every_method_steps_and_the_rounds_interleave(monkeypatch):
    torch.set_num_threads(1)
    runners = [MethodStep.build(name, size=32, batch=4) for name in METHODS]
    assert all(r.parts.model.training for r in runners)
    order: list[str] = []
    losses: list[float] = []
    for runner in runners:  # record the order the steps run in and their losses
        step = runner.step
        monkeypatch.setattr(runner, "step", lambda step=step, name=runner.name: (
            order.append(name), losses.append(step()))[1])
    ticks = itertools.count()
    times = interleaved_step_times(runners, rounds=2, steps=1, warmup=1,
                                   clock=lambda: float(next(ticks)), cpu_clock=lambda: 0.0)
    names = list(METHODS)
    # warm-up once each, then round 0 in order and round 1 rotated by one
    assert order == names + names + names[1:] + names[:1]
    assert all(r.steps == 3 for r in runners)  # 1 warm-up + 2 timed
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses)
    assert set(times) == set(METHODS) and all(w == 1.0 for w, _ in times.values())


def test_ratios_are_over_the_simclr_baseline():
    assert ratios({"simclr": 2.0, "seg_attention": 5.0}) == {"simclr": 1.0, "seg_attention": 2.5}
    with pytest.raises(ValueError, match="simclr"):
        ratios({"mae": 1.0})


@pytest.mark.slow  # two spawned interpreters importing torch: 20-60 s on a loaded machine
def test_peak_rss_is_the_childs_own_not_the_parents():
    ballast = np.ones(96 * 2**20, np.float64)  # 768 MiB resident in this process
    parent = high_water_mb()
    floor = peak_rss_mb(None, 32, 4, 0)
    del ballast
    assert floor < parent - 500  # ru_maxrss would report the parent's peak (survives exec)
    assert peak_rss_mb("simclr", 32, 4, 1) > floor > 50
