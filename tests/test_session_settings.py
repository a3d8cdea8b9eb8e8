"""The session-wide settings of tests/conftest.py hold in every test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers.session import repository_files, session_threads, written_message


def test_torch_and_started_processes_use_the_sessions_thread_count() -> None:
    threads = session_threads()
    if threads is None:  # STYLEBENCH_TEST_THREADS=default: torch's own choice is left alone
        return
    assert torch.get_num_threads() == threads
    assert os.environ["OMP_NUM_THREADS"] == str(threads)
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == str(threads)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_the_repository_check_sees_new_ignored_and_changed_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("mlruns/\n.venv/\n")
    (repo / "tracked.py").write_text("x = 1\n")
    (repo / ".venv" / "lib").mkdir(parents=True)
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    before = repository_files(repo)
    assert before == set()
    (repo / "mlruns" / "1" / "run").mkdir(parents=True)
    (repo / "mlruns" / "1" / "run" / "model.ckpt").write_bytes(b"\0")  # ignored, still seen
    (repo / "tracked.py").write_text("x = 2\n")
    (repo / "new.txt").write_text("")
    (repo / ".venv" / "lib" / "site.py").write_text("")  # the environment: not checked
    (repo / "pkg" / "__pycache__").mkdir(parents=True)
    (repo / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"")
    written = sorted(repository_files(repo) - before)
    assert written == ["mlruns/1/run/model.ckpt", "new.txt", "tracked.py"]
    message = written_message(repo, written, shown=2)
    assert "wrote 3 file(s)" in message and "mlruns/1/run/model.ckpt" in message
    assert "... 1 more" in message and "tracked.py" not in message
    assert repository_files(tmp_path / "not-a-checkout") is None
