"""`resolve_run`: which MLflow run and checkpoint a command continues, from runs in a real store
and checkpoint files holding their run id."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from lightning_modules.tracking import (
    CONFIG_HASH_TAG,
    LAST_CHECKPOINT,
    RUN_ID_KEY,
    RunChoice,
    resolve_run,
)

HASH = "a" * 16
RUN_NAME = "resnet50-srm-multi_domain"


def write_checkpoint(path: Path, run_id: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({} if run_id is None else {RUN_ID_KEY: run_id}, path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three runs of one name, newest first: FINISHED (this config), RUNNING (another config),
    KILLED (this config); each with a `last.ckpt` where the CLI keeps checkpoints."""
    root = tmp_path_factory.mktemp("runs")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("officehome")
    runs = {}
    # Oldest first; start times apart so "newest" is unambiguous.
    for start, (name, status, config) in enumerate(
        [("killed", "KILLED", HASH), ("other", "RUNNING", "b" * 16), ("done", "FINISHED", HASH)]
    ):
        run = client.create_run(
            experiment_id,
            start_time=1_000_000 + 1000 * start,
            run_name=RUN_NAME,
            tags={CONFIG_HASH_TAG: config},
        )
        run_id = run.info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        folder = root / "outputs" / experiment_id / run_id / "checkpoints"
        runs[name] = (run_id, write_checkpoint(folder / LAST_CHECKPOINT, run_id))
    return {"uri": uri, "root": root / "outputs", "runs": runs}


def chosen(choice: RunChoice) -> tuple[str | None, str | None]:
    return choice.run_id, choice.ckpt_path


def last(store: dict, config: str = HASH, **overrides) -> RunChoice:
    arguments = {
        "tracking_uri": store["uri"],
        "experiment_name": "officehome",
        "run_name": RUN_NAME,
        "config_hash": config,
        "checkpoint_root": store["root"],
    }
    return resolve_run("last", **{**arguments, **overrides})


def test_last_resumes_the_newest_unfinished_run_of_this_config_naming_the_skipped(store) -> None:
    (done, _), (other, _), (killed, killed_path) = (
        store["runs"][name] for name in ("done", "other", "killed")
    )
    choice = last(store)
    assert (choice.run_id, choice.ckpt_path) == (killed, str(killed_path))
    assert choice.reason == f"Resuming MLflow run {killed} from {killed_path}"
    assert choice.notes == (
        f"--ckpt_path last: not resuming run {done} ({store['runs']['done'][1]}): it is FINISHED",
        f"--ckpt_path last: not resuming run {other} ({store['runs']['other'][1]}): its config "
        "differs",
        f"--ckpt_path last: run {killed} is KILLED with this config",
    )
    assert choice.report() == [*choice.notes, choice.reason]


def test_last_starts_a_new_run_when_no_run_is_left(store) -> None:
    choice = last(store, config="c" * 16)
    assert (choice.run_id, choice.ckpt_path) == (None, None)
    assert choice.reason == (
        f"--ckpt_path last: no unfinished run {RUN_NAME!r} of this config "
        f"({CONFIG_HASH_TAG} {'c' * 16}) has a {LAST_CHECKPOINT}; starting a new run"
    )
    assert len(choice.notes) == 3  # all three named
    # nothing of that name in an experiment that does not exist yet
    assert last(store, experiment_name="elsewhere").ckpt_path is None


def test_last_in_a_fixed_checkpoint_folder(store) -> None:
    killed, path = store["runs"]["killed"]
    choice = last(store, checkpoint_dir=path.parent, checkpoint_root=None)
    assert (choice.run_id, choice.ckpt_path) == (killed, str(path))
    done, done_path = store["runs"]["done"]
    assert last(store, checkpoint_dir=done_path.parent).ckpt_path is None  # FINISHED
    # with a run given, another run's checkpoint is not resumed
    choice = last(store, checkpoint_dir=path.parent, run_id=done)
    assert (choice.run_id, choice.ckpt_path) == (done, None)
    assert choice.reason.endswith(f"starting run {done} afresh")


def test_a_checkpoint_file_resumes_the_run_stored_in_it(store, tmp_path: Path) -> None:
    killed, path = store["runs"]["killed"]
    done, _ = store["runs"]["done"]
    choice = resolve_run(path)
    assert (choice.run_id, choice.ckpt_path) == (killed, str(path))
    assert choice.reason == f"Resuming MLflow run {killed} from {path}"
    # the run a sweep trial logs into: its own checkpoint is resumed, another run's is not
    assert resolve_run(path, run_id=killed).ckpt_path == str(path)
    stale = resolve_run(path, run_id=done)
    assert (stale.run_id, stale.ckpt_path) == (done, None)
    assert f"written for MLflow run {killed}, not {done}" in stale.reason
    # a checkpoint without a run id: its weights, in a new run
    anonymous = write_checkpoint(tmp_path / "old.ckpt", None)
    assert chosen(resolve_run(anonymous)) == (None, str(anonymous))
    assert chosen(resolve_run(anonymous, run_id=done)) == (done, None)


def test_no_checkpoint_logs_into_the_given_run_or_a_new_one() -> None:
    assert chosen(resolve_run(None)) == (None, None)
    assert chosen(resolve_run(None, run_id="abc")) == ("abc", None)


def test_last_without_what_it_needs_is_refused(store) -> None:
    with pytest.raises(ValueError, match="needs tracking_uri, run_name and config_hash"):
        resolve_run("last", tracking_uri=store["uri"], run_name=RUN_NAME)
    with pytest.raises(ValueError, match="needs experiment_name and checkpoint_root"):
        last(store, checkpoint_root=None)
