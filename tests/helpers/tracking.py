"""Taking the tracking writer's lock from another process."""

from __future__ import annotations

from tests.helpers.paths import REPO

# The module alone (by its file): the package would import Lightning and MLflow, for seconds.
WRITER = REPO / "lightning_modules" / "tracking" / "writer.py"


LOAD = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("writer", {str(WRITER)!r})
writer = sys.modules["writer"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(writer)
"""
