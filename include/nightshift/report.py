"""Report: render a run's results, given as plain data, into self-contained HTML.

Figures are inline SVG drawn by matplotlib and the CSS is inline, so the page opens from disk
with no network request.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("nightshift", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _svg(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    # A fixed hash salt and no date keep the SVG the same for the same data.
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "nightshift"
    figure, axes = plt.subplots(figsize=(5.2, 4.0))
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def roc_figure(models: dict[str, dict[str, Any]]) -> str:
    figure, axes = _figure("ROC on the held-out day", "false positive rate", "true positive rate")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, result in models.items():
        if result["roc"]["fpr"]:
            auc = result["metrics"]["roc_auc"]
            axes.plot(result["roc"]["fpr"], result["roc"]["tpr"], label=f"{name} (AUC {auc:.3f})")
    axes.legend(loc="lower right")
    return _svg(figure)


def calibration_figure(models: dict[str, dict[str, Any]], regression: bool) -> str:
    label = "mean predicted value" if regression else "mean predicted probability"
    figure, axes = _figure("Calibration", label, "observed mean")
    points = [v for r in models.values() for v in r["calibration"]["predicted"]] or [0.0, 1.0]
    points += [v for r in models.values() for v in r["calibration"]["observed"]]
    low, high = (min(points), max(points)) if regression else (0.0, 1.0)
    axes.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1)
    for name, result in models.items():
        calibration = result["calibration"]
        axes.plot(calibration["predicted"], calibration["observed"], marker="o", label=name)
    axes.legend(loc="upper left")
    return _svg(figure)


def residual_figure(models: dict[str, dict[str, Any]]) -> str:
    figure, axes = _figure("Residuals on the held-out day", "predicted", "actual - predicted")
    axes.axhline(0, color="grey", linewidth=1)
    for name, result in models.items():
        sample = result["residuals"]
        axes.scatter(sample["predicted"], sample["residual"], s=4, alpha=0.4, label=name)
    axes.legend(loc="upper right")
    return _svg(figure)


def render_report(results: dict[str, Any]) -> str:
    """Return the run report's HTML for ``results`` (the same dict as the metrics JSON)."""
    regression = results["task"] == "regression"
    models = results["models"]
    figures = {
        "main": residual_figure(models) if regression else roc_figure(models),
        "calibration": calibration_figure(models, regression),
    }
    template = _ENV.get_template("report.html.j2")
    return template.render(r=results, figures=figures, regression=regression)


def trend_figure(runs: list[Any]) -> str:
    """Return the headline metric per night as SVG, with champion changes marked."""
    from matplotlib.dates import AutoDateLocator, DateFormatter

    metric = runs[-1].metric
    figure, axes = _figure(f"{metric} per night (best model)", "run date", metric)
    figure.set_size_inches(7.5, 3.2)
    dates = [dt.date.fromisoformat(run.partition_date) for run in runs]
    axes.plot(dates, [run.value for run in runs], marker="o", markersize=3, label="best model")
    promoted = [(d, run.value) for d, run in zip(dates, runs, strict=True) if run.promoted]
    if promoted:
        axes.scatter(
            [d for d, _ in promoted],
            [v for _, v in promoted],
            marker="*",
            s=120,
            color="#2a9d3a",
            zorder=3,
            label="new champion",
        )
    if len(dates) < 3:  # a lone point would otherwise get a year-wide axis
        axes.set_xlim(min(dates) - dt.timedelta(days=2), max(dates) + dt.timedelta(days=2))
    axes.xaxis.set_major_locator(AutoDateLocator(maxticks=8))
    axes.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    axes.legend(loc="best")
    return _svg(figure)


def render_index(pipelines: dict[str, tuple[Any, list[Any]]], airflow_base: str = "..") -> str:
    """Return the reports index page: per pipeline, its trend and its runs (``RunSummary``)."""
    trends = {name: trend_figure(runs) for name, (_, runs) in pipelines.items() if runs}
    template = _ENV.get_template("index.html.j2")
    return template.render(pipelines=pipelines, trends=trends, airflow_base=airflow_base)
