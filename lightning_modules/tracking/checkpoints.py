"""Reading a run's checkpoints: the run id stored in one, and the newest one that can be read.

A checkpoint is written whole or not at all in the usual case, but a full disk, a copy cut
short or a machine lost while it is written leaves a file torch cannot read. `resolve_run`
(`--ckpt_path last`) then names the file, moves it aside, and takes the newest checkpoint of
the run that can be read (`last.ckpt`, then the others beside it, newest first) instead of
failing on it, or starting afresh without a word.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

#: Where the MLflow run id is kept in a checkpoint (a top-level key, readable without the model).
RUN_ID_KEY = "mlflow_run_id"
#: The always-latest checkpoint's file name (`last.ckpt`), what `--ckpt_path last` resumes.
LAST_CHECKPOINT = f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint file torch cannot read (truncated, not a checkpoint); names the file."""


def read_checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The MLflow run id stored in a checkpoint, loaded without executing pickled code;
    `UnreadableCheckpointError` naming the file if torch cannot read it."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UnreadableCheckpointError(
            f"cannot read checkpoint {path} ({first.split('. ')[0]})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise UnreadableCheckpointError(f"cannot read checkpoint {path} (not a checkpoint)")
    return checkpoint.get(RUN_ID_KEY)


def _aside_name(path: Path) -> Path:
    """`<name>.unreadable-<time>`, with a counter if that exists already."""
    stem = f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, count = path.with_name(stem), 1
    while aside.exists():
        aside, count = path.with_name(f"{stem}-{count}"), count + 1
    return aside


def readable_checkpoint(folder: str | os.PathLike) -> tuple[Path | None, str | None, list[str]]:
    """(path, stored run id, notes) of the newest checkpoint in `folder` torch can read:
    `last.ckpt`, else the other `*.ckpt` files, newest first. A file that cannot be read is
    moved aside as `<name>.unreadable-<time>` (so that no later command trips on it) and named
    in the notes; (None, None, notes) when none can be read."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, None, []
    others = [p for p in folder.glob(f"*{ModelCheckpoint.FILE_EXTENSION}") if p.is_file()]
    others = sorted(
        (p for p in others if p.name != LAST_CHECKPOINT),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    notes: list[str] = []
    for path in [folder / LAST_CHECKPOINT, *others]:
        if not path.is_file():
            continue
        try:
            run_id = read_checkpoint_run_id(path)
        except UnreadableCheckpointError as error:
            aside = _aside_name(path)
            path.rename(aside)
            notes.append(f"{error}; moved it to {aside}")
            continue
        if notes:
            notes.append(f"using {path}, the newest checkpoint of {folder} that can be read")
        return path, run_id, notes
    return None, None, notes
