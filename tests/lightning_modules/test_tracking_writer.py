"""One writer per run: the writer lock of a checkpoint folder, held by a live process only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_modules.tracking.writer import (
    WRITER_LOCK,
    RunInUseError,
    WriterLock,
    folder_holder,
    has_writer_lock,
    release_folder,
    require_free,
)
from tests.helpers.tracking import LOAD

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks")

HOLD = (
    LOAD
    + """
writer.WriterLock(sys.argv[1]).acquire("run-of-the-other")
print("held", flush=True)
time.sleep(60)
"""
)


@pytest.fixture
def other_holder(tmp_path: Path):
    """Another process holding the writer lock of `tmp_path / "checkpoints"`."""
    folder = tmp_path / "checkpoints"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    yield folder, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_live_holder_is_named_and_refused(other_holder) -> None:
    folder, process = other_holder
    holder = folder_holder(folder)
    assert holder is not None
    assert (holder.pid, holder.run_id) == (process.pid, "run-of-the-other")
    with pytest.raises(RunInUseError, match=rf"process {process.pid} on .*run-of-the-other"):
        WriterLock(folder).acquire("mine")
    with pytest.raises(RunInUseError, match=r"--ckpt_path last: run x is being trained by .*"):
        require_free(folder, "--ckpt_path last: run x")
    with pytest.raises(RunInUseError, match=rf"kill {process.pid}"):
        require_free(folder, "run x")


def test_the_lock_of_a_killed_holder_is_free(other_holder) -> None:
    folder, process = other_holder
    os.kill(process.pid, signal.SIGKILL)  # no cleanup: the kernel drops the lock
    process.wait()
    assert has_writer_lock(folder)  # a fit of this project wrote here
    assert folder_holder(folder) is None
    lock = WriterLock(folder)
    lock.acquire("resumed")
    assert folder_holder(folder).run_id == "resumed"
    lock.release()
    assert folder_holder(folder) is None


def test_this_process_may_take_its_own_lock_again(tmp_path: Path) -> None:
    first = WriterLock(tmp_path)
    first.acquire(None)
    # The fit's callback takes the lock the CLI took when it chose the run: no error, and the
    # holder's record (read from memory: reading the file would drop a POSIX lock) gets the run.
    WriterLock(tmp_path).acquire("run-1")
    assert folder_holder(tmp_path).run_id == "run-1"
    assert folder_holder(tmp_path).pid == os.getpid()
    require_free(tmp_path, "this process's run")  # this process is not refused
    with pytest.raises(RunInUseError, match="a run needs a checkpoint folder of its own"):
        WriterLock(tmp_path).acquire("run-2")
    # Still held after all that, as another process sees it.
    seen = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD + "print(writer.folder_holder(sys.argv[1]).pid)",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(seen.stdout) == os.getpid()
    release_folder(tmp_path)
    assert folder_holder(tmp_path) is None
    assert (tmp_path / WRITER_LOCK).is_file()


def test_forked_children_do_not_hold_the_lock(tmp_path: Path) -> None:
    # POSIX record locks are not inherited: a DataLoader worker left behind by a killed fit
    # does not keep its run locked.
    lock = WriterLock(tmp_path)
    lock.acquire("run")
    pid = os.fork()
    if pid == 0:  # the child outlives the lock's release below
        time.sleep(3)
        os._exit(0)
    try:
        lock.release()
        assert folder_holder(tmp_path) is None
    finally:
        os.waitpid(pid, 0)
