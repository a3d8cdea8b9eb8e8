"""One sweep trial's process: an ordinary `fit` of a training entry point, then `test` of its
best checkpoint into the same MLflow run.

    python -m experiments.sweeps.fit_test <entry> --config A.yaml [--config B.yaml] [overrides]

`<entry>` is `experiments.<entry>` (officehome, dtd, cifar, ...); the other arguments are what
follows `fit` on its command line. This is what `experiments.demo` has always done for one
run, as a command, so that each trial runs in a process of its own (a crash, a leak or a stuck
data-loader worker ends with it) and a Ray worker only waits for it.
"""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str] | None = None) -> str:
    """Fit, then test the best checkpoint (the last when nothing was monitored); returns the
    MLflow run id."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit("usage: python -m experiments.sweeps.fit_test <entry> <fit arguments>")
    entry, fit_args = argv[0], argv[1:]
    cli = importlib.import_module(f"experiments.{entry}").main(["fit", *fit_args])
    trainer = cli.trainer
    # `best` is the monitored checkpoint (val/acc_mean); its state, restored on resume, still
    # names the file when the fit resumed at its last epoch and trained no further.
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or "last", verbose=False)
    trainer.logger.finalize("success")
    return trainer.logger.run_id


def command() -> int:
    """`main` as a command: exit status 0 once fit and test are done."""
    main()
    return 0


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(command)
