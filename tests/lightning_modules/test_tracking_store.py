"""The SQLite store under parallel use (created once under a lock, a broken one named with its
repair) and the logger's client that keeps writes through a tracking outage."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger

from experiments import repair_store
from lightning_modules.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    DeferringClient,
    StylebenchMLFlowLogger,
    TrackingStoreError,
    ensure_store,
    is_outage,
    repair_tracking_store,
)
from lightning_modules.tracking.outage import SERVER_RETRY_ENVIRONMENT, shorten_server_retries

REPO = Path(__file__).resolve().parents[2]
RACERS = 4

RACE = """
import sys, time
start = float(sys.argv[1])
from lightning_modules.tracking import ensure_store
from mlflow import MlflowClient
while time.time() < start:
    time.sleep(0.001)
ensure_store(sys.argv[2])
client = MlflowClient(sys.argv[2])
experiment = client.create_experiment(f"racer-{sys.argv[3]}")
run = client.create_run(experiment)
client.log_metric(run.info.run_id, "x", 1.0)
client.set_terminated(run.info.run_id)
print("ok")
"""


@pytest.mark.slow
def test_processes_racing_on_a_new_store_all_succeed(tmp_path: Path) -> None:
    # Without the lock, four processes opening a new store at once all fail in MLflow's
    # migration (`table _alembic_tmp_... already exists`) and leave it half-migrated.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.time() + 8  # after every interpreter has imported MLflow
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(start), uri, str(index)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(RACERS)
    ]
    results = [racer.communicate(timeout=300) for racer in racers]
    for racer, (out, err) in zip(racers, results, strict=True):
        assert racer.returncode == 0, err[-2000:]
        assert out.strip() == "ok"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * RACERS


def test_threads_racing_on_a_new_store_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    barrier = threading.Barrier(RACERS)
    errors: list[BaseException] = []

    def race() -> None:
        barrier.wait()
        try:
            ensure_store(uri)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=race) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("after-the-race"))


def add_leftover_migration_table(path: Path) -> None:
    """What a concurrent migration leaves: a copy table alembic did not get to drop."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250), value VARCHAR(5000))")
    connection.commit()
    connection.close()


def test_half_migrated_store_is_named_with_its_repair_and_the_repair_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("kept"))
    client.log_metric(run.info.run_id, "val/acc_mean", 0.5, step=3)
    add_leftover_migration_table(path)

    with pytest.raises(TrackingStoreError) as raised:
        ensure_store(uri)
    message = str(raised.value)
    assert (
        f"the MLflow store {path} is half-migrated (left-over tables _alembic_tmp_tags" in message
    )
    assert f"python -m experiments.repair_store {uri}" in message
    logger = StylebenchMLFlowLogger(tracking_uri=uri)  # built without opening the store
    with pytest.raises(TrackingStoreError, match="half-migrated"):
        logger.log_metrics({"x": 1.0}, step=0)  # every logger path checks first, when used

    assert repair_store.main([uri]) == 0
    assert "dropped the left-over migration tables" in capsys.readouterr().out
    ensure_store(uri)
    kept = MlflowClient(uri).get_metric_history(run.info.run_id, "val/acc_mean")
    assert [(m.step, m.value) for m in kept] == [(3, 0.5)]  # the runs survive the repair
    assert list(tmp_path.glob("mlflow.db.bak-*"))  # and a copy of the broken file is kept


def test_repair_of_a_store_without_runs_builds_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    ensure_store(uri)
    add_leftover_migration_table(path)
    assert "replaced it by a new store" in repair_tracking_store(uri)
    ensure_store(uri)
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("fresh"))


def test_other_uris_are_left_alone_and_a_missing_folder_is_named(tmp_path: Path) -> None:
    ensure_store("http://127.0.0.1:9")  # a server migrates its own store
    ensure_store("sqlite://")  # in memory
    with pytest.raises(TrackingStoreError, match="in a folder that does not exist; create"):
        ensure_store(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")


@pytest.fixture(scope="module")
def shared_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the tests that only read and write runs (creating one takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('shared') / 'mlflow.db'}"


def test_experiment_is_tagged_as_model_training(shared_uri: str) -> None:
    logger = StylebenchMLFlowLogger(experiment_name="kind", tracking_uri=shared_uri)
    logger.tag_experiment_kind()
    tags = logger.experiment.get_experiment(logger.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


class FlakyClient:
    """An MlflowClient stand-in whose server is down while `down` is true."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, tuple]] = []

    def _call(self, name: str, *args) -> None:
        if self.down:
            try:
                raise requests.exceptions.ConnectionError("Connection refused")
            except requests.exceptions.ConnectionError:
                # as mlflow.utils.rest_utils wraps it (implicitly chained)
                raise RuntimeError("API request to /api/2.0/mlflow/runs/log-batch failed") from None
        self.sent.append((name, args))

    def log_metric(self, *args) -> None:
        self._call("log_metric", *args)

    def get_run(self, run_id: str) -> str:
        return run_id


def test_deferring_client_keeps_writes_in_order_through_an_outage() -> None:
    flaky, now = FlakyClient(), [0.0]
    client = DeferringClient(flaky, clock=lambda: now[0])
    client.log_metric("run", "a", 1)
    flaky.down = True
    # The wrapped error carries no requests exception: it is a real failure, raised.
    with pytest.raises(RuntimeError, match="API request"):
        client.log_metric("run", "a", 2)
    assert client.pending == []


def test_outage_is_recognised_on_the_exception_chain() -> None:
    try:
        try:
            raise requests.exceptions.ConnectionError("Connection refused")
        except requests.exceptions.ConnectionError:
            raise RuntimeError("API request failed") from None
    except RuntimeError as wrapped:
        suppressed = wrapped
    try:
        try:
            raise requests.exceptions.ConnectionError("Connection refused")
        except requests.exceptions.ConnectionError as error:
            raise RuntimeError("API request failed with exception") from error
    except RuntimeError as wrapped:
        chained = wrapped
    assert is_outage(chained)
    assert is_outage(RuntimeError("HTTPConnectionPool: Max retries exceeded with url"))
    assert not is_outage(suppressed)
    assert not is_outage(ValueError("Invalid metric name"))


class DownClient(FlakyClient):
    def _call(self, name: str, *args) -> None:
        if self.down:
            raise RuntimeError("API request failed: Max retries exceeded (Connection refused)")
        self.sent.append((name, args))


def test_writes_during_an_outage_are_sent_in_order_when_the_store_is_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    down, now = DownClient(), [0.0]
    client = DeferringClient(down, clock=lambda: now[0])
    client.log_metric("run", "a", 1)
    down.down = True
    client.log_metric("run", "a", 2)  # fails: kept
    client.log_metric("run", "a", 3)  # within the retry interval: not even tried
    assert len(client.pending) == 2
    assert "training goes on, 1 call(s) kept" in capsys.readouterr().err
    down.down = False
    client.log_metric("run", "a", 4)  # still within the interval: kept
    assert len(client.pending) == 3
    now[0] += 31.0
    client.log_metric("run", "a", 5)
    assert [args[2] for _, args in down.sent] == [1, 2, 3, 4, 5]
    assert client.pending == []
    assert client.get_run("r") == "r"  # reads pass through


def test_the_logger_wraps_mlflowloggers_private_client(shared_uri: str) -> None:
    # StylebenchMLFlowLogger replaces MLFlowLogger's private `_mlflow_client`: it must exist.
    plain = MLFlowLogger(tracking_uri=shared_uri)
    assert isinstance(plain._mlflow_client, MlflowClient)
    ours = StylebenchMLFlowLogger(tracking_uri=shared_uri)
    assert isinstance(ours._mlflow_client, DeferringClient)


def test_server_retries_are_shortened_for_a_server_only_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in SERVER_RETRY_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    shorten_server_retries("sqlite:///mlflow.db")
    assert not [key for key in SERVER_RETRY_ENVIRONMENT if key in os.environ]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    shorten_server_retries("https://tracking.example")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's setting stays
