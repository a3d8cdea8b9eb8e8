"""Settings of the whole test session (tests/conftest.py applies them)."""

from __future__ import annotations

import os

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
