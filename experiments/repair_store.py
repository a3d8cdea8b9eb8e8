"""Repair a SQLite MLflow store: `python -m experiments.repair_store <uri>`.

python -m experiments.repair_store sqlite:///mlflow.db

Two processes that opened a new store at once (before the project locked its creation) could
leave it half-migrated: every run on it then fails with `table _alembic_tmp_... already exists`.
This keeps a copy of the file (`<db>.bak-<time>`), then rebuilds a store that holds no runs, or
drops the left-over tables of one that does and lets MLflow complete the migration. A file that
is no SQLite database at all (`file is not a database`) is moved aside whole as
`<db>.bak-<time>` and a new, empty store made in its place
(`lightning_modules.tracking.repair_tracking_store`). Stop the runs using the store first.
"""

from __future__ import annotations

import argparse

from experiments.errors import run_main
from lightning_modules.tracking import default_tracking_uri, repair_tracking_store


def main(args=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.repair_store", description=__doc__)
    parser.add_argument(
        "tracking_uri",
        nargs="?",
        default=None,
        help="the sqlite:/// store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    options = parser.parse_args(args)
    print(repair_tracking_store(options.tracking_uri or default_tracking_uri()))
    return 0


if __name__ == "__main__":
    run_main(main)
