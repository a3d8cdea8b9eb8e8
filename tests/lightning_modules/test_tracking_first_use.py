"""The first use of a store: the experiment and its tags created once however many processes
start at once, and a store file that is no database named with its fix and repaired."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments import repair_store
from lightning_modules.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    StylebenchMLFlowLogger,
    TrackingStoreError,
    ensure_experiment,
    ensure_store,
)

RACERS = 4


def test_ensure_experiment_creates_once_and_adds_missing_tags(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_store(uri)
    client = MlflowClient(uri)
    first = ensure_experiment(client, uri, "officehome", tags={"a": "1"})
    assert ensure_experiment(client, uri, "officehome", tags={"a": "1", "b": "2"}) == first
    assert client.get_experiment(first).tags == {"a": "1", "b": "2"}
    client.delete_experiment(first)
    with pytest.raises(TrackingStoreError, match=r"'officehome' is deleted .* restore it"):
        ensure_experiment(client, uri, "officehome")


def test_threads_creating_one_experiment_at_once_all_get_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_store(uri)
    barrier, found, errors = threading.Barrier(RACERS), [], []

    def race() -> None:
        barrier.wait()
        try:
            found.append(ensure_experiment(MlflowClient(uri), uri, "officehome", tags={"k": "v"}))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=race) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert len(set(found)) == 1 and len(found) == RACERS


def first_use(uri: str, index: int, barrier, results) -> None:
    """What a fit does with its logger, from the store's first opening to the run's end; the
    barrier lines the processes up right where the experiment is looked for and created."""
    try:
        ensure_store(uri)
        barrier.wait()
        logger = StylebenchMLFlowLogger(
            experiment_name="officehome", run_name=f"racer-{index}", tracking_uri=uri
        )
        logger.tag_experiment_kind()
        logger.set_tags({"index": index})
        logger.log_metrics({"x": 1.0}, step=0)
        logger.finalize("success")
        results.put((index, None))
    except BaseException as error:  # reported by the test
        results.put((index, f"{type(error).__name__}: {error}"))


@pytest.mark.slow
def test_four_first_uses_of_a_new_store_all_finish_ten_times(tmp_path: Path) -> None:
    # Before: MLFlowLogger creates a missing experiment without a lock, and in 5-6 of 7 such
    # rounds all but one process failed with `UNIQUE constraint failed: experiments.name`.
    context = multiprocessing.get_context("fork")  # MLflow imported once, here
    for round_index in range(10):
        uri = f"sqlite:///{tmp_path / f'round{round_index}.db'}"
        barrier, results = context.Barrier(RACERS), context.Queue()
        racers = [
            context.Process(target=first_use, args=(uri, index, barrier, results))
            for index in range(RACERS)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=300)
        errors = [error for _, error in (results.get() for _ in racers) if error]
        assert errors == [], f"round {round_index}: {errors}"
        client = MlflowClient(uri)
        (experiment,) = [e for e in client.search_experiments() if e.name == "officehome"]
        assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(run.info.status for run in runs) == ["FINISHED"] * RACERS


def test_a_store_file_that_is_no_database_is_named_with_the_fix_and_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mlflow.db"
    path.write_text("not a database\n" * 100)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingStoreError) as raised:
        ensure_store(uri)
    message = str(raised.value)
    assert (
        f"the MLflow store {path} (from MLFLOW_TRACKING_URI) is not an SQLite database" in message
    )
    assert f"python -m experiments.repair_store {uri}" in message
    assert "\n" not in message
    logger = StylebenchMLFlowLogger(tracking_uri=uri)
    with pytest.raises(TrackingStoreError, match="is not an SQLite database"):
        logger.log_metrics({"x": 1.0}, step=0)

    assert repair_store.main([]) == 0  # the store of MLFLOW_TRACKING_URI
    out = capsys.readouterr().out
    (backup,) = tmp_path.glob("mlflow.db.bak-*")
    assert f"it was not an SQLite database (file is not a database); moved it to {backup}" in out
    assert backup.read_text().startswith("not a database")  # kept whole
    ensure_store(uri)
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("fresh"))


def test_a_store_error_names_the_store_and_the_setting(tmp_path: Path) -> None:
    from lightning_modules.tracking.store import store_error

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    error = RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed\n[SQL: INSERT ...]")
    message = str(store_error(uri, "create the experiment 'x'", error))
    assert message.startswith(
        f"the MLflow store {tmp_path / 'mlflow.db'} (from trainer.logger.init_args.tracking_uri) "
        "could not create the experiment 'x': (sqlite3.IntegrityError) UNIQUE constraint failed;"
    )
    assert "[SQL:" not in message and "repair_store" in message
