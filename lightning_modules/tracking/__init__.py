"""MLflow tracking: the store, tracking through an outage, the logger, and which run to continue.

- `store.py`: which store (`default_tracking_uri`), a SQLite store created and migrated once
  under a file lock (`ensure_store`), its repair, and `tracking_client`.
- `outage.py`: what an outage is (`is_outage`) and the client that queues writes through one
  (`DeferringClient`).
- `logger.py`: `StylebenchMLFlowLogger` (configs name it as
  `lightning_modules.tracking.StylebenchMLFlowLogger`) and `find_mlflow_logger`.
- `runs.py`: run identity (the run id in checkpoints, the config hash tag) and `resolve_run`,
  which decides the run and checkpoint a command continues.
"""

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
    LAST_CHECKPOINT,
    RUN_ID_KEY,
    RunChoice,
    code_version,
    config_hash,
    read_checkpoint_run_id,
    recent_run_ids,
    resolve_run,
)
from lightning_modules.tracking.store import (
    DEFAULT_TRACKING_URI,
    TrackingStoreError,
    default_tracking_uri,
    ensure_store,
    repair_tracking_store,
    sqlite_store_path,
    tracking_client,
)

__all__ = [
    "CONFIG_HASH_TAG",
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "FALLBACK_EXPERIMENT",
    "LAST_CHECKPOINT",
    "RUN_ID_KEY",
    "DeferringClient",
    "RunChoice",
    "StylebenchMLFlowLogger",
    "TrackingStoreError",
    "code_version",
    "config_hash",
    "default_tracking_uri",
    "ensure_store",
    "find_mlflow_logger",
    "is_outage",
    "read_checkpoint_run_id",
    "recent_run_ids",
    "repair_tracking_store",
    "resolve_run",
    "sqlite_store_path",
    "tracking_client",
]
