"""Settings of the whole test session (tests/conftest.py applies them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

THREADS_VARIABLE = "STYLEBENCH_TEST_THREADS"


def session_threads() -> int | None:
    """Torch threads for the session: `STYLEBENCH_TEST_THREADS` (a count, or `default` to keep
    torch's and OpenMP's own choice), else 1."""
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if value == "default":
        return None
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(
            f"{THREADS_VARIABLE}={value!r}: give a thread count (1, 2, ...) or 'default'"
        )
    return int(value)


#: Left out of the check that the suite writes nothing into the repository: the environment
#: (a fresh clone's `make test` installs it there) and what importing and running Python and
#: the tools write anyway.
NOT_CHECKED = (".venv", "__pycache__", ".pytest_cache", ".ruff_cache")


def repository_files(repo: Path) -> set[str] | None:
    """The untracked and ignored files of the git checkout `repo` (as `git status` names them),
    modified tracked files too; None where `repo` is not a checkout or git is missing."""
    if not (repo / ".git").exists() or shutil.which("git") is None:
        return None
    status = ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"]
    excluded = [f":(exclude,glob)**/{name}/**" for name in NOT_CHECKED]
    result = subprocess.run(
        [*status, "--", ".", *excluded],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return None
    return {line[3:] for line in result.stdout.splitlines() if line}


def written_message(repo: Path, written: list[str], shown: int = 20) -> str:
    """What the session wrote into `repo`, and where a test's files belong instead."""
    lines = written[:shown] + ([f"... {len(written) - shown} more"] if len(written) > shown else [])
    listing = "".join(f"\n  {line}" for line in lines)
    return (
        f"the tests wrote {len(written)} file(s) into the repository {repo}:{listing}\n"
        "keep a test's files under its tmp_path (MLflow's artifact root for a SQLite store is "
        "./mlruns of the current directory: use the mlflow_uri fixture, or chdir)"
    )
