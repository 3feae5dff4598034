from __future__ import annotations

import re
from html.parser import HTMLParser

from nightshift.evaluate import evaluate_scores
from nightshift.report import render_report


def _results(task: str = "binary_classification") -> dict:
    y = [0, 1, 0, 1, 1, 0, 0, 1]
    scores = {"xgboost": [0.1, 0.8, 0.3, 0.7, 0.9, 0.2, 0.4, 0.6], "base_rate": [0.5] * 8}
    import numpy as np

    models = {}
    for name, score in scores.items():
        scored = evaluate_scores(task, np.array(y, float), np.array(score), 0.5)
        scored["kind"] = "xgboost" if name == "xgboost" else "baseline"
        scored["history"] = {"metric": "logloss", "train": [0.6, 0.4]} if name == "xgboost" else {}
        models[name] = scored
    return {
        "pipeline": "demo",
        "partition_date": "2026-06-02",
        "task": task,
        "run_id": "r1",
        "threshold": 0.5,
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
                "rows": 8,
                "batches": 1,
                "rows_per_batch": [8],
                "label_mean": 0.5,
                "missing_rate": {"a": 0.25},
            }
        },
        "models": models,
        "ranking": ["xgboost", "base_rate"],
        "best": "xgboost",
        "challenger": "xgboost",
        "headline_metric": "roc_auc",
        "run_options": {
            "models": ["xgboost", "base_rate"],
            "window_days": 2,
            "sample_fraction": 1.0,
            "promote": True,
        },
        "champion": {
            "model_id": "xgboost@2026-06-02",
            "promoted": True,
            "reason": "better: roc_auc 0.9 vs champion xgboost@2026-06-01 at 0.8",
            "previous": {"model_id": "xgboost@2026-06-01", "name": "xgboost"},
            "previous_metrics": {"roc_auc": 0.8},
            "promotion_allowed": True,
        },
        "timings": {"ingest": 1.25},
        "nightshift_version": "0.1.0",
    }


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.void = {
            "meta",
            "br",
            "img",
            "input",
            "link",
            "hr",
            "path",
            "use",
            "rect",
            "stop",
            "circle",
            "line",
            "polyline",
            "polygon",
            "ellipse",
        }

    def handle_starttag(self, tag, attrs) -> None:
        if tag not in self.void:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs) -> None:
        pass

    def handle_endtag(self, tag) -> None:
        if tag in self.void:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_report_renders_self_contained_html() -> None:
    html = render_report(_results())
    assert "<title>demo · 2026-06-02" in html
    assert html.count("<svg") == 2
    assert "0.7500" in html or "1.0000" in html
    # Opens from disk: no fetch of scripts, styles, images or fonts from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html
    checker = _Checker()
    checker.feed(html)
    assert checker.errors == [] and checker.stack == []


def test_report_is_deterministic_and_handles_regression() -> None:
    assert render_report(_results()) == render_report(_results())
    html = render_report(_results("regression"))
    assert "RMSE" in html and "Residuals" in html


def test_report_states_the_champion_decision() -> None:
    html = render_report(_results())
    assert "Promoted" in html and "xgboost@2026-06-01" in html
    quick = _results()
    quick["run_options"]["sample_fraction"] = 0.25
    assert "trained on 25% of each batch" in render_report(quick)


def test_index_lists_runs_newest_first_with_trend_and_links(tmp_path) -> None:
    from nightshift.config import parse_pipeline
    from nightshift.report import render_index
    from nightshift.report_index import summarise
    from tests.conftest import small_pipeline_dict

    pipeline = parse_pipeline(small_pipeline_dict(), "demo.yaml")
    first, second = _results(), _results()
    second.update(partition_date="2026-06-03", run_id="scheduled__2026-06-03")
    second["champion"] = {**second["champion"], "promoted": False, "reason": "not better"}
    runs = [summarise(first), summarise(second)]
    html = render_index({"demo": (pipeline, runs)})
    assert html.index("2026-06-03") < html.index("2026-06-02")
    assert 'href="files/demo/2026-06-02/report.html"' in html
    assert "../dags/nightshift_retail_conversion/runs/scheduled__2026-06-03" in html
    assert html.count("<svg") == 1 and "new champion" in html
    assert "kept: not better" in html
    checker = _Checker()
    checker.feed(html)
    assert checker.errors == [] and checker.stack == []
