"""Anatomical contour overlays with CLIP (Table 2's training x test grid): one MLflow study run.

    python experiments/clip_overlay.py                                  # quick default (phantoms)
    python experiments/clip_overlay.py clip_overlay.clip_folder=/models/biomedclip
    python experiments/clip_overlay.py eval.params.alpha=0.5 eval.params.reading=top1
    python experiments/clip_overlay.py data=mimic_cxr data.root=/data/mimic-cxr-jpg/2.1.0 \
        chexmask.root=/data/chexmask clip_overlay.clip_folder=/models/biomedclip

With no CLIP folder: a tiny open_clip model trained contrastively on benchmark phantoms and
templated report sentences (medmask.train.phantom_clip, stage cache). Then zero-shot on
original and overlay test images, and linear probing / joint fine-tuning trained on original
or overlay images at every seed, each tested on both (protocol ``clip_overlay``,
medmask.eval); each LP / JFT model is the epoch (and lr, where a grid is given) that scored
best on a validation part of the training data (phantoms: by image; MIMIC: by patient).
Data (medmask.data.findings): benchmark phantoms, or MIMIC-CXR-JPG frontal views with
CheXmask lungs and heart (``data=mimic_cxr``, ``chexmask.root``; the paper's cohort options in
``clip_overlay.cohort``). The grid (Table 2's layout, CSV), every cell's readings and per-finding
accuracy / AUC, the test-time gains, the baselines and a heatmap go to MLflow. On phantoms the
table is plumbing: a phantom-trained CLIP has never seen real contours.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, make_tracker, mlflow_summary, to_dict  # noqa: E402

from medmask import columns as C  # noqa: E402
from medmask.data.findings import (  # noqa: E402
    FindingsDataSettings,
    FindingsSplits,
    findings_splits,
)
from medmask.eval import OverlayResult, OverlaySettings, evaluate_clip_overlay  # noqa: E402
from medmask.eval.figures import overlay_artifacts  # noqa: E402
from medmask.models import load_clip  # noqa: E402
from medmask.train import (  # noqa: E402
    HeadFitSettings,
    PhantomClipSettings,
    grid_classifiers,
    phantom_clip,
)

PLUMBING = "plumbing: a phantom-trained CLIP; no conclusion about overlays"
KEYS = (C.IMAGE, C.ORGANS, C.LABELS)


def data_settings(cfg: DictConfig) -> FindingsDataSettings:
    """The contour-overlay data of ``cfg``: ``data`` (phantom or mimic_cxr), ``chexmask``
    and the paper's cohort options ``clip_overlay.cohort`` (validated before compute)."""
    data, cohort = cfg.data, to_dict(cfg.clip_overlay.cohort)
    findings = tuple(cfg.eval.params.findings)
    if data.name == "phantom":
        return FindingsDataSettings(
            name="phantom", size=int(data.size), seed=int(cfg.seed), findings=findings,
            val_fraction=float(cohort["val_fraction"]), variant=str(data.variant),
            n_train=int(data.n_train), n_test=int(data.n_test))
    if data.name != "mimic_cxr":
        raise ValueError(f"experiments/clip_overlay.py reads data=phantom or data=mimic_cxr "
                         f"(with chexmask.root), got data={data.name!r}")
    if data.get("views") is not None or str(data.get("uncertain", "keep")) != "keep":
        raise ValueError("the contour-overlay cohort's views and label mapping are "
                         "clip_overlay.cohort.views / .uncertain / .blank (frontal PA/AP, "
                         "uncertain and blank -> 0 by default), not data.views / "
                         f"data.uncertain (got {data.get('views')!r}, "
                         f"{data.get('uncertain')!r})")
    chexmask = cfg.get("chexmask") or {}
    return FindingsDataSettings(
        name="mimic_cxr", size=int(data.size), seed=int(cfg.seed), findings=findings,
        root=data.root, chexmask_root=chexmask.get("root"),
        chexmask_resolution=str(chexmask.get("resolution", "OriginalResolution")),
        min_dice=chexmask.get("min_dice"), on_missing=str(data.get("on_missing", "drop")),
        on_bad_image=str(data.get("on_bad_image", "raise")), **cohort)


def overlay_data(settings: FindingsDataSettings) -> FindingsSplits:
    """The train / val / test splits (a progress bar while MIMIC images decode)."""
    if settings.name == "phantom":
        return findings_splits(settings)
    from tqdm.auto import tqdm  # defer: tqdm

    with tqdm(desc="decode MIMIC-CXR", unit="img", dynamic_ncols=True) as bar:
        splits = findings_splits(settings, progress=bar.update)
    return splits


def the_clip(cfg: DictConfig, settings: OverlaySettings, study: Any) -> tuple[Any, str]:
    """The CLIP of the study: a local folder, or the phantom CLIP (trained or reused)."""
    g = cfg.clip_overlay
    if g.clip_folder:
        return load_clip(str(g.clip_folder)), str(g.clip_folder)
    clip_settings = PhantomClipSettings(**to_dict(g.phantom_clip), seed=int(cfg.seed))
    start = time.perf_counter()
    clip, folder, hit = phantom_clip(clip_settings, settings, cfg.cache_dir)
    log.info("phantom CLIP %s in %.0f s: %s", "reused" if hit else "trained",
             time.perf_counter() - start, folder)
    study.set_tags({"clip_cache_hit": hit})
    study.log_metrics({"perf/clip_s": time.perf_counter() - start})
    return clip, str(folder)


def log_result(study: Any, result: OverlayResult, title: str) -> None:
    """The grid, its layout, cells, gains, baselines and the heatmap on the study run."""
    for name, item in overlay_artifacts(result, title).items():
        (study.log_figure if name.endswith(".png") else study.log_table)(item, name)
    for row in result.grid.itertuples(index=False):
        cell = f"{row.method}/{row.train or 'none'}/{row.test}"
        study.log_metrics({f"clip_overlay/{cell}/{r}": getattr(row, f"{r}_mean")
                           for r in ("binary", "exact", "top1")})


def run(cfg: DictConfig) -> OverlayResult:
    """Table 2's grid for ``cfg``; print and log it."""
    start = time.perf_counter()
    settings = OverlaySettings.from_params(**to_dict(cfg.eval.params))  # fails before compute
    fit = HeadFitSettings(**to_dict(cfg.clip_overlay.fit))
    data_config = data_settings(cfg)
    tracker = make_tracker(cfg.tracking)
    tags = {"protocol": "clip_overlay", "dataset": data_config.name, "seed": int(cfg.seed)}
    with tracker.study(f"clip_overlay-{cfg.data.name}-s{int(cfg.seed)}", tags=tags) as study:
        study.log_params(to_dict(cfg))
        data = overlay_data(data_config)
        study.log_metrics({f"data/{k}": v for k, v in data.counts.items()})
        clip, folder = the_clip(cfg, settings, study)
        seeds = [int(s) for s in cfg.clip_overlay.seeds]
        models = grid_classifiers(clip, data.split("train"), data.split("val"), settings, fit,
                                  seeds)
        study.log_table(models.selections, "clip_overlay_selection.csv")
        result = evaluate_clip_overlay(clip, data.batches("test", int(cfg.clip_overlay.batch_size),
                                                          KEYS), models.classifiers, settings)
        title = (f"{PLUMBING}\n" if not cfg.clip_overlay.clip_folder else "") + (
            f"alpha {settings.alpha:g}, {settings.thickness} px at 224 px; {result.images} "
            f"test images; {settings.reading} accuracy")
        log_result(study, result, title)
        zero = result.cells[result.cells["method"] == "zero_shot"]
        auc = zero.filter(like="auc/").mean(axis=1)
        study.log_metrics({"zero_shot/auc_mean_original": float(auc.iloc[0]),
                           "perf/wall_s": time.perf_counter() - start})
        study.log_dict({"clip": folder, "settings": dataclasses.asdict(settings),
                        "fit": dataclasses.asdict(fit), "seeds": seeds,
                        "data": dataclasses.asdict(data_config), "counts": data.counts,
                        "selection": models.selections.to_dict("records")},
                       "clip_overlay_summary.json")
    wall = time.perf_counter() - start
    show = {"float_format": lambda v: f"{v:.3f}", "index": False}
    if not cfg.clip_overlay.clip_folder:
        print(PLUMBING)
    print(f"Table 2 layout ({settings.reading} accuracy, mean over seeds [95% bootstrap "
          f"interval over {result.images} test images]; alpha {settings.alpha:g}, contours "
          f"{settings.thickness} px at 224 px):")
    print(result.layout().to_string(index=False))
    for reading in ("exact", "top1"):
        print(f"{reading}:\n{result.layout(reading).to_string(index=False)}")
    print("baselines on the same test images:\n" + result.baselines.to_string(**show))
    chosen = models.selections.assign(lr=models.selections["lr"].map("{:g}".format))
    print(f"selected on validation ({fit.select}; epoch of each LP / JFT model, lr where a "
          "grid is given):\n" + chosen.to_string(**show))
    print("test-time gain (overlay - original test; paired interval):\n"
          + result.gains.to_string(**show))
    print("zero-shot mean AUC over findings (chance 0.5): "
          + ", ".join(f"{t} {a:.3f}" for t, a in zip(zero["test"], auc, strict=True)))
    print(f"wall time {wall:.0f} s")
    print(mlflow_summary(tracker, f"run {study.run_id}"))
    return result


@hydra.main(config_path="../configs", config_name="clip_overlay", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    return run(cfg)


if __name__ == "__main__":
    main()
