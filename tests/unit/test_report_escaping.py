"""Values from the data and the YAML are escaped on every page the reports plugin serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nightshift.config.pipeline import ConfigError, parse_pipeline
from nightshift.publishing.report import _ENV, render_index, render_report, render_validation
from nightshift.publishing.report_index import summarise
from tests.conftest import small_pipeline_dict
from tests.hostile import (
    BREAKOUT,
    IMG,
    LINK,
    PAYLOADS,
    QUOTE,
    SCRIPT,
    assert_inert,
    hostile_results,
)
from tests.unit.test_report import fixed_results

TEMPLATES = Path(__file__).resolve().parents[2] / "include/nightshift/publishing/templates"
NAMES = sorted(p.name for p in TEMPLATES.glob("*.j2"))
assert NAMES, f"no templates in {TEMPLATES}"


@pytest.mark.parametrize("name", NAMES)
def test_every_template_escapes_whatever_its_name(name: str) -> None:
    assert _ENV.autoescape is True or _ENV.autoescape(name) is True, name
    # `|safe`, `| safe`, `|  safe`: no value is marked safe by hand (figures are Markup).
    assert not re.search(r"\|\s*safe\b", (TEMPLATES / name).read_text()), name
    assert "autoescape false" not in (TEMPLATES / name).read_text(), name


def test_report_shows_hostile_values_as_text() -> None:
    html = render_report(hostile_results(fixed_results()))
    assert_inert(html, PAYLOADS)
    assert "<td>&lt;script&gt;alert(&#39;script&#39;)&lt;/script&gt;</td>" in html
    assert "&lt;img src=x onerror=alert(document.cookie)&gt;" in html
    # ...also where a left-out window day and a filter rule are shown.
    assert 'id="left-out"' in html and 'id="filtered"' in html
    assert_inert(html, ["held: " + SCRIPT, f"carrier == '{IMG}'"])


def test_report_figures_escape_feature_and_model_names() -> None:
    results = hostile_results(fixed_results())
    figures = "".join(
        html[html.index("<svg") : html.index("</svg>")]
        for html in render_report(results).split("<figure")[1:]
        if "<svg" in html
    )
    # The legend (model names) and the importance bars (feature names) are SVG text.
    assert "&lt;img src=x onerror=alert(document.cookie)&gt;" in figures
    assert "&lt;a href=javascript:alert(5)&gt;click&lt;/a&gt;" in figures


def test_index_shows_hostile_values_as_text() -> None:
    data = small_pipeline_dict()
    data["description"] = f"{SCRIPT} {IMG}"
    pipeline = parse_pipeline(data, "demo.yaml")
    run = summarise(hostile_results(fixed_results()))
    for prefix in (None, ""):
        html = render_index({"demo": (pipeline, [run])}, report_prefix=prefix)
        assert_inert(html, [SCRIPT, IMG, QUOTE, f"kept: {IMG} regressed"])


def test_validation_page_shows_hostile_values_as_text() -> None:
    failure = {
        "severity": "block",
        "file": f"/landing/{QUOTE}.csv",
        "column": BREAKOUT,
        "check": f"isin {LINK}",
        "kind": "categories",
        "rows": 2,
        "examples": [IMG, SCRIPT],
        "row_numbers": [3, 9],
    }
    html = render_validation(
        {
            "pipeline": "demo",
            "partition_date": "2026-06-02",
            "blocked": True,
            "quarantine": f"/lake/quarantine/{IMG}",
            "failures": [failure],
        }
    )
    assert_inert(html, [IMG, SCRIPT, BREAKOUT, QUOTE, LINK])


def test_a_model_name_that_is_not_an_identifier_is_refused() -> None:
    data = small_pipeline_dict()
    data["models"][1]["name"] = IMG
    with pytest.raises(ConfigError, match=r"demo.yaml: key 'models\[1\].name': String should"):
        parse_pipeline(data, "demo.yaml")


def test_a_feature_named_like_mathtext_is_drawn_as_text() -> None:
    """`$\\foo$` as a feature name made matplotlib parse it as math and publish fail."""
    results = fixed_results()
    for model in results["models"].values():
        if model.get("importance"):
            for kind in model["importance"].values():
                kind["$\\foo$"] = 0.5
    html = render_report(results)
    assert "$\\foo$" in html


def test_figures_are_drawn_without_pyplot_state() -> None:
    """The report is rendered in the web server's threads too: no pyplot global figure state
    (a subprocess, so that no other test's import of pyplot counts)."""
    import subprocess
    import sys

    code = (
        "import sys; from tests.unit.test_report import fixed_results; "
        "from nightshift.publishing.report import render_report; render_report(fixed_results()); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert out.stdout.strip() == "False", out.stdout
