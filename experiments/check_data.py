"""Check a dataset before training: `python -m experiments.check_data --config <yaml>`.

Reports unreadable, truncated, zero-byte and non-image files, class-folder mismatches, empty
classes or domains, identical files across splits and bad list-file paths; exits non-zero on
errors. The same check runs before training with `--data.init_args.check_data true`.

    python -m experiments.check_data --config configs/officehome/multi_domain.yaml \\
        --data.init_args.root /data/OfficeHomeDataset_10072016 [--workers N] [--no-decode]

The config (several `--config` files stack) and its `--data.init_args.*` overrides are parsed
by the training CLI's own parser; only the DataModule is built, never the model.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pytorch_lightning.cli import LightningArgumentParser

from datamodules.data.checks import check_datamodule
from lightning_modules.cli import ParsedConfig


def add_check_arguments(parser: LightningArgumentParser) -> None:
    """The data check's own options, beside the training CLI's."""
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="skip decoding images (layout and hashes only)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Check the DataModule of a training config; return the exit status.

    Prints one line per problem and a summary; the exit status is 1 when errors were found,
    2 when the DataModule cannot even be built (wrong root, mismatched class folders, ...).
    """
    try:
        parsed = ParsedConfig(
            args=argv,
            add_arguments=add_check_arguments,
            prog="python -m experiments.check_data",
            description=__doc__.splitlines()[0],
        )
        datamodule = parsed.instantiate_data()
    # Any failure to parse or build (layout, unknown domain, bad value) is the one line to show.
    except Exception as error:
        configs = " ".join(_config_names(argv if argv is not None else sys.argv[1:]))
        print(f"ERROR: cannot build the DataModule from {configs}: {error}", file=sys.stderr)
        return 2
    options = parsed.config
    report = check_datamodule(datamodule, decode=not options.no_decode, workers=options.workers)
    print(report.format())
    return 0 if report.ok else 1


def _config_names(argv: Sequence[str]) -> list[str]:
    """The `--config` files named on a command line (`--config X` or `--config=X`)."""
    names, argv = [], list(argv)
    for index, item in enumerate(argv):
        if item in ("--config", "-c") and index + 1 < len(argv):
            names.append(argv[index + 1])
        elif item.startswith("--config="):
            names.append(item.split("=", 1)[1])
    return names or ["the command line"]


if __name__ == "__main__":
    sys.exit(main())
