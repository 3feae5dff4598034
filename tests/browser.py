"""A signed-in page of the Airflow UI in Debian's chromium, driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("NIGHTSHIFT_CHROMIUM", "/usr/bin/chromium")


def signed_in_page(playwright: Any, base: str, user: str, password: str) -> tuple[Any, Any]:
    """Return (browser, page): chromium started, ``user`` signed in at ``base``."""
    assert Path(CHROMIUM).exists(), f"needs Debian's chromium at {CHROMIUM} (.ci/run installs it)"
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    shots = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with shot_on_failure(page, shots / f"failed-sign-in-{user}.png"):
        page.goto(f"{base}/")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", password)
        # The simple auth manager's page has a "Sign in" button, FAB's a "Sign In" input.
        submit = "button:has-text('Sign in'), input[type=submit][value='Sign In']"
        page.locator(submit).first.click()
        page.wait_for_url(f"{base}/")
    return browser, page


@contextmanager
def shot_on_failure(page: Any, path: Path) -> Iterator[None]:
    """Save a screenshot of ``page`` at ``path`` if the block fails, and name its URL."""
    try:
        yield
    except Exception as exc:
        page.screenshot(path=path, full_page=True)
        raise AssertionError(f"{exc}\nat {page.url}; screenshot: {path}") from exc
