"""What a night's alert says, and its delivery to a real SMTP server and webhook receiver."""

from __future__ import annotations

import copy
import datetime as dt
import json
from types import SimpleNamespace

import pytest

from nightshift.config.pipeline import Pipeline, parse_pipeline
from nightshift.config.records import NightSummary
from nightshift.publishing import alerts
from nightshift.storage.quarantine import Hold
from tests.conftest import small_pipeline_dict
from tests.receivers import receivers
from tests.unit.test_report import fixed_results

DAY = dt.date(2026, 3, 4)
LINKS = {"report": "http://airflow/nightshift-reports/files/p/2026-03-04/report.html"}


def _pipeline(**alerts_yaml: object) -> Pipeline:
    data = small_pipeline_dict()
    data["alerts"] = {
        "email": {"conn_id": "nightshift_smtp", "to": ["oncall@example.com"]},
        "webhook": {"conn_id": "nightshift_webhook"},
        **alerts_yaml,
    }
    return parse_pipeline(data, "alerts.yaml")


def _kept(new: float, old: float) -> dict:
    return {
        "promoted": False,
        "reason": "did not beat its champion",
        "challenger": {"metrics": {"roc_auc": new}},
        "champion": {"metrics": {"roc_auc": old}, "trained_for": "2026-03-01"},
    }


def _summary(night: dict) -> NightSummary:
    """A whole metrics.json (the report tests' night) with ``night``'s parts, read back as
    publish's alert reads it."""
    data = json.loads(json.dumps(fixed_results(), default=str))
    data.update({k: v for k, v in night.items() if k not in ("decisions", "training_window")})
    data["training_window"].update(night["training_window"])
    data["decisions"] = {
        name: {
            "model": name,
            "promoted": decision["promoted"],
            "reason": decision["reason"],
            "challenger": {
                "model": name,
                "trained_for": night["partition_date"],
                **decision["challenger"],
            },
            "champion": {"registered_model": f"p.{name}", "version": 1, **decision["champion"]},
        }
        for name, decision in night["decisions"].items()
    }
    return NightSummary.from_dict(data)


HEALTHY = {
    "partition_date": DAY.isoformat(),
    "headline_metric": "roc_auc",
    "higher_is_better": True,
    "decisions": {"xgboost": _kept(0.70, 0.71)},
    "drift": {"basket_value": {"psi": 0.01, "drifted": False}},
    "training_window": {"left_out": {}},
    "data": {"held_out": {"warnings": []}},
}


def test_a_healthy_night_has_nothing_to_say() -> None:
    # Scoring 0.01 below the champion is within the pipeline's regression bound.
    assert alerts.night_alert(_pipeline(regression=0.02), _summary(HEALTHY), LINKS) is None


def test_every_finding_of_a_night_goes_into_one_message() -> None:
    summary = copy.deepcopy(HEALTHY)
    summary["decisions"]["xgboost"] = _kept(0.60, 0.71)
    summary["drift"]["basket_value"] = {"psi": 0.41, "drifted": True}
    summary["training_window"]["left_out"] = {
        "2026-03-02": "held in quarantine (validation: column 'items' is missing)",
        "2026-03-01": "no data: no source file for the day, or not processed",
    }
    summary["training_window"]["quarantined"] = ["2026-03-02"]
    summary["data"]["held_out"]["warnings"] = [
        {"column": "items", "message": "3 values above 50", "severity": "warn"}
    ]
    alert = alerts.night_alert(_pipeline(regression=0.02), _summary(summary), LINKS)
    assert alert is not None
    assert alert.events == ("regressed", "drifted", "quarantined", "validation_warning")
    assert alert.title.startswith("retail_conversion 2026-03-04: tonight's model regressed")
    assert alert.details == (
        "xgboost: roc_auc 0.6000 against its champion's 0.7100 (trained for 2026-03-01); "
        "kept: did not beat its champion",
        "drifted against the training window: basket_value (PSI 0.41)",
        "window day 2026-03-02 left out: held in quarantine (validation: column 'items' is "
        "missing)",
        "column 'items': 3 values above 50",
        "window day 2026-03-01 left out: no data: no source file for the day, or not processed",
    )
    # A team that asked only for regressions hears only of them.
    only = alerts.night_alert(_pipeline(on=["regressed"]), _summary(summary), LINKS)
    assert only is not None and only.events == ("regressed",) and len(only.details) == 1


def test_a_lower_error_is_better_for_an_error_metric() -> None:
    summary = copy.deepcopy(HEALTHY)
    summary.update(headline_metric="rmse", higher_is_better=False)
    summary["decisions"]["xgboost"] = {
        **_kept(0, 0),
        "challenger": {"metrics": {"rmse": 12.0}},
        "champion": {"metrics": {"rmse": 10.0}, "trained_for": "2026-03-01"},
    }
    alert = alerts.night_alert(_pipeline(regression=1.0), _summary(summary), LINKS)
    assert alert is not None and alert.events == ("regressed",)
    summary["decisions"]["xgboost"]["challenger"]["metrics"]["rmse"] = 9.0
    assert alerts.night_alert(_pipeline(), _summary(summary), LINKS) is None


def test_a_failed_night_says_quarantined_when_a_hold_says_why() -> None:
    hold = Hold(
        "q/2026-03-04/ingest",
        DAY.isoformat(),
        "ingest",
        "/landing/2026-03-04.csv",
        "ab" * 32,
        [{"severity": "block", "message": "column 'basket_value' is missing (renamed?)"}],
        None,
    )
    held = alerts.failure_alert(_pipeline(), DAY, "ingest", hold, {})
    assert held.events == ("quarantined",)
    assert "column 'basket_value' is missing" in held.details[0]
    failed = alerts.failure_alert(_pipeline(), DAY, "train_distributed", None, {})
    assert failed.events == ("failed",)
    assert failed.title == "retail_conversion 2026-03-04: the night failed"
    assert "task train_distributed failed" in failed.details[0]


def test_every_value_in_the_e_mail_is_escaped() -> None:
    alert = alerts.Alert("p", "d", ("failed",), "<b>t</b>", ("<script>x</script>",), {"r": "u"})
    assert "<script>" not in alert.html() and "&lt;script&gt;" in alert.html()


def test_the_webhook_url_comes_whole_or_in_parts_from_the_connection() -> None:
    whole = SimpleNamespace(conn_id="c", host="https://hooks.slack.com/services/T/B/x")
    assert alerts.webhook_url(whole) == "https://hooks.slack.com/services/T/B/x"
    parts = SimpleNamespace(
        conn_id="c", host="127.0.0.1", port=8080, schema="http", extra_dejson={"endpoint": "h"}
    )
    assert alerts.webhook_url(parts) == "http://127.0.0.1:8080/h"
    with pytest.raises(ValueError, match="connection 'c' has no host"):
        alerts.webhook_url(SimpleNamespace(conn_id="c", host=None))


def test_both_channels_deliver_and_a_broken_one_does_not_silence_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = _pipeline()
    alert = alerts.failure_alert(pipeline, DAY, "ingest", None, {"run": "http://x/{{ run }}"})
    with receivers() as inbox:
        for name, value in inbox.connections().items():
            monkeypatch.setenv(name, value)
        assert alerts.deliver(pipeline, alert, {}) == []
        inbox.wait_for(1, 1, timeout=10, settle=0)
        [mail], [post] = inbox.mails, inbox.posts
        assert mail["subject"] == "[nightshift] retail_conversion 2026-03-04: the night failed"
        # The message is data, never a template: braces in it arrive as they were.
        assert "http://x/{{ run }}" in mail["body"]
        assert post["text"] == alert.text() and post["links"] == {"run": "http://x/{{ run }}"}

        # The webhook's connection is gone: the e-mail still goes, and the failure is named.
        monkeypatch.setenv("AIRFLOW_CONN_NIGHTSHIFT_WEBHOOK", json.dumps({"conn_type": "http"}))
        assert alerts.deliver(pipeline, alert, {}) == ["webhook"]
        inbox.wait_for(2, 1, timeout=10, settle=0)
        assert inbox.count() == (2, 1)


def test_the_deadline_is_the_first_such_wall_clock_time_after_the_scheduled_start() -> None:
    from nightshift.ops.deadline import first_time_after

    utc = dt.UTC
    # 02:30 Amsterdam (winter, UTC+1) starts the night; the report is due at 07:00 local.
    start = dt.datetime(2026, 1, 15, 1, 30, tzinfo=utc)
    due = first_time_after(start, "07:00", "Europe/Amsterdam")
    assert due == dt.datetime(2026, 1, 15, 6, 0, tzinfo=utc)
    # The night daylight saving starts, 07:00 local is 05:00 UTC.
    start = dt.datetime(2026, 3, 29, 0, 30, tzinfo=utc)
    assert first_time_after(start, "07:00", "Europe/Amsterdam") == dt.datetime(
        2026, 3, 29, 5, 0, tzinfo=utc
    )
    # A deadline earlier in the day than the start is the next day's.
    start = dt.datetime(2026, 1, 15, 8, 0, tzinfo=utc)
    assert first_time_after(start, "07:00", "UTC") == dt.datetime(2026, 1, 16, 7, 0, tzinfo=utc)


def test_a_dag_gets_a_deadline_only_when_someone_listens_for_it() -> None:
    from nightshift.airflow_dag import build_dag
    from nightshift.ops.deadline import ReportDeadline, deadline_alerts

    data = small_pipeline_dict()
    data["schedule"]["deadline"] = "07:00"
    assert deadline_alerts(parse_pipeline(data, "p.yaml")) == []  # no channel
    pipeline = _pipeline()
    assert deadline_alerts(pipeline) == []  # a channel, but no deadline
    data["alerts"] = pipeline.model_dump()["alerts"]
    [alert] = deadline_alerts(parse_pipeline(data, "p.yaml"))
    assert alert.reference == ReportDeadline("07:00", "Europe/Amsterdam")
    assert ReportDeadline.deserialize_reference(alert.reference.serialize_reference()) == (
        alert.reference
    )
    assert alert.callback.path == "nightshift.ops.deadline.report_deadline_missed"
    dag = build_dag(parse_pipeline(data, "p.yaml"))
    assert dag.deadline == [alert] and dag.on_failure_callback
    with pytest.raises(Exception, match="deadline"):
        parse_pipeline({**data, "schedule": {**data["schedule"], "deadline": "7am"}}, "p.yaml")


def test_a_webhook_text_escapes_what_slack_reads_as_markup() -> None:
    """A category value `<!channel>` or `<https://x|here>` must not become a mention or a
    link in Slack: `&`, `<` and `>` are escaped as Slack's rules say."""
    alert = alerts.Alert(
        pipeline="p",
        date="2026-06-02",
        events=("drifted",),
        title="p 2026-06-02: drift in <!channel>",
        details=("category <https://evil.example|click here> & more",),
        links={"report": "https://airflow.example/report?a=1&b=2"},
    )
    text = alert.payload()["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "<https://evil" not in text
    assert "&lt;https://evil.example|click here&gt; &amp; more" in text
    assert "https://airflow.example/report?a=1&amp;b=2" in text
