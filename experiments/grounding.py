"""Visual grounding: does a classifier rely on the anatomy? One MLflow study run.

    python experiments/grounding.py                           # quick default (phantoms)
    python experiments/grounding.py grounding.controls=false  # the MAE classifier only
    python experiments/grounding.py grounding.checkpoint=outputs/cache/grounding_classifier/<h>
    python experiments/grounding.py grounding.run_id=<MLflow run id>   # its classifier artifact
    python experiments/grounding.py grounding.checkpoint=mlflow:<run id>/mae-random/classifier
    python experiments/grounding.py eval.params.anatomy=gaze eval.params.gaze_threshold=0.3

With no checkpoint: a random-mask MAE encoder pretrained by the public pretraining stage (Ray
Train, stage cache), fine-tuned in-process on the phantom classes, and the two controls (a
tiny CNN where the label lives in the lungs: classic phantom; and where it is a marker outside
the anatomy: shortcut_marker phantom), every classifier cached. Each is scored by the
``grounding`` protocol (medmask.eval): drops under anatomical, non-anatomical and matched-area
anatomical masking at r = 0.1-0.4, the score and its bootstrap interval; tables and the
drops-vs-area figures go to MLflow.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import init_ray, log, make_tracker, mlflow_summary, to_dict  # noqa: E402
from _mim import mim_settings  # noqa: E402

from medmask.eval import GroundingResult, GroundingSettings, evaluate_grounding  # noqa: E402
from medmask.eval.figures import grounding_figure  # noqa: E402
from medmask.preprocess import study_splits  # noqa: E402
from medmask.tracking import MLFLOW_SCHEME  # noqa: E402
from medmask.train import (  # noqa: E402
    CONTROL_VARIANTS,
    FitSettings,
    PhantomData,
    fitted_classifier,
    load_classifier,
    run_pretraining,
    torch_threads,
)

CHECKPOINT_FILE = "checkpoint.pt"
SCORE_COLUMNS = ("classifier", "variant", "test_accuracy", "score", "ci_low", "ci_high",
                 "qualifying_ratios")


def phantom_data(cfg: DictConfig, variant: str | None = None, n_train: int | None = None
                 ) -> PhantomData:
    """The phantom splits of ``cfg.data`` (another variant / train size for the controls)."""
    if cfg.data.name != "phantom":
        raise ValueError(f"experiments/grounding.py scores phantoms (data=phantom); got "
                         f"data={cfg.data.name!r}: use the grounding protocol "
                         "(medmask.eval.evaluate_grounding) on its batches")
    return PhantomData(variant=str(variant or cfg.data.variant), size=int(cfg.data.size),
                       n_train=int(n_train or cfg.data.n_train), n_test=int(cfg.data.n_test),
                       seed=int(cfg.seed))


def classifiers(cfg: DictConfig, tracker: Any, study: Any) -> list[dict[str, Any]]:
    """The classifiers to score: a given checkpoint, or the MAE classifier and the controls."""
    g = cfg.grounding
    reference = checkpoint_reference(cfg)
    if reference:
        spec = to_dict(g.checkpoint_model) if g.checkpoint_model else None
        path = (tracker.download_checkpoint(reference, Path(cfg.cache_dir) / "mlflow"
                                            / reference[len(MLFLOW_SCHEME):].replace("/", "_"))
                if reference.startswith(MLFLOW_SCHEME) else Path(reference))
        model = load_classifier(str(path), spec)
        data = phantom_data(cfg, g.checkpoint_variant)
        return [{"classifier": "checkpoint", "model": model, "data": data,
                 "test_accuracy": float("nan"), "path": reference, "cache_hit": True}]
    settings = mim_settings(cfg)
    init_ray(cfg.cluster, verbose=bool(cfg.get("verbose", False)))
    found = []
    with tracker.trial("mae-random", parent=study, tags={"classifier": "mae-random"}) as trial:
        with tracker.stage("pretrain", parent=trial, tags={"strategy": "random"}) as stage:
            datasets = {"train": study_splits(settings.data, settings.seed)["train"]}
            checkpoint = run_pretraining(settings.pretraining(), datasets, stage,
                                         settings.scaling)
        fitted = fitted_classifier(phantom_data(cfg), FitSettings(**to_dict(g.finetune),
                                                                  seed=int(cfg.seed)),
                                   cfg.cache_dir, to_dict(cfg.model), pretrained=checkpoint)
        found.append(_entry("mae-random", fitted, phantom_data(cfg), trial.run_id))
    if g.controls:
        control_fit = FitSettings(**{k: v for k, v in to_dict(g.control).items()
                                     if k != "n_train"}, seed=int(cfg.seed))
        for name, variant in CONTROL_VARIANTS.items():
            data = phantom_data(cfg, variant, int(g.control.n_train))
            fitted = fitted_classifier(data, control_fit, cfg.cache_dir)
            found.append(_entry(f"control-{name}", fitted, data, None))
    return found


def checkpoint_reference(cfg: DictConfig) -> str | None:
    """The classifier to score: ``grounding.checkpoint`` (a path, or ``mlflow:<run_id>[/<artifact
    path>]``) or ``grounding.run_id`` (= ``mlflow:<run_id>``); None: train the defaults."""
    g = cfg.grounding
    if g.checkpoint and g.get("run_id"):
        raise ValueError(f"give grounding.checkpoint ({g.checkpoint!r}) or grounding.run_id "
                         f"({g.run_id!r}), not both")
    if g.get("run_id"):
        return f"{MLFLOW_SCHEME}{g.run_id}"
    return str(g.checkpoint) if g.checkpoint else None


def _entry(name: str, fitted: Any, data: PhantomData, run_id: str | None) -> dict[str, Any]:
    log.info("%s: test accuracy %.3f (%s %s)", name, fitted.test_accuracy,
             "reused" if fitted.cache_hit else "trained", fitted.path)
    return {"classifier": name, "model": fitted.model, "data": data,
            "test_accuracy": fitted.test_accuracy, "path": str(fitted.path),
            "cache_hit": fitted.cache_hit, "run_id": run_id}


def score_row(entry: dict[str, Any], result: GroundingResult) -> dict[str, Any]:
    """One line of the scores table: the score, its interval, the non-anatomical areas."""
    non = result.table[result.table["condition"] == "non_anatomical"]
    areas = {f"non_anat_area_r{r:g}": a for r, a in zip(non["ratio"], non["achieved_mean"],
                                                         strict=True)}
    return {"classifier": entry["classifier"], "variant": entry["data"].variant,
            "test_accuracy": entry["test_accuracy"], "score": result.score,
            "ci_low": result.ci_low, "ci_high": result.ci_high,
            "qualifying_ratios": " ".join(f"{r:g}" for r in result.qualifying),
            "images": result.images, **areas}


def drops_table(table: pd.DataFrame) -> pd.DataFrame:
    """Classifier x r: the non-anatomical area and the drops of each condition, side by side."""
    wide = table.pivot_table(index=["classifier", "ratio"], columns="condition",
                             values=["achieved_mean", "drop", "accuracy_drop"], sort=False)
    out = pd.DataFrame({
        "area_non_anat": wide[("achieved_mean", "non_anatomical")],
        "drop_anat": wide[("drop", "anatomical")],
        "drop_non_anat": wide[("drop", "non_anatomical")],
        "drop_matched": wide[("drop", "matched_anatomical")],
        "acc_anat": wide[("accuracy_drop", "anatomical")],
        "acc_non_anat": wide[("accuracy_drop", "non_anatomical")],
    }).reset_index()
    qualifies = table.groupby(["classifier", "ratio"], sort=False)["qualifies"].first()
    return out.assign(qualifies=qualifies.to_numpy())


def run(cfg: DictConfig) -> pd.DataFrame:
    """Score every classifier of ``cfg``; print and log the tables and figures."""
    start = time.perf_counter()
    settings = GroundingSettings.from_params(**to_dict(cfg.eval.params))  # fails before compute
    tracker = make_tracker(cfg.tracking)
    tags = {"protocol": "grounding", "dataset": cfg.data.name, "seed": int(cfg.seed)}
    rows, drops = [], []
    with tracker.study(f"grounding-{cfg.data.name}-s{int(cfg.seed)}", tags=tags) as study:
        study.log_params(to_dict(cfg))
        for entry in classifiers(cfg, tracker, study):
            with torch_threads(1):
                result = evaluate_grounding(entry["model"], entry["data"].batches(
                    "test", int(cfg.grounding.batch_size)), settings)
            name = entry["classifier"]
            rows.append(score_row(entry, result))
            drops.append(result.table.assign(classifier=name))
            study.log_metrics({f"grounding/{name}/score": result.score,
                               f"grounding/{name}/ci_low": result.ci_low,
                               f"grounding/{name}/ci_high": result.ci_high})
            study.log_table(result.table, f"{name}/drops.csv")
            study.log_table(result.per_image, f"{name}/per_image.csv")
            study.log_dict({**result.summary(), "data": dataclasses.asdict(entry["data"]),
                            "classifier_path": entry["path"]}, f"{name}/summary.json")
            if entry["classifier"] != "checkpoint":  # scored later by mlflow:<run>/<name>
                study.log_artifact(Path(entry["path"]) / CHECKPOINT_FILE, f"{name}/classifier")
            study.log_figure(grounding_figure(result.table, f"{name} on {entry['data'].variant}"
                                              f" phantoms: score {result.score:+.3f}"),
                             f"{name}/drops_vs_area.png")
        scores = pd.DataFrame(rows)
        study.log_table(scores, "grounding_scores.csv")
        study.log_table(pd.concat(drops, ignore_index=True), "grounding_drops.csv")
        wall = time.perf_counter() - start
        study.log_metrics({"perf/wall_s": wall})
    print("grounding drops (fall in the probability of the true label; acc = accuracy drop):")
    print(drops_table(pd.concat(drops, ignore_index=True)).to_string(
        index=False, float_format=lambda v: f"{v:.3f}"))
    print("grounding scores (mean over images and qualifying r of matched-area anatomical "
          f"drop - non-anatomical drop; {settings.confidence:.0%} bootstrap interval, "
          f"{settings.bootstrap} resamples):")
    print(scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wall time {wall:.0f} s")
    print(mlflow_summary(tracker, f"run {study.run_id}"))
    return scores


@hydra.main(config_path="../configs", config_name="grounding", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    return run(cfg)


if __name__ == "__main__":
    main()
