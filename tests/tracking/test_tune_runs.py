"""Sweep helpers of the tracker: nested trial runs via Ray's setup_mlflow, reopening a study,
closing the runs an interrupted trial left open."""

from mlflow.tracking import MlflowClient

from medmask.tracking import KIND_TAG, PARENT_TAG, SUPERSEDED_TAG, Tracker, tune_trial_run


def test_trial_run_nests_under_the_study_with_its_name(mlflow_uri):
    tracker = Tracker(mlflow_uri, "tune-runs")
    with tracker.study("masking_ratio") as study, tune_trial_run(
        tracker, "rgmim-r0.6-frac100-s0", study, params={"strategy": "rgmim", "ratio": 0.6},
        tags={"strategy": "rgmim"},
    ) as trial:
        trial.log_params({"masking": {"name": "rgmim"}})
        with tracker.stage("pretrain", parent=trial) as stage:
            stage.log_metrics({"train/loss": 1.0}, step=0)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(trial.run_id)
    assert run.info.run_name == "rgmim-r0.6-frac100-s0" and run.info.status == "FINISHED"
    assert run.data.tags[PARENT_TAG] == study.run_id and run.data.tags[KIND_TAG] == "trial"
    assert run.data.params == {"strategy": "rgmim", "ratio": "0.6", "masking.name": "rgmim"}
    assert client.get_run(stage.run_id).data.tags[PARENT_TAG] == trial.run_id


def test_reopen_and_close_stale(mlflow_uri):
    tracker = Tracker(mlflow_uri, "tune-stale")
    with tracker.study("s") as study:
        pass
    # an attempt that was killed: its runs never ended (keep the contexts alive, unexited)
    trial_ctx = tracker.trial("t", parent=study, tags={"ray_trial_id": "abc_00001"})
    trial = trial_ctx.__enter__()
    stage_ctx = tracker.stage("pretrain", parent=trial)
    stage = stage_ctx.__enter__()
    with tracker.reopen(study.run_id) as reopened:
        assert MlflowClient(mlflow_uri).get_run(study.run_id).info.status == "RUNNING"
        closed = tracker.close_stale("ray_trial_id", "abc_00001")
    assert reopened.run_id == study.run_id and sorted(closed) == sorted([trial.run_id,
                                                                        stage.run_id])
    client = MlflowClient(mlflow_uri)
    assert client.get_run(trial.run_id).info.status == "KILLED"
    assert client.get_run(stage.run_id).info.status == "KILLED"
    assert client.get_run(study.run_id).info.status == "FINISHED"
    assert tracker.close_stale("ray_trial_id", "abc_00001") == []
    del stage_ctx, trial_ctx


def test_a_trial_run_again_supersedes_its_finished_first_attempt(mlflow_uri):
    """Tune re-runs a trial whose function finished as the sweep was interrupted: the first
    attempt's finished run is ended KILLED and tagged superseded, so one finished run remains;
    without ``superseded`` (Tune's on-complete callback) finished runs are left alone."""
    tracker = Tracker(mlflow_uri, "tune-superseded")
    with tracker.study("s") as study:
        with tracker.trial("t", parent=study, tags={"ray_trial_id": "abc_00002"}) as first:
            pass
        assert tracker.close_stale("ray_trial_id", "abc_00002") == []
        assert tracker.close_stale("ray_trial_id", "abc_00002", superseded=True) == [
            first.run_id]
    run = MlflowClient(mlflow_uri).get_run(first.run_id)
    assert run.info.status == "KILLED" and run.data.tags[SUPERSEDED_TAG] == "true"
