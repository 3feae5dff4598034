"""Dask across machines, secured: a real scheduler over TLS with mutual authentication, started
as users start one (``dask scheduler``), with certificates from ``nightshift dask-certs``.

A worker with the cluster's certificate joins and computes; a plaintext worker and one whose
certificate another authority signed are refused; so is a client without the certificates.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightshift.ops.dask_tls import TlsFiles, role_env

pytestmark = pytest.mark.e2e
DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _certs(folder: Path) -> TlsFiles:
    subprocess.run(
        [sys.executable, "-m", "nightshift.cli", "dask-certs", str(folder), "--host", "127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return TlsFiles(folder)


def _env(extra: dict[str, str]) -> dict[str, str]:
    plain = {k: v for k, v in os.environ.items() if not k.startswith("DASK_DISTRIBUTED__COMM")}
    return {**plain, **extra}


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TlsFiles, Path]]:
    """A TLS scheduler on loopback, and one worker with the cluster's certificate."""
    folder = tmp_path_factory.mktemp("dask-tls")
    files = _certs(folder / "certs")
    address = f"tls://127.0.0.1:{_free_port()}"
    scheduler = _start(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]],
        _env({**role_env(files, "scheduler"), "DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME": "tls"}),
        folder / "scheduler.log",
    )
    worker = _start(
        [DASK, "worker", address, "--nthreads", "1", "--name", "good", "--no-dashboard"],
        _env(role_env(files, "worker")),
        folder / "worker.log",
    )
    try:
        yield address, files, folder
    finally:
        _stop(worker)
        _stop(scheduler)


def _client(address: str, files: TlsFiles) -> object:
    from distributed import Client
    from distributed.security import Security

    security = Security(
        tls_ca_file=str(files.ca),
        tls_client_cert=str(files.cert("client")),
        tls_client_key=str(files.key("client")),
        require_encryption=True,
    )
    return Client(address, security=security, timeout=30)


def _refused(command: list[str], env: dict[str, str], log: Path) -> str:
    """Run a worker that must not join; return what it said."""
    process = _start(command, env, log)
    time.sleep(12)
    _stop(process)
    return log.read_text()


def test_a_worker_with_the_clusters_certificate_joins_and_computes(cluster) -> None:
    address, files, _ = cluster
    client = _client(address, files)
    try:
        client.wait_for_workers(1, timeout=60)
        names = [w["name"] for w in client.scheduler_info()["workers"].values()]
        assert names == ["good"] and all(a.startswith("tls://") for a in client.has_what())
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
    finally:
        client.close()


def _handshakes(folder: Path) -> list[str]:
    """The scheduler's log lines of refused TLS handshakes."""
    log = (folder / "scheduler.log").read_text()
    return [line for line in log.splitlines() if "TLS handshake failed" in line]


def test_a_plaintext_worker_and_a_foreign_certificate_are_refused(cluster, tmp_path) -> None:
    address, files, folder = cluster
    plain = "tcp://" + address.split("://", 1)[1]
    said = _refused(
        [DASK, "worker", plain, "--name", "plaintext", "--no-dashboard", "--death-timeout", "8"],
        _env({}),
        tmp_path / "plaintext.log",
    )
    assert "failed to start" in said
    [refusal] = _handshakes(folder)
    assert "WRONG_VERSION_NUMBER" in refusal, refusal  # it spoke plaintext to a TLS listener
    print(f"plaintext worker, the scheduler: {refusal}")
    foreign = _certs(tmp_path / "foreign")  # another authority: not this cluster's
    said = _refused(
        [DASK, "worker", address, "--name", "foreign", "--no-dashboard", "--death-timeout", "8"],
        _env(role_env(foreign, "worker")),
        tmp_path / "foreign.log",
    )
    mismatch = next(line for line in said.splitlines() if "TLS certificate does not match" in line)
    assert "CERTIFICATE_VERIFY_FAILED" in said
    refusal = _handshakes(folder)[-1]
    print(f"foreign certificate, the worker: {mismatch}; the scheduler: {refusal}")
    client = _client(address, files)
    try:
        names = [w["name"] for w in client.scheduler_info()["workers"].values()]
        assert names == ["good"], names  # neither joined
    finally:
        client.close()
