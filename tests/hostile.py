"""Hostile values for the reports pages, and the check that a page shows them only as text.

Every place a user's data or YAML reaches a page gets one of these: category values, column
and feature names, the pipeline's description, model names, run ids and decision texts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import html5lib

IMG = "<img src=x onerror=alert(document.cookie)>"
SCRIPT = "<script>alert('script')</script>"
BREAKOUT = '"><svg onload=alert(3)>'
QUOTE = "' onmouseover='alert(4)' x='"
LINK = "<a href=javascript:alert(5)>click</a>"
PAYLOADS = (IMG, SCRIPT, BREAKOUT, QUOTE, LINK)
# Tags that no page of nightshift uses; only a payload could bring them.
FOREIGN_TAGS = {"script", "img", "iframe", "object", "embed", "form", "base"}


def assert_inert(html: str, shown: Iterable[str]) -> None:
    """Assert that no element or attribute of a payload exists in ``html`` (parsed as a
    browser would, by html5lib) and that each value of ``shown`` is on the page as text."""
    tree = html5lib.parse(html, treebuilder="etree", namespaceHTMLElements=False)
    elements = [e for e in tree.iter() if isinstance(e.tag, str)]
    tags = {e.tag.rsplit("}", 1)[-1].lower() for e in elements}
    assert not tags & FOREIGN_TAGS, tags & FOREIGN_TAGS
    handlers = [(e.tag, k) for e in elements for k in e.attrib if k.lower().startswith("on")]
    assert handlers == [], handlers
    scripted = [(e.tag, k, v) for e in elements for k, v in e.attrib.items() if "alert(" in v]
    assert scripted == [], scripted
    # Every <svg> on a page is one of matplotlib's figures, which start with its XML header.
    assert html.count("<svg") == html.count('<svg xmlns:xlink="http://www.w3.org/1999/xlink"')
    text = "".join(tree.itertext())
    missing = [value for value in shown if value not in text]
    assert missing == [], missing


def _rename(mapping: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {new if key == old else key: value for key, value in mapping.items()}


def hostile_results(results: dict[str, Any]) -> dict[str, Any]:
    """Return ``results`` (a run's metrics, as publish writes them) with a payload in every
    field that comes from the user's data or YAML."""
    r = copy.deepcopy(results)
    model = IMG  # a model name (the config refuses it; the page must not rely on that)
    r["models"] = _rename(r["models"], "sgd_logistic", model)
    r["ranking"] = [model if n == "sgd_logistic" else n for n in r["ranking"]]
    r["decisions"] = _rename(r["decisions"], "sgd_logistic", model)
    r["champions"] = _rename(r["champions"], "sgd_logistic", model)
    r["run_options"]["models"] = r["ranking"]
    r["decisions"][model]["checks"].append({"name": LINK, "passed": False, "detail": SCRIPT})
    for scored in [*r["models"].values(), r["champions"]["xgboost"]]:
        scored["segments"] = _rename(scored["segments"], "partner", SCRIPT)  # category value
    r["gate"]["segment"] = BREAKOUT  # a column name
    r["models"]["xgboost"]["importance"]["gain"][LINK] = 0.05  # a feature name
    r["models"]["xgboost"]["history"]["metric"] = QUOTE  # an eval_metric from the YAML
    r["drift"] = _rename(r["drift"], "channel", QUOTE)
    r["data"]["held_out"]["missing_rate"][BREAKOUT] = 0.5
    r["data"]["held_out"]["warnings"] = [
        {
            "file": f"/landing/{QUOTE}.csv",
            "column": BREAKOUT,
            "check": "isin",
            "kind": "categories",
            "rows": 3,
            "examples": [IMG, SCRIPT],
        }
    ]
    # Why a window day was left out quotes the data's findings; a filter rule is YAML text.
    r.setdefault("training_window", {})["left_out"] = {"2026-05-30": f"held: {SCRIPT}"}
    r["data"]["held_out"]["filtered"] = {f"carrier == '{IMG}'": 12}
    r["run_id"] = f"manual__{QUOTE}"
    r["champion"]["reason"] = f"kept: {IMG} regressed"
    r["mlflow"]["runs"]["xgboost"]["registered_model"] = f"demo.{LINK}"
    return r
