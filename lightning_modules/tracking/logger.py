"""The project's MLflow logger: Lightning's MLFlowLogger, built without side effects.

One experiment per dataset; run names are `<backbone>-<module>-<protocol>`. The CLI
(`lightning_modules/cli.py`) gives the logger those names with `set_run` before its first use;
the callbacks that write to the run (`lightning_modules/callbacks/`) find it with
`find_mlflow_logger`. Building the logger touches nothing: the store is opened (a SQLite one
created and migrated once, under a lock: `ensure_store`) and the run created when the logger
is first used, and its client queues writes through a tracking outage (`DeferringClient`), so
that tracking never ends training.
"""

from __future__ import annotations

import atexit
import sys
import time
from pathlib import Path
from typing import Any, Literal

from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.loggers.mlflow import LOCAL_FILE_URI_PREFIX

from lightning_modules.tracking.history import record_resume
from lightning_modules.tracking.outage import (
    FINAL_FLUSH_INTERVAL_S,
    DeferringClient,
    final_flush_timeout_s,
    is_outage,
    shorten_server_retries,
)
from lightning_modules.tracking.store import (
    TrackingStoreError,
    default_tracking_uri,
    ensure_experiment,
    ensure_store,
    store_error,
)

#: Experiment of a logger used without an experiment name (the CLI names it by dataset).
FALLBACK_EXPERIMENT = "stylebench"
#: Experiment tag MLflow 3's UI reads to open an experiment on its runs (traditional ML
#: training) rather than on GenAI traces; "custom_model_development" is the value MLflow's
#: own UI code and onboarding docs give for model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def find_mlflow_logger(trainer: Trainer | None) -> MLFlowLogger | None:
    """The trainer's first MLflow logger, or None (no trainer, or no MLflow logger)."""
    if trainer is None:
        return None
    return next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)


class StylebenchMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with the project's defaults, started on first use.

    The constructor only keeps its arguments: no store is opened, created or migrated, and no
    MLflow call is made, so jsonargparse can build it from the config before the data and the
    model exist. Until its first use, `set_run` fills in what the config left empty (the CLI:
    the experiment from the dataset, the run name from backbone, module and protocol, and the
    run a `fit --ckpt_path` resumes). The first use (logging, reading `experiment`, `run_id`,
    ...) opens the store and creates or reopens the run, as MLFlowLogger does.
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
        """Keep the settings; the store is opened and the run started on first use.

        Args:
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
        # MLFlowLogger.__init__ is not called here: it builds an MlflowClient, and building one
        # opens the store (for a new SQLite file: creates and migrates it, without a lock). It
        # runs in `_start`, at the first use, with the names known by then.
        self._started = False
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.tags = tags
        self.log_model = log_model
        self.requested_run_id = run_id
        self.artifact_location = artifact_location
        # When `resume_run` started (ms), until the first point records the resume marker.
        self._resumed_at_ms: int | None = None
        # state key -> checkpoint callback whose files `finalize` uploads (log_model: true).
        self._final_checkpoints: dict[str, ModelCheckpoint] = {}
        # path -> modification time of the checkpoint files uploaded so far.
        self._uploaded: dict[str, float] = {}

    @property
    def started(self) -> bool:
        """Whether the logger has been used: its store opened, its MLflow client built."""
        return self._started

    def set_run(
        self,
        experiment_name: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Set what the logger logs into, before its first use (None leaves a value as it is).

        Args:
            experiment_name: the MLflow experiment of a new run.
            run_name: the name of a new run.
            run_id: an existing run to continue instead of creating one.
        """
        if self._started:
            raise RuntimeError(
                "StylebenchMLFlowLogger.set_run: the logger has been used already (its run "
                "exists); set the experiment, run name and run id before the first log call"
            )
        if experiment_name is not None:
            self.experiment_name = experiment_name
        if run_name is not None:
            self.run_name = run_name
        if run_id is not None:
            self.requested_run_id = run_id

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the instance lacks. Before `_start` those are
        # MLFlowLogger's own (its __init__ sets them all), so reading one is the first use.
        if name.startswith("__") or self.__dict__.get("_started", True):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._start()
        return getattr(self, name)

    def _start(self) -> None:
        """Open the store, make sure the experiment exists, and run MLFlowLogger's __init__
        with the names set by now."""
        # Before MLflow opens the store: a new SQLite store is created once, under a lock.
        ensure_store(self.tracking_uri)
        shorten_server_retries(self.tracking_uri)
        self._started = True
        experiment_name = self.experiment_name or FALLBACK_EXPERIMENT
        try:
            MLFlowLogger.__init__(
                self,
                experiment_name=experiment_name,
                run_name=self.run_name,
                tracking_uri=self.tracking_uri,
                tags=self.tags,
                log_model=self.log_model,
                run_id=self.requested_run_id,
                artifact_location=self.artifact_location,
            )
            if self.requested_run_id is None and rank_zero_only.rank == 0:
                # MLFlowLogger creates a missing experiment without a lock when first used;
                # created here first (with its kind tag), once, whoever else starts now.
                ensure_experiment(
                    self._mlflow_client,
                    self.tracking_uri,
                    experiment_name,
                    self.artifact_location,
                    {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            self.experiment  # noqa: B018 (creates or reopens the run now, errors named below)
        except TrackingStoreError:
            self._started = False
            raise
        except Exception as error:
            self._started = False
            if type(error).__module__.split(".")[0] in ("mlflow", "sqlalchemy", "sqlite3"):
                raise store_error(self.tracking_uri, "start the MLflow run", error) from error
            raise
        except BaseException:
            self._started = False
            raise
        # MLFlowLogger keeps its client as `_mlflow_client` (built in its __init__) and uses it
        # for every call; it is wrapped so that a tracking outage queues writes instead of
        # ending training (tests/lightning_modules/test_tracking_store.py checks the attribute).
        self._mlflow_client = DeferringClient(self._mlflow_client)
        # What is written after `finalize` (figures of the best epoch, say) is sent at exit.
        self._mlflow_client.on_first_outage = lambda: atexit.register(self.flush_pending)

    @property
    def save_dir(self) -> str | None:
        """The folder of a `file:` store (else None), read without starting the logger: the
        CLI looks for checkpoints under it before the run is chosen."""
        if self.tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self.tracking_uri[len(LOCAL_FILE_URI_PREFIX) :]
        return None

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags (values as strings; None values are skipped)."""
        for key, value in tags.items():
            if value is not None:
                self.experiment.set_tag(self.run_id, key, str(value))

    def tag_experiment_kind(self) -> None:
        """Mark the run's experiment as model training (`EXPERIMENT_KIND_TAG`) unless it is
        marked already, so MLflow 3's UI opens it on its runs and charts (`ensure_experiment`:
        safe when several processes do it at once)."""
        client, experiment_id = self.experiment, self.experiment_id
        if experiment_id is None:  # not rank zero: no experiment here
            return
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
            name = client.get_experiment(experiment_id).name
            tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            ensure_experiment(client, self.tracking_uri, name, tags=tags)

    def resume_run(self) -> None:
        """Continue the run given as `run_id` (resuming from its checkpoint), on rank zero.

        The run is marked RUNNING, and its first point from now on records a resume marker
        (`lightning_modules.tracking.history`): the points the killed process logged at that
        step and later are the ones this process replaces. Every point this process computes
        is logged; `history.metric_history` reads each step once.
        """
        if self.requested_run_id is None:
            raise ValueError("resume_run needs the logger to be built with the run_id to resume")
        client, run_id = self.experiment, self.run_id
        self._resumed_at_ms = int(time.time() * 1000)
        client.update_run(run_id, status="RUNNING")

    def log_metrics(self, metrics, step: int | None = None) -> None:
        if self._resumed_at_ms is not None and metrics:
            resumed_at, self._resumed_at_ms = self._resumed_at_ms, None
            record_resume(self.experiment, self.run_id, step or 0, resumed_at)
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
        if not self._started and not self._final_checkpoints:
            return  # never used: no run to end (and no store to open for it)
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
        if not self._started:
            return True
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
