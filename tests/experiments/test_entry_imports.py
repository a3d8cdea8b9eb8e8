"""What an entry point imports: `fit` must not pay for the sweep and analysis packages.

Ray (sweeps), LitData (only with `data.shards`) and SciPy's statistics of the sweep reports are
imported by the commands that use them; importing the training entry point must leave them out
of `sys.modules` (a fresh interpreter, so nothing imported by other tests counts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Packages only some commands need: a sweep (ray), `data.shards` (litdata), sweep reports.
NOT_FOR_FIT = ("ray", "litdata", "experiments.sweeps")


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["experiments.officehome"])
def test_training_entry_point_leaves_out_sweep_and_shard_packages(entry) -> None:
    # Slow only because importing Lightning and torch takes 10-15 s on a busy 2-core machine.
    code = f"import json, sys, {entry}; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert "datamodules.data.sources" in modules  # the check sees the data side's imports
    loaded = sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in NOT_FOR_FIT))
    assert not loaded, loaded


def test_shards_source_is_still_importable_by_name() -> None:
    # The lazy import keeps `from datamodules.data.sources import ShardsSource` working.
    from datamodules.data import sources
    from datamodules.data.sources.shards import ShardsSource

    assert sources.ShardsSource is ShardsSource
    with pytest.raises(AttributeError):
        _ = sources.NoSuchSource
