"""Host a local Dask cluster in this fresh interpreter until stdin closes.

``python -m nightshift.models.cluster_host '<plan json>'`` starts a ``LocalCluster`` (CPU) or
dask-cuda's ``LocalCUDACluster`` (one worker per GPU), prints ``{"address": ...}`` on one line,
and closes the cluster when its parent closes stdin or dies. See ``nightshift.models.cluster``
for why.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from distributed import LocalCluster


def start(plan: dict[str, Any]) -> LocalCluster:
    """Return a started local cluster for ``plan`` (a ``ClusterPlan`` as a dict)."""
    common: dict[str, Any] = {
        "host": "127.0.0.1",
        "scheduler_port": 0,
        "dashboard_address": "127.0.0.1:0",
        "n_workers": plan["workers"],
        "threads_per_worker": 1,
        "memory_limit": plan["memory_limit"],
    }
    if plan["mode"] == "local-cuda":
        import importlib.util

        from dask_cuda import LocalCUDACluster

        cluster: LocalCluster = LocalCUDACluster(
            **common,
            # Device memory past this fraction spills to host memory, and host memory past
            # the worker's limit spills to disk.
            device_memory_limit=plan["device_memory_limit"],
            # cuDF's own spilling, where cuDF is installed: dask-cuda 26.10 refuses to start
            # with it on and no cuDF (seen on an H100), and the gpu extra brings no cuDF.
            enable_cudf_spill=importlib.util.find_spec("cudf") is not None,
        )
        return cluster
    return LocalCluster(processes=True, **common)


def main() -> int:
    """Start the cluster argv describes (JSON), print its address, hold it until stdin closes."""
    try:
        cluster = start(json.loads(sys.argv[1]))
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    try:
        print(json.dumps({"address": cluster.scheduler_address}), flush=True)
        sys.stdin.read()  # until the parent closes the pipe or dies
    finally:
        cluster.close(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
