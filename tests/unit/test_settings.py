"""config.settings is the one table of what nightshift reads from its environment."""

from __future__ import annotations

import re

import pytest

from nightshift.config.settings import SETTINGS, resolve, setting
from tests.conftest import REPO

PACKAGE = REPO / "include" / "nightshift"


def test_every_variable_the_package_names_is_in_the_table() -> None:
    named = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r"\"(NIGHTSHIFT_[A-Z_]+)\"", path.read_text())
    }
    assert named <= {s.name for s in SETTINGS}, sorted(named - {s.name for s in SETTINGS})


def test_a_setting_is_read_when_asked_and_an_empty_one_stays_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NIGHTSHIFT_HOOK_PACKAGES", raising=False)
    assert setting("NIGHTSHIFT_HOOK_PACKAGES") is None
    monkeypatch.setenv("NIGHTSHIFT_HOOK_PACKAGES", "")
    assert setting("NIGHTSHIFT_HOOK_PACKAGES") == ""
    assert setting("NIGHTSHIFT_API_PORT", {}) == "8080"
    with pytest.raises(KeyError, match="NIGHTSHIFT_NOPE is not a nightshift setting"):
        setting("NIGHTSHIFT_NOPE")


def test_locations_resolve_under_the_home_unless_urls_or_absolute(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(tmp_path))
    assert resolve("data/lake") == str(tmp_path / "data" / "lake")
    assert resolve("s3://bucket/lake") == "s3://bucket/lake"
    assert resolve("/srv/lake") == "/srv/lake"
