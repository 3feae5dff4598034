"""DAG integrity: the folder parses, one DAG per YAML, wiring, retries and schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nightshift.config.pipeline import Stage
from tests.conftest import REPO, small_pipeline_dict, write_pipeline

EXPECTED = {"nightshift_retail_conversion", "nightshift_basket_spend"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(REPO / "dags"))


def test_no_import_errors_and_one_dag_per_yaml(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) == len(EXPECTED)
    assert set(dagbag.dag_ids) == EXPECTED


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_wiring_retries_schedule(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert "nightshift" in dag.tags
    assert dag.doc_md and "Pipeline file" in dag.doc_md
    assert dag.timetable._expression in ("30 2 * * *", "0 4 * * *")
    assert dag.timetable.partitioned  # each run carries the date it processes as its key
    # The task ids are the stage names (nightshift.stages.Stage), in order.
    assert [t.task_id for t in dag.topological_sort()] == list(Stage)
    ids = {t.task_id for t in dag.tasks}
    assert ids == {
        "ingest",
        "validate",
        "preprocess",
        "fit_features",
        "train_distributed",
        "train_incremental",
        "evaluate",
        "publish",
    }
    for t in dag.tasks:
        assert t.retries == 2 and t.owner == "nightshift"
    assert dag.get_task("train_distributed").upstream_task_ids == {"ingest", "fit_features"}
    assert dag.get_task("evaluate").upstream_task_ids >= {"train_distributed", "train_incremental"}
    assert "run_date" in dag.params


def test_conversion_dag_runs_nightly_in_amsterdam(dagbag) -> None:
    timetable = dagbag.dags["nightshift_retail_conversion"].timetable
    assert timetable._expression == "30 2 * * *"
    assert timetable._timezone.name == "Europe/Amsterdam"


def test_parsing_imports_nothing_heavy_and_finds_every_dag() -> None:
    """A DAG file computes nothing at import: no dask, xgboost, sklearn or pandas (what makes
    parsing slow); its time is a benchmark's business, not an assertion's."""
    code = (
        "import json, sys; from airflow.dag_processing.dagbag import DagBag; "
        "b = DagBag(sys.argv[1]); "
        "heavy = sorted(m for m in ('dask', 'xgboost', 'sklearn', 'pandas') if m in sys.modules);"
        "print(json.dumps({'heavy': heavy, 'dags': sorted(b.dags)}))"
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", code, str(REPO / "dags")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    parsed = json.loads(out)
    assert parsed["heavy"] == [], out
    assert parsed["dags"] == ["nightshift_basket_spend", "nightshift_retail_conversion"], out


def test_a_wrong_yaml_fails_only_its_own_pipeline(tmp_path: Path, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    write_pipeline(tmp_path, small_pipeline_dict(), name="good_one")
    broken = {
        "unknown_key": lambda d: d.update(surprise=True),
        "missing_label": lambda d: d["schema"].pop("label"),
        "bad_cron": lambda d: d["schedule"].update(cron="61 25 * * *"),
    }
    for name, mutate in broken.items():
        data = small_pipeline_dict()
        mutate(data)
        write_pipeline(tmp_path, data, name=name)
    monkeypatch.setenv("NIGHTSHIFT_PIPELINES_DIR", str(tmp_path))

    bag = DagBag(str(REPO / "dags"))
    assert bag.dag_ids == ["nightshift_good_one"]
    assert bag.import_errors == {}
    [warnings] = bag.captured_warnings.values()
    text = "\n".join(warnings)
    assert f"{tmp_path / 'unknown_key.yaml'}: key 'surprise': unknown key" in text
    assert f"{tmp_path / 'missing_label.yaml'}: key 'schema.label': required key" in text
    assert f"{tmp_path / 'bad_cron.yaml'}: key 'schedule.cron'" in text
    assert "PipelineConfigWarning" in text


def test_a_pipeline_that_waits_for_its_file_has_a_deferrable_wait_before_ingest() -> None:
    from nightshift.airflow_dag import build_dag
    from nightshift.config.pipeline import parse_pipeline
    from nightshift.ops.source_wait import SourceFileTrigger, WaitForSource

    data = small_pipeline_dict()
    data["source"] = {"kind": "files", "path": "/data/{date}.csv", "format": "csv"}
    assert "wait_for_source" not in build_dag(parse_pipeline(data, "p.yaml")).task_ids
    data["source"]["wait"] = {"timeout_minutes": 90, "poke_seconds": 30}
    dag = build_dag(parse_pipeline(data, "p.yaml"))
    wait = dag.get_task("wait_for_source")
    assert isinstance(wait, WaitForSource) and wait.retries == 0
    assert dag.get_task("ingest").upstream_task_ids == {"wait_for_source"}
    # The trigger the triggerer runs round-trips through its serialized form.
    classpath, kwargs = SourceFileTrigger("/data/x.csv", {}, 30, 1e9).serialize()
    assert classpath == "nightshift.ops.source_wait.SourceFileTrigger"
    assert SourceFileTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_approval_required_adds_a_human_step_after_publish() -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    from nightshift.airflow_dag import build_dag
    from nightshift.config.pipeline import parse_pipeline

    data = small_pipeline_dict()
    data["evaluation"].update(approval="required", approval_hours=6)
    dag = build_dag(parse_pipeline(data, "test.yaml"))
    order = [t.task_id for t in dag.topological_sort()]
    assert order == [*list(Stage), "needs_approval", "approve", "settle"]
    approve = dag.get_task("approve")
    assert isinstance(approve, HITLOperator)
    assert approve.options == ["Approve", "Reject"] and approve.defaults == ["Reject"]
    assert approve.response_timeout.total_seconds() == 6 * 3600
    assert dag.get_task("settle").upstream_task_ids >= {"approve", "ingest", "evaluate"}
    # Auto-promotion, the default, asks nobody.
    plain = build_dag(parse_pipeline(small_pipeline_dict(), "test.yaml"))
    assert [t.task_id for t in plain.topological_sort()] == list(Stage)
