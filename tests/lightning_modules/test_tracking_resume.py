"""What `--ckpt_path last` does with unreadable checkpoints, with runs a live process writes,
and with runs a dead process left RUNNING; and a resumed run's history, each step once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from lightning_modules.tracking import (
    CONFIG_HASH_TAG,
    LAST_CHECKPOINT,
    RESUMES_TAG,
    RUN_ID_KEY,
    RunInUseError,
    UnreadableCheckpointError,
    WriterLock,
    metric_history,
    record_resume,
    resolve_run,
)
from lightning_modules.tracking.writer import WRITER_LOCK, release_folder
from tests.helpers.tracking import LOAD

HASH = "a" * 16
NAME = "resnet20-srm-multi_domain"


def write_checkpoint(path: Path, run_id: str, step: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({RUN_ID_KEY: run_id, "global_step": step}, path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One store for the module (creating a SQLite store takes seconds); the module's tests
    run in its folder."""
    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # MLflow's ./mlruns (the artifacts) goes there
        yield f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def store(store_uri: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict:
    """An experiment of the test's own in the module's store, and a checkpoint root."""
    client = MlflowClient(store_uri)
    name = request.node.name
    experiment_id = client.create_experiment(name)
    return {
        "uri": store_uri,
        "client": client,
        "experiment": experiment_id,
        "name": name,
        "root": tmp_path / "out",
    }


def add_run(store: dict, start: int, status: str = "RUNNING") -> tuple[str, Path]:
    run = store["client"].create_run(
        store["experiment"],
        start_time=1_000_000 + 1000 * start,
        run_name=NAME,
        tags={CONFIG_HASH_TAG: HASH},
    )
    if status != "RUNNING":
        store["client"].set_terminated(run.info.run_id, status)
    folder = store["root"] / store["experiment"] / run.info.run_id / "checkpoints"
    return run.info.run_id, folder


def last(store: dict):
    return resolve_run(
        "last",
        tracking_uri=store["uri"],
        experiment_name=store["name"],
        run_name=NAME,
        config_hash=HASH,
        checkpoint_root=store["root"],
    )


def test_an_unreadable_last_ckpt_is_moved_aside_and_the_best_beside_it_used(store) -> None:
    run_id, folder = add_run(store, 0)
    best = write_checkpoint(folder / "best-epoch002.ckpt", run_id, step=30)
    time.sleep(0.01)
    older = write_checkpoint(folder / "best-epoch001.ckpt", run_id, step=20)
    os.utime(older, (1, 1))
    truncate(write_checkpoint(folder / LAST_CHECKPOINT, run_id, step=40))
    choice = last(store)
    assert (choice.run_id, choice.ckpt_path) == (run_id, str(best))
    moved = list(folder.glob(f"{LAST_CHECKPOINT}.unreadable-*"))
    assert len(moved) == 1 and not (folder / LAST_CHECKPOINT).exists()
    text = "\n".join(choice.report())
    assert f"cannot read checkpoint {folder / LAST_CHECKPOINT} (" in text
    assert f"moved it to {moved[0]}" in text
    assert f"using {best}, the newest checkpoint of {folder} that can be read" in text
    # The same for a sweep trial, which names its `last.ckpt` as a file: both newer files are
    # unreadable now, so the oldest one is used.
    truncate(write_checkpoint(folder / LAST_CHECKPOINT, run_id, step=50))
    truncate(best)
    by_file = resolve_run(folder / LAST_CHECKPOINT, run_id=run_id)
    assert (by_file.run_id, by_file.ckpt_path) == (run_id, str(older))
    assert len(list(folder.glob("*.unreadable-*"))) == 3  # none overwrites another


def test_an_unreadable_named_checkpoint_is_named(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "epoch3.ckpt", "r")
    truncate(path)
    with pytest.raises(UnreadableCheckpointError, match=rf"cannot read checkpoint {path} \("):
        resolve_run(path)
    assert path.exists()  # a file the user named is left where it is


def test_no_readable_checkpoint_says_so_and_starts_afresh(store) -> None:
    run_id, folder = add_run(store, 0)
    truncate(write_checkpoint(folder / LAST_CHECKPOINT, run_id))
    choice = last(store)
    assert (choice.run_id, choice.ckpt_path) == (None, None)
    assert any("cannot read checkpoint" in note for note in choice.notes)
    assert "starting a new run" in choice.reason


HOLD = (
    LOAD
    + """
writer.WriterLock(sys.argv[1]).acquire(sys.argv[2])
print("held", flush=True)
time.sleep(60)
"""
)


def test_a_run_a_live_process_writes_is_refused_naming_it(store) -> None:
    run_id, folder = add_run(store, 0)
    checkpoint = write_checkpoint(folder / LAST_CHECKPOINT, run_id)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), run_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        expected = rf"run {run_id} is being trained by process {holder.pid} on "
        with pytest.raises(RunInUseError, match=expected):
            last(store)
        with pytest.raises(RunInUseError, match=rf"process {holder.pid}"):
            resolve_run(checkpoint)
    finally:
        holder.kill()
        holder.wait()
    assert last(store).run_id == run_id  # its holder is gone: the run can be resumed


def test_runs_left_running_by_dead_writers_are_named_as_replaced(store) -> None:
    # Oldest first: dead with a checkpoint, dead without one, one that never had a writer
    # lock (another tool's run), and the newest, dead, with a checkpoint: the one resumed.
    old, old_folder = add_run(store, 0)
    write_checkpoint(old_folder / LAST_CHECKPOINT, old)
    empty, empty_folder = add_run(store, 1)
    unknown, _ = add_run(store, 2)
    newest, newest_folder = add_run(store, 3)
    write_checkpoint(newest_folder / LAST_CHECKPOINT, newest)
    for folder in (old_folder, empty_folder, newest_folder):
        lock = WriterLock(folder)
        lock.acquire("x")
        lock.release()  # a fit held it, and ended
    assert (old_folder / WRITER_LOCK).is_file()
    choice = last(store)
    assert choice.run_id == newest
    assert sorted(choice.replaced) == sorted([old, empty])
    # Without a usable checkpoint anywhere, the runs are replaced by the new run.
    for folder in (old_folder, newest_folder):
        (folder / LAST_CHECKPOINT).unlink()
    fresh = last(store)
    assert fresh.run_id is None
    assert sorted(fresh.replaced) == sorted([old, empty, newest])
    assert unknown not in fresh.replaced
    release_folder(newest_folder)


def test_a_resumed_runs_history_has_each_step_once_from_the_resumed_process(store) -> None:
    client = store["client"]
    run_id, _ = add_run(store, 0)
    # The killed process logged steps 0..5; its checkpoint covers 0..2.
    killed = {step: 10.0 + step for step in range(6)}
    for step, value in killed.items():
        client.log_metric(run_id, "train/loss_step", value, timestamp=1000 + step, step=step)
    client.log_metric(run_id, "train/loss_epoch", 9.0, timestamp=1003, step=2)
    # The resumed process starts at step 3 and computes its own values.
    record_resume(client, run_id, step=3, time_ms=2000)
    for step in range(3, 8):
        client.log_metric(run_id, "train/loss_step", 20.0 + step, timestamp=2000 + step, step=step)
    client.log_metric(run_id, "epoch", 0, timestamp=2010, step=7)
    client.log_metric(run_id, "epoch", 0, timestamp=2011, step=7)  # Lightning logs it twice
    raw = [m.step for m in client.get_metric_history(run_id, "train/loss_step")]
    assert sorted(raw) == [0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 7]  # MLflow keeps every point
    history = metric_history(client, run_id, "train/loss_step")
    assert [m.step for m in history] == list(range(8))
    assert [m.value for m in history] == [10.0, 11.0, 12.0, 23.0, 24.0, 25.0, 26.0, 27.0]
    assert [m.value for m in metric_history(client, run_id, "train/loss_epoch")] == [9.0]
    assert [m.step for m in metric_history(client, run_id, "epoch")] == [7]
    # A second resume appends its marker.
    record_resume(client, run_id, step=6, time_ms=3000)
    client.log_metric(run_id, "train/loss_step", 99.0, timestamp=3000, step=6)
    assert client.get_run(run_id).data.tags[RESUMES_TAG].count('"step"') == 2
    assert [m.value for m in metric_history(client, run_id, "train/loss_step")][-2:] == [25.0, 99.0]
