from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from nightshift.lake import Lake, PartitionMissing

DAY = dt.date(2026, 5, 1)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_commit_then_read(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), "demo")
    with lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"a")
        writer.write_bytes("batch-00001.parquet", b"b")
        writer.meta["rows"] = 2
    partition = lake.read("raw", DAY)
    assert [Path(p).read_bytes() for p in partition.paths()] == [b"a", b"b"]
    assert partition.meta == {"rows": 2}
    assert lake.dates("raw") == [DAY]


def test_rewrite_replaces_and_leaves_other_dates_alone(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), "demo")
    other = DAY + dt.timedelta(days=1)
    for day, payload in ((DAY, b"old"), (other, b"other")):
        with lake.writer("raw", day) as writer:
            writer.write_bytes("batch-00000.parquet", payload)
    with lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"new")
    assert [Path(p).read_bytes() for p in lake.read("raw", DAY).paths()] == [b"new"]
    assert [Path(p).read_bytes() for p in lake.read("raw", other).paths()] == [b"other"]
    # Replaced, not appended: the manifest names only the new version's file.
    assert len(lake.read("raw", DAY).files) == 1


def test_stale_versions_are_removed_after_the_grace_period(tmp_path: Path, monkeypatch) -> None:
    from nightshift import lake as lake_module

    lake = Lake(str(tmp_path), "demo")
    for payload in (b"one", b"two"):
        with lake.writer("raw", DAY) as writer:
            writer.write_bytes("batch-00000.parquet", payload)
    partition = tmp_path / "demo/raw/date=2026-05-01"
    assert len([p for p in partition.iterdir() if p.is_dir()]) == 2  # the old one, in grace
    monkeypatch.setattr(lake_module, "STALE_AFTER", dt.timedelta(seconds=-5))
    with lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"three")
    assert len([p for p in partition.iterdir() if p.is_dir()]) == 1


def test_failed_write_leaves_the_old_partition_visible(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), "demo")
    with lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"good")
    before = _files(tmp_path)
    with pytest.raises(RuntimeError), lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"half")
        raise RuntimeError("crash mid-write")
    assert [Path(p).read_bytes() for p in lake.read("raw", DAY).paths()] == [b"good"]
    assert _files(tmp_path) == before  # the aborted version was removed


def test_first_write_that_fails_leaves_no_partition(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), "demo")
    with pytest.raises(ValueError), lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"x")
        raise ValueError("bad data")
    assert not lake.has("raw", DAY)
    with pytest.raises(PartitionMissing, match="no committed 'raw' partition for 2026-05-01"):
        lake.read("raw", DAY)


def test_a_concurrent_writers_version_survives_another_commit(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), "demo")
    with lake.writer("raw", DAY) as first, lake.writer("raw", DAY) as second:
        second.write_bytes("batch-00000.parquet", b"second")
        first.write_bytes("batch-00000.parquet", b"first")
    # `first` committed last; `second`'s files were not deleted under it while it wrote.
    assert [Path(p).read_bytes() for p in lake.read("raw", DAY).paths()] == [b"first"]


def test_file_names_are_plain(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), "demo")
    with pytest.raises(ValueError, match="plain names"), lake.writer("raw", DAY) as writer:
        writer.path("../escape.parquet")
