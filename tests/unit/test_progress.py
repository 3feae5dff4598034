"""Progress lines: each tenth of the way and the end, never one per step."""

from __future__ import annotations

import logging

import pytest

from nightshift.config.progress import Progress


@pytest.mark.parametrize(("total", "lines"), [(1000, 10), (25, 9), (3, 3), (1, 1)])
def test_a_step_logs_at_most_ten_lines_and_always_its_end(
    caplog: pytest.LogCaptureFixture, total: int, lines: int
) -> None:
    caplog.set_level(logging.INFO, logger="nightshift.progress")
    progress = Progress("p 2026-01-02 preprocess", total, "batch")
    for _ in range(total):
        progress.advance()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == lines, said
    assert said[-1] == f"p 2026-01-02 preprocess: batch {total}/{total} (100%)"
