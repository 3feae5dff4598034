"""How far a long step is, as a few log lines: batches preprocessed, boosting rounds, SGD batches.

A step reports each tenth of the way and its end, never more: a 10,000-batch day writes ten
lines to the task log (and to ``nightshift run``'s terminal), not 10,000. XGBoost's rounds run
on the Dask workers; rank 0 reports them as Dask events, which the training client logs.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("nightshift.progress")

# The Dask event topic on which workers report boosting rounds to the client.
TOPIC = "nightshift-progress"


class Progress:
    """Count steps of one thing and log ``what: unit n/total (p%)`` at each tenth and the end."""

    def __init__(self, what: str, total: int, unit: str, parts: int = 10, say: Any = None) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.every = max(1, -(-total // parts))  # ceil: at most ``parts`` lines
        self.say = say  # where a line goes (default: this module's logger)

    def advance(self, steps: int = 1) -> None:
        """Record ``steps`` more done; say so when that crosses a tenth or finishes."""
        before, self.done = self.done, min(self.total, self.done + steps)
        if self.done == self.total or self.done // self.every > before // self.every:
            (self.say or log.info)(self.line())

    def line(self) -> str:
        """The progress as one line."""
        share = 100 * self.done // max(1, self.total)
        return f"{self.what}: {self.unit} {self.done}/{self.total} ({share}%)"


def round_callback(what: str, rounds: int) -> Any:
    """An XGBoost callback that reports boosting rounds from rank 0 as Dask events."""
    import xgboost as xgb

    class RoundProgress(xgb.callback.TrainingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.progress = Progress(what, rounds, "round", say=_to_client)

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            from xgboost import collective

            if collective.get_rank() == 0:  # every worker runs every round: one reports
                self.progress.advance()
            return False  # never stops training

    return RoundProgress()


def _to_client(line: str) -> None:
    """Send a progress line from a Dask worker to the clients subscribed to TOPIC."""
    from distributed import get_worker

    get_worker().log_event(TOPIC, line)


def relay_events(event: tuple[float, Any]) -> None:
    """Log a progress line a worker sent (a ``subscribe_topic`` handler on the client)."""
    log.info("%s", event[1])
