"""The stages' results: typed records whose XCom form is plain JSON and reads back the same."""

from __future__ import annotations

import datetime as dt
import json

from nightshift.night.results import Evaluated, Ingested, Trained, Validated

DAY = dt.date(2026, 11, 21)


def test_a_result_goes_through_xcom_and_comes_back_with_its_dates() -> None:
    landed = Ingested(
        partition_date=DAY,
        dates=[DAY - dt.timedelta(days=1), DAY],
        raw={DAY: "lake/raw/date=2026-11-21"},
        seconds=1.5,
    )
    xcom = json.loads(json.dumps(landed.to_xcom()))  # what Airflow stores
    assert xcom["partition_date"] == "2026-11-21" and xcom["dates"] == ["2026-11-20", "2026-11-21"]
    assert Ingested.from_xcom(xcom) == landed
    passed = Validated(dates=[DAY], rows={DAY: 12}, skipped={DAY - dt.timedelta(1): "why"})
    assert Validated.from_xcom(json.loads(json.dumps(passed.to_xcom()))) == passed


def test_the_xcom_keeps_the_keys_each_stage_always_had() -> None:
    assert set(Trained(models={"sgd": "uri"}, kept_bytes=0).to_xcom()) == {
        "models",
        "kept_bytes",
        "seconds",
        "cpu_seconds",
    }
    assert "device" in Trained(device="cpu").to_xcom()
    assert "kept_bytes" not in Trained(device="cpu").to_xcom()
    scored = Evaluated(evaluation="uri", best="xgboost", metric="roc_auc", value=0.83)
    xcom = scored.to_xcom()
    assert xcom["roc_auc"] == 0.83 and "metric" not in xcom
    assert Evaluated.from_xcom(xcom) == scored
