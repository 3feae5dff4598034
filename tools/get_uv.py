"""Put a pinned uv binary in a folder, with nothing but the Python standard library.

`make setup` needs uv, and a distribution's Python cannot `pip install` it (PEP 668,
"externally-managed-environment"; Debian's python3 has no pip or venv at all unless
python3-pip/python3-venv are installed). uv is published on PyPI as a wheel that holds just
its binary, so this downloads that wheel from the package index, checks it against the
sha256 pinned below (a mirror cannot change what runs), and unpacks the binary.

    python3 tools/get_uv.py .tools/bin      # -> .tools/bin/uv

The index is PyPI's unless UV_DEFAULT_INDEX, UV_INDEX_URL or PIP_INDEX_URL names a mirror
(any index with the standard JSON API, PEP 691).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

VERSION = "0.13.9"
# The wheel for each (system, machine, libc) and its sha256, copied from PyPI's index.
WHEELS: dict[tuple[str, str, str], tuple[str, str]] = {
    ("Linux", "x86_64", "glibc"): (
        "manylinux_2_17_x86_64.manylinux2014_x86_64",
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    ),
    ("Linux", "x86_64", "musl"): (
        "musllinux_1_1_x86_64",
        "2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25",
    ),
    ("Linux", "aarch64", "glibc"): (
        "manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64",
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
    ),
    ("Linux", "aarch64", "musl"): (
        "manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64",
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
    ),
    ("Darwin", "x86_64", ""): (
        "macosx_10_12_x86_64",
        "c16ed11e013557536b3e60065f1b912f6407bd6518e041b961e23ef9e6b4fbf5",
    ),
    ("Darwin", "arm64", ""): (
        "macosx_11_0_arm64",
        "66c512266d633bef48384a1f53003f41f2a8e7b36fe6e7fbfd3e0fd52d96fa63",
    ),
}
MANUAL = "install uv yourself (https://docs.astral.sh/uv/) and run make again"


def this_platform() -> tuple[str, str, str]:
    """Return (system, machine, libc) as the WHEELS table names them."""
    system, machine = platform.system(), platform.machine()
    machine = {"amd64": "x86_64", "arm64": "arm64" if system == "Darwin" else "aarch64"}.get(
        machine.lower(), machine
    )
    if system != "Linux":
        return system, machine, ""
    return system, machine, "glibc" if platform.libc_ver()[0] == "glibc" else "musl"


def index_url() -> str:
    """Return the package index to read, PyPI's unless the environment names another."""
    for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        if os.environ.get(name):
            return os.environ[name].rstrip("/")
    return "https://pypi.org/simple"


def wheel_url(index: str, filename: str) -> str:
    """Return where ``filename`` is on ``index`` (its PEP 691 page for uv)."""
    request = urllib.request.Request(
        f"{index}/uv/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        page = json.load(response)
    for entry in page["files"]:
        if entry["filename"] == filename:
            return urllib.request.urljoin(f"{index}/uv/", entry["url"])
    raise SystemExit(f"get_uv: {index} has no {filename}; {MANUAL}")


def download(url: str, sha256: str, into: Path) -> Path:
    """Download ``url`` into the folder ``into``; refuse it unless its sha256 matches."""
    target = into / "uv.whl"
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=300) as response, target.open("wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"get_uv: {url} has sha256 {digest.hexdigest()}, expected {sha256}")
    return target


def unpack_binary(wheel: Path, folder: Path) -> Path:
    """Write the wheel's ``uv`` binary to ``folder/uv`` (atomically), executable."""
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".data/scripts/uv"))
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / ".uv.partial"
        partial.write_bytes(archive.read(member))
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return partial.replace(folder / "uv")


def main(argv: list[str]) -> int:
    """Install uv into the folder named by ``argv[0]``; print where it went."""
    if len(argv) != 1:
        print("usage: python3 tools/get_uv.py FOLDER", file=sys.stderr)
        return 2
    where = this_platform()
    if where not in WHEELS:
        print(f"get_uv: no pinned uv wheel for {where}; {MANUAL}", file=sys.stderr)
        return 1
    tag, sha256 = WHEELS[where]
    filename = f"uv-{VERSION}-py3-none-{tag}.whl"
    index = index_url()
    print(f"get_uv: uv {VERSION} from {index} ({filename})", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = download(wheel_url(index, filename), sha256, Path(scratch))
        binary = unpack_binary(wheel, Path(argv[0]))
    print(f"get_uv: {binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
