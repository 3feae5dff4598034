"""The benchmark's own tools, run small so they cannot rot between `make bench` runs: the
hand-written baseline script (P1's yardstick) and the stage profiles."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from nightshift.config.pipeline import find_pipeline
from nightshift.config.profiling import PROFILE_ENV, top_lines
from nightshift.night.inputs import training_paths
from nightshift.night.stages import Stage, run_nightly
from tests.conftest import REPO

pytestmark = pytest.mark.e2e
DAY = dt.date(2026, 9, 15)


def test_profiled_night_then_the_baseline_script_on_the_same_lake(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "profile"
    monkeypatch.setenv(PROFILE_ENV, str(folder))
    pipeline = find_pipeline("retail_conversion")
    results = run_nightly(pipeline, DAY, run_id="profiled")
    assert set(results) == set(Stage)
    for stage in Stage:
        assert (folder / f"{stage}.prof").stat().st_size > 0
        assert "cumulative" in (folder / f"{stage}.txt").read_text()
    assert "train_xgboost" in top_lines(folder / "train_distributed.prof", 60)
    assert (folder / "train_distributed-dask.html").stat().st_size > 10_000

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    sys.modules.pop("baseline_script", None)
    import baseline_script

    paths, _ = training_paths(pipeline, DAY)
    script = baseline_script.run(pipeline, DAY, paths)
    assert set(script["steps"]) >= {"ingest", "validate", "train_xgboost", "train_sgd"}
    assert script["auc"]["xgboost"] > 0.65
    assert script["rows"]["held_out"] == results["validate"]["rows"][DAY.isoformat()]
