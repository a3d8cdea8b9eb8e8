"""The MLflow logger: built without side effects and named before its first use, finding it,
resuming a run without duplicate steps, run status, and the checkpoints it uploads at the end
of training."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from lightning_modules.tracking import (
    RESUMES_TAG,
    StylebenchMLFlowLogger,
    TrackingStoreError,
    find_mlflow_logger,
    metric_history,
)
from lightning_modules.tracking import logger as logger_module
from lightning_modules.tracking.outage import SERVER_RETRY_ENVIRONMENT


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One store for the module's runs (creating a SQLite store takes seconds); the module's
    tests run in its folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's ./mlruns (the artifacts) goes there
        yield f"sqlite:///{folder / 'mlflow.db'}"


def test_find_mlflow_logger_returns_the_first_mlflow_logger(tmp_path: Path) -> None:
    mlflow = StylebenchMLFlowLogger(tracking_uri=f"sqlite:///{tmp_path / 'unused.db'}")
    assert find_mlflow_logger(SimpleNamespace(loggers=[CSVLogger(tmp_path), mlflow])) is mlflow
    assert find_mlflow_logger(SimpleNamespace(loggers=[CSVLogger(tmp_path)])) is None
    assert find_mlflow_logger(None) is None


def test_resumed_run_keeps_its_history_and_replaces_repeated_steps(tracking_uri: str) -> None:
    first = StylebenchMLFlowLogger(experiment_name="resume", tracking_uri=tracking_uri)
    for step in range(6):
        first.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    run_id = first.run_id  # the process is killed here: no finalize, the run stays RUNNING
    time.sleep(0.01)  # a resume comes later than the killed process's last point

    resumed = StylebenchMLFlowLogger(tracking_uri=tracking_uri, run_id=run_id)
    resumed.resume_run()
    # The checkpoint was at step 3: steps 4 and 5 come again, from the resumed process.
    for step in range(4, 8):
        resumed.log_metrics({"train/loss": 0.1, "val/acc_mean": 0.5}, step=step)
    resumed.finalize("success")
    client = MlflowClient(tracking_uri)
    history = metric_history(client, run_id, "train/loss")
    assert [m.step for m in history] == list(range(8))
    # Before: the killed process's 0.2 and 0.167 were kept at steps 4 and 5, spliced in.
    assert [m.value for m in history] == [1.0, 0.5, 1 / 3, 0.25, 0.1, 0.1, 0.1, 0.1]
    raw = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(raw) == [0, 1, 2, 3, 4, 4, 5, 5, 6, 7]  # MLflow keeps both, marked
    assert json.loads(client.get_run(run_id).data.tags[RESUMES_TAG])[0]["step"] == 4
    assert [m.step for m in metric_history(client, run_id, "val/acc_mean")] == [4, 5, 6, 7]
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(ValueError, match="resume_run needs the logger to be built with the run_id"):
        StylebenchMLFlowLogger(tracking_uri=tracking_uri).resume_run()


def test_ctrl_c_ends_the_run_killed_other_exceptions_failed(tracking_uri: str) -> None:
    statuses = []
    for error in (KeyboardInterrupt, RuntimeError):
        logger = StylebenchMLFlowLogger(experiment_name="status", tracking_uri=tracking_uri)
        logger.log_metrics({"train/loss": 1.0}, step=0)
        try:
            raise error
        except BaseException:
            logger.finalize("failed")  # as Lightning calls it, inside its `except` block
        statuses.append(MlflowClient(tracking_uri).get_run(logger.run_id).info.status)
    assert statuses == ["KILLED", "FAILED"]


def test_final_upload_has_the_best_and_the_latest_checkpoint(
    tracking_uri: str, tmp_path: Path
) -> None:
    """With two checkpoint callbacks (best, always-latest), `log_model: true` uploads both
    callbacks' files when training ends (Lightning's logger would upload the latest's only)."""
    best, latest = ModelCheckpoint(monitor="val/acc_mean"), ModelCheckpoint(filename="last")
    for callback, name in ((best, "best-epoch001.ckpt"), (latest, "last.ckpt")):
        callback.best_model_path = str(tmp_path / name)
        Path(callback.best_model_path).write_bytes(b"weights")
    logger = StylebenchMLFlowLogger(experiment_name="upload", tracking_uri=tracking_uri)
    logger.after_save_checkpoint(best)
    logger.after_save_checkpoint(latest)  # the latest saves last, as in every step
    logger.finalize("success")
    client = MlflowClient(tracking_uri)
    uploaded = {a.path for a in client.list_artifacts(logger.run_id)}
    assert uploaded == {"best-epoch001", "last"}
    assert [a.path for a in client.list_artifacts(logger.run_id, "last")] == ["last/last.ckpt"]


def test_building_the_logger_opens_no_store_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store in a folder that does not exist yet: opening it (MlflowClient, ensure_store) would
    # fail or create files, so building the logger must do neither.
    missing = tmp_path / "not-yet" / "mlflow.db"
    uri = f"sqlite:///{missing}"
    opened: list[str] = []
    real_ensure_store = logger_module.ensure_store
    monkeypatch.setattr(
        logger_module, "ensure_store", lambda u: opened.append(u) or real_ensure_store(u)
    )
    for key in SERVER_RETRY_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    logger = StylebenchMLFlowLogger(tracking_uri=uri)
    served = StylebenchMLFlowLogger(tracking_uri="http://127.0.0.1:9")
    assert opened == [] and not logger.started and not served.started
    # Where the CLI looks for checkpoints, read without starting (MLFlowLogger's rule: the
    # folder of a `file:` store, else none).
    assert logger.save_dir is None
    assert StylebenchMLFlowLogger(tracking_uri=f"file:{tmp_path}/mlruns").save_dir == (
        f"{tmp_path}/mlruns"
    )
    assert not logger.started
    assert not missing.parent.exists()
    assert not [key for key in SERVER_RETRY_ENVIRONMENT if key in os.environ]
    # A never-used logger ends nothing and opens nothing.
    logger.finalize("success")
    assert opened == [] and not missing.parent.exists()
    # The first use opens the store, and says what is wrong with it.
    with pytest.raises(TrackingStoreError, match="in a folder that does not exist"):
        logger.log_metrics({"train/loss": 1.0}, step=0)
    assert opened == [uri] and not logger.started


def test_names_set_before_the_first_use_name_the_run(tracking_uri: str) -> None:
    logger = StylebenchMLFlowLogger(tracking_uri=tracking_uri)
    logger.set_run(experiment_name="late", run_name="named-late")
    logger.set_run(experiment_name=None)  # None keeps what is set
    logger.log_metrics({"train/loss": 1.0}, step=0)
    client = MlflowClient(tracking_uri)
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "named-late"
    assert client.get_experiment(run.info.experiment_id).name == "late"
    with pytest.raises(RuntimeError, match="set the experiment, run name and run id before"):
        logger.set_run(run_name="too-late")
    # A run id given late continues that run: no second run.
    again = StylebenchMLFlowLogger(tracking_uri=tracking_uri)
    again.set_run(experiment_name="late", run_name="named-late", run_id=logger.run_id)
    again.log_metrics({"train/loss": 0.5}, step=1)
    assert again.run_id == logger.run_id
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]


def test_a_deferring_client_can_be_deep_copied() -> None:
    """Weight averaging deep-copies the model, and through the CLI's callables it reaches the
    logger's client: the copy must not recurse, and it keeps its queue and target."""
    import copy

    from lightning_modules.tracking.outage import DeferringClient

    class Client:
        def log_metric(self, *args, **kwargs) -> None:
            raise AssertionError("queued calls are not sent by a copy")

    deferring = DeferringClient(Client())
    deferring.pending.append(("log_metric", ("run", "m", 1.0), {}))
    duplicate = copy.deepcopy(deferring)
    assert duplicate.pending == deferring.pending and duplicate.pending is not deferring.pending
    assert isinstance(duplicate._client, Client)
