"""Tracking through an outage: what counts as one, and the client that queues writes meanwhile.

The logger's client (`StylebenchMLFlowLogger`) is a `DeferringClient`, so that a tracking
server or store that stops answering never ends training: writes are kept in call order and
sent when the store answers again.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from typing import Any

#: Retry settings for a tracking server, applied unless set in the environment: MLflow's
#: defaults (7 retries, back-off factor 2, 120 s timeout) make one call to a stopped server wait
#: minutes, which here would stall training; the logger keeps what it cannot send instead.
SERVER_RETRY_ENVIRONMENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
#: Seconds between attempts to reach a tracking store that stopped answering.
OUTAGE_RETRY_INTERVAL_S = 30.0
#: At the end of a run, how long to wait for a store that is down to send what was kept
#: (`STYLEBENCH_TRACKING_FLUSH_S` overrides it), and how often to try meanwhile.
FINAL_FLUSH_TIMEOUT_S = 180.0
FINAL_FLUSH_INTERVAL_S = 5.0


def shorten_server_retries(tracking_uri: str) -> None:
    """For a tracking server (http, https): `SERVER_RETRY_ENVIRONMENT`, except what the
    environment sets already. Other stores are left as they are."""
    if tracking_uri.startswith(("http://", "https://")):
        for key, value in SERVER_RETRY_ENVIRONMENT.items():
            os.environ.setdefault(key, value)


def final_flush_timeout_s() -> float:
    return float(os.environ.get("STYLEBENCH_TRACKING_FLUSH_S", FINAL_FLUSH_TIMEOUT_S))


def is_outage(error: BaseException) -> bool:
    """Whether an MLflow call failed because the store could not be reached (connection
    refused or reset, timeout, server error 5xx, SQLite busy), not because the call was wrong."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        if isinstance(current, sqlite3.OperationalError) and "locked" in str(current):
            return True
        text = str(current)
        if "Max retries exceeded" in text or "Connection refused" in text:
            return True
        status = getattr(current, "get_http_status_code", None)
        if callable(status) and 500 <= (status() or 0) < 600:
            return True
        implicit = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or implicit
    return False


class DeferringClient:
    """An `MlflowClient` whose writes survive a tracking outage.

    Every write (metrics, params, tags, artifacts, run status) goes through a queue in call
    order. When the store cannot be reached (`is_outage`), the call stays queued, a warning says
    so, and the next write, at most every `OUTAGE_RETRY_INTERVAL_S`, tries to send the queue
    again; training goes on meanwhile. Other errors are raised as usual. Reads pass through.
    """

    WRITES = frozenset(
        {
            "log_batch",
            "log_metric",
            "log_param",
            "set_tag",
            "log_text",
            "log_dict",
            "log_figure",
            "log_image",
            "log_artifact",
            "log_artifacts",
            "log_table",
            "update_run",
            "set_terminated",
        }
    )

    def __init__(self, client: Any, clock=time.monotonic) -> None:
        """Pass `client`'s calls on, its writes through the queue that outlasts an outage.

        Args:
            client: the `MlflowClient` whose calls are passed on.
            clock: seconds, monotonic (tests pass their own).
        """
        self._client = client
        self._clock = clock
        self.pending: list[tuple[str, tuple, dict]] = []
        self._retry_at = 0.0
        self.outages = 0
        #: run id -> the run as last read: what `get_run` answers while the store is down
        #: (callbacks read a run's name or params, which do not change).
        self._runs: dict[str, Any] = {}
        #: Called once at the first outage (the logger registers its final flush there).
        self.on_first_outage: Any = None

    def get_run(self, run_id: str) -> Any:
        try:
            run = self._client.get_run(run_id)
        except Exception as error:
            if run_id in self._runs and is_outage(error):
                return self._runs[run_id]
            raise
        self._runs[run_id] = run
        return run

    def __getattr__(self, name: str) -> Any:
        # Only called for names not found on this object; `_client` itself is such a name while
        # `copy.deepcopy` or pickle rebuild the object (its __dict__ is still empty): without
        # this guard the lookup would recurse forever.
        if name.startswith("__") or name == "_client":
            raise AttributeError(name)
        attribute = getattr(self._client, name)
        if name not in self.WRITES:
            return attribute

        def write(*args: Any, **kwargs: Any) -> None:
            self.pending.append((name, args, kwargs))
            if self._clock() >= self._retry_at:
                self.flush()

        return write

    def flush(self) -> bool:
        """Send the queued calls in order; False (the rest kept) when the store is still down."""
        while self.pending:
            name, args, kwargs = self.pending[0]
            try:
                getattr(self._client, name)(*args, **kwargs)
            except Exception as error:
                if not is_outage(error):
                    self.pending.pop(0)
                    raise
                if not self._retry_at:
                    self.outages += 1
                    if self.outages == 1 and self.on_first_outage is not None:
                        self.on_first_outage()
                    print(
                        f"MLflow tracking store unreachable ({str(error).splitlines()[0][:200]}); "
                        f"training goes on, {len(self.pending)} call(s) kept to send later",
                        file=sys.stderr,
                    )
                self._retry_at = self._clock() + OUTAGE_RETRY_INTERVAL_S
                return False
            self.pending.pop(0)
        if self._retry_at:
            print("MLflow tracking store reachable again; kept calls sent", file=sys.stderr)
        self._retry_at = 0.0
        return True

    def unsent_metric_points(self) -> list[dict[str, Any]]:
        """The metric points still queued (key, value, step, timestamp)."""
        points = []
        for name, args, kwargs in self.pending:
            if name == "log_batch":
                for metric in kwargs.get("metrics", args[1] if len(args) > 1 else []):
                    points.append(
                        {
                            "key": metric.key,
                            "value": metric.value,
                            "step": metric.step,
                            "timestamp": metric.timestamp,
                        }
                    )
        return points
