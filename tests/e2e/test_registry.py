"""MLflow tracking and the registry, in process: runs, versions, the champion alias, retries.

The embedded store is SQLite inside the project (``data/mlflow``); these tests read it back
with MLflow's own client, as a user would.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.cli import main
from nightshift.config.pipeline import find_pipeline
from nightshift.night import inputs, stages
from nightshift.publishing import tracking
from nightshift.storage.lake import lake_for

pytestmark = pytest.mark.e2e

DATES = [dt.date(2026, 9, 14), dt.date(2026, 9, 15), dt.date(2026, 9, 16)]


@dataclass(frozen=True)
class Registry:
    """The registry right after the three nights, before any test changed it."""

    runs: list[tuple[str, str]]  # (partition date, model) of every MLflow run
    versions: dict[str, list[int]]  # registered model -> its versions
    champions: dict[str, str]  # registered model -> the date its champion was trained for


def _snapshot(home: Path) -> Registry:
    client = _client(home)
    experiment = client.get_experiment_by_name("nightshift/retail_conversion").experiment_id
    runs = client.search_runs([experiment], max_results=100)
    names = [f"retail_conversion.{model}" for model in ("xgboost", "sgd_logistic")]
    return Registry(
        sorted(
            (r.data.tags["nightshift.partition_date"], r.data.tags["nightshift.model"])
            for r in runs
        ),
        {
            name: sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
            for name in names
        },
        {
            name: client.get_model_version_by_alias(name, "champion").tags["nightshift.trained_for"]
            for name in names
        },
    )


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Registry]:
    """Three nights of the small example pipeline run in process, in date order.

    Tests that change the registry use dates after these three, so each test's assertions
    hold in any order; the state the three nights left is kept in the ``Registry`` snapshot.
    """
    from tests.conftest import small_pipeline_dict, write_pipeline

    home = tmp_path_factory.mktemp("registry")
    (home / "pipelines").mkdir()
    write_pipeline(home / "pipelines", small_pipeline_dict())
    patch = pytest.MonkeyPatch()
    patch.setenv("NIGHTSHIFT_HOME", str(home))
    patch.setenv("NIGHTSHIFT_PIPELINES_DIR", str(home / "pipelines"))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipeline = find_pipeline("retail_conversion")
    results = {day: stages.run_nightly(pipeline, day, run_id=f"test__{day}") for day in DATES}
    yield home, results, _snapshot(home)
    patch.undo()


def _client(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home}/data/mlflow/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_embedded_store_lists_every_run_and_the_champion_alias(nights) -> None:
    home, results, registry = nights
    client = _client(home)
    experiment = client.get_experiment_by_name("nightshift/retail_conversion")
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=100)
        if r.data.tags["nightshift.partition_date"] in {d.isoformat() for d in DATES}
    ]
    # One run per model per night, tagged with the date and the run that made it.
    assert registry.runs == sorted(
        (d.isoformat(), m) for d in DATES for m in ("xgboost", "sgd_logistic", "base_rate")
    )
    xgb_run = next(r for r in runs if r.data.tags["nightshift.model"] == "xgboost")
    assert xgb_run.data.params["kind"] == "xgboost" and "param.max_depth" in xgb_run.data.params
    assert 0.6 < xgb_run.data.metrics["heldout_roc_auc"] < 1
    sgd_run = next(r for r in runs if r.data.tags["nightshift.model"] == "sgd_logistic")
    epochs = client.get_metric_history(sgd_run.info.run_id, "epoch_loss")
    assert [m.step for m in epochs] == [1, 2]
    curve = client.get_metric_history(xgb_run.info.run_id, "train_logloss")
    assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and len(curve) > 1
    artifacts = {a.path for a in client.list_artifacts(xgb_run.info.run_id, "evaluation")}
    assert artifacts >= {"evaluation/report.html", "evaluation/metrics.json"}

    # One registered model per pipeline and model, a version per night, and the alias.
    for model in ("xgboost", "sgd_logistic"):
        name = f"retail_conversion.{model}"
        assert registry.versions[name] == [1, 2, 3]
        versions = client.search_model_versions(f"name = '{name}'")
        promoted = [
            d
            for d in DATES
            if json.loads(Path(results[d]["publish"]["metrics"]).read_text())["decisions"][model][
                "promoted"
            ]
        ]
        assert DATES[0] in promoted  # the first model is promoted
        assert registry.champions[name] == promoted[-1].isoformat()
        # Every decision is recorded on the run and the version.
        for version in versions:
            assert version.tags["nightshift.decision"]
    assert "retail_conversion.base_rate" not in [m.name for m in client.search_registered_models()]


def test_registered_models_load_safely_in_their_mlflow_flavours(nights) -> None:
    pipeline = find_pipeline("retail_conversion")
    processed = lake_for(pipeline).read("processed", DATES[-1])
    frame = pd.concat([pd.read_parquet(p) for p in processed.paths()], ignore_index=True)

    booster = tracking.load_registered(pipeline, "retail_conversion.xgboost", "1")
    lake_model, _ = inputs.load_model(pipeline, "xgboost", DATES[0])
    import xgboost as xgb

    from nightshift.data.features import to_linear_matrix, to_tree_frame

    matrix = xgb.DMatrix(to_tree_frame(frame, lake_model.stats), enable_categorical=True)
    assert np.allclose(booster.predict(matrix), lake_model.predict(frame))

    # The champion alias resolves too; scikit-learn comes back through skops.
    linear = tracking.load_registered(pipeline, "retail_conversion.sgd_logistic", "@champion")
    champion = tracking.champion(tracking.client(pipeline), "retail_conversion.sgd_logistic")
    assert champion is not None and champion.trained_for is not None
    lake_linear, _ = inputs.load_model(pipeline, "sgd_logistic", champion.trained_for)
    x = to_linear_matrix(frame, lake_linear.stats)
    assert np.allclose(linear.predict_proba(x)[:, 1], lake_linear.predict(frame))

    # MLflow's own loader, which would trust the type list stored beside the model, is off.
    import mlflow
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.sklearn.load_model("models:/retail_conversion.sgd_logistic/1")


def _models_logged(client, run_id: str) -> list[str]:
    """The models of the MLflow runs logged for one Airflow run (each exactly once, or more)."""
    experiment = client.get_experiment_by_name("nightshift/retail_conversion").experiment_id
    attempts = client.search_runs(
        [experiment], filter_string=f"tags.`nightshift.airflow_run_id` = '{run_id}'"
    )
    return sorted(r.data.tags["nightshift.model"] for r in attempts)


def _prepare(pipeline, day: dt.date) -> None:
    """Run every stage before publish for ``day`` (and its window days not yet processed)."""
    ingested = stages.ingest(pipeline, day)
    validated = stages.validate(pipeline, ingested.dates, day)
    stages.preprocess(pipeline, validated.dates)
    for stage in (
        stages.fit_features,
        stages.train_distributed,
        stages.train_incremental,
        stages.evaluate,
    ):
        stage(pipeline, day)


def test_a_retried_publish_reuses_its_runs_and_a_failed_one_moves_no_champion(
    nights, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _, _ = nights
    client = _client(home)
    # A gate that promotes every challenger, so a champion that stays put is the failure's
    # doing, not the gate's.
    found = find_pipeline("retail_conversion")
    gate = {"margin": -1.0, "calibration_margin": 1.0, "segment": None}
    pipeline = found.model_copy(update={"evaluation": found.evaluation.model_copy(update=gate)})
    day = DATES[-1] + dt.timedelta(days=3)
    _prepare(pipeline, day)
    names = ["retail_conversion.xgboost", "retail_conversion.sgd_logistic"]
    before = {name: tracking.champion(client, name) for name in names}
    run_id = f"test__{day}__retried"

    # A publish that fails while logging its second model leaves every champion as it was
    # and publishes nothing.
    real, calls = tracking._log_model, []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the tracking server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(tracking, "_log_model", fail_second)
    with pytest.raises(RuntimeError, match="went away"):
        stages.publish(pipeline, day, {"ingest": 1.0}, run_id=run_id)
    assert {name: tracking.champion(client, name) for name in names} == before
    assert not Path(pipeline.reports_dir(day), "metrics.json").exists()
    monkeypatch.undo()

    # Its retry reuses the finished MLflow run, logs the rest once, and promotes.
    stages.publish(pipeline, day, {"ingest": 1.0}, run_id=run_id)
    assert _models_logged(client, run_id) == ["base_rate", "sgd_logistic", "xgboost"]
    for name in names:
        tonight = [
            v
            for v in client.search_model_versions(f"name = '{name}'")
            if v.tags.get("nightshift.trained_for") == day.isoformat()
        ]
        assert len(tonight) == 1, (name, tonight)
        assert tracking.champion(client, name).version == int(tonight[0].version)


def test_manual_promote_and_rollback(nights, capsys: pytest.CaptureFixture[str]) -> None:
    home, _, _ = nights
    client = _client(home)
    name = "retail_conversion.xgboost"
    start = tracking.champion(client, name)
    target = 3 if start.version != 3 else 2
    args = ["--pipeline", "retail_conversion", "--model", "xgboost"]
    assert main(["promote", *args, "--version", str(target), "--reason", "hand-checked"]) == 0
    assert tracking.champion(client, name).version == target
    assert f"champion is now v{target}" in capsys.readouterr().out
    # A promotion an approver refused is in the history, but it never held the alias: a
    # rollback passes over it.
    refused = next(v for v in (1, 2, 3) if v not in (start.version, target))
    tracking.record_refusal(client, name, refused, "earned promotion, rejected by x", "2026-09-30")
    assert main(["rollback", *args, "--reason", "bad in production"]) == 0
    assert tracking.champion(client, name).version == start.version
    assert main(["champion", *args]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["champion"]["version"] == start.version
    assert [h["reason"] for h in shown["history"][-3:]] == [
        "manual: hand-checked",
        "earned promotion, rejected by x",
        f"manual: bad in production from v{target}",
    ]
    # Bad requests name what is wrong.
    assert main(["promote", *args, "--version", "99", "--reason", "x"]) == 2
    assert "has no version 99" in capsys.readouterr().err
    assert main(["champion", "--pipeline", "retail_conversion", "--model", "base_rate"]) == 2


KILL_AT = ["logging", "aliases", "report"]


def _publish_killed_at(point: str, day: dt.date, run_id: str) -> int:
    """Run publish in a child process that SIGKILLs itself at ``point``; return its status."""
    code = f"""
import datetime as dt, os, signal
from nightshift.publishing import tracking
from nightshift.night import inputs, stages, summary
from nightshift.config.pipeline import find_pipeline

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = {point!r}
if point == "logging":  # the second model's MLflow logging
    real, calls = tracking._log_model, []
    def second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            die()
        return real(*args, **kwargs)
    tracking._log_model = second
elif point == "aliases":  # just before the champion aliases move
    tracking.record_decisions = die
elif point == "report":  # after the aliases moved, while the report is written
    real_write = summary.write_bytes_atomic
    def write(uri, data):
        if uri.endswith("report.html"):
            die()
        return real_write(uri, data)
    summary.write_bytes_atomic = write
stages.publish(find_pipeline("retail_conversion"), dt.date.fromisoformat({day.isoformat()!r}),
               {{"ingest": 1.0}}, run_id={run_id!r})
"""
    return subprocess.run([sys.executable, "-c", code], timeout=300).returncode


def test_killing_publish_never_leaves_a_wrong_champion_or_a_broken_index(nights) -> None:
    home, _, _ = nights
    pipeline = find_pipeline("retail_conversion")
    day = DATES[-1] + dt.timedelta(days=1)
    _prepare(pipeline, day)
    client = _client(home)
    names = ["retail_conversion.xgboost", "retail_conversion.sgd_logistic"]
    reports = home / "data" / "reports" / "retail_conversion"
    index_before = (reports / "index.html").read_bytes()
    run_id = f"test__{day}__killed"

    for point in KILL_AT:
        champions = {name: tracking.champion(client, name) for name in names}
        status = _publish_killed_at(point, day, run_id)
        assert status == -signal.SIGKILL, (point, status)
        for name in names:
            now = tracking.champion(client, name)
            if point != "report":
                # Killed before the aliases moved: every champion is where it was.
                assert now == champions[name], (point, name)
            else:
                # Killed after: the champion names a complete, loadable model version.
                version = client.get_model_version(name, str(now.version))
                assert client.get_run(version.run_id).info.status == "FINISHED"
                tracking.load_registered(pipeline, name, str(now.version))
        # The index and the published runs are as they were; the date is not half-published.
        assert (reports / "index.html").read_bytes() == index_before, point
        assert not (reports / day.isoformat() / "metrics.json").exists(), point

    # The retry publishes completely, reusing the runs the killed attempts finished.
    stages.publish(pipeline, day, {"ingest": 1.0}, run_id=run_id)
    metrics = json.loads((reports / day.isoformat() / "metrics.json").read_text())
    assert (reports / day.isoformat() / "report.html").exists()
    assert day.isoformat() in (reports / "index.html").read_text()
    assert _models_logged(client, run_id) == ["base_rate", "sgd_logistic", "xgboost"]
    for name, model in zip(names, ["xgboost", "sgd_logistic"], strict=True):
        champion = tracking.champion(client, name)
        # The alias is on tonight's version exactly when the recorded decision says promoted.
        promoted = metrics["decisions"][model]["promoted"]
        assert (champion.trained_for == day) is promoted, (champion, promoted)
