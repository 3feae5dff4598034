"""Write a filled ``.env`` for docker-compose.yaml: every secret generated, ports chosen.

    python3 compose/make_env.py > .env                      # fresh secrets, the example's ports
    python3 compose/make_env.py --free-ports --stand-ins    # as the compose tests run it

Reads ``.env.example`` beside docker-compose.yaml and keeps its comments and settings; only
empty values (the secrets) are filled, the Fernet key with a valid key. ``--free-ports`` picks
free loopback ports for every published port (beside a local ``make up``); ``--stand-ins``
builds the nightshift image on the local stand-in Python (compose/stand-ins/build.sh).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import socket
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
PORTS = (
    "AIRFLOW_PORT",
    "MLFLOW_PORT",
    "MINIO_CONSOLE_PORT",
    "MINIO_PORT",
    "DASK_DASHBOARD_PORT",
    "DASK_SCHEDULER_PORT",
)


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def secret() -> str:
    """Return a random secret for .env that never starts with "-": some reach a command line
    (`airflow users create --password ...`), where argparse would take it for an option.
    token_urlsafe(24) starts with "-" one time in 64; seen once in CI."""
    value = secrets.token_urlsafe(24)
    while value.startswith("-"):
        value = secrets.token_urlsafe(24)
    return value


# Settings whose empty value means something (no hook package allowed), not "generate one".
EMPTY_ON_PURPOSE = {"NIGHTSHIFT_HOOK_PACKAGES"}


def filled(example: str, free_ports: bool, extra: dict[str, str]) -> str:
    """Return ``example`` (the text of .env.example) with every value a deployment needs."""
    values = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, flags=re.M))
    if free_ports:
        values.update({name: str(free_port()) for name in PORTS})
    values["AIRFLOW_BASE_URL"] = f"http://127.0.0.1:{values['AIRFLOW_PORT']}"
    values["MLFLOW_UI_URL"] = f"http://127.0.0.1:{values['MLFLOW_PORT']}"
    for name, value in values.items():
        if name == "AIRFLOW_FERNET_KEY":
            values[name] = base64.urlsafe_b64encode(os.urandom(32)).decode()
        elif value == "" and name not in EMPTY_ON_PURPOSE:
            values[name] = secret()
    values.update(extra)
    lines = [
        f"{m.group(1)}={values[m.group(1)]}" if (m := re.fullmatch(r"([A-Z_]+)=.*", line)) else line
        for line in example.splitlines()
    ]
    known = set(re.findall(r"^([A-Z_]+)=", example, flags=re.M))
    lines += [f"{name}={value}" for name, value in extra.items() if name not in known]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--free-ports", action="store_true", help="free loopback ports")
    parser.add_argument("--stand-ins", action="store_true", help="build on the stand-in Python")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    if args.stand_ins:
        extra["NIGHTSHIFT_BASE_IMAGE"] = "nightshift-stand-in/python:3.11"
    sys.stdout.write(filled(EXAMPLE.read_text(), args.free_ports, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
