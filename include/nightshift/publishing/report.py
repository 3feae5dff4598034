"""Report: render a run's results, given as plain data, into self-contained HTML.

Figures are inline SVG drawn by matplotlib and the CSS is inline, so the page opens from disk
with no network request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from typing import Any

import jinja2
from markupsafe import Markup

# Every value is escaped, whatever the template's name: the pages show values from the user's
# data and YAML, and the plugin serves them under the Airflow api-server's origin.
# (``select_autoescape(["html"])`` would match only names ending in ``.html``, not ``.html.j2``.)
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("nightshift.publishing", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _svg(figure: Any) -> Markup:
    """Return ``figure`` as inline SVG: the only markup the templates insert unescaped.

    It is trusted because matplotlib's SVG writer draws every text (titles, tick labels such as
    category and feature names, legend entries) as escaped XML character data (``<`` and ``&``
    cannot open markup), and the id rewriting below only adds a prefix inside quoted values.
    """
    buffer = io.StringIO()
    # A fixed hash salt and no date keep the SVG the same for the same data.
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # Many figures share one page: give each its own id namespace, or a figure's references
    # (clip paths, markers) would resolve to another figure's elements of the same id.
    prefix = "f" + hashlib.sha1(text.encode()).hexdigest()[:8] + "-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    return Markup(text)  # trusted: see the docstring


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    figure, axes = _figures(1, 1, (5.2, 4.0))
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def roc_figure(models: dict[str, dict[str, Any]]) -> str:
    """Return the ROC curves of the models as inline SVG."""
    figure, axes = _figure("ROC on the held-out day", "false positive rate", "true positive rate")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, result in models.items():
        if result["roc"]["fpr"]:
            auc = result["metrics"]["roc_auc"]
            axes.plot(result["roc"]["fpr"], result["roc"]["tpr"], label=f"{name} (AUC {auc:.3f})")
    axes.legend(loc="lower right")
    return _svg(figure)


def calibration_figure(models: dict[str, dict[str, Any]], regression: bool) -> str:
    """Return the calibration curves of the models as inline SVG."""
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
    """Return the residuals of the models (regression) as inline SVG."""
    figure, axes = _figure("Residuals on the held-out day", "predicted", "actual - predicted")
    axes.axhline(0, color="grey", linewidth=1)
    for name, result in models.items():
        sample = result["residuals"]
        axes.scatter(sample["predicted"], sample["residual"], s=4, alpha=0.4, label=name)
    axes.legend(loc="upper right")
    return _svg(figure)


def pr_figure(models: dict[str, dict[str, Any]]) -> str:
    """Return the precision-recall curves of the models as inline SVG."""
    figure, axes = _figure("Precision-recall on the held-out day", "recall", "precision")
    for name, result in models.items():
        pr = result.get("pr") or {}
        if not pr.get("recall"):
            continue
        ap = pr.get("average_precision")
        label = f"{name} (AP {ap:.3f})" if ap is not None else name
        if len(pr["recall"]) <= 2:
            # A constant score (the baseline) has one operating point: every row positive,
            # precision = the base rate. Its "curve" to (0, 1) is an artefact, not a model.
            rate = min(pr["precision"])
            line = axes.axhline(rate, linestyle="--", linewidth=1, label=f"{name}: base rate")
            axes.plot([1.0], [rate], "o", color=line.get_color())
            continue
        axes.plot(pr["recall"], pr["precision"], label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.legend(loc="upper right")
    return _svg(figure)


def actual_figure(models: dict[str, dict[str, Any]]) -> str:
    """Return predicted against actual values (regression) as inline SVG."""
    figure, axes = _figure("Predicted vs actual (sample)", "predicted", "actual")
    points: list[float] = []
    for name, result in models.items():
        sample = result["residuals"]
        if "actual" in sample:
            axes.scatter(sample["predicted"], sample["actual"], s=4, alpha=0.4, label=name)
            points += sample["predicted"] + sample["actual"]
    if points:
        axes.plot([min(points), max(points)], [min(points), max(points)], "--", color="grey")
    axes.legend(loc="upper left")
    return _svg(figure)


def importance_figure(name: str, importance: dict[str, dict[str, float]], top: int = 15) -> str:
    """Return horizontal bars: share of gain and mean |contribution| per feature."""
    gain = importance.get("gain") or {}
    contribution = importance.get("contribution") or {}
    features = sorted(set(gain) | set(contribution), key=lambda f: contribution.get(f, 0.0))
    features = features[-top:]
    figure, (left, right) = _figures(1, 2, (9.5, 0.3 * len(features) + 1.4))
    left.barh(features, [gain.get(f, 0.0) for f in features], color="#4c72b0")
    left.set_title(f"{name}: share of total gain")
    right.barh(features, [contribution.get(f, 0.0) for f in features], color="#dd8452")
    right.set_title("mean |contribution| (pred_contribs)")
    right.set_yticklabels([])
    return _svg(figure)


def loss_figure(models: dict[str, dict[str, Any]]) -> str | None:
    """Return the training curves: loss per epoch (batch-trained) and per round (XGBoost)."""
    curves = {
        name: result["history"]
        for name, result in models.items()
        if result.get("history", {}).get("epoch_loss") or result.get("history", {}).get("train")
    }
    if not curves:
        return None
    figure, axes = _figure("Training loss", "epoch (batch models) / round (XGBoost)", "loss")
    for name, history in curves.items():
        if history.get("epoch_loss"):
            values = history["epoch_loss"]
            axes.plot(range(1, len(values) + 1), values, marker="o", label=f"{name} per epoch")
        else:
            values = history["train"]
            rows = history.get("train_rows")  # nights from before the curve was sampled: all
            where = f"train {history['metric']}" + (f", {rows:,} rows" if rows else "")
            axes.plot(range(1, len(values) + 1), values, label=f"{name} {where}")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="upper right")
    return _svg(figure)


def drift_figure(drift: dict[str, dict[str, Any]], threshold: float) -> str:
    """Return each feature's drift (PSI) against ``threshold`` as inline SVG."""
    features = sorted(drift, key=lambda f: drift[f]["psi"] or 0.0)
    figure, axes = _figure("Drift: PSI of the held-out day vs the window", "PSI", "")
    figure.set_size_inches(6.0, 0.3 * len(features) + 1.4)
    values = [drift[f]["psi"] or 0.0 for f in features]
    colours = ["#c44e52" if drift[f]["drifted"] else "#4c72b0" for f in features]
    axes.barh(features, values, color=colours)
    axes.axvline(threshold, color="grey", linestyle="--", linewidth=1)
    return _svg(figure)


# Set once, always to the same values: figures are drawn in the web server's threads too.
FIGURE_SETTINGS: dict[str, Any] = {
    "svg.hashsalt": "nightshift",
    "svg.fonttype": "none",  # text stays text: smaller, searchable, selectable
    # Names come from the user's data: `$\\foo$` is a feature name, not math to parse.
    "text.parse_math": False,
}


def _figures(rows: int, columns: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A new figure and its axes, owned by the caller: matplotlib's object API, no pyplot
    (whose current-figure state is global, and not for threads)."""
    import matplotlib
    from matplotlib.figure import Figure

    settings: dict[Any, Any] = FIGURE_SETTINGS  # matplotlib types its keys as literals
    matplotlib.rcParams.update(settings)
    figure = Figure(figsize=size)
    axes = figure.subplots(rows, columns)
    return figure, axes


def render_report(results: dict[str, Any]) -> str:
    """Return the run report's HTML for ``results`` (the same dict as the metrics JSON)."""
    regression = results["task"] == "regression"
    models = results["models"]
    figures: dict[str, Any] = {
        "main": residual_figure(models) if regression else roc_figure(models),
        "second": actual_figure(models) if regression else pr_figure(models),
        "calibration": calibration_figure(models, regression),
        "loss": loss_figure(models),
        "trend": trend_figure(results.get("trend") or [], results["headline_metric"]),
        "importance": {
            name: importance_figure(name, result["importance"])
            for name, result in models.items()
            if result.get("importance")
        },
        "drift": (
            drift_figure(results["drift"], results["gate"]["drift_threshold"])
            if results.get("drift")
            else None
        ),
    }
    template = _ENV.get_template("report.html.j2")
    return template.render(r=results, figures=figures, regression=regression)


def trend_figure(points: list[dict[str, Any]], metric: str) -> str:
    """Return the headline metric per night as SVG, with champion changes marked.

    ``points`` are dicts with ``date``, ``value`` and ``promoted``, oldest first.
    """
    from matplotlib.dates import AutoDateLocator, DateFormatter

    figure, axes = _figure(f"{metric} per night (best model)", "run date", metric)
    figure.set_size_inches(7.5, 3.2)
    if not points:
        return _svg(figure)
    dates = [dt.date.fromisoformat(p["date"]) for p in points]
    axes.plot(dates, [p["value"] for p in points], marker="o", markersize=3, label="best model")
    promoted = [(d, p["value"]) for d, p in zip(dates, points, strict=True) if p["promoted"]]
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
    if len(dates) <= 10:
        axes.set_xticks(dates)
    else:
        axes.xaxis.set_major_locator(AutoDateLocator(maxticks=8))
    axes.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    axes.legend(loc="best")
    return _svg(figure)


def render_index(
    pipelines: dict[str, tuple[Any, list[Any]]],
    airflow_base: str = "..",
    report_prefix: str | None = None,
) -> str:
    """Return the reports index page: per pipeline, its trend and its runs (``RunSummary``).

    Report links are ``files/<pipeline>/<date>/report.html`` (the plugin's routes), or
    ``<report_prefix><date>/report.html`` for the index published beside the reports.
    """
    trends = {
        name: trend_figure(
            [
                {
                    "date": run.partition_date.isoformat(),
                    "value": run.value,
                    "promoted": run.promoted,
                }
                for run in runs
            ],
            runs[-1].metric,
        )
        for name, (_, runs) in pipelines.items()
        if runs
    }
    template = _ENV.get_template("index.html.j2")
    return template.render(
        pipelines=pipelines,
        trends=trends,
        airflow_base=airflow_base,
        report_prefix=report_prefix,
    )


def render_validation(payload: dict[str, Any]) -> str:
    """Return the page that says why a date was blocked: every finding, with examples."""
    return _ENV.get_template("validation.html.j2").render(v=payload)
