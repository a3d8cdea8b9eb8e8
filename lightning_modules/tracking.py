"""MLflow tracking: the logger with the project's defaults, and how to find and resume runs.

Runs go to `sqlite:///mlflow.db` in the working directory unless `MLFLOW_TRACKING_URI` or the
config's `trainer.logger.init_args.tracking_uri` names another store or a tracking server. One
experiment per dataset; run names are `<backbone>-<module>-<protocol>`. The CLI
(`lightning_modules/cli.py`) builds the logger with those names; the callbacks that write to the
run (`lightning_modules/callbacks/`) find it with `find_mlflow_logger`.

Faults: a SQLite store is created and migrated once under a file lock before any client opens it
(`prepare_tracking_store`; a store broken by an unlocked race is named with its repair,
`repair_tracking_store` / `python -m experiments.repair_store`), and the logger's client queues
its writes through a tracking outage (`DeferringClient`) so that tracking never ends training.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import filelock
import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Experiment of a logger built outside the CLI without a name (the CLI names it by dataset).
FALLBACK_EXPERIMENT = "stylebench"
#: Where the MLflow run id is kept in a checkpoint (a top-level key, readable without the model).
RUN_ID_KEY = "mlflow_run_id"


#: Experiment tag MLflow 3's UI reads to open an experiment on its runs (traditional ML
#: training) rather than on GenAI traces; "custom_model_development" is the value MLflow's
#: own UI code and onboarding docs give for model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: How long a process waits for another one that is creating or migrating the same store.
STORE_LOCK_TIMEOUT_S = 600.0
#: Prefix of the tables alembic's SQLite "batch" migrations copy a table into; one left behind
#: means a migration stopped half-way (e.g. two processes migrated a new store at once).
ALEMBIC_TMP_PREFIX = "_alembic_tmp_"


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be used as it is; the message names the file and the fix."""


def sqlite_store_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (None: another kind of store, or an
    in-memory database)."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def _repair_hint(tracking_uri: str) -> str:
    return (
        f"stop the runs using it, then run `python -m experiments.repair_store {tracking_uri}` "
        "(it keeps a backup copy of the file)"
    )


def _leftover_migration_tables(path: Path) -> list[str]:
    """Names of alembic's temporary tables left in the SQLite file (read-only look)."""
    if not path.is_file() or path.stat().st_size == 0:
        return []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        connection.close()
    return sorted(name for (name,) in rows if name.startswith(ALEMBIC_TMP_PREFIX))


def _open_store(tracking_uri: str) -> None:
    """Build MLflow's SQL store for the URI, which creates or migrates the schema, and read it.

    A new store object each time (MlflowClient reuses one per URI within a process, which
    would skip the check after a repair); the artifact root is MLflow's default, as for a
    client, since it names the `Default` experiment's folder when the store is created.
    """
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(tracking_uri, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    store.search_experiments(max_results=1)


#: SQLite files this process has opened (created or migrated) without error.
_PREPARED: set[Path] = set()


def prepare_tracking_store(tracking_uri: str) -> None:
    """Create or migrate a SQLite MLflow store once, under a file lock, before it is used.

    MLflow creates and migrates a new SQLite store when its first client opens it, without a
    lock: two processes starting together on a new `mlflow.db` both run the migration and leave
    it half-migrated (`table _alembic_tmp_... already exists`), and every later run on it fails.
    Here the first process migrates it while the others wait on `<db>.lock`; they then find the
    schema current and go on. A store already broken by such a race raises `TrackingStoreError`
    naming the file and the repair command. Other URIs (servers, databases, files) are left as
    they are: a tracking server migrates its store itself.
    """
    path = sqlite_store_path(tracking_uri)
    if path is None:
        return
    if not path.parent.is_dir():
        raise TrackingStoreError(
            f"the MLflow store {path} is in a folder that does not exist; create "
            f"{path.parent} or set MLFLOW_TRACKING_URI to another store"
        )
    lock = filelock.FileLock(f"{path}.lock", timeout=STORE_LOCK_TIMEOUT_S)
    try:
        with lock:
            leftovers = _leftover_migration_tables(path)
            if leftovers:
                raise TrackingStoreError(
                    f"the MLflow store {path} is half-migrated (left-over tables "
                    f"{', '.join(leftovers)}, from processes that migrated it at once); "
                    + _repair_hint(tracking_uri)
                )
            if path.resolve() in _PREPARED and path.is_file():
                return  # opened in this process already (the look for left-overs stays)
            try:
                _open_store(tracking_uri)
            except Exception as error:
                raise TrackingStoreError(
                    f"cannot open the MLflow store {path}: {error}; " + _repair_hint(tracking_uri)
                ) from error
            _PREPARED.add(path.resolve())
    except filelock.Timeout as error:
        raise TrackingStoreError(
            f"waited {STORE_LOCK_TIMEOUT_S:.0f} s for the lock {lock.lock_file} of the MLflow "
            "store; if no other process is creating the store, delete the lock file"
        ) from error


def repair_tracking_store(tracking_uri: str) -> str:
    """Repair a SQLite store a concurrent migration left half-migrated; returns what was done.

    The file is first copied to `<db>.bak-<time>`. A store holding no runs (what a race on a new
    store leaves: the racing runs all failed before creating one) is emptied and created anew; a
    store with runs gets alembic's left-over tables dropped and its migration completed by
    MLflow. Either way the repaired store must then open, or the backup is put back.
    """
    path = sqlite_store_path(tracking_uri)
    if path is None or not path.is_file():
        raise TrackingStoreError(f"{tracking_uri} is not an existing SQLite MLflow store")
    with filelock.FileLock(f"{path}.lock", timeout=STORE_LOCK_TIMEOUT_S):
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
        connection = sqlite3.connect(path)
        try:
            tables = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            has_runs = (
                "runs" in tables and connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            )
            # In place (the same file): an engine MLflow keeps for the URI stays valid.
            if has_runs:
                drop = sorted(t for t in tables if t.startswith(ALEMBIC_TMP_PREFIX))
                action = "dropped the left-over migration tables and completed the migration"
            else:
                drop = sorted(t for t in tables if not t.startswith("sqlite_"))
                action = "it held no runs: replaced it by a new store"
            for name in drop:
                connection.execute(f'DROP TABLE "{name}"')
            connection.commit()
        finally:
            connection.close()
        _PREPARED.discard(path.resolve())
        try:
            _open_store(tracking_uri)
        except Exception as error:
            shutil.copy2(backup, path)
            raise TrackingStoreError(
                f"could not repair the MLflow store {path} ({error}); it is unchanged. Open it "
                f"with `mlflow db upgrade {tracking_uri}` or start a new store"
            ) from error
    return f"repaired {path}: {action} (backup: {backup})"


def tracking_client(tracking_uri: str | None = None):
    """An `MlflowClient` for the URI (default: `default_tracking_uri()`), its store prepared
    (see `prepare_tracking_store`); what the project's tools use instead of `MlflowClient()`."""
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    prepare_tracking_store(uri)
    return MlflowClient(uri)


def code_version() -> str | None:
    """The git commit of the code (with `-dirty` for uncommitted changes), if in a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def find_mlflow_logger(trainer: Trainer | None) -> MLFlowLogger | None:
    """The trainer's first MLflow logger, or None (no trainer, or no MLflow logger)."""
    if trainer is None:
        return None
    return next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)


def read_checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The MLflow run id stored in a checkpoint, loaded without executing pickled code."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get(RUN_ID_KEY)


def recent_run_ids(
    tracking_uri: str, experiment_name: str, run_name: str, limit: int = 50
) -> tuple[str | None, list[str]]:
    """(experiment id, ids of its runs named `run_name`, newest first), read without creating
    anything; (None, []) when the experiment does not exist yet."""
    client = tracking_client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None, []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.runName` = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return experiment.experiment_id, [run.info.run_id for run in runs]


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


class StylebenchMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with the project's defaults.

    Names left empty are filled in by the CLI, which builds the logger once the DataModule and
    the model exist: the experiment from the dataset, the run name from backbone, module and
    protocol, and `run_id` from the checkpoint a `fit --ckpt_path` resumes.
    """

    def __init__(
        self,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        log_model: Literal[True, False, "all"] = True,
        run_id: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        """Args:
        experiment_name: MLflow experiment (default: the dataset's name).
        run_name: MLflow run name (default: `<backbone>-<module>-<protocol>`).
        tracking_uri: tracking store or server (default: $MLFLOW_TRACKING_URI, else
            sqlite:///mlflow.db in the working directory).
        tags: extra run tags.
        log_model: log checkpoints as artifacts: true = the best and last at the end of
            training, "all" = every checkpoint as it is written, false = none.
        run_id: continue logging into this existing run.
        artifact_location: artifact root for a newly created experiment.
        """
        uri = tracking_uri or default_tracking_uri()
        # Before MLflow opens the store: a new SQLite store is created once, under a lock.
        prepare_tracking_store(uri)
        if uri.startswith(("http://", "https://")):
            for key, value in SERVER_RETRY_ENVIRONMENT.items():
                os.environ.setdefault(key, value)
        super().__init__(
            experiment_name=experiment_name or FALLBACK_EXPERIMENT,
            run_name=run_name,
            tracking_uri=tracking_uri or default_tracking_uri(),
            tags=tags,
            log_model=log_model,
            run_id=run_id,
            artifact_location=artifact_location,
        )
        # Own copies: MLFlowLogger keeps these only as private attributes.
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.log_model = log_model
        self.requested_run_id = run_id
        # metric -> last step the run held when it was resumed (see `resume_run`).
        self._resumed_steps: dict[str, int] = {}
        # state key -> checkpoint callback whose files `finalize` uploads (log_model: true).
        self._final_checkpoints: dict[str, ModelCheckpoint] = {}
        # path -> modification time of the checkpoint files uploaded so far.
        self._uploaded: dict[str, float] = {}
        # MLFlowLogger keeps its client as `_mlflow_client` (built in its __init__) and uses it
        # for every call; it is wrapped so that a tracking outage queues writes instead of
        # ending training (tests/lightning_modules/test_tracking.py checks the attribute).
        self._mlflow_client = DeferringClient(self._mlflow_client)
        # What is written after `finalize` (figures of the best epoch, say) is sent at exit.
        self._mlflow_client.on_first_outage = lambda: atexit.register(self.flush_pending)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags (values as strings; None values are skipped)."""
        for key, value in tags.items():
            if value is not None:
                self.experiment.set_tag(self.run_id, key, str(value))

    def tag_experiment_kind(self) -> None:
        """Mark the run's experiment as model training (`EXPERIMENT_KIND_TAG`) unless it is
        marked already, so MLflow 3's UI opens it on its runs and charts."""
        client, experiment_id = self.experiment, self.experiment_id
        if experiment_id is None:  # not rank zero: no experiment here
            return
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    def resume_run(self) -> None:
        """Continue the run given as `run_id` (resuming from its checkpoint), on rank zero.

        Points the killed process logged after its last checkpoint are kept, and the resumed
        process's points for the same metric and step are dropped, so each metric's steps stay
        unique and increasing (MLflow cannot delete single metric points).
        """
        if self.requested_run_id is None:
            raise ValueError("resume_run needs the logger to be built with the run_id to resume")
        client, run_id = self.experiment, self.run_id
        self._resumed_steps = {
            key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1)
            for key in client.get_run(run_id).data.metrics
        }
        client.update_run(run_id, status="RUNNING")

    def log_metrics(self, metrics, step: int | None = None) -> None:
        if self._resumed_steps:
            last = self._resumed_steps
            metrics = {k: v for k, v in metrics.items() if (step or 0) > last.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self.log_model is True and checkpoint_callback.save_top_k != -1:
            # MLFlowLogger remembers only the checkpoint callback that saved last and uploads its
            # files at the end; the CLI has two (the monitored best and the always-latest
            # `last.ckpt`), so each is remembered here and its files uploaded in `finalize`.
            self._final_checkpoints[checkpoint_callback.state_key] = checkpoint_callback
            return
        super().after_save_checkpoint(checkpoint_callback)

    def finalize(self, status: str = "success") -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        # Lightning reports Ctrl-C (KeyboardInterrupt) and SIGTERM (its SIGTERMException) as
        # "failed", from inside its `except` block (trainer/call.py), so the exception in
        # flight tells a stop asked for from a failure.
        if status == "failed" and isinstance(
            sys.exc_info()[1], KeyboardInterrupt | SIGTERMException
        ):
            status = "KILLED"
        # Checkpoint callbacks are remembered on global rank zero only, where the run exists.
        if self._final_checkpoints:
            self._upload_final_checkpoints()
        try:
            super().finalize(status)
        except Exception as error:
            if not is_outage(error):
                raise
            # MLFlowLogger reads the run before ending it: with the store down, the end is
            # queued with what else is kept.
            final = {"success": "FINISHED", "failed": "FAILED", "finished": "FINISHED"}
            self._mlflow_client.pending.append(
                ("set_terminated", (self.run_id, final.get(status, status)), {})
            )
        self.flush_pending()

    def flush_pending(self) -> bool:
        """Send what a tracking outage kept back, waiting up to `final_flush_timeout_s()` for
        the store to answer; what still cannot be sent is reported on stderr and its metric
        points written to `mlflow_unsent_<run id>.json` (removed once a later flush, at exit,
        sends them)."""
        client = self._mlflow_client
        if not isinstance(client, DeferringClient):
            return True
        path = Path(f"mlflow_unsent_{self.run_id}.json").resolve()
        deadline = time.monotonic() + final_flush_timeout_s()
        while client.pending:
            if client.flush():
                break
            if time.monotonic() >= deadline:
                import json

                points = client.unsent_metric_points()
                path.write_text(json.dumps({"run_id": self.run_id, "metrics": points}, indent=1))
                print(
                    f"MLflow tracking store {self.tracking_uri} still unreachable: "
                    f"{len(client.pending)} call(s) not sent (run {self.run_id} may still show "
                    f"RUNNING); the {len(points)} metric points are in {path}",
                    file=sys.stderr,
                )
                return False
            time.sleep(FINAL_FLUSH_INTERVAL_S)
        path.unlink(missing_ok=True)
        return True

    def _upload_final_checkpoints(self) -> None:
        """Upload the remembered callbacks' best, top-k and last files not uploaded yet (or
        changed since), each into an artifact folder named after the file, as MLFlowLogger does."""
        paths = set()
        for callback in self._final_checkpoints.values():
            paths |= {callback.best_model_path, callback.last_model_path, *callback.best_k_models}
        for path in sorted(p for p in paths if p and Path(p).is_file()):
            modified = Path(path).stat().st_mtime
            if self._uploaded.get(path) != modified:
                self.experiment.log_artifact(self.run_id, path, Path(path).stem)
                self._uploaded[path] = modified
