"""Rendering the report and the index from fixed plain data: content, validity, determinism."""

from __future__ import annotations

import copy
import datetime as dt
import re

import html5lib
import numpy as np
import pytest
from markupsafe import escape as html_escape

from nightshift.config.pipeline import Evaluation
from nightshift.config.records import Challenger, ChampionScore
from nightshift.evaluation.champion import decide
from nightshift.evaluation.comparison import compare
from nightshift.evaluation.evaluate import drift, evaluate_scores, segment_metrics
from nightshift.publishing.report import render_index, render_report

RNG = np.random.default_rng(11)
Y = (RNG.random(800) < 0.3).astype(float)
CHANNEL = np.array(["web", "ios", "partner", "email"] * 200, dtype=object)
SCORES = {
    "xgboost": np.clip(0.3 + 0.5 * (Y - 0.3) + RNG.normal(0, 0.15, 800), 0.01, 0.99),
    "sgd_logistic": np.clip(0.3 + 0.3 * (Y - 0.3) + RNG.normal(0, 0.15, 800), 0.01, 0.99),
    "base_rate": np.full(800, 0.3),
}
CHAMPION = np.clip(0.3 + 0.4 * (Y - 0.3) + RNG.normal(0, 0.15, 800), 0.01, 0.99)
GATE = Evaluation(margin=0.001, segment="channel", min_segment_rows=100)


def fixed_results(task: str = "binary_classification") -> dict:
    """Return a run's results as publish builds them, from fixed scores."""
    regression = task == "regression"
    metric = "rmse" if regression else "roc_auc"
    models = {}
    for name, score in SCORES.items():
        scored = evaluate_scores(task, Y, score, 0.5)
        scored["segments"] = segment_metrics(task, Y, score, CHANNEL, 0.5)
        scored["kind"] = {"xgboost": "xgboost", "sgd_logistic": "sgd"}.get(name, "baseline")
        scored["history"] = {
            "xgboost": {"metric": "logloss", "train": [0.6, 0.5, 0.45]},
            "sgd_logistic": {"epoch_loss": [0.7, 0.55, 0.5], "batches": 4, "epochs": 3},
        }.get(name, {})
        if name == "base_rate":
            scored["value"] = 0.3
        models[name] = scored
    models["xgboost"]["importance"] = {
        "gain": {"page_views": 0.6, "channel": 0.3, "hour": 0.1},
        "contribution": {"page_views": 0.4, "channel": 0.2, "hour": 0.05},
    }
    champion_scored = evaluate_scores(task, Y, CHAMPION, 0.5)
    champions = {
        "xgboost": {
            "registered_model": "demo.xgboost",
            "version": 4,
            "trained_for": "2026-06-01",
            "model": "xgboost",
            "run_id": "abc",
            "metrics": champion_scored["metrics"],
            "segments": segment_metrics(task, Y, CHAMPION, CHANNEL, 0.5),
        },
        "sgd_logistic": None,
    }
    pair = (SCORES["xgboost"], CHAMPION)
    comparisons = {"xgboost": compare(task, metric, Y, pair, 0.5, CHANNEL, 50, 0.95)}
    decisions = {
        name: decide(
            name,
            Challenger(
                name, dt.date(2026, 6, 2), models[name]["metrics"], models[name]["segments"]
            ),
            ChampionScore.from_dict(champions[name]) if champions[name] else None,
            metric,
            GATE,
            comparison=comparisons.get(name),
        ).to_dict()
        for name in ("xgboost", "sgd_logistic")
    }
    rng = np.random.default_rng(5)
    window = {"page_views": rng.poisson(5, 800).astype(float), "channel": CHANNEL}
    today = {"page_views": rng.poisson(9, 800).astype(float), "channel": CHANNEL}
    import pandas as pd

    return {
        "pipeline": "demo",
        "dag_id": "nightshift_demo",
        "partition_date": "2026-06-02",
        "task": task,
        "run_id": "scheduled__2026-06-03T01:30:00+00:00",
        "threshold": 0.5,
        "run_options": {
            "models": list(SCORES),
            "window_days": 2,
            "sample_fraction": 1.0,
            "promote": True,
        },
        "gate": GATE.model_dump(),
        "training_window": {
            "start": "2026-05-31",
            "end": "2026-06-01",
            "dates": ["2026-05-31", "2026-06-01"],
            "rows": 2000,
            "batches": 2,
            "label_mean": 0.3,
        },
        "data": {
            "held_out": {
                "rows": 800,
                "batches": 2,
                "rows_per_batch": [500, 300],
                "label_mean": float(Y.mean()),
                "missing_rate": {"page_views": 0.25},
            }
        },
        "models": models,
        "ranking": ["xgboost", "sgd_logistic", "base_rate"],
        "best": "xgboost",
        "challenger": "xgboost",
        "headline_metric": metric,
        "higher_is_better": not regression,
        "champions": champions,
        "deltas": {name: c.to_dict() for name, c in comparisons.items()},
        "drift": drift(pd.DataFrame(window), pd.DataFrame(today), ["page_views"], ["channel"], 0.2),
        "decisions": decisions,
        "champion": {
            "model": "xgboost",
            "model_id": "demo.xgboost v5"
            if decisions["xgboost"]["promoted"]
            else "demo.xgboost v4",
            "promoted": decisions["xgboost"]["promoted"],
            "reason": decisions["xgboost"]["reason"],
            "previous": champions["xgboost"],
            "promotion_allowed": True,
        },
        "trend": [
            {"date": f"2026-05-{d:02d}", "value": 0.7 + d / 1000, "promoted": d % 3 == 0}
            for d in range(24, 32)
        ]
        + [{"date": "2026-06-01", "value": 0.74, "promoted": False}]
        + [{"date": "2026-06-02", "value": 0.75, "promoted": True}],
        "timings": {"ingest": 1.25, "evaluate": 2.5},
        "links": {"airflow": "http://127.0.0.1:8080/dags/nightshift_demo/runs/x"},
        "mlflow": {
            "tracking_uri": "sqlite:////srv/project/data/mlflow/mlflow.db",
            "runs": {
                "xgboost": {
                    "run_id": "0123456789abcdef",
                    "url": None,
                    "version": 5,
                    "registered_model": "demo.xgboost",
                },
            },
        },
        "nightshift_version": "0.1.0",
    }


def assert_valid_html(html: str) -> None:
    """Parse with html5lib in strict mode (any HTML5 parse error raises); ids are unique."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    parser.parse(html)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def assert_self_contained(html: str) -> None:
    # No script, stylesheet, image or font is fetched from anywhere: only in-page content.
    assert not re.search(r"""\s(src|srcset|poster|data)\s*=""", html)
    assert "<script" not in html and "<link" not in html and "<iframe" not in html
    assert "@import" not in html and not re.search(r"url\(\s*['\"]?(https?:)?//", html)


def test_report_has_every_section_from_fixed_metrics() -> None:
    results = fixed_results()
    html = render_report(results)
    assert "<title>demo · 2026-06-02" in html
    decision = results["decisions"]["xgboost"]
    assert ("Promoted" if decision["promoted"] else "Not promoted") in html
    assert "Tonight's best model: <strong>xgboost</strong>" in html
    delta = results["deltas"]["xgboost"]
    assert f"[{delta['low']:+.4f}, {delta['high']:+.4f}]" in html  # the interval is shown
    # Each segment's difference with its interval, its verdict, and the power line.
    verdicts = decision["segments"]
    assert {v["segment"] for v in verdicts} == {"web", "ios", "partner", "email"}
    for v in verdicts:
        low, high = v["difference"]["low"], v["difference"]["high"]
        assert f"<strong>{v['state']}</strong>: {v['why']}" in html
        assert f"[{low:+.4f}, {high:+.4f}]" in html
    assert "90% interval" in html and "decided by: " in html
    assert f"xgboost: {html_escape(decision['power'])}" in html
    assert decision["power"].endswith("9 nights in 10.")
    assert "v4, trained for 2026-06-01" in html and "none yet" in html
    assert 'data-points="10"' in html  # the trend over the last nights, tonight included
    for heading in (
        "ROC on the held-out day",
        "Precision-recall",
        "Calibration",
        "Confusion matrices at threshold 0.5",
        "Feature importance",
        "By channel",
        "Drift",
        "Data quality",
        "Training loss",
        "Stage timings",
    ):
        assert heading in html, heading
    tn = results["models"]["xgboost"]["confusion"]["tn"]
    assert f"<td>actual 0</td><td>{tn:,}</td>" in html
    assert "1 of 2 feature(s) drifted" in html and "page_views" in html
    assert "Rows per batch on the held-out day: 500, 300" in html
    assert 'href="http://127.0.0.1:8080/dags/nightshift_demo/runs/x"' in html
    assert "run <code>0123456789abcdef</code>" in html and "mlflow ui --backend-store-uri" in html
    assert_valid_html(html)
    assert_self_contained(html.replace('href="http://127.0.0.1:8080', 'href="x'))


def test_report_for_regression_shows_residuals_and_predicted_vs_actual() -> None:
    html = render_report(fixed_results("regression"))
    assert "RMSE" in html and "Residuals" in html and "Predicted vs actual" in html
    assert "Confusion" not in html and "Precision-recall" not in html
    assert_valid_html(html)


def test_report_is_deterministic() -> None:
    assert render_report(fixed_results()) == render_report(fixed_results())


def test_a_quick_run_and_a_run_without_promotion_say_so() -> None:
    quick = copy.deepcopy(fixed_results())
    quick["run_options"]["sample_fraction"] = 0.25
    quick["champion"]["promotion_allowed"] = False
    html = render_report(quick)
    assert "trained on 25% of each batch" in html
    assert "Promotion was turned off for this run" in html


@pytest.mark.parametrize("prefix", [None, ""])
def test_index_lists_runs_newest_first_with_trend_and_links(prefix) -> None:
    from nightshift.config.pipeline import parse_pipeline
    from nightshift.publishing.report_index import summarise
    from tests.conftest import small_pipeline_dict

    pipeline = parse_pipeline(small_pipeline_dict(), "demo.yaml")
    first, second = fixed_results(), fixed_results()
    second.update(partition_date="2026-06-03", run_id="scheduled__2026-06-04")
    second["champion"] = {**second["champion"], "promoted": False, "reason": "not better"}
    first["champion"]["promoted"] = True
    runs = [summarise(first), summarise(second)]
    html = render_index({"demo": (pipeline, runs)}, report_prefix=prefix)
    assert html.index("2026-06-03") < html.index("2026-06-02")
    link = "files/demo/2026-06-02/report.html" if prefix is None else "2026-06-02/report.html"
    assert f'href="{link}"' in html
    assert "../dags/nightshift_retail_conversion/runs/scheduled__2026-06-04" in html
    assert 'data-points="2"' in html and 'data-runs="2"' in html
    assert html.count("<svg") == 1 and "new champion" in html
    assert "kept: not better" in html
    assert_valid_html(html)


def test_a_constant_models_precision_recall_is_its_base_rate_not_a_diagonal() -> None:
    from nightshift.evaluation.evaluate import pr_points
    from nightshift.publishing.report import pr_figure

    constant = {"pr": pr_points(Y, SCORES["base_rate"])}
    assert len(constant["pr"]["recall"]) == 2  # scikit-learn's two points: (1, rate), (0, 1)
    svg = pr_figure({"base_rate": constant, "xgboost": {"pr": pr_points(Y, SCORES["xgboost"])}})
    assert "base_rate: base rate" in svg and "xgboost (AP" in svg
    assert "base_rate (AP" not in svg


def test_one_pipeline_on_an_object_store_or_one_bad_metrics_file_breaks_no_index(
    tmp_path, caplog
) -> None:
    """The Model reports page lists local reports; a pipeline publishing to s3:// is left out
    (logged), and a metrics.json whose date is not ISO is skipped, not a broken trend."""
    import json

    from nightshift.config.pipeline import parse_pipeline
    from nightshift.publishing.report_index import list_runs
    from tests.conftest import small_pipeline_dict

    local = small_pipeline_dict()
    local["output"] = {"reports": str(tmp_path / "reports")}
    pipeline = parse_pipeline(local, "demo.yaml")
    remote = small_pipeline_dict()
    remote["output"] = {"reports": "s3://bucket/reports"}
    on_s3 = parse_pipeline(remote, "demo.yaml")
    good, bad = fixed_results(), fixed_results()
    bad.update(partition_date="03/06/2026")
    for day, metrics in (("2026-06-02", good), ("2026-06-03", bad)):
        folder = tmp_path / "reports" / pipeline.name / day
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
    assert list_runs(on_s3) == []
    assert "not on this machine's disk" in caplog.text
    runs = list_runs(pipeline)
    assert [run.partition_date for run in runs] == [dt.date(2026, 6, 2)]
    assert "not a readable nightshift metrics file" in caplog.text
    html = render_index({"local": (pipeline, runs), "remote": (on_s3, list_runs(on_s3))})
    assert 'data-points="1"' in html
