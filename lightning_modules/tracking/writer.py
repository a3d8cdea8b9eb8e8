"""One writer per run: a lock that the training process holds on its checkpoint folder.

A run's status says what its last writer reported, not whether that writer still lives: a
SIGKILLed or lost process leaves its run RUNNING. So a fit takes `WriterLock` on its checkpoint
folder (`<default_root_dir>/<experiment id>/<run id>/checkpoints`, or `checkpoint.dirpath`)
before it writes anything there, and holds it until it ends; the lock file names the holder
(process, host, run, start). A command that would continue the run (`--ckpt_path last` or a
checkpoint file) asks `folder_holder` first and refuses while a live process holds it
(`RunInUseError`, naming the process); the run of a dead holder is free to resume.

The lock is a POSIX record lock (`fcntl.lockf`): the kernel drops it when its process ends,
however it ends, it is not inherited by forked DataLoader workers, and NFS carries it across
machines that share the folder. Elsewhere (no `fcntl`) there is no lock and nothing is refused.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None  # type: ignore[assignment]

#: The lock file in a run's checkpoint folder.
WRITER_LOCK = "writer.lock"

#: Locks this process holds, by lock file: a POSIX lock does not stop its own process, and
#: opening and closing the file again would release it, so the holder answers from here.
_HELD: dict[Path, WriterLock] = {}


@dataclass(frozen=True)
class Holder:
    """The process that holds a run's writer lock.

    Attributes:
        pid: its process id.
        host: the machine it runs on.
        run_id: the MLflow run it writes (None: not known yet).
        since: when it took the lock (local time, ISO format).
    """

    pid: int
    host: str
    run_id: str | None
    since: str

    def describe(self) -> str:
        run = f", MLflow run {self.run_id}" if self.run_id else ""
        return f"process {self.pid} on {self.host} (since {self.since}{run})"

    def kill_hint(self) -> str:
        here = self.host == socket.gethostname()
        where = "" if here else f" on {self.host}"
        return (
            f"wait for it to end, or stop it (`kill {self.pid}`{where}: it writes last.ckpt and "
            "ends KILLED) and run this command again"
        )


class RunInUseError(RuntimeError):
    """A live process holds the writer lock of the run (or checkpoint folder) asked for."""


def _read_holder(path: Path) -> Holder:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    return Holder(
        pid=int(data.get("pid", -1)),
        host=str(data.get("host", "?")),
        run_id=data.get("run_id"),
        since=str(data.get("since", "?")),
    )


class WriterLock:
    """The writer lock of one checkpoint folder (`<folder>/writer.lock`).

    Args:
        folder: the run's checkpoint folder (created if missing).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / WRITER_LOCK
        self._fd: int | None = None
        self.holder: Holder | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the folder's lock (through this object or another)."""
        return self.path.resolve() in _HELD

    def acquire(self, run_id: str | None = None) -> None:
        """Take the lock for `run_id` (`RunInUseError` naming the holder if a live process has
        it). If this process holds it already, only the run id is recorded; the object that
        took it first keeps it."""
        key = self.path.resolve()
        owner = _HELD.get(key)
        if owner is not None:
            if run_id is not None and owner.holder.run_id not in (None, run_id):
                raise RunInUseError(
                    f"{self.folder} is written by run {owner.holder.run_id} of this process; "
                    "a run needs a checkpoint folder of its own"
                )
            if run_id is not None:
                owner._record(run_id)
            return
        if fcntl is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                os.close(fd)  # never held here, so closing releases nothing of ours
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
            holder = _read_holder(self.path)
            if holder.pid == -1 and attempt < 2:
                time.sleep(0.2)  # a free lock probed by `folder_holder` this instant
                continue
            raise RunInUseError(
                f"{self.folder} is being written by {holder.describe()}; {holder.kill_hint()}"
            )
        self._fd = fd
        _HELD[key] = self
        self._record(run_id)

    def _record(self, run_id: str | None) -> None:
        """Write the holder into the lock file, through the locked descriptor (opening the
        file again and closing it would drop the POSIX lock)."""
        self.holder = Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            run_id=run_id,
            since=self.holder.since if self.holder else time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        if self._fd is None:
            return
        record = json.dumps(self.holder.__dict__).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, record, 0)

    def release(self) -> None:
        """Let the lock go if this object took it (the file stays, naming no live holder)."""
        if self._fd is None:
            return
        _HELD.pop(self.path.resolve(), None)
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the POSIX lock


def folder_holder(folder: str | os.PathLike) -> Holder | None:
    """The live process holding `folder`'s writer lock, or None (no lock file, or its holder
    has ended)."""
    path = Path(folder) / WRITER_LOCK
    if not path.is_file():
        return None
    owner = _HELD.get(path.resolve())
    if owner is not None:
        return owner.holder  # read from memory: see `_HELD`
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EACCES, errno.EAGAIN):
                return _read_holder(path)
            raise
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def has_writer_lock(folder: str | os.PathLike) -> bool:
    """Whether a fit of this project ever wrote into `folder` (its lock file is there)."""
    return (Path(folder) / WRITER_LOCK).is_file()


def require_free(folder: str | os.PathLike, what: str) -> None:
    """`RunInUseError` if a live process holds `folder`'s writer lock; `what` says what the
    command wanted (`--ckpt_path last: run <id>`, say)."""
    holder = folder_holder(folder)
    if holder is not None and holder.pid != os.getpid():
        raise RunInUseError(
            f"{what} is being trained by {holder.describe()} (writer lock "
            f"{Path(folder) / WRITER_LOCK}); two processes must not write one run: "
            f"{holder.kill_hint()}"
        )


def release_folder(folder: str | os.PathLike) -> None:
    """Let go of this process's writer lock on `folder`, whichever object took it."""
    owner = _HELD.get((Path(folder) / WRITER_LOCK).resolve())
    if owner is not None:
        owner.release()
