"""Reports with hostile values, opened inside the Airflow UI by a real browser: no script runs.

A real api-server on loopback serves the reports plugin. Its pipeline's description and its
report carry markup from a user's data (tests/hostile.py); a planted page holds live script,
as a page that escaped escaping would. Chromium (Playwright) opens Browse -> Model reports
and both reports inside the Airflow UI; no dialog may fire. Every response of the plugin
carries a Content-Security-Policy that forbids script and ``X-Content-Type-Options``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightshift.ops.local_airflow import LocalAirflow
from nightshift.publishing.report import render_report
from tests.browser import signed_in_page
from tests.conftest import REPO, small_pipeline_dict, write_pipeline
from tests.e2e.conftest import project_airflow
from tests.hostile import IMG, SCRIPT, hostile_results
from tests.unit.test_report import fixed_results

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NAME = "hostile_reports"
PREFIX = "/nightshift-reports"
DATE, PLANTED = "2026-06-02", "2026-06-03"
SHOTS = REPO / "test-artifacts" / "screenshots"
PLANTED_PAGE = "<!DOCTYPE html><title>planted</title><script>alert('planted')</script>" + (
    "<p>planted page</p><img src=x onerror=alert('planted-img')>"
)


def _publish(reports: Path) -> None:
    """Write a hostile run's report and metrics, and a planted page with live script."""
    results = hostile_results(fixed_results())
    results.update(pipeline=NAME, dag_id=f"nightshift_{NAME}")
    (reports / DATE).mkdir(parents=True)
    (reports / DATE / "report.html").write_text(render_report(results))
    (reports / DATE / "metrics.json").write_text(json.dumps(results, default=str))
    (reports / PLANTED).mkdir()
    (reports / PLANTED / "report.html").write_text(PLANTED_PAGE)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    root = tmp_path_factory.mktemp("hostile-ui")
    data = small_pipeline_dict()
    data["description"] = f"{SCRIPT} {IMG}"
    data["output"] = {"lake": str(root / "lake"), "reports": str(root / "reports")}
    (root / "pipelines").mkdir()
    write_pipeline(root / "pipelines", data, name=NAME)
    _publish(root / "reports" / NAME)
    airflow = project_airflow(root)
    try:
        airflow.start(services=("api-server",), dask=False)
        yield airflow
    finally:
        airflow.stop()
        assert airflow.running() == {}, airflow.running()


def _headers(airflow: LocalAirflow, path: str, token: str | None) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", airflow.api_port, timeout=60)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def test_every_plugin_response_forbids_script_and_sniffing(api_server: LocalAirflow) -> None:
    token = api_server.token()
    routes = {
        f"{PREFIX}/": 200,
        f"{PREFIX}/runs.json": 200,
        f"{PREFIX}/files/{NAME}/{DATE}/report.html": 200,
        f"{PREFIX}/files/{NAME}/{DATE}/metrics.json": 200,
        f"{PREFIX}/files/{NAME}/2020-01-01/report.html": 404,
        f"{PREFIX}/by-run/nightshift_{NAME}/manual__none": 404,
    }
    for route, expected in routes.items():
        for auth in (token, None):
            status, headers = _headers(api_server, route, auth)
            assert status == (expected if auth else 401), (route, status)
            policy = headers.get("content-security-policy", "")
            assert "default-src 'none'" in policy and "sandbox" in policy, (route, headers)
            assert "allow-scripts" not in policy and "script-src" not in policy, policy
            assert headers.get("x-content-type-options") == "nosniff", (route, headers)


@pytest.mark.browser
def test_hostile_reports_inside_the_airflow_ui_run_no_script(api_server: LocalAirflow) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, dialogs = api_server.base_url, []
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = signed_in_page(playwright, base, "admin", api_server.password())
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Model reports").click()
        index = page.frame_locator("iframe").first
        expect(index.get_by_text(f"{SCRIPT} {IMG}", exact=False)).to_be_visible()
        page.screenshot(path=SHOTS / "09-hostile-index-in-ui.png", full_page=True)
        for date, visible in ((DATE, f"kept: {IMG} regressed"), (PLANTED, "planted page")):
            # The UI maps /plugin/<route>/<path> to <path> in its frame (its own deep links).
            page.goto(f"{base}/plugin/model-reports{PREFIX}/files/{NAME}/{date}/report.html")
            frame = page.frame_locator("iframe").first
            expect(frame.get_by_text(visible, exact=False).first).to_be_visible()
            page.wait_for_timeout(1000)  # an onerror handler fires after the image fails
            page.screenshot(path=SHOTS / f"10-hostile-report-{date}-in-ui.png", full_page=True)
        # Opened on its own, outside the UI's frame, the planted page runs no script either.
        page.goto(f"{base}{PREFIX}/files/{NAME}/{PLANTED}/report.html")
        expect(page.get_by_text("planted page")).to_be_visible()
        page.wait_for_timeout(1000)
        browser.close()
    assert dialogs == [], dialogs
