"""Where the repository is, for the tests' absolute paths (they run from other folders too)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
