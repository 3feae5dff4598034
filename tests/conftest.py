"""Shared fixtures: small pipelines written to a temp folder, and an in-process Dask client."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "include" / "pipelines" / "retail_conversion.yaml"

# Tests never write into the checkout's data/ folder.
os.environ.setdefault("NIGHTSHIFT_HOME", "/tmp/nightshift-tests-default-home")
# As every Airflow process of a project sees it: the plugin registers the nightly timetable.
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))


# A tier whose tool this machine lacks is left out with one line saying how to run it, unless
# the variable says it is required (.ci/run sets both: there a missing tool fails the run).
NEEDS = {
    "compose": (
        "NIGHTSHIFT_REQUIRE_DOCKER",
        "the compose tier needs a running Docker daemon and docker-compose "
        "(apt-get install docker.io docker-compose); then: make test-compose",
    ),
    "compose_file": (
        "NIGHTSHIFT_REQUIRE_DOCKER",
        "the checks of docker-compose.yaml need Debian's docker-compose to resolve it (apt-get "
        "install docker-compose; no daemon needed); then: make test",
    ),
    "browser": (
        "NIGHTSHIFT_REQUIRE_BROWSER",
        "the browser tests need Debian's chromium (apt-get install chromium; "
        "Playwright downloads no browser); then: make test",
    ),
}
_left_out: list[str] = []


def missing_tool(marker: str) -> bool:
    """Whether this machine lacks what the tests marked ``marker`` need."""
    if marker == "browser":
        return not Path(os.environ.get("NIGHTSHIFT_CHROMIUM", "/usr/bin/chromium")).exists()
    if marker == "compose_file":
        return shutil.which("docker-compose") is None
    from tests.compose.stack import docker_ready  # the compose tier's own check

    try:
        return docker_ready() is not None
    except (OSError, subprocess.TimeoutExpired):
        return True


def leave_out_what_cannot_run(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tiers whose tool is missing, unless required or all that was asked for."""
    for marker, (required, how) in NEEDS.items():
        marked = [item for item in items if item.get_closest_marker(marker)]
        if not marked or len(marked) == len(items) or os.environ.get(required) == "1":
            continue  # asked for alone (make test-compose): run, and fail saying why
        if missing_tool(marker):
            config.hook.pytest_deselected(items=marked)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]
            _left_out.append(f"{len(marked)} tests not run: {how}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand the lines of what was left out to the controller."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["nightshift_left_out"] = list(_left_out)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the pytest-xdist controller: keep each worker's lines (every worker collects the
    same tests, so they say the same)."""
    for line in getattr(node, "workeroutput", {}).get("nightshift_left_out", []):
        if line not in _left_out:
            _left_out.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say, one line each, which tiers were left out and how to run them."""
    for line in _left_out:
        terminalreporter.write_line(f"nightshift: {line}", yellow=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out what this machine cannot run (above); keep a scenario module's steps in order.

    Each step of a scenario module stays in file order, wherever the order put the module.

    pytest-randomly shuffles modules and the tests inside them; its seed is printed in the
    header, ``--randomly-seed=N`` repeats an order and ``-p no:randomly`` keeps file order. A
    module that sets ``SCENARIO = True`` is one story told step by step on one expensive
    resource (the compose stack's life: up, a night, backfills, a crash, down and up again);
    its steps keep their order in the slots the shuffle gave them. Every other test passes in
    any order.
    """
    leave_out_what_cannot_run(config, items)
    keep_scenarios_in_order(items)
    if hasattr(config, "workerinput"):
        longest_tiers_first(items)


def keep_scenarios_in_order(items: list[pytest.Item]) -> None:
    """Put each scenario module's steps back in file order, in the slots the shuffle gave them."""
    slots: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if getattr(getattr(item, "module", None), "SCENARIO", False):
            slots.setdefault(str(item.path), []).append(i)
    # Each module within its own slots: mixing two scenario modules' steps would split each
    # across the other's slots, and its module fixture (the stack) would be set up twice.
    for module_slots in slots.values():
        ordered = sorted((items[i] for i in module_slots), key=_definition_line)
        for slot, item in zip(module_slots, ordered, strict=True):
            items[slot] = item


# The tiers by how long a module of each takes (the compose stack ~15 min, a slow module 2-5).
TIERS = ("compose", "slow", "e2e")


def longest_tiers_first(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: two workers, ``--dist loadfile``, each module whole on
    one worker so its module fixture starts once), hand out the longest modules first: the
    shuffle's order stays within a tier, and no worker is left alone with the compose stack at
    the end. Each module keeps its own order."""

    def tier(item: pytest.Item) -> int:
        marked = (i for i, name in enumerate(TIERS) if item.get_closest_marker(name))
        return next(marked, len(TIERS))

    rank: dict[str, int] = {}
    for item in items:
        rank[str(item.path)] = min(rank.get(str(item.path), len(TIERS)), tier(item))
    items.sort(key=lambda item: rank[str(item.path)])


def _definition_line(item: pytest.Item) -> tuple[str, int]:
    function = getattr(item, "function", None)
    line = function.__code__.co_firstlineno if function is not None else 0
    return str(item.path), line


def small_pipeline_dict(rows: int = 4000, window: int = 2, batch: int = 1500) -> dict:
    """Return the example pipeline shrunk for tests: few rows, short window, quick models."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["source"]["rows_per_day"] = rows
    data["training"].update({"window_days": window, "batch_size": batch})
    for model in data["models"]:
        if model["kind"] == "xgboost":
            model["num_boost_round"] = 30
        if model["kind"] == "sgd":
            model["epochs"] = 2
    return data


def write_pipeline(directory: Path, data: dict, name: str | None = None) -> Path:
    name = name or data["name"]
    data = {**data, "name": name}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project home with one small pipeline; lake and reports under tmp_path."""
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    write_pipeline(pipelines, small_pipeline_dict())
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(tmp_path))
    monkeypatch.setenv("NIGHTSHIFT_PIPELINES_DIR", str(pipelines))
    return tmp_path


@contextlib.contextmanager
def in_process_client() -> Iterator[Any]:
    """A new in-process Dask cluster with two single-threaded workers, and its client.

    Its scheduler never drops a worker for a late heartbeat (``worker-ttl``): in-process
    workers have no nanny to restart them, and a test run once stalled the process long enough
    (668 s, CI) that both were dropped and the next computation waited forever."""
    import dask
    from distributed import Client, LocalCluster

    with (
        dask.config.set({"distributed.scheduler.worker-ttl": None}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def dask_client() -> Iterator[object]:
    """An in-process Dask cluster with two workers, shared by one module's tests.

    Not by the whole run: one left idle through half an hour of other modules lost both its
    workers (CI, seed 3701135308; see :func:`in_process_client`), and a cluster takes a second."""
    with in_process_client() as client:
        yield client
