"""Optional profiles of the stages, for finding where a night's time goes.

With ``NIGHTSHIFT_PROFILE_DIR`` set (in the environment of the Airflow tasks, or of
``nightshift run``), each stage's body runs under ``cProfile`` and leaves ``<stage>.prof``
(open with ``python -m pstats`` or snakeviz) and ``<stage>.txt`` (its top lines by cumulative
time) in that folder; ``train_distributed`` also leaves Dask's performance report,
``train_distributed-dask.html``, whose worker profile shows what the workers did (it
needs bokeh, as Dask's dashboard does). Unset (the default), nothing is measured and nothing
is written.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib.util
import io
import logging
import pstats
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nightshift.config.settings import text_setting

PROFILE_ENV = "NIGHTSHIFT_PROFILE_DIR"
TOP_LINES = 25

log = logging.getLogger(__name__)


def profile_dir() -> Path | None:
    """Return the folder profiles go to, or None when profiling is off."""
    folder = text_setting(PROFILE_ENV).strip()
    return Path(folder) if folder else None


@contextlib.contextmanager
def profiled(stage: str) -> Iterator[None]:
    """Profile the block as ``stage`` when profiling is on; otherwise do nothing."""
    folder = profile_dir()
    if folder is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        folder.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(folder / f"{stage}.prof")
        (folder / f"{stage}.txt").write_text(top_lines(profiler))


def top_lines(profile: cProfile.Profile | Path, count: int = TOP_LINES) -> str:
    """Return the ``count`` top lines of a profile (or of a saved one), by cumulative time."""
    text = io.StringIO()
    stats = pstats.Stats(str(profile) if isinstance(profile, Path) else profile, stream=text)
    stats.strip_dirs().sort_stats("cumulative").print_stats(count)
    return text.getvalue()


def dask_report(stage: str) -> Any:
    """Dask's performance report of the block as ``<stage>-dask.html`` when profiling is on."""
    folder = profile_dir()
    if folder is None:
        return contextlib.nullcontext()
    if importlib.util.find_spec("bokeh") is None:
        log.warning("no Dask performance report for %s: it needs bokeh (pip install bokeh)", stage)
        return contextlib.nullcontext()
    from distributed import performance_report

    folder.mkdir(parents=True, exist_ok=True)
    return performance_report(filename=str(folder / f"{stage}-dask.html"))
