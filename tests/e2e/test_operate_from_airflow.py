"""Operating nightshift from Airflow: the plugin's auth, a browser trigger, a 5-date backfill.

Real api-server, scheduler and dag-processor on loopback; tasks use a Dask scheduler and
workers started as separate processes (the external-address cluster mode). The browser is
Debian's chromium driven by Playwright; screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import re
import urllib.parse
from pathlib import Path

import pytest

from nightshift.ops.local_airflow import LocalAirflow
from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

NAME = "ui_conversion"
DAG_ID = f"nightshift_{NAME}"
PREFIX = "/nightshift-reports"
BACKFILL = [f"2026-11-{day:02d}" for day in range(5, 15)]  # 10 nights
# Before every backfilled date: whichever test runs first, the backfill's nights can still
# replace the champion the browser's run made (a champion trained for a later date never is).
BROWSER_DATE = "2026-11-03"
SHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("NIGHTSHIFT_CHROMIUM", "/usr/bin/chromium")


def _get(airflow: LocalAirflow, path: str, token: str | None = None, html: bool = False):
    """GET ``path`` exactly as written (no client-side normalisation); return the response."""
    connection = http.client.HTTPConnection("127.0.0.1", airflow.api_port, timeout=60)
    headers = {"Accept": "text/html" if html else "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), body


def test_every_plugin_route_needs_a_session(airflow_with_dask) -> None:
    airflow, _ = airflow_with_dask
    routes = [
        f"{PREFIX}/",
        f"{PREFIX}/runs.json",
        f"{PREFIX}/by-run/{DAG_ID}/manual__x",
        f"{PREFIX}/files/{NAME}/2026-11-10/report.html",
    ]
    for route in routes:
        status, _, _ = _get(airflow, route)
        assert status == 401, route
        status, headers, _ = _get(airflow, route, html=True)
        assert status == 303 and "/auth/login" in headers["location"], (route, headers)
        status, _, _ = _get(airflow, route, token="not-a-token")
        assert status in (401, 403), route
    status, _, body = _get(airflow, f"{PREFIX}/runs.json", token=airflow.token())
    assert status == 200 and NAME in json.loads(body)


def test_backfill_ten_dates_two_at_a_time_each_on_its_own_window(airflow_with_dask) -> None:
    airflow, project = airflow_with_dask
    airflow.unpause(DAG_ID)
    airflow.backfill(
        DAG_ID,
        BACKFILL[0],
        BACKFILL[-1],
        "--max-active-runs",
        "2",
    )
    [backfill] = airflow.api("GET", f"backfills?dag_id={DAG_ID}")["backfills"]
    airflow.wait_for_backfills(DAG_ID)
    runs = [
        r
        for r in airflow.wait_for_runs(DAG_ID, len(BACKFILL), timeout=1500)
        if r["run_type"] == "backfill"
    ]
    assert sorted(r["state"] for r in runs) == ["success"] * len(BACKFILL), runs
    # Two at a time: the scheduler ran two of the backfill's runs at once, never three.
    assert backfill["max_active_runs"] == 2
    assert _most_at_once(runs) == 2, [(r["start_date"], r["end_date"]) for r in runs]

    reports = project / "data" / "reports" / NAME
    decisions, xgboost_promoted = {}, {}
    for day in BACKFILL:
        date = dt.date.fromisoformat(day)
        metrics = json.loads((reports / day / "metrics.json").read_text())
        assert metrics["partition_date"] == day
        # The report shows this date's own window: the two days before it, never the date
        # itself or anything after it.
        expected = [(date - dt.timedelta(days=n)).isoformat() for n in (2, 1)]
        assert metrics["training_window"]["dates"] == expected, day
        assert metrics["run_options"]["window_days"] == 2
        html = (reports / day / "report.html").read_text()
        window = rf"trained on 2 day\(s\), {expected[0]} to\s+{expected[-1]} \("
        assert re.search(window, html), (day, re.findall(r"trained on [^(]*", html))
        # Nor does a later model reach it through the champion comparison: a champion is only
        # scored against this date if it was trained for an earlier one.
        for champion in metrics["champions"].values():
            if champion and champion.get("metrics"):
                assert champion["trained_for"] < day, (day, champion)
        decisions[day] = metrics["champion"]
        xgboost_promoted[day] = metrics["decisions"]["xgboost"]["promoted"]
        assert metrics["links"]["airflow"].startswith(airflow.base_url)
    # The features each date's models were fitted with come from that window only.
    features = project / "data" / "lake" / NAME / "features"
    for day in BACKFILL:
        manifest = json.loads((features / f"date={day}" / "_MANIFEST.json").read_text())
        assert max(manifest["meta"]["window"]) < day

    # The index lists every published run (the 10, and the browser test's if it ran first)
    # and the trend has a point each: in the Airflow plugin and in the index published beside
    # the reports. The gate both promoted and kept champions.
    published = sorted(p.parent.name for p in reports.glob("*/metrics.json"))
    assert set(BACKFILL) <= set(published), published
    for html in (
        _get(airflow, f"{PREFIX}/", token=airflow.token(), html=True)[2].decode(),
        (reports / "index.html").read_text(),
    ):
        count = len(published)
        assert f'data-runs="{count}"' in html and f'data-points="{count}"' in html
        assert all(day in html for day in BACKFILL)
    # The report's own trend: the nights published before it and its own (two at a time, the
    # night running beside it may not be among them yet; the browser's night if it ran first).
    last = (reports / BACKFILL[-1] / "report.html").read_text()
    earlier = sum(day < BACKFILL[-1] for day in published)
    points = {f'data-points="{n}"' for n in (earlier, earlier + 1)}
    assert any(p in last for p in points), (points, re.findall(r'data-points="\d+"', last))
    promoted = [day for day, c in decisions.items() if c["promoted"]]
    kept = [day for day, c in decisions.items() if not c["promoted"]]
    print("promoted:", {d: decisions[d]["reason"] for d in promoted})
    print("kept:", {d: decisions[d]["reason"] for d in kept})
    assert promoted and kept, decisions

    # The MLflow client, on the embedded store, lists the runs and the champion alias, which
    # names the latest night that promoted (a night that lost the race to a newer one is
    # recorded as kept).
    from mlflow import MlflowClient

    uri = f"sqlite:///{project}/data/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert all(
        m["mlflow"]["tracking_uri"] == uri
        for m in (json.loads((reports / d / "metrics.json").read_text()) for d in BACKFILL)
    )
    experiment = client.get_experiment_by_name(f"nightshift/{NAME}")
    logged = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=200)
        if r.data.tags["nightshift.partition_date"] in BACKFILL
    ]
    assert len(logged) == 3 * len(BACKFILL)
    promoting = [
        day
        for day in published
        if json.loads((reports / day / "metrics.json").read_text())["decisions"]["xgboost"][
            "promoted"
        ]
    ]
    champion = client.get_model_version_by_alias(f"{NAME}.xgboost", "champion")
    assert champion.tags["nightshift.trained_for"] == max(promoting), xgboost_promoted


def _most_at_once(runs: list[dict]) -> int:
    """Return the most runs that were running at the same moment."""
    events = sorted(
        [(r["start_date"], 1) for r in runs] + [(r["end_date"], -1) for r in runs],
        key=lambda event: (dt.datetime.fromisoformat(event[0]), event[1]),
    )
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _launch(playwright):
    assert Path(CHROMIUM).exists(), (
        f"the browser test drives Debian's chromium at {CHROMIUM}: `apt-get install chromium` "
        "(.ci/run does), or set NIGHTSHIFT_CHROMIUM"
    )
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


@pytest.mark.browser
def test_browser_trigger_form_run_and_report(airflow_with_dask) -> None:
    from playwright.sync_api import expect, sync_playwright

    airflow, project = airflow_with_dask
    base = airflow.base_url
    SHOTS.mkdir(parents=True, exist_ok=True)
    before = {r["dag_run_id"] for r in airflow.runs(DAG_ID)}
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)

        page.goto(f"{base}/")
        expect(page).to_have_url(re.compile(r"/auth/login"))
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", airflow.password())
        page.screenshot(path=SHOTS / "01-login.png")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/")

        page.goto(f"{base}/dags/{DAG_ID}")
        expect(page.get_by_text(DAG_ID).first).to_be_visible()
        page.get_by_role("button", name="Trigger").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Run Parameters")).to_be_visible()
        # Bad values never leave the form: the number field holds to the schema's maximum.
        fraction = dialog.locator("input[name=element_sample_fraction]")
        fraction.fill("1.5")
        fraction.blur()
        expect(fraction).to_have_value("1")
        page.screenshot(path=SHOTS / "02-trigger-form.png", full_page=True)
        fraction.fill("0.5")
        dialog.locator("#element_run_date").fill(BROWSER_DATE)
        trigger = dialog.get_by_role("button", name="Trigger", exact=True)
        page.screenshot(path=SHOTS / "03-trigger-form-filled.png", full_page=True)
        trigger.click()
        page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/manual__"))
        run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1].split("/")[0])
        assert run_id not in before

        [run] = airflow.wait_for_runs(DAG_ID, 1, run_ids=[run_id], timeout=1200)
        assert run["state"] == "success", airflow.task_states(DAG_ID, run_id)
        assert run["conf"]["run_date"] == BROWSER_DATE
        assert run["conf"]["sample_fraction"] == 0.5
        page.reload()
        expect(page.get_by_text("success").first).to_be_visible()
        page.screenshot(path=SHOTS / "04-run-succeeded.png")

        # "Model reports" in the navigation: the plugin's index inside Airflow.
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Model reports").click()
        frame = page.frame_locator("iframe").first
        expect(frame.get_by_role("heading", name="Model reports")).to_be_visible()
        expect(frame.get_by_text(BROWSER_DATE).first).to_be_visible()
        page.screenshot(path=SHOTS / "05-model-reports-index.png", full_page=True)

        # The run's own "Report" tab opens that run's report.
        page.goto(f"{base}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id)}")
        page.get_by_role("link", name="Report", exact=True).click()
        report_frame = page.frame_locator("iframe").first
        expect(report_frame.get_by_role("heading", name=re.compile(BROWSER_DATE))).to_be_visible()
        expect(report_frame.get_by_text("trained on 50% of each batch")).to_be_visible()
        page.screenshot(path=SHOTS / "06-run-report-tab.png", full_page=True)

        # And the report itself, opened from the index's link.
        page.goto(f"{base}{PREFIX}/files/{NAME}/{BROWSER_DATE}/report.html")
        expect(page.get_by_text("Models on the held-out day")).to_be_visible()
        page.screenshot(path=SHOTS / "07-report.png", full_page=True)
        browser.close()

    metrics = json.loads(
        (project / "data" / "reports" / NAME / BROWSER_DATE / "metrics.json").read_text()
    )
    # The same schema refuses a bad value sent around the form, before any run exists.
    for conf in ({"sample_fraction": 1.5}, {"models": ["lightgbm"]}, {"run_date": "2026-13-45"}):
        with pytest.raises(RuntimeError, match="HTTP 400"):
            airflow.api("POST", f"dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    assert metrics["run_id"] == run_id
    assert metrics["run_options"]["sample_fraction"] == 0.5


@pytest.mark.parametrize(
    "path",
    [
        "../../../etc/passwd",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "2026-10-01/..%2f..%2f..%2fetc/passwd",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        "2026-10-01/escape.html",
        "2026-10-01/report.html%00.png",
    ],
)
def test_report_files_never_leave_the_reports_root(airflow_with_dask, path: str) -> None:
    airflow, project = airflow_with_dask
    # A day no other test publishes, so its planted symlink meets no report of theirs.
    day = project / "data" / "reports" / NAME / "2026-10-01"
    if not (day / "escape.html").is_symlink():
        day.mkdir(parents=True, exist_ok=True)
        (day / "escape.html").symlink_to("/etc/passwd")
    status, _, body = _get(airflow, f"{PREFIX}/files/{NAME}/{path}", token=airflow.token())
    assert status in (400, 404), (path, status, body[:200])
    assert b"root:" not in body
