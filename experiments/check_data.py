"""Check a dataset before training: `python -m experiments.check_data --config <yaml>`.

Reports every problem as one row (`ERROR [kind] file[:line]: message`) and a summary count:
unreadable, truncated, zero-byte and non-image files, decompression bombs, non-UTF-8 file names,
symlink loops, class-folder mismatches, empty classes or domains, list lines that are malformed,
leave their root, repeat a path or name no class, files in both a training and an evaluation
split, identical files across splits. Exit status: 0 clean (warnings allowed), 1 data problems,
2 the configuration cannot be parsed or the DataModule cannot be constructed. `--json` prints
the report as one JSON object instead. The same check runs before training with
`--data.init_args.check_data true`.

    python -m experiments.check_data --config configs/officehome/multi_domain.yaml \\
        --data.init_args.root /data/OfficeHomeDataset_10072016 [--workers N] [--no-decode] [--json]

The config (several `--config` files stack) and its `--data.init_args.*` overrides are parsed
by the training CLI's own parser; only the DataModule is built, never the model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from pytorch_lightning.cli import LightningArgumentParser

from datamodules.data.checks import check_datamodule
from datamodules.data.findings import printable
from datamodules.data.problems import find_problems_error
from experiments.errors import original_error
from lightning_modules.cli import ParsedConfig


def add_check_arguments(parser: LightningArgumentParser) -> None:
    """The data check's own options, beside the training CLI's."""
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="skip decoding images (layout and hashes only)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as one JSON object on stdout"
    )
    parser.add_argument(
        "--rescan", action="store_true", help="scan the folders again, replacing the file index"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Check the DataModule of a training config; return the exit status.

    Prints one line per problem and a summary (or, with `--json`, one JSON object); the exit
    status is 1 when errors were found, 2 when the configuration cannot be parsed or the
    DataModule cannot be constructed (unknown option, bad value, unknown domain). Problems of
    the data itself, including those that stop the DataModule's scan (class folders that differ,
    an empty domain, list lines leaving their root), are rows of the report, all of them.
    """
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        parsed = ParsedConfig(
            args=argv,
            add_arguments=add_check_arguments,
            prog="python -m experiments.check_data",
            description=__doc__.splitlines()[0],
        )
    except Exception as error:
        return _cannot_build(argv, error, as_json)
    try:
        datamodule = parsed.instantiate_data()
    except Exception as error:
        problems = find_problems_error(error)
        if problems is None or problems.source is None:
            return _cannot_build(argv, error, as_json)
        # The DataModule was built; its scan (run by the CLI's links) found data problems:
        # those are the report's rows, with everything else the check can still read.
        datamodule = problems.source
    options = parsed.config
    if options.rescan:
        datamodule.rescan()
    report = check_datamodule(datamodule, decode=not options.no_decode, workers=options.workers)
    if options.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format())
    return 0 if report.ok else 1


def _cannot_build(argv: Sequence[str] | None, error: BaseException, as_json: bool) -> int:
    """Any failure to parse or build (unknown option, unknown domain, bad value): one line."""
    configs = " ".join(_config_names(argv if argv is not None else sys.argv[1:]))
    # The project's own message, not jsonargparse's "Does not validate against any of the
    # Union subtypes" wrapper around it.
    error = original_error(error)
    message = printable(f"cannot build the DataModule from {configs}: {error}")
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    print(f"ERROR: {message}", file=sys.stderr)
    return 2


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
    from experiments.errors import run_main

    run_main(main)
