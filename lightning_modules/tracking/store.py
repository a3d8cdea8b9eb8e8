"""The MLflow store: which one, created and migrated once under a file lock, and its repair.

Runs go to `sqlite:///mlflow.db` in the working directory unless `MLFLOW_TRACKING_URI` or the
config's `trainer.logger.init_args.tracking_uri` names another store or a tracking server.
MLflow creates and migrates a new SQLite store when its first client opens it, without a lock;
`ensure_store` does it once, under `<db>.lock`, before any client of this project opens one
(`tracking_client`, and the logger on its first use). The first use goes on to create the
experiment and its tags (`ensure_experiment`), under the same lock for a SQLite store and
idempotently for any store, so that many fits starting at once on a new store all run. A store
broken by an unlocked race, or a file that is no database, is named with its repair
(`repair_tracking_store`, `python -m experiments.repair_store`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
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


def store_setting(tracking_uri: str) -> str:
    """The setting that chose this store, for messages: the environment variable, the default,
    or the logger's `tracking_uri`."""
    if os.environ.get("MLFLOW_TRACKING_URI") == tracking_uri:
        return "MLFLOW_TRACKING_URI"
    if tracking_uri == DEFAULT_TRACKING_URI:
        return "the default store (MLFLOW_TRACKING_URI is not set)"
    return "trainer.logger.init_args.tracking_uri"


def store_error(tracking_uri: str, action: str, error: BaseException) -> TrackingStoreError:
    """A `TrackingStoreError` for a store call that failed: the store and the setting that
    chose it, the first line of the error (MLflow appends the SQL statement), and the fix."""
    path = sqlite_store_path(tracking_uri)
    where = f"the MLflow store {path or tracking_uri} (from {store_setting(tracking_uri)})"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    fix = (
        "if the store itself is broken: " + _repair_hint(tracking_uri)
        if path is not None
        else "check that the tracking server is up and its store is migrated"
    )
    return TrackingStoreError(f"{where} could not {action}: {first}; {fix}")


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


def _table_names(path: Path) -> list[str]:
    """The tables of the SQLite file (read-only look); `sqlite3.DatabaseError` if it is no
    SQLite database."""
    if not path.is_file() or path.stat().st_size == 0:
        return []
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        connection.close()
    return [name for (name,) in rows]


def _not_a_database(tracking_uri: str, path: Path, error: BaseException) -> TrackingStoreError:
    return TrackingStoreError(
        f"the MLflow store {path} (from {store_setting(tracking_uri)}) is not an SQLite "
        f"database ({error}); run `python -m experiments.repair_store {tracking_uri}` to move it "
        f"aside (as {path.name}.bak-<time>) and start a new store there, or point "
        "MLFLOW_TRACKING_URI at another store"
    )


def _leftover_migration_tables(tracking_uri: str, path: Path) -> list[str]:
    """Names of alembic's temporary tables left in the SQLite file (read-only look)."""
    try:
        tables = _table_names(path)
    except sqlite3.DatabaseError as error:
        raise _not_a_database(tracking_uri, path, error) from error
    return sorted(name for name in tables if name.startswith(ALEMBIC_TMP_PREFIX))


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold `<db>.lock` of a SQLite store (the lock its creation and migration take); nothing
    for other stores. `TrackingStoreError` after `STORE_LOCK_TIMEOUT_S`."""
    path = sqlite_store_path(tracking_uri)
    if path is None:
        yield
        return
    lock = filelock.FileLock(f"{path}.lock", timeout=STORE_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except filelock.Timeout as error:
        raise TrackingStoreError(
            f"waited {STORE_LOCK_TIMEOUT_S:.0f} s for the lock {lock.lock_file} of the MLflow "
            "store; if no other process is creating the store, delete the lock file"
        ) from error
    try:
        yield
    finally:
        lock.release()


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
_OPENED: set[Path] = set()


def ensure_store(tracking_uri: str) -> None:
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
    with store_lock(tracking_uri):
        leftovers = _leftover_migration_tables(tracking_uri, path)
        if leftovers:
            raise TrackingStoreError(
                f"the MLflow store {path} is half-migrated (left-over tables "
                f"{', '.join(leftovers)}, from processes that migrated it at once); "
                + _repair_hint(tracking_uri)
            )
        if path.resolve() in _OPENED and path.is_file():
            return  # opened in this process already (the look for left-overs stays)
        try:
            _open_store(tracking_uri)
        except Exception as error:
            raise store_error(tracking_uri, "be opened", error) from error
        _OPENED.add(path.resolve())


def ensure_experiment(
    client: Any,
    tracking_uri: str,
    name: str,
    artifact_location: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The id of experiment `name`, created (with `tags`) if it does not exist, and `tags` set
    where it lacks them.

    Processes that first use a new store together all look for the experiment, find none and
    create it: all but one fail on MLflow's unique name (`UNIQUE constraint failed:
    experiments.name`), and setting a missing experiment tag at once fails the same way on
    `experiment_tags`. For a SQLite store this runs under the store's lock (`store_lock`); for
    any store, "already exists" is taken as done and the experiment read again.
    """
    from mlflow.exceptions import MlflowException

    tags = dict(tags or {})
    try:
        with store_lock(tracking_uri):
            experiment = client.get_experiment_by_name(name)
            if experiment is not None and experiment.lifecycle_stage == "deleted":
                raise TrackingStoreError(
                    f"the MLflow experiment {name!r} is deleted in {tracking_uri}; restore it "
                    f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
                    "or choose another trainer.logger.init_args.experiment_name"
                )
            if experiment is None:
                try:
                    return client.create_experiment(name, artifact_location, tags or None)
                except MlflowException as error:
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                experiment = client.get_experiment_by_name(name)
            for key, value in tags.items():
                if key not in experiment.tags:
                    client.set_experiment_tag(experiment.experiment_id, key, value)
            return experiment.experiment_id
    except TrackingStoreError:
        raise
    except MlflowException as error:
        raise store_error(tracking_uri, f"create the experiment {name!r}", error) from error


def repair_tracking_store(tracking_uri: str) -> str:
    """Repair a SQLite store a concurrent migration left half-migrated, or replace a file that
    is no SQLite database; returns what was done.

    A file that is no database is moved to `<db>.bak-<time>` and a new store created. Else the
    file is first copied to `<db>.bak-<time>`. A store holding no runs (what a race on a new
    store leaves: the racing runs all failed before creating one) is emptied and created anew; a
    store with runs gets alembic's left-over tables dropped and its migration completed by
    MLflow. Either way the repaired store must then open, or the backup is put back.
    """
    path = sqlite_store_path(tracking_uri)
    if path is None or not path.is_file():
        raise TrackingStoreError(f"{tracking_uri} is not an existing SQLite MLflow store")
    with filelock.FileLock(f"{path}.lock", timeout=STORE_LOCK_TIMEOUT_S):
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            _table_names(path)
        except sqlite3.DatabaseError as error:
            # Nothing in it can be read as runs: kept aside whole, and a new store made.
            path.rename(backup)
            _OPENED.discard(path.resolve())
            _open_store(tracking_uri)
            return (
                f"repaired {path}: it was not an SQLite database ({error}); moved it to "
                f"{backup} and created a new, empty store"
            )
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
        _OPENED.discard(path.resolve())
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
    """An `MlflowClient` for the URI (default: `default_tracking_uri()`), after `ensure_store`;
    what the project's tools use instead of `MlflowClient()`."""
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    ensure_store(uri)
    return MlflowClient(uri)
