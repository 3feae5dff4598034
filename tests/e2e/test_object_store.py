"""The lake, reports and source files on S3: a real S3 API server (moto) on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from s3fs import S3FileSystem

from nightshift.config.pipeline import parse_pipeline
from nightshift.data.generator import generate_day
from nightshift.night.stages import run_nightly
from nightshift.ops.dask_tls import make_certificates
from nightshift.storage.lake import Lake, PartitionMissing, read_bytes, read_frame, write_parquet
from tests.conftest import REPO, small_pipeline_dict

pytestmark = pytest.mark.e2e

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "nightshift-test",
    "AWS_SECRET_ACCESS_KEY": "nightshift-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _moto(folder: Path, *tls: Path) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 (over TLS with ``tls`` = certificate, key); yield its
    endpoint; stop it by its pid."""
    port = _free_port()
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    command = [str(REPO / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    if tls:
        command += ["-c", str(tls[0]), "-k", str(tls[1])]
    log = (folder / "moto.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"moto S3 server did not start on {endpoint}")
            time.sleep(0.3)
    try:
        yield endpoint
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1; point boto/s3fs at it."""
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    with _moto(tmp_path_factory.mktemp("moto")) as endpoint:
        # Set in os.environ (not monkeypatch) so the Dask workers started by the runs inherit it.
        os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
        try:
            yield endpoint
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def test_a_store_behind_a_private_authority_is_read_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # compose's MinIO: TLS with the cluster's own authority, which AWS_CA_BUNDLE names. botocore
    # and s3fs trust it; pandas' own s3:// reading (Arrow's client) does not; read_frame reads
    # through botocore.
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]})
    files = make_certificates(tmp_path / "certs", ["127.0.0.1"])
    with _moto(tmp_path, files.cert("object-store"), files.key("object-store")) as endpoint:
        for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(files.ca))
        # s3fs keeps one instance per set of arguments, not per environment: none of the
        # plaintext store's, and none of this one's for the tests after it.
        monkeypatch.setattr(S3FileSystem, "_cache", {})
        _bucket("nightshift-tls").pipe("nightshift-tls/day.parquet", write_parquet(frame))
        read = read_frame("s3://nightshift-tls/day.parquet", ["b"])
        assert read.to_dict("list") == {"b": [3.0, 4.0]}
        with pytest.raises(OSError, match="certificate"):
            pd.read_parquet("s3://nightshift-tls/day.parquet")


def _bucket(name: str) -> fsspec.AbstractFileSystem:
    fs = fsspec.filesystem("s3")
    if not fs.exists(name):
        fs.mkdir(name)
    return fs


def test_replacing_a_partition_on_s3_never_shows_a_mix(s3_server: str) -> None:
    _bucket("lake-atomic")
    lake = Lake("s3://lake-atomic/root", "atomic")
    day = dt.date(2026, 11, 1)
    files = 6

    def write(version: int) -> None:
        with lake.writer("processed", day) as writer:
            for i in range(files):
                writer.write_bytes(f"batch-{i:05d}.parquet", f"v{version}-{i}".encode())
            writer.meta["version"] = version

    write(0)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    def read_continuously() -> None:
        while not stop.is_set():
            try:
                partition = lake.read("processed", day)
                contents = [read_bytes(p).decode() for p in partition.paths()]
            except Exception as exc:  # a missing file would mean a reader saw a half state
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            versions = {c.split("-")[0] for c in contents}
            if len(contents) != files or len(versions) != 1:
                errors.append(f"mixed or partial partition: {contents}")
            if versions != {f"v{partition.meta['version']}"}:
                errors.append(f"manifest says v{partition.meta['version']}, files say {versions}")
            seen.append(int(partition.meta["version"]))

    readers = [threading.Thread(target=read_continuously) for _ in range(3)]
    for reader in readers:
        reader.start()
    for version in range(1, 13):
        write(version)
    stop.set()
    for reader in readers:
        reader.join()

    assert errors == []
    assert len(set(seen)) >= 3, f"readers only saw versions {sorted(set(seen))}"
    assert lake.read("processed", day).meta["version"] == 12

    # A writer that fails half-way leaves the committed partition as it was, and no debris.
    fs = fsspec.filesystem("s3")
    before = sorted(fs.ls(lake.partition_uri("processed", day)))
    with pytest.raises(RuntimeError), lake.writer("processed", day) as writer:
        writer.write_bytes("batch-00000.parquet", b"v99-0")
        raise RuntimeError("worker lost")
    fs.invalidate_cache()
    assert sorted(fs.ls(lake.partition_uri("processed", day))) == before
    assert lake.read("processed", day).meta["version"] == 12
    with pytest.raises(PartitionMissing):
        lake.read("processed", day + dt.timedelta(days=1))


def test_a_nightly_run_reads_and_writes_only_s3(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = _bucket("incoming")
    _bucket("nightshift")
    day = dt.date(2026, 9, 15)
    rows = {}
    for offset in range(3):  # the run date and its two-day training window
        date = day - dt.timedelta(days=offset)
        frame = generate_day(date, rows=4000, seed=7)
        rows[date] = len(frame)
        fs.pipe_file(
            f"incoming/sessions/{date.isoformat()}.csv", frame.to_csv(index=False).encode()
        )

    data = small_pipeline_dict()
    data["source"] = {"kind": "files", "path": "s3://incoming/sessions/{date}.csv", "format": "csv"}
    # The MLflow store is a database, not object storage: in compose it is the MLflow
    # server's; here an embedded store of its own, outside the project home.
    data["output"] = {
        "lake": "s3://nightshift/lake",
        "reports": "s3://nightshift/reports",
        "mlflow": str(tmp_path / "mlflow"),
    }
    pipeline = parse_pipeline(data, "s3_test.yaml")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(home))

    results = run_nightly(pipeline, day, run_id="s3")

    report = f"nightshift/reports/retail_conversion/{day.isoformat()}"
    metrics = json.loads(fs.cat_file(f"{report}/metrics.json"))
    assert results["publish"]["report"] == f"s3://{report}/report.html"
    assert fs.cat_file(f"{report}/report.html").startswith(b"<!DOCTYPE html>")
    assert metrics["training_window"]["dates"] == ["2026-09-13", "2026-09-14"]
    assert metrics["models"]["xgboost"]["metrics"]["roc_auc"] > 0.65
    lake = Lake("s3://nightshift/lake", "retail_conversion")
    assert lake.dates("processed") == [day - dt.timedelta(days=d) for d in (2, 1, 0)]
    raw = lake.read("raw", day)
    assert raw.meta["origin"] == f"s3://incoming/sessions/{day.isoformat()}.csv"
    assert raw.meta["rows"] == rows[day]
    model = lake.read("models/xgboost", day)
    assert any(name.endswith("model.ubj") for name in model.files)
    # Nothing but the MLflow store was written to local disk.
    assert list(home.iterdir()) == []
    assert fs.exists("nightshift/reports/retail_conversion/index.html")

    # Re-running the date replaces its partitions in place: same bytes, one manifest.
    first = lake.read("processed", day)
    first_bytes = [read_bytes(p) for p in first.paths()]
    run_nightly(pipeline, day, run_id="s3-again")
    again = lake.read("processed", day)
    assert [read_bytes(p) for p in again.paths()] == first_bytes
    assert again.files[0].split("/")[0] != first.files[0].split("/")[0]  # a new version
