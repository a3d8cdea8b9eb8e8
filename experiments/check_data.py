"""Check a dataset before training: `python -m experiments.check_data --config <yaml>`.

Reports unreadable, truncated, zero-byte and non-image files, class-folder mismatches, empty
classes or domains, identical files across splits and bad list-file paths; exits non-zero on
errors. The same check runs before training with `--data.init_args.check_data true`.
"""

from __future__ import annotations

import sys

from datamodules.checks import main

if __name__ == "__main__":
    sys.exit(main())
