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
        "headline_metric": "roc_auc",
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
