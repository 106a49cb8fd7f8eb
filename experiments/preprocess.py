"""Preprocess a dataset with Ray Data: organs -> patch validity -> masks -> parquet + gallery.

    python experiments/preprocess.py                                  # phantoms, random masks
    python experiments/preprocess.py masking=rgmim masking.ratio=0.6 data.n=1024
    python experiments/preprocess.py data=covid_radiography data.root=/data/COVID-19_Radiography
    ray job submit --working-dir . --runtime-env configs/runtime_env.yaml -- \
        python experiments/preprocess.py cluster=ray
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import init_ray, log, make_tracker, to_dict  # noqa: E402

from medmask import columns as C
from medmask.columns import BAD_IMAGE, COUNT_COLUMNS
from medmask.eval.figures import sample_gallery
from medmask.masking import check_ratio, create_mask_strategy
from medmask.preprocess import build_dataset, drop_flagged, pipeline_counts, source_dataset
from medmask.tracking import run_name, standard_tags


def _task_settings(cfg: DictConfig) -> dict[str, Any]:
    """CPUs per Ray Data task and the cap on concurrent tasks, from ``cfg.pipeline``."""
    pipeline = cfg.get("pipeline") or {}
    concurrency = pipeline.get("concurrency")
    return {"num_cpus": float(pipeline.get("num_cpus") or 1),
            "concurrency": int(concurrency) if concurrency else None}


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:

    masking = cfg.masking
    check_ratio(masking.ratio)  # bad input fails before any compute: ratio, strategy name
    create_mask_strategy(masking.name, **to_dict(masking.params))
    tracker = make_tracker(cfg.tracking)
    init_ray(cfg.cluster)
    name = run_name(masking.name, ratio=masking.ratio, seed=cfg.seed)
    tags = standard_tags(masking.name, masking.ratio, cfg.data.name, seed=cfg.seed,
                         entry_point="preprocess")
    out_dir = Path(cfg.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    # The run tree of every medmask experiment: study -> trial (this configuration) -> stage.
    with tracker.study(f"preprocess-{cfg.data.name}", tags=tags) as study, \
            tracker.trial(name, parent=study, tags=tags) as trial, \
            tracker.stage("preprocess", parent=trial, tags=tags) as stage:
        stage.log_params(to_dict(cfg))
        start = time.perf_counter()
        # Ground-truth organ maps are kept (phantoms, COVID masks, CheXmask RLE); images without
        # one get rule-based lungs (counted as organs_rule_based).
        source, manifest_counts = source_dataset(to_dict(cfg.data), int(cfg.seed),
                                                 batch_size=int(cfg.batch_size),
                                                 **_task_settings(cfg))
        log.info("preprocessing %s with %s masks (ratio %s) -> %s", cfg.data.name,
                 masking.name, masking.ratio, out_dir)
        dataset = build_dataset(
            source,
            strategy=masking.name,
            ratio=float(masking.ratio),
            patch_size=cfg.grid.patch_size,
            num_patches=cfg.grid.num_patches,
            seed=int(cfg.seed),
            epoch=int(cfg.epoch),
            strategy_params=to_dict(masking.params),
            segment=bool(cfg.data.get("segment_organs", True)),
            batch_size=int(cfg.batch_size),
            **_task_settings(cfg),
        )
        dataset = dataset.materialize()
        counts = {**pipeline_counts(dataset), **manifest_counts}
        kept = drop_flagged(dataset)
        parquet_dir = out_dir / "dataset"
        kept.write_parquet(str(parquet_dir))
        elapsed = time.perf_counter() - start

        rows = kept.take_batch(int(cfg.gallery_images), batch_format="numpy")
        gallery = sample_gallery({k: np.asarray(v) for k, v in rows.items()
                                  if k in (C.IMAGE, C.ORGANS, C.MASKED_IMAGE)})
        stage.log_image(gallery, f"gallery_{masking.name}.png")
        import cv2

        gallery_path = out_dir / f"gallery_{masking.name}.png"
        cv2.imwrite(str(gallery_path), gallery[..., ::-1])
        metrics = {**counts, "wall_s": elapsed, "images_per_s": counts["images"] / elapsed}
        stage.log_metrics({**{f"data/{k}": v for k, v in counts.items()},
                           "perf/wall_s": elapsed, "perf/images_per_s": metrics["images_per_s"]})
        stage.log_dict(counts, "counts.json")
        summary = {"output": str(parquet_dir), "gallery": str(gallery_path),
                   "tracking_uri": tracker.uri, "experiment": tracker.experiment,
                   "run_id": stage.run_id, **metrics}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _report(summary, counts)
    return summary


def _report(summary: dict, counts: dict) -> None:
    """The closing lines: what was done, where it went, and every counted fallback."""

    print(f"\npreprocessed {int(summary['images'])} images in {summary['wall_s']:.1f} s "
          f"({summary['images_per_s']:.1f} images/s)")
    if "mean_valid_fraction" in counts:
        print(f"  valid patch fraction {counts['mean_valid_fraction']:.3f}, filled share "
              f"{counts.get('mean_filled_share', 0.0):.3f}")
    flagged = {k: int(v) for k, v in counts.items()
               if (k in COUNT_COLUMNS or k.startswith("manifest_dropped_")) and v}
    for key, value in flagged.items():
        print(f"  {key}: {value} image(s)")
    if counts.get(BAD_IMAGE):
        print(f"  ({int(counts[BAD_IMAGE])} unreadable image(s) flagged and left out of the "
              "parquet; see counts.json in the MLflow run)")
    print(f"  dataset : {summary['output']}")
    print(f"  gallery : {summary['gallery']}")
    print(f"  MLflow  : {summary['tracking_uri']} (experiment {summary['experiment']!r}, "
          f"run {summary['run_id']})")


if __name__ == "__main__":
    main()
