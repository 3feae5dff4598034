"""A newcomer's first hour: the README's two commands on stock Debian with only `python3 git
make` from apt (no pip, no venv: PEP 668), here Debian 13's Python 3.13, in a container.

The checkout's files (as git lists them) are copied into the container; `make demo` must get
from nothing to a report, and `make test-fast` must pass, where the compose tier and the
browser tests are left out with one line each (no Docker, no chromium there).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.compose.stack import docker_ready
from tests.conftest import REPO

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3000)]

SCRIPT = r"""
set -euo pipefail
mkdir -p /home/newcomer/nightshift && cd /home/newcomer/nightshift && tar -x
python3 -m pip --version 2>&1 | head -1 || true
started=$(date +%s); make demo; echo "DEMO_SECONDS=$(( $(date +%s) - started ))"
du -sh .venv | sed 's/^/VENV_AFTER_DEMO=/'
started=$(date +%s); make test-fast; echo "TEST_FAST_SECONDS=$(( $(date +%s) - started ))"
"""


def test_make_demo_and_make_test_fast_on_stock_debian_with_python_3_13() -> None:
    problem = docker_ready()
    assert problem is None, problem
    image = subprocess.check_output(
        ["bash", str(REPO / "tests/newcomer/build.sh"), "trixie"], text=True, timeout=1200
    ).strip()
    files = subprocess.check_output(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO
    )
    tree = subprocess.run(
        ["tar", "--null", "-T", "-", "-c"], input=files, cwd=REPO, capture_output=True, check=True
    ).stdout
    name = f"nightshift-newcomer-{int(time.time())}"
    started = time.monotonic()
    try:
        run = subprocess.run(
            ["docker", "run", "--rm", "-i", "--name", name, image, "bash", "-c", SCRIPT],
            input=tree,
            capture_output=True,
            timeout=2700,
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    out = run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    print(out[-6000:], f"\ncontainer: {time.monotonic() - started:.0f} s")
    assert run.returncode == 0, out[-4000:]
    assert "No module named pip" in out  # a distribution's Python, as a newcomer has it
    assert re.search(r"report:  /home/newcomer/nightshift/data/reports/\S+/report.html", out)
    assert re.search(r"xgboost: .*roc_auc 0\.7\d", out), out[-3000:]
    assert re.search(
        r"nightshift: \d+ tests not run: the browser tests need Debian's chromium", out
    )
    assert re.search(r"nightshift: \d+ tests not run: the checks of docker-compose.yaml", out)
    assert re.search(r"\d+ passed", out) and not re.search(r"\d+ failed", out)
