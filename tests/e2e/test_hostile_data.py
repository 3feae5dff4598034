"""A nightly run over a user's files full of markup: every page it writes shows it as text.

The files' category values, an extra column's name, a schema column's name and the
pipeline's description carry HTML and script. The run is the real one (ingest to publish,
in process); each page it writes (report, the index beside the reports, a blocked date's
page) is parsed with html5lib and must hold no element or attribute of the payloads.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.config.pipeline import parse_pipeline
from nightshift.data.generator import generate_day
from nightshift.data.ingest import ingest_date
from nightshift.data.validate import DataValidationError
from nightshift.night.stages import run_nightly, validate
from nightshift.storage.lake import Lake
from tests.conftest import small_pipeline_dict
from tests.hostile import BREAKOUT, IMG, LINK, QUOTE, SCRIPT, assert_inert

pytestmark = pytest.mark.e2e

DAY = dt.date(2026, 9, 15)
BLOCKED = dt.date(2026, 9, 16)
NOTE = QUOTE  # a string column of the schema whose name is a payload
CHANNELS = ["web", "ios", "android", "partner", "email"]


def _day_file(folder: Path, date: dt.date) -> Path:
    frame = generate_day(date, rows=1500, seed=7)
    rows = np.arange(len(frame))
    frame.loc[rows % 7 == 0, "channel"] = SCRIPT  # a segment and a drifting category
    frame.loc[rows % 11 == 0, "country"] = LINK
    frame[NOTE] = np.where(rows % 2 == 0, IMG, None)
    frame[BREAKOUT] = 1  # a column the schema does not know
    path = folder / f"{date.isoformat()}.csv"
    frame.to_csv(path, index=False)
    return path


def _pipeline(tmp_path: Path, categories: str = "warn"):
    data = small_pipeline_dict(rows=1500, window=2, batch=2000)
    data["description"] = f"{SCRIPT} {IMG}"
    data["source"] = {"kind": "files", "path": str(tmp_path / "in" / "{date}.csv"), "format": "csv"}
    data["schema"]["columns"].append({"name": NOTE, "type": "string"})
    data["validation"] = {
        "categories": {"channel": CHANNELS},
        "severity": {"categories": categories},
    }
    data["output"] = {
        "lake": str(tmp_path / "lake"),
        "reports": str(tmp_path / "reports"),
        "mlflow": str(tmp_path / "mlflow"),
    }
    return parse_pipeline(data, "hostile.yaml")


def test_a_run_over_hostile_files_shows_every_value_as_text(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for offset in range(-2, 2):
        _day_file(tmp_path / "in", DAY + dt.timedelta(days=offset))
    pipeline = _pipeline(tmp_path)
    results = run_nightly(pipeline, DAY, run_id="manual__hostile")
    report = Path(results["publish"]["report"]).read_text()
    # Segment table, validation warnings (file, column, examples), missing-rate table.
    assert_inert(report, [SCRIPT, BREAKOUT, NOTE, "channel failed"])
    assert "<td>&lt;script&gt;alert(&#39;script&#39;)&lt;/script&gt;</td>" in report
    index = (tmp_path / "reports" / pipeline.name / "index.html").read_text()
    assert_inert(index, [f"{SCRIPT} {IMG}"])

    # The same files, with category values that block: the blocked date's page.
    strict = _pipeline(tmp_path, categories="block")
    lake = Lake(strict.lake_root(), strict.name)
    landing = {f.name: f.read_bytes() for f in sorted((tmp_path / "in").iterdir())}
    ingest_date(strict, lake, BLOCKED)
    with pytest.raises(DataValidationError):
        validate(strict, [BLOCKED], BLOCKED)
    # The user's files are as they were: quarantine holds a copy.
    assert {f.name: f.read_bytes() for f in sorted((tmp_path / "in").iterdir())} == landing
    page = tmp_path / "reports" / strict.name / BLOCKED.isoformat() / "validation.html"
    assert_inert(page.read_text(), [SCRIPT, BREAKOUT])
    frame = pd.read_csv(tmp_path / "in" / f"{DAY.isoformat()}.csv")
    assert set(frame["channel"]) == {*CHANNELS, SCRIPT}
