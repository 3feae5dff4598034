"""Unit-tier fixtures shared by the compose and production-check tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

ENV_EXAMPLE = REPO / ".env.example"


@pytest.fixture
def filled_env(tmp_path: Path) -> Path:
    """``.env.example`` with every empty value filled with a long secret, as a user does."""
    filled = "secret-{}-of-the-deployment-made-long-enough"
    lines = [
        f"{line}{filled.format(index)}" if re.fullmatch(r"[A-Z_]+=", line) else line
        for index, line in enumerate(ENV_EXAMPLE.read_text().splitlines())
    ]
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path
