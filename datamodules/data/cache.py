"""The folder the project keeps what it derives from data in: the generated demo sets
(`datamodules/demo/cache.py`) and the file index (`datamodules/data/index.py`)."""

from __future__ import annotations

import os
from pathlib import Path

#: If set, the cache folder (default `~/.cache/stylebench`).
DATA_DIR_ENV = "STYLEBENCH_DATA_DIR"


def default_cache_dir() -> Path:
    """`$STYLEBENCH_DATA_DIR` if set, else `~/.cache/stylebench`."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "stylebench"
