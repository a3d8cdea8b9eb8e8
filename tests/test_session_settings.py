"""The session-wide settings of tests/conftest.py hold in every test."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.helpers.session import session_threads


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
