"""A report opened from disk in a real browser makes no network request.

Debian's chromium, driven by Playwright, opens report.html and index.html as files; every
request the page makes is recorded, and only the files themselves (and inline data) may be
asked for. The report is rendered from the same fixed plain data as the unit tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nightshift.publishing.report import render_index, render_report
from nightshift.publishing.report_index import summarise
from tests.conftest import REPO
from tests.unit.test_report import fixed_results

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("NIGHTSHIFT_CHROMIUM", "/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "screenshots"


@pytest.fixture
def published(tmp_path: Path) -> Path:
    from nightshift.config.pipeline import parse_pipeline
    from tests.conftest import small_pipeline_dict

    folder = tmp_path / "demo"
    (folder / "2026-06-02").mkdir(parents=True)
    results = fixed_results()
    (folder / "2026-06-02" / "report.html").write_text(render_report(results))
    pipeline = parse_pipeline(small_pipeline_dict(), "demo.yaml")
    index = render_index({"demo": (pipeline, [summarise(results)])}, "", report_prefix="")
    (folder / "index.html").write_text(index)
    return folder


@pytest.mark.parametrize("page_name", ["2026-06-02/report.html", "index.html"])
@pytest.mark.browser
def test_a_report_from_disk_makes_no_network_request(published: Path, page_name: str) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"needs Debian's chromium at {CHROMIUM} (.ci/run installs it)"
    page_url = (published / page_name).as_uri()
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(page_url, wait_until="networkidle")
            figures = page.locator("svg").count()
            title = page.title()
            if page_name == "index.html":
                page.get_by_role("link", name="report", exact=True).click()
                page.wait_for_load_state("networkidle")
                assert page.url == (published / "2026-06-02" / "report.html").as_uri()
            else:
                SHOTS.mkdir(parents=True, exist_ok=True)
                page.goto(page_url, wait_until="networkidle")
                page.screenshot(path=SHOTS / "08-report-from-disk.png", full_page=True)
        finally:
            browser.close()
    assert figures >= (1 if page_name == "index.html" else 7), figures
    assert "demo" in title or title.startswith("Model reports")
    outside = [url for url in requested if not url.startswith(("file://", "data:"))]
    assert outside == [], outside
    assert requested[0] == page_url
