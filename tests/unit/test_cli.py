"""The CLI's environment for the airflow command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_env_lets_a_shell_run_this_virtualenvs_airflow(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nightshift.cli", "env"],
        env={"NIGHTSHIFT_AIRFLOW_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert f"export AIRFLOW_HOME={tmp_path / 'home'}" in out
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=" in out
    path = subprocess.run(
        ["bash", "-c", f"{out}\ncommand -v airflow"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert path == str(Path(sys.executable).parent / "airflow")
