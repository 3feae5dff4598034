"""Time each stage of one nightly run of the example pipeline, in one process.

Prints seconds per stage and each stage's share of the run, plus a baseline measured in the
same run: reading the run date's raw batches with bare pyarrow, so preprocessing can be read
as a multiple of the I/O it cannot avoid. Targets come later (see bench/README.md).

    .venv/bin/python bench/stages.py [--rows 200000] [--window 7] [--date 2026-11-20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time

import pyarrow.parquet as pq

from nightshift.config.pipeline import find_pipeline
from nightshift.data.ingest import RAW
from nightshift.night.stages import run_nightly
from nightshift.storage.lake import lake_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", default="retail_conversion")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 20))
    args = parser.parse_args()

    os.environ["NIGHTSHIFT_HOME"] = tempfile.mkdtemp(prefix="nightshift-bench-")
    pipeline = find_pipeline(args.pipeline)
    pipeline = pipeline.model_copy(
        update={
            "source": pipeline.source.model_copy(update={"rows_per_day": args.rows}),
            "training": pipeline.training.model_copy(update={"window_days": args.window}),
        }
    )
    started = time.perf_counter()
    results = run_nightly(pipeline, args.date, run_id="bench")
    total = time.perf_counter() - started

    raw = lake_for(pipeline).read(RAW, args.date)
    t0 = time.perf_counter()
    for path in raw.paths():
        pq.read_table(path)
    baseline = time.perf_counter() - t0

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    print(
        f"pipeline {pipeline.name}, date {args.date}, {args.rows:,} rows/day, "
        f"window {args.window} days (first run: {len(results['ingest']['dates'])} days "
        "ingested and processed)"
    )
    print(f"{'stage':<20}{'seconds':>10}{'share':>9}")
    for stage, result in results.items():
        print(f"{stage:<20}{result['seconds']:>10.2f}{result['seconds'] / total:>9.1%}")
    print(f"{'total':<20}{total:>10.2f}{1:>9.0%}")
    per_day = results["preprocess"]["seconds"] / len(results["ingest"]["dates"])
    print(
        f"baseline: pyarrow read of the run date's raw batches {baseline:.3f}s; "
        f"preprocess per day / baseline = {per_day / baseline:.1f}x"
    )
    best = results["evaluate"]["best"]
    skip = ("seconds", "evaluation", "best")
    headline = {k: v for k, v in results["evaluate"].items() if k not in skip}
    print(f"best model {best}: {headline}")
    print(f"report: {results['publish']['report']}")


if __name__ == "__main__":
    main()
