"""MLflow tracking: the store, tracking through an outage, the logger, and which run to continue.

- `store.py`: which store (`default_tracking_uri`), a SQLite store created and migrated once
  under a file lock (`ensure_store`), its repair, and `tracking_client`.
- `outage.py`: what an outage is (`is_outage`) and the client that queues writes through one
  (`DeferringClient`).
- `logger.py`: `StylebenchMLFlowLogger` (configs name it as
  `lightning_modules.tracking.StylebenchMLFlowLogger`) and `find_mlflow_logger`.
- `checkpoints.py`: the run id in a checkpoint, and the newest checkpoint of a run that can be
  read (an unreadable one is moved aside).
- `writer.py`: one writer per run, a lock the training process holds on its checkpoint folder.
- `history.py`: resume markers, and a run's metric history with each step once.
- `runs.py`: run identity (the config hash tag) and `resolve_run`, which decides the run and
  checkpoint a command continues.
"""

from lightning_modules.tracking.checkpoints import (
    LAST_CHECKPOINT,
    RUN_ID_KEY,
    UnreadableCheckpointError,
    read_checkpoint_run_id,
    readable_checkpoint,
)
from lightning_modules.tracking.history import (
    REPLACED_BY_TAG,
    RESUMES_TAG,
    metric_history,
    record_resume,
)
from lightning_modules.tracking.logger import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FALLBACK_EXPERIMENT,
    StylebenchMLFlowLogger,
    find_mlflow_logger,
)
from lightning_modules.tracking.outage import DeferringClient, is_outage
from lightning_modules.tracking.runs import (
    CONFIG_HASH_TAG,
    RunChoice,
    code_version,
    config_hash,
    recent_run_ids,
    resolve_run,
)
from lightning_modules.tracking.store import (
    DEFAULT_TRACKING_URI,
    TrackingStoreError,
    default_tracking_uri,
    ensure_experiment,
    ensure_store,
    repair_tracking_store,
    sqlite_store_path,
    tracking_client,
)
from lightning_modules.tracking.writer import (
    RunInUseError,
    WriterLock,
    folder_holder,
    require_free,
)

__all__ = [
    "CONFIG_HASH_TAG",
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "FALLBACK_EXPERIMENT",
    "LAST_CHECKPOINT",
    "REPLACED_BY_TAG",
    "RESUMES_TAG",
    "RUN_ID_KEY",
    "DeferringClient",
    "RunChoice",
    "RunInUseError",
    "StylebenchMLFlowLogger",
    "TrackingStoreError",
    "UnreadableCheckpointError",
    "WriterLock",
    "code_version",
    "config_hash",
    "default_tracking_uri",
    "ensure_experiment",
    "ensure_store",
    "find_mlflow_logger",
    "folder_holder",
    "is_outage",
    "metric_history",
    "read_checkpoint_run_id",
    "readable_checkpoint",
    "recent_run_ids",
    "record_resume",
    "repair_tracking_store",
    "require_free",
    "resolve_run",
    "sqlite_store_path",
    "tracking_client",
]
