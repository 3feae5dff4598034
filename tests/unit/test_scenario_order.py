"""The steps of each scenario module run together and in file order, whatever the shuffle."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import groupby

import pytest

from tests.conftest import REPO

SCENARIOS = ("tests/compose/test_compose_stack.py", "tests/e2e/test_on_call.py")


def _defined(path: str) -> list[str]:
    lines = (REPO / path).read_text().splitlines()
    return [line[4:].split("(")[0] for line in lines if line.startswith("def test_")]


@pytest.mark.parametrize("seed", [3576821922, 1, 2])  # 3576821922 split the compose stack once
def test_each_scenario_module_runs_whole_and_in_file_order(seed: int) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", f"--randomly-seed={seed}"],
        cwd=REPO,
        # Collect every tier, whatever this machine has (collecting runs nothing).
        env={**os.environ, "NIGHTSHIFT_REQUIRE_DOCKER": "1", "NIGHTSHIFT_REQUIRE_BROWSER": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    steps = [line.split("::") for line in listed if "::" in line]
    runs = [module for module, _ in groupby(path for path, _ in steps) if module in SCENARIOS]
    assert sorted(runs) == sorted(SCENARIOS), runs  # each module once: never split
    for module in SCENARIOS:
        order = [name.split("[")[0] for path, name in steps if path == module]
        assert order == _defined(module), module


class _Item:
    """What longest_tiers_first reads of a test: its file and its markers."""

    def __init__(self, path: str, *markers: str) -> None:
        self.path, self.markers = path, markers

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.markers else None


def test_under_xdist_the_longest_tiers_go_first_and_each_module_stays_whole() -> None:
    from tests.conftest import longest_tiers_first

    unit = [_Item("u.py"), _Item("u.py")]
    mixed = [_Item("m.py", "e2e"), _Item("m.py", "e2e", "slow"), _Item("m.py", "e2e")]
    e2e, compose = [_Item("e.py", "e2e")], [_Item("c.py", "compose"), _Item("c.py", "compose")]
    items = [*unit, *mixed, *e2e, *compose]
    longest_tiers_first(items)  # type: ignore[arg-type]
    assert items == [*compose, *mixed, *e2e, *unit]
