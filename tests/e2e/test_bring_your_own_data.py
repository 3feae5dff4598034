"""A user's own daily files, shaped as public data arrives, from raw CSV to a published report
with only the YAML: a label derived from a numeric column, rows whose label source is empty,
timestamps ending in Z, a data column named like a time feature, leakage dropped, and the bad
days (a truncated last line, a renamed column) held without touching the user's files."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nightshift.config.pipeline import ConfigError, YamlLoader, parse_pipeline
from nightshift.data.ingest import SourceError
from nightshift.night import stages
from nightshift.storage.lake import lake_for
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "include" / "pipelines" / "examples" / "flight_delays.yaml"
DAY = dt.date(2024, 3, 8)
CARRIERS = ["AA", "DL", "UA", "WN", "B6"]


def flights(day: dt.date, rows: int = 900) -> pd.DataFrame:
    """One day of flights as an upstream export has them: UTC times with a Z, delays in
    minutes, cancelled flights with an empty arrival delay, and the scheduled hour."""
    rng = np.random.default_rng(day.toordinal())
    hour = rng.integers(5, 23, rows)
    minute = rng.integers(0, 60, rows)
    carrier = rng.choice(CARRIERS, rows)
    distance = rng.gamma(4.0, 250.0, rows).round(0)
    dep_delay = (rng.exponential(12, rows) - 6 + 8 * (carrier == "B6") + 0.8 * (hour - 12)).round(0)
    arr_delay = (dep_delay - 4 + rng.normal(0, 9, rows)).round(0)
    cancelled = rng.random(rows) < 0.03
    times = [f"{day}T{h:02d}:{m:02d}:00Z" for h, m in zip(hour, minute, strict=True)]
    return pd.DataFrame(
        {
            "flight_id": np.arange(rows) + day.toordinal() * 10_000,
            "dep_time": times,
            "carrier": carrier,
            "origin": rng.choice(["JFK", "ATL", "ORD", "DEN"], rows),
            "distance": distance,
            "dep_delay": dep_delay,
            "arr_delay": np.where(cancelled, np.nan, arr_delay),
            "hour": hour,  # the scheduled hour: a data column named like a time feature
        }
    )


def pipeline_yaml(root: Path) -> dict:
    """The shipped example (include/pipelines/examples/flight_delays.yaml) as a test runs it:
    files under ``root``, a short window and small models."""
    data = yaml.load(EXAMPLE.read_text(), Loader=YamlLoader)
    data["source"]["path"] = str(root / "landing" / "{date}.csv")
    data["training"] = {"window_days": 3, "batch_size": 400}
    data["models"] = [
        {"kind": "xgboost", "num_boost_round": 30},
        {"kind": "sgd", "epochs": 2},
        {"kind": "baseline"},
    ]
    data["evaluation"].update(min_segment_rows=50, bootstrap_samples=50)
    data.pop("alerts")  # no webhook connection here
    data["output"] = {
        "lake": str(root / "lake"),
        "reports": str(root / "reports"),
        "mlflow": str(root / "mlflow"),
    }
    return data


def _landing(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "landing").iterdir())
    }


def test_a_column_named_like_a_time_feature_is_caught_by_the_check(tmp_path: Path) -> None:
    data = pipeline_yaml(tmp_path)
    data["features"]["time"] = ["hour", "day_of_week"]
    with pytest.raises(ConfigError, match="'hour' is also a column of the data"):
        parse_pipeline(data, "flight_delays.yaml")
    bad = copy.deepcopy(pipeline_yaml(tmp_path))
    bad["derive"]["delayed"] = "arr_dealy > 15"
    with pytest.raises(ConfigError, match=r"derive.delayed.*unknown column 'arr_dealy'"):
        parse_pipeline(bad, "flight_delays.yaml")


def test_raw_files_to_a_published_report_with_only_the_yaml(tmp_path: Path) -> None:
    pipeline = parse_pipeline(pipeline_yaml(tmp_path), "flight_delays.yaml")
    (tmp_path / "landing").mkdir()
    for offset in range(3, -1, -1):
        day = DAY - dt.timedelta(days=offset)
        flights(day).to_csv(tmp_path / "landing" / f"{day}.csv", index=False)
    landing = _landing(tmp_path)

    results = stages.run_nightly(pipeline, DAY, run_id="manual__byod")
    metrics = json.loads(Path(results["publish"]["metrics"]).read_text())
    assert metrics["training_window"]["dates"] == [
        (DAY - dt.timedelta(days=n)).isoformat() for n in (3, 2, 1)
    ]
    assert metrics["models"]["xgboost"]["metrics"]["roc_auc"] > 0.7
    # The filter's rule and the rows it left out (the cancelled flights) are counted.
    cancelled = int(flights(DAY)["arr_delay"].isna().sum())
    assert metrics["data"]["held_out"]["filtered"] == {"arr_delay is not None": cancelled}
    assert metrics["data"]["held_out"]["rows"] == len(flights(DAY)) - cancelled
    html = Path(results["publish"]["report"]).read_text()
    assert "arr_delay is not None</code>: " in html
    # The label's source never reached a model; the derived feature did.
    processed = lake_for(pipeline).read("processed", DAY)
    columns = set(pd.read_parquet(processed.paths()[0]).columns)
    assert "arr_delay" not in columns and "miles_per_delay_minute" in columns
    assert _landing(tmp_path) == landing


@pytest.mark.parametrize("fault", ["truncated", "renamed"])
def test_a_bad_day_is_held_and_the_files_stay_as_they_were(tmp_path: Path, fault: str) -> None:
    pipeline = parse_pipeline(pipeline_yaml(tmp_path), "flight_delays.yaml")
    (tmp_path / "landing").mkdir()
    path = tmp_path / "landing" / f"{DAY}.csv"
    frame = flights(DAY)
    if fault == "renamed":
        frame = frame.rename(columns={"dep_delay": "departure_delay"})
    frame.to_csv(path, index=False)
    if fault == "truncated":
        path.write_bytes(path.read_bytes().rstrip(b"\n")[:-2])  # cut inside the last field
    landing = _landing(tmp_path)
    expected = {"truncated": "possibly truncated CSV", "renamed": "renamed?"}[fault]
    with pytest.raises(SourceError, match=expected):
        stages.ingest(pipeline, DAY)
    with pytest.raises(SourceError, match="refused before"):
        stages.ingest(pipeline, DAY)
    assert _landing(tmp_path) == landing


def test_a_python_hook_does_what_an_expression_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user's own package: a frame in, a frame out.
    (tmp_path / "byod_hooks.py").write_text(
        "def short_hauls_out(frame):\n    return frame[frame['distance'] >= 300]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = pipeline_yaml(tmp_path)
    data["hook"] = "byod_hooks:short_hauls_out"
    pipeline = parse_pipeline(data, "flight_delays.yaml")
    (tmp_path / "landing").mkdir()
    flights(DAY).to_csv(tmp_path / "landing" / f"{DAY}.csv", index=False)
    stages.ingest(pipeline, DAY)
    raw = lake_for(pipeline).read("raw", DAY)
    frame = pd.concat([pd.read_parquet(p) for p in raw.paths()])
    assert len(frame) and frame["distance"].min() >= 300
    missing = parse_pipeline({**data, "hook": "byod_hooks:no_such_function"}, "x.yaml")
    with pytest.raises(SourceError, match="hook 'byod_hooks:no_such_function' cannot be loaded"):
        stages.ingest(missing, DAY)
    with pytest.raises(ConfigError, match="hook"):
        parse_pipeline({**data, "hook": "not a module path"}, "x.yaml")


def test_init_writes_a_starter_yaml_that_only_needs_its_todos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from nightshift.cli import main

    (tmp_path / "landing").mkdir()
    sample = tmp_path / "landing" / f"{DAY}.csv"
    flights(DAY).to_csv(sample, index=False)
    out = tmp_path / "pipelines" / "flights.yaml"
    assert main(["init", "--from", str(sample), "--name", "flights", "--out", str(out)]) == 0
    assert "fill in its TODOs" in capsys.readouterr().out
    data = yaml.safe_load(out.read_text())
    assert data["source"]["path"] == str(tmp_path / "landing" / "{date}.csv")
    types = {c["name"]: c["type"] for c in data["schema"]["columns"]}
    assert types == {
        "flight_id": "int",
        "dep_time": "timestamp",
        "carrier": "string",
        "origin": "string",
        "distance": "float",
        "dep_delay": "float",
        "arr_delay": "float",
        "hour": "int",
    }
    assert data["schema"]["timestamp"] == "dep_time"
    # The data has its own 'hour': the starter's time features leave it out (no clash).
    assert data["features"]["time"] == ["day_of_week"]
    # An ID (a different value on every row) is no feature; the timestamp is not one either.
    assert data["features"]["numeric"] == ["distance", "dep_delay", "arr_delay", "hour"]
    assert '(an ID): ["flight_id"]' in out.read_text()
    # The sample's date is the first night: an end_date after it is accepted as printed.
    assert data["schedule"]["start_date"] == DAY
    data["schedule"]["end_date"] = dt.date(2024, 3, 31)
    assert "arr_delay" in out.read_text() and "% empty in the sample" in out.read_text()
    # The TODOs are what `nightshift check` then asks for, by name.
    with pytest.raises(ConfigError, match="label 'TODO' is not one of the columns"):
        parse_pipeline(data, out)
    # Filled in as the user would (the time features renamed away from the data's 'hour').
    data["schema"]["label"] = "delayed"
    data["derive"] = {"delayed": "arr_delay > 15"}
    data["filter"] = ["arr_delay is not None"]
    data["drop"] = ["arr_delay"]
    data["features"] = {
        "numeric": ["distance", "dep_delay", "hour"],
        "categorical": ["carrier", "origin"],
        "time": ["day_of_week"],
    }
    assert parse_pipeline(data, out).data_schema.column("delayed").type == "bool"
    # It never overwrites a pipeline by accident.
    assert main(["init", "--from", str(sample), "--name", "flights", "--out", str(out)]) == 2


def test_init_writes_column_names_as_data_never_as_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from nightshift.cli import main

    sample = tmp_path / f"{DAY}.csv"
    hostile = "ok, type: bool} hook: subprocess:call #"
    pd.DataFrame({hostile: [1, 2], "x": [0.5, 1.5]}).to_csv(sample, index=False)
    out = tmp_path / "p.yaml"
    assert main(["init", "--from", str(sample), "--name", "p", "--out", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert "hook" not in data
    assert [c["name"] for c in data["schema"]["columns"]] == [hostile, "x"]
    assert data["features"]["numeric"] == [hostile, "x"]
    # A name with a line break would start a key of its own: refused, named.
    sample.write_text('"ok, type: bool}\nhook: subprocess:call\n#",x\n1,2\n')
    assert main(["init", "--from", str(sample), "--out", str(tmp_path / "q.yaml")]) == 2
    assert "control characters" in capsys.readouterr().err
    assert not (tmp_path / "q.yaml").exists()


def test_z_timestamps_of_a_file_cut_at_local_midnight_name_the_zone(tmp_path: Path) -> None:
    from nightshift.data.validate import DataValidationError

    data = pipeline_yaml(tmp_path)
    data["schedule"]["timezone"] = "UTC"  # left at the default
    pipeline = parse_pipeline(data, "flight_delays.yaml")
    (tmp_path / "landing").mkdir()
    frame = flights(DAY)
    # The day as New York has it (the file is cut at local midnight), written in UTC with Z.
    local = pd.to_datetime(frame["dep_time"].str.rstrip("Z")).dt.tz_localize("America/New_York")
    frame["dep_time"] = local.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(tmp_path / "landing" / f"{DAY}.csv", index=False)
    stages.ingest(pipeline, DAY)
    with pytest.raises(DataValidationError) as caught:
        stages.validate(pipeline, [DAY], DAY)
    assert "column 'dep_time' failed check 'date == 2024-03-08 (UTC or UTC)" in str(caught.value)
    # Flights run 05:00-23:00 local, so several offsets fit; New York's is named among them.
    assert "every row of the day falls on 2024-03-08 at UTC-10 to UTC-4" in str(caught.value)
    assert "e.g. America/Halifax (UTC-4) or America/New_York (UTC-5)" in str(caught.value)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_backfill_of_three_dates_under_the_real_scheduler(tmp_path: Path) -> None:
    from nightshift.ops import backfill
    from tests.e2e.conftest import running_airflow
    from tests.e2e.test_backfill_replay import fingerprint

    data = pipeline_yaml(tmp_path)
    # Historical data: it ends on DAY, so unpausing starts no run for today.
    data["schedule"].update(end_date=DAY.isoformat(), retries=0)
    pipeline = parse_pipeline(data, "flight_delays.yaml")
    data.pop("name")
    (tmp_path / "landing").mkdir()
    for offset in range(5, -1, -1):
        day = DAY - dt.timedelta(days=offset)
        flights(day).to_csv(tmp_path / "landing" / f"{day}.csv", index=False)
    landing = _landing(tmp_path)
    dates = backfill.night_dates(DAY - dt.timedelta(days=2), DAY)
    lines: list[str] = []
    with running_airflow(tmp_path, "flight_delays", dask=True, pipelines={"": data}) as (
        airflow,
        _,
    ):
        airflow.unpause(pipeline.dag_id)
        # Asked for by the dates to process (America/New_York): exactly those three nights.
        one_at_a_time = ["--max-active-runs", "1"]
        nights = backfill.backfill(airflow, pipeline, dates, one_at_a_time, lines.append)
        assert nights.states == dict.fromkeys(dates, "success"), nights
        runs = airflow.runs(pipeline.dag_id)
        assert len(runs) == 3 and all(r["run_type"] == "backfill" for r in runs), runs
        before = fingerprint(tmp_path / "lake")
        # Re-running one date is the same command for that date: the same bytes again.
        rerun = ["--reprocess-behavior", "completed"]
        again = backfill.backfill(airflow, pipeline, dates[1:2], rerun, print)
        assert again.states == {dates[1]: "success"}
        assert fingerprint(tmp_path / "lake") == before
        # Each run carries its date as its partition key; the re-run is a new run of that key.
        keys = sorted(str(r["partition_key"]) for r in airflow.runs(pipeline.dag_id))
        assert keys == sorted([*dates, dates[1]]), keys
    # The helper said how far it was each time a night started or ended, and only then.
    print("\n".join(lines))
    assert lines[0].startswith("  0/3 nights done") and lines[-1] == "  3/3 nights done", lines
    assert len(lines) == len(set(lines)) <= 7, lines
    for day in dates:
        metrics = json.loads(
            (tmp_path / "reports" / "flight_delays" / day / "metrics.json").read_text()
        )
        assert metrics["partition_date"] == day
        assert metrics["data"]["held_out"]["filtered"]["arr_delay is not None"] > 0
        assert metrics["models"]["xgboost"]["metrics"]["roc_auc"] > 0.7
    assert _landing(tmp_path) == landing
