"""One clean error per problem for every `python -m experiments.<tool>` command.

Each entry point ends in `run_main(main)`. A failure prints the project's own message (what was
wrong, which file or setting, the fix) as `error: <message>` on stderr and exits 1, without a
traceback; `STYLEBENCH_DEBUG=1` re-raises it with the full traceback. Errors raised while
jsonargparse builds the DataModule or the model reach the user wrapped in its "Does not
validate against any of the Union subtypes" error: the message shown is the original one,
found on the exception chain. Configuration errors jsonargparse reports itself (unknown key,
wrong type) keep its short usage message and exit code 2. A run stopped by SIGINT or SIGTERM
exits 128 + the signal number, as shells report a signal.

`dataset_entry_point` builds the `main` of a dataset's training command, so that each
`experiments/<dataset>.py` is `main = dataset_entry_point(<DataModule>)` and `run_main(main)`.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Set to 1 to see the full traceback of a failure.
DEBUG_VARIABLE = "STYLEBENCH_DEBUG"
#: Exceptions whose message says everything: shown without their class name.
PLAIN_MESSAGE_TYPES = (ValueError, LookupError, OSError, FloatingPointError, RuntimeError)
_JSONARGPARSE = f"{os.sep}jsonargparse{os.sep}"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def _raised_in_jsonargparse(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and _JSONARGPARSE in frames[-1].filename


def original_error(error: BaseException) -> BaseException:
    """The exception a jsonargparse wrapper was raised for (the error itself otherwise): its
    cause chain is followed while the error was raised inside jsonargparse."""
    seen = {id(error)}
    while _raised_in_jsonargparse(error):
        inner = error.__cause__ or error.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    return error


def error_message(error: BaseException) -> str:
    """`error: <message>`: the project's message, with the class name for foreign errors."""
    error = original_error(error)
    text = str(error).strip() or type(error).__name__
    project = type(error).__module__.split(".")[0] in {
        "datamodules",
        "lightning_modules",
        "experiments",
        "benchmarks",
    }
    if not (project or isinstance(error, PLAIN_MESSAGE_TYPES)):
        text = f"{type(error).__name__}: {text}"
    return f"error: {text}"


def run_main(main: Callable[[], Any]) -> None:
    """Run an entry point's `main()` and exit with its status, reporting failures cleanly."""
    from lightning_modules.callbacks.faults import forget_signal, received_signal

    forget_signal()
    try:
        status = main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except SystemExit as stop:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        signum = received_signal()
        if signum is None and isinstance(stop, SIGTERMException):
            signum = signal.SIGTERM
        if signum is not None:
            name = signal.Signals(signum).name
            print(
                f"error: stopped by {name}; resume with the same command and --ckpt_path last",
                file=sys.stderr,
            )
            sys.exit(128 + signum)
        raise stop
    except Exception as error:
        if debug_enabled():
            raise
        prog = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "stylebench"
        print(error_message(error), file=sys.stderr)
        print(f"({prog}: set {DEBUG_VARIABLE}=1 for the full traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


def dataset_entry_point(datamodule_class: type) -> Callable[..., Any]:
    """The `main(args=None)` of `python -m experiments.<dataset> fit|validate|test|predict`.

    `main` runs the project's LightningCLI with `datamodule_class` (or a subclass of it named in
    the config) and returns the CLI, whose trainer and model callers read; `args=None` reads
    the command line. The CLI is imported when `main` runs, not when the entry point is built.
    """

    def main(args: Sequence[str] | None = None) -> Any:
        from lightning_modules.cli import run_cli

        return run_cli(datamodule_class, args=args)

    main.__doc__ = f"LightningCLI over {datamodule_class.__name__}: fit|validate|test|predict."
    return main
