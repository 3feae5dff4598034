"""Every setting nightshift reads from its environment, in one table, and where things are.

A setting is read when it is asked for (:func:`setting`), never at import, so a command or a
test that sets a variable sees it. Unset, a setting has its default; set and empty, it is
empty (``NIGHTSHIFT_HOOK_PACKAGES=`` means "no hook may run"). The Dask cluster's settings are
read by ``models.cluster.plan_cluster`` from the mapping it is given (this environment, or a
test's), through :func:`setting` too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PIPELINES_DIR = PROJECT_ROOT / "include" / "pipelines"


@dataclass(frozen=True)
class Setting:
    """One environment variable nightshift reads: its name, default and meaning."""

    name: str
    default: str | None
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("NIGHTSHIFT_HOME", None, "the project folder relative locations are under"),
    Setting("NIGHTSHIFT_PIPELINES_DIR", None, "the folder of pipeline YAMLs"),
    Setting("NIGHTSHIFT_LAKE", "data/lake", "the lake of a pipeline whose output.lake is unset"),
    Setting("NIGHTSHIFT_REPORTS", "data/reports", "the reports root (output.reports unset)"),
    Setting("MLFLOW_TRACKING_URI", "data/mlflow", "MLflow's store (output.mlflow unset)"),
    Setting("NIGHTSHIFT_MLFLOW_UI_URL", None, "MLflow's UI as a person's browser reaches it"),
    Setting("NIGHTSHIFT_HOOK_PACKAGES", None, "packages a hook may come from; empty: none"),
    Setting("NIGHTSHIFT_PROFILE_DIR", None, "where stage profiles go (unset: no profiling)"),
    Setting("AIRFLOW__API__BASE_URL", None, "the Airflow UI's address, for links in reports"),
    Setting("NIGHTSHIFT_AIRFLOW_HOME", None, "the embedded Airflow's home (default .airflow)"),
    Setting("NIGHTSHIFT_API_PORT", "8080", "the embedded Airflow api-server's port"),
    Setting("NIGHTSHIFT_DASK_PORT", "8786", "the embedded Dask scheduler's port"),
    Setting("NIGHTSHIFT_DASK_DASHBOARD_PORT", "8787", "the embedded Dask dashboard's port"),
    Setting("NIGHTSHIFT_DASK_ADDRESS", None, "a running Dask scheduler the tasks use"),
    Setting("NIGHTSHIFT_HOST_ADDRESS", None, "compose: where other machines reach this host"),
    Setting("NIGHTSHIFT_DASK_CONN_ID", "nightshift_dask", "the Airflow connection naming one"),
    Setting("NIGHTSHIFT_DASK_MODE", "auto", "local or local-cuda: force a local cluster's kind"),
    Setting("NIGHTSHIFT_DASK_WORKERS", None, "a local cluster's worker count"),
    Setting("NIGHTSHIFT_DASK_MEMORY_LIMIT", "auto", "a local cluster's memory per worker"),
    Setting("NIGHTSHIFT_DASK_DEVICE_MEMORY_LIMIT", "0.8", "a GPU worker's device memory cap"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """Return setting ``name`` from ``env`` (default: this process's environment), or its
    default where it is unset."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not a nightshift setting (config.settings.SETTINGS)")
    values = os.environ if env is None else env
    return values.get(name, _BY_NAME[name].default)


def text_setting(name: str, env: Mapping[str, str] | None = None) -> str:
    """:func:`setting`, with "" for one that is unset and has no default."""
    return setting(name, env) or ""


def project_home() -> Path:
    """The folder relative locations are under: ``NIGHTSHIFT_HOME``, else the checkout."""
    return Path(setting("NIGHTSHIFT_HOME") or PROJECT_ROOT)


def pipelines_home() -> Path:
    """The folder of pipeline YAMLs: ``NIGHTSHIFT_PIPELINES_DIR``, else the shipped ones."""
    return Path(setting("NIGHTSHIFT_PIPELINES_DIR") or DEFAULT_PIPELINES_DIR)


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``s3://``, ``file://``, ``http://``...), not a path."""
    return "://" in location


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is this machine's loopback."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve(location: str) -> str:
    """Return ``location`` as is when it is a URL or an absolute path, else under the project
    home (:func:`project_home`)."""
    if is_url(location) or os.path.isabs(location):
        return location
    return str((project_home() / location).resolve())
