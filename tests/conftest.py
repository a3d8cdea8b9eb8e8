"""Session settings (one torch thread, a temporary index folder, the repository left clean) and
shared fixtures: a tiny Office-Home tree, an isolated MLflow store. Helpers: tests/helpers/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.paths import REPO
from tests.helpers.session import repository_files, session_threads, written_message
from tests.helpers.trees import make_officehome_tree


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """One torch thread for the whole session, and OMP_NUM_THREADS=1 for the processes tests
    start (unless a test's own environment sets it). The models here are tiny: on a shared
    2-core machine, extra OpenMP threads only wait on each other (10-20x slower steps).
    `STYLEBENCH_TEST_THREADS=<n>` or `=default` overrides."""
    threads = session_threads()
    if threads is None:
        yield
        return
    previous_torch = torch.get_num_threads()
    previous_omp = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    yield
    torch.set_num_threads(previous_torch)
    if previous_omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous_omp


@pytest.fixture(autouse=True, scope="session")
def _repository_left_clean():
    """The session writes nothing into the repository: no new files, ignored ones included
    (MLflow's `./mlruns`, checkpoints, caches), and no tracked file changed. A test's files
    belong under its tmp_path (the `mlflow_uri` fixture runs the test there)."""
    before = repository_files(REPO)
    yield
    if before is None:  # not a git checkout
        return
    written = sorted((repository_files(REPO) or set()) - before)
    if written:
        pytest.fail(written_message(REPO, written), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def _isolated_index_dir(tmp_path_factory: pytest.TempPathFactory):
    """File indexes of the test session's trees go to a temporary folder (also for the
    processes tests start), not to the user's cache, where every run would add files."""
    previous = os.environ.get("STYLEBENCH_INDEX_DIR")
    os.environ["STYLEBENCH_INDEX_DIR"] = str(tmp_path_factory.mktemp("index"))
    yield
    if previous is None:
        os.environ.pop("STYLEBENCH_INDEX_DIR", None)
    else:
        os.environ["STYLEBENCH_INDEX_DIR"] = previous


@pytest.fixture
def officehome_root(tmp_path: Path) -> Path:
    root = tmp_path / "OfficeHomeDataset_10072016"
    make_officehome_tree(root)
    return root


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store for the test, also seen by code reading the environment.

    The test runs in `tmp_path`: MLflow keeps a SQLite store's artifacts under `./mlruns` of
    the current directory (its default artifact root), which would be the repository."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
