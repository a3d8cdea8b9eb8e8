"""Which MLflow run a command logs into: run identity, run lookup, and `resolve_run`.

Every checkpoint holds its run's id (`RUN_ID_KEY`, written by `MLflowRunIdCallback`), and every
run the hash of its resolved config (`CONFIG_HASH_TAG`, tagged by the CLI). `resolve_run` is
the one place that decides from them which run and which checkpoint a command continues: the
CLI asks it for `fit --ckpt_path last|<file>`, and a sweep trial for its own run's `last.ckpt`
(`experiments/sweeps/trials.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import Namespace

from lightning_modules.tracking.checkpoints import (
    LAST_CHECKPOINT,
    UnreadableCheckpointError,
    read_checkpoint_run_id,
    readable_checkpoint,
)
from lightning_modules.tracking.outage import shorten_server_retries
from lightning_modules.tracking.store import tracking_client
from lightning_modules.tracking.writer import folder_holder, has_writer_lock, require_free

#: Run tag holding `config_hash` of the resolved config: `--ckpt_path last` resumes only a run
#: of the same config.
CONFIG_HASH_TAG = "config_hash"
#: Settings that may differ between a run and its resumption (the config is otherwise the same).
RESUME_INDEPENDENT_KEYS = ("ckpt_path", "config", "trainer.logger.init_args.run_id")


def config_hash(config: Namespace) -> str:
    """A stable hash of a subcommand's resolved config, without `RESUME_INDEPENDENT_KEYS`.

    Two commands that resolve to the same settings (from any mix of files and overrides) get
    the same hash; any setting that changes the training (lr, epochs, data, seed) changes it.
    """
    values = config.clone()
    for key in RESUME_INDEPENDENT_KEYS:
        if key in values:
            values.pop(key)
    text = json.dumps(values.as_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


@dataclass(frozen=True)
class RunChoice:
    """What a command continues, as `resolve_run` decided it.

    Attributes:
        run_id: the MLflow run to log into (None: a new run).
        ckpt_path: the checkpoint to resume training from (None: training starts afresh).
        reason: the decision in one line, for the command's output.
        notes: the candidates looked at on the way, each with why it was or was not taken.
        replaced: runs of this config left RUNNING by a writer that died (their writer lock
            is free), other than `run_id`: the command's run replaces them, and the CLI marks
            them KILLED with `REPLACED_BY_TAG`.
    """

    run_id: str | None
    ckpt_path: str | None
    reason: str
    notes: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()

    def report(self) -> list[str]:
        """The lines a command prints about its choice: the notes, then the decision."""
        return [*self.notes, self.reason]


def resolve_run(
    ckpt_path: str | os.PathLike | None,
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
    run_name: str | None = None,
    config_hash: str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_root: str | os.PathLike | None = None,
) -> RunChoice:
    """Decide which MLflow run and which checkpoint a command continues.

    - No checkpoint: the run given as `run_id` (None: a new run), from scratch.
    - `"last"`: the newest unfinished run named `run_name` whose `CONFIG_HASH_TAG` equals
      `config_hash`, from the newest checkpoint of it that can be read (`last.ckpt`, else the
      newest other checkpoint beside it: `readable_checkpoint`), looked for in `checkpoint_dir`
      when set, else in `<checkpoint_root>/<experiment id>/<run id>/checkpoints` of the newest
      runs of that name in `experiment_name`. A FINISHED run, one of another config, or (with
      `run_id`) another run is never reopened: each such candidate is named in `notes`. With
      none left, a new run (or `run_id`) starts from scratch, saying why.
    - A checkpoint file: the run id stored in it. With `run_id` given, a file written for
      another run (or for none) is not resumed: `run_id` starts from scratch. A `last.ckpt`
      that cannot be read is replaced by the newest readable checkpoint beside it; another file
      that cannot be read is an `UnreadableCheckpointError`.

    A run (or checkpoint folder) whose writer lock a live process holds is never continued:
    `RunInUseError` names the process (`lightning_modules.tracking.writer`).

    Args:
        ckpt_path: `"last"`, a checkpoint file, or None.
        run_id: the run the command must log into (a sweep trial's), None when free.
        tracking_uri: the store the runs are in (needed for `"last"`).
        experiment_name: the experiment the runs are in (`"last"` without `checkpoint_dir`).
        run_name: the name of the command's runs (`"last"`).
        config_hash: `config_hash` of the command's resolved config (`"last"`).
        checkpoint_dir: the fixed checkpoint folder (`checkpoint.dirpath`), if any.
        checkpoint_root: where per-run checkpoint folders are (the logger's save_dir, else the
            trainer's default_root_dir).
    """
    if ckpt_path is None:
        reason = f"logging into MLflow run {run_id}" if run_id else "logging into a new MLflow run"
        return RunChoice(run_id, None, reason)
    if str(ckpt_path) == "last":
        return _resolve_last(
            run_id,
            tracking_uri,
            experiment_name,
            run_name,
            config_hash,
            checkpoint_dir,
            checkpoint_root,
        )
    path = Path(ckpt_path)
    require_free(path.parent, f"--ckpt_path {path}: its run")
    notes: list[str] = []
    try:
        stored = read_checkpoint_run_id(path)
    except UnreadableCheckpointError:
        if path.name != LAST_CHECKPOINT:
            raise
        found, stored, notes = readable_checkpoint(path.parent)
        if found is None:
            raise UnreadableCheckpointError(
                f"no checkpoint in {path.parent} can be read ({'; '.join(notes)}); "
                "start afresh without --ckpt_path"
            ) from None
        path = found
    if run_id is not None and stored != run_id:
        return RunChoice(
            run_id,
            None,
            f"not resuming {path}: it was written for MLflow run {stored}, not {run_id}; "
            f"run {run_id} starts afresh",
            tuple(notes),
        )
    if stored is None:
        return RunChoice(None, str(path), f"{path} names no MLflow run: a new run", tuple(notes))
    return RunChoice(stored, str(path), f"Resuming MLflow run {stored} from {path}", tuple(notes))


def _resolve_last(
    run_id: str | None,
    tracking_uri: str | None,
    experiment_name: str | None,
    run_name: str | None,
    wanted: str | None,
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_root: str | os.PathLike | None,
) -> RunChoice:
    """`resolve_run` for `--ckpt_path last` (see there)."""
    if tracking_uri is None or wanted is None or run_name is None:
        raise ValueError("resolve_run('last') needs tracking_uri, run_name and config_hash")
    # A fit asks this before its logger starts: with the logger's short retries already, so
    # that a tracking server that is down answers in seconds, not minutes.
    shorten_server_retries(tracking_uri)
    if checkpoint_dir:
        folders: list[tuple[str | None, Path]] = [(None, Path(checkpoint_dir))]
    else:
        if experiment_name is None or checkpoint_root is None:
            raise ValueError(
                "resolve_run('last') without checkpoint_dir needs experiment_name and "
                "checkpoint_root"
            )
        experiment_id, run_ids = recent_run_ids(tracking_uri, experiment_name, run_name)
        root = Path(checkpoint_root) / str(experiment_id)
        folders = [(found, root / found / "checkpoints") for found in run_ids]
    client, notes, replaced = tracking_client(tracking_uri), [], []
    for index, (known, folder) in enumerate(folders):
        run = None
        if known is not None:
            run = _candidate_run(client, known, run_id, wanted, notes, folder)
            if run is None:
                continue
        require_free(folder, f"--ckpt_path last: run {known or folder}")
        path, found, moved = readable_checkpoint(folder)
        notes += [f"--ckpt_path last: {note}" for note in moved]
        if known is None and found is not None:
            run = _candidate_run(client, found, run_id, wanted, notes, folder)
        if run is None or path is None or found != (known or found):
            if _abandoned(run, folder):
                replaced.append(run.info.run_id)  # its writer died before a usable checkpoint
            continue
        notes.append(f"--ckpt_path last: run {found} is {run.info.status} with this config")
        # The older runs of this config that a dead writer left RUNNING are replaced too.
        for older, older_folder in folders[index + 1 :]:
            older_run = older and _candidate_run(client, older, run_id, wanted, [], older_folder)
            if older_run is not None and _abandoned(older_run, older_folder):
                replaced.append(older)
        reason = f"Resuming MLflow run {found} from {path}"
        return RunChoice(found, str(path), reason, tuple(notes), tuple(replaced))
    fresh = f"starting run {run_id} afresh" if run_id else "starting a new run"
    return RunChoice(
        run_id,
        None,
        f"--ckpt_path last: no unfinished run {run_name!r} of this config "
        f"({CONFIG_HASH_TAG} {wanted}) has a {LAST_CHECKPOINT}; {fresh}",
        tuple(notes),
        tuple(replaced),
    )


def _abandoned(run, folder: Path) -> bool:
    """Whether a run was left RUNNING by a fit of this project whose process has ended."""
    return (
        run is not None
        and run.info.status == "RUNNING"
        and has_writer_lock(folder)
        and folder_holder(folder) is None
    )


def _candidate_run(client, found: str, run_id: str | None, wanted: str, notes: list, folder):
    """The run `found` if `--ckpt_path last` may continue it, else None with a note why."""
    path = Path(folder) / LAST_CHECKPOINT
    if run_id is not None and found != run_id:
        notes.append(f"--ckpt_path last: not resuming {path}: its run is {found}, not {run_id}")
        return None
    try:
        run = client.get_run(found)
    except Exception as error:  # a checkpoint of another store
        notes.append(f"--ckpt_path last: not resuming {path}: its run {found}: {error}")
        return None
    finished = run.info.status == "FINISHED"
    if finished or run.data.tags.get(CONFIG_HASH_TAG) != wanted:
        why = "it is FINISHED" if finished else "its config differs"
        notes.append(f"--ckpt_path last: not resuming run {found} ({path}): {why}")
        return None
    return run
