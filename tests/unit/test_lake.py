from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from nightshift.storage.lake import (
    Lake,
    PartitionMissing,
    read_frame,
    recorded_per_file,
    write_parquet,
)

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
    from nightshift.storage import lake as lake_module

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


def test_a_replaced_version_is_kept_for_the_grace_period_from_its_replacement(
    tmp_path: Path, monkeypatch
) -> None:
    """A night that recorded a window partition's files (inputs.json) still reads them when
    a backfill replaces that partition under it, however old the partition was."""
    from nightshift.storage import lake as lake_module

    lake = Lake(str(tmp_path), "demo")
    now = dt.datetime.now(dt.UTC)
    monkeypatch.setattr(lake_module, "_now", lambda: now - dt.timedelta(days=2))
    with lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"two days old")
    held = lake.read("raw", DAY).paths()  # what tonight's fit_features recorded
    monkeypatch.setattr(lake_module, "_now", lambda: now)
    with lake.writer("raw", DAY) as writer:  # a backfill re-processes the day
        writer.write_bytes("batch-00000.parquet", b"replaced")
    assert [Path(p).read_bytes() for p in held] == [b"two days old"]
    # Past the grace period from the replacement, the next commit removes it.
    later = now + lake_module.STALE_AFTER + dt.timedelta(minutes=1)
    monkeypatch.setattr(lake_module, "_now", lambda: later)
    with lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"again")
    assert not any(Path(p).exists() for p in held)
    assert [Path(p).read_bytes() for p in lake.read("raw", DAY).paths()] == [b"again"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_write_that_fails_half_way_leaves_the_old_partition_and_no_temp_file(
    tmp_path: Path, monkeypatch, failing: str
) -> None:
    """A full disk (ENOSPC) at any step of a data file's or the manifest's write: the old
    manifest and files are as they were, and no .tmp-* file is left behind."""
    import errno
    import os

    from nightshift.storage import lake as lake_module

    lake = Lake(str(tmp_path), "demo")
    with lake.writer("raw", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"good")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real = getattr(os, failing)

    def full_disk(*args):
        if failing == "fsync" or str(args[1]).endswith(("batch-00000.parquet", "_MANIFEST.json")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    for step in ("data file", "manifest"):
        writer = lake_module.PartitionWriter(lake.partition_uri("raw", DAY), DAY)
        if step == "manifest":
            writer.write_bytes("batch-00000.parquet", b"new")
        monkeypatch.setattr(lake_module.os, failing, full_disk)
        with pytest.raises(OSError, match="No space left"):
            if step == "data file":
                writer.write_bytes("batch-00000.parquet", b"new")
            else:
                writer.commit()
        monkeypatch.setattr(lake_module.os, failing, real)
        assert not [p for p in tmp_path.rglob(".tmp-*")], step
        writer.abort()  # as Lake.writer does when its block raises
    assert [Path(p).read_bytes() for p in lake.read("raw", DAY).paths()] == [b"good"]
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_lake_files_are_created_private_whatever_the_umask(tmp_path: Path) -> None:
    """Raw batches and reports show example values: never world-readable, from creation on."""
    import os
    import stat

    from nightshift.storage.lake import write_bytes_atomic

    old = os.umask(0o022)
    try:
        lake = Lake(str(tmp_path), "demo")
        with lake.writer("raw", DAY) as writer:
            writer.write_bytes("batch-00000.parquet", b"values")
        write_bytes_atomic(str(tmp_path / "reports" / "report.html"), b"<html>")
    finally:
        os.umask(old)
    for path in [*lake.read("raw", DAY).paths(), str(tmp_path / "reports" / "report.html")]:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o007 == 0, path


def test_a_files_recorded_value_is_its_versions_and_none_once_replaced(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), "demo")
    with lake.writer("processed", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"a")
        writer.write_bytes("batch-00001.parquet", b"b")
        writer.meta.update({"rows_per_batch": [10, 7], "backend": "pandas"})
    old = lake.read("processed", DAY).paths()
    assert recorded_per_file(old, "rows_per_batch") == [10, 7]
    assert recorded_per_file(old, "backend") == [None, None]  # not a per-file list
    with lake.writer("processed", DAY) as writer:
        writer.write_bytes("batch-00000.parquet", b"c")
        writer.meta["rows_per_batch"] = [3]
    new = lake.read("processed", DAY).paths()
    # A night that listed the old version reads its files still; their counts are the
    # footers' to give, not the new version's.
    assert recorded_per_file([*old, *new], "rows_per_batch") == [None, None, 3]
    assert recorded_per_file([f"{tmp_path}/nowhere/v-1/batch-00000.parquet"], "x") == [None]


def test_a_stores_file_is_read_whole_in_one_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec
    import pandas as pd
    from fsspec.implementations.memory import MemoryFileSystem

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    fsspec.filesystem("memory").pipe("/lake/day.parquet", write_parquet(frame))
    calls: list[str] = []
    real_cat = MemoryFileSystem.cat_file

    def cat_file(self, path, *args, **kwargs):
        calls.append(path)
        return real_cat(self, path, *args, **kwargs)

    def ranged(self, *args, **kwargs):
        raise AssertionError("read in ranges: a request per range on an object store")

    monkeypatch.setattr(MemoryFileSystem, "cat_file", cat_file)
    monkeypatch.setattr(MemoryFileSystem, "open", ranged)
    pd.testing.assert_frame_equal(read_frame("memory://lake/day.parquet"), frame)
    assert read_frame("memory://lake/day.parquet", ["b"]).to_dict("list") == {"b": ["x", "y"]}
    assert calls == ["/lake/day.parquet"] * 2
