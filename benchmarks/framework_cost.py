"""The framework's cost: training through `fit` (CLI, callbacks, MLflow) against a bare loop.

Two ways of taking the same training steps, alternated in one process (a, b, a, b, ...):

- (a) `fit`: `experiments.officehome fit` on the demo config (`StylebenchCLI`: the shipped
  callbacks, checkpointing, MLflow logging to a SQLite store, the classifier's
  `training_step` with its logging and metrics), plus a timing callback;
- (b) bare: the model and DataModule that (a) just built, a fresh optimizer and scheduler from
  `configure_optimizers`, and a plain PyTorch loop over `datamodule.train_dataloader()`: batch
  to the device, `on_after_batch_transfer` (normalisation), forward, cross-entropy, backward,
  optimizer step; nothing else.

Both time each epoch's training loop (from the epoch's start, which fetches the first batch, to
the end of its last step; validation, checkpoints and epoch-end logging of (a) are outside it).
Throughput = training images / seconds; the first epoch of each run (worker start-up, allocator
warm-up) is left out, and `bare_loop_ratio` is the median throughput of (a) over that of (b):
1 means the framework costs nothing per step, and the target is 0.95 or better.

Clock (`--clock`): on the CPU with one torch thread (the default here), the main thread's CPU
time: the training loop runs there on both paths, and other processes on a shared machine do
not inflate it; waits (for loader workers, for disk) are left out, on both paths alike. With
CUDA, wall time with a synchronisation at each epoch's ends.

`--profile` also runs one extra `fit` under cProfile and stores the functions that take the
most time (project code, Lightning, torchmetrics, MLflow) in the result, to see what costs.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch
from pytorch_lightning import Callback
from torch.nn import functional as F

from benchmarks import DEMO_CONFIG, demo_environment, machine_description, write_result

NAME = "framework_cost"
TARGET = 0.95
# The clock both paths read (set by `run`): wall time, or on the CPU with one torch thread the
# main thread's CPU time, which other processes on a shared machine do not inflate.
CLOCK = {"clock": time.perf_counter}


def now() -> float:
    return CLOCK["clock"]()


def set_clock(clock) -> None:
    """Make `now()` read `clock`, here and in `benchmarks.framework_cost` as the CLI imports it.

    Run as `python -m benchmarks.framework_cost`, this file is `__main__`, and the callback the
    CLI builds from its class path lives in a second copy of the module, with its own `CLOCK`.
    """
    from benchmarks import framework_cost as imported

    CLOCK["clock"] = imported.CLOCK["clock"] = clock


# Per-step work of `fit` that the bare loop does not do: label -> (file fragment, function).
PROFILED_PARTS = {
    "training_step (all)": ("lightning_modules/classifier.py", "training_step"),
    "forward + loss (_training_loss)": ("lightning_modules/classifier.py", "_training_loss"),
    "self.log": ("pytorch_lightning/core/module.py", "log"),
    "train accuracy (torchmetrics forward)": ("torchmetrics/metric.py", "forward"),
    "logger writes (MLflow log_metrics)": ("pytorch_lightning/loggers/mlflow.py", "log_metrics"),
    "step metrics bookkeeping": ("logger_connector.py", "update_train_step_metrics"),
    "callback hooks (all stages)": ("pytorch_lightning/trainer/call.py", "_call_callback_hooks"),
    "batch fetch (Lightning fetcher)": ("pytorch_lightning/loops/fetchers.py", "__next__"),
    "heads (MultiDomainHead.forward)": ("lightning_modules/models/heads.py", "forward"),
}
# Where the time of the profiled fit is attributed (path fragments of the source files).
PROFILED_PACKAGES = (
    "lightning_modules",
    "datamodules",
    "pytorch_lightning",
    "torchmetrics",
    "mlflow",
)


class TrainingLoopTimer(Callback):
    """Seconds and images of each training epoch's loop (`epochs`: a list of (images, s))."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, float]] = []
        self._start = self._end = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _synchronize(pl_module.device)
        self._start, self._images = now(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1])
        self._end = now()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        _synchronize(pl_module.device)
        self.epochs.append((self._images, self._end - self._start))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_fit(demo_args: list[str], epochs: int, extra_args: list[str]):
    """(a): one `fit` through the CLI; returns (cli, per-epoch (images, s), wall seconds)."""
    from experiments.officehome import main

    start = time.perf_counter()
    cli = main(
        [
            "fit",
            *demo_args,
            "--trainer.max_epochs",
            str(epochs),
            "--trainer.callbacks+=benchmarks.framework_cost.TrainingLoopTimer",
            *extra_args,
        ]
    )
    wall = time.perf_counter() - start
    # The CLI imports the callback by its class path: under `python -m` that is another module
    # object than this `__main__`, so the class is looked up by that path too.
    from benchmarks.framework_cost import TrainingLoopTimer as timer_class

    timer = next(c for c in cli.trainer.callbacks if isinstance(c, timer_class))
    return cli, timer.epochs, wall


def run_bare(model, datamodule, epochs: int, limit_batches: int | None) -> list[tuple[int, float]]:
    """(b): the same steps in a plain loop; returns per-epoch (images, s)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).train()
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured.get("lr_scheduler") if isinstance(configured, dict) else None
    loader = datamodule.train_dataloader()
    smoothing = model.hparams.label_smoothing
    results = []
    for _ in range(epochs):
        _synchronize(device)
        start, count = now(), 0
        for index, batch in enumerate(loader):
            if limit_batches is not None and index >= limit_batches:
                break
            batch = [part.to(device, non_blocking=True) for part in batch]
            images, labels, domain_index = datamodule.on_after_batch_transfer(batch, 0)
            loss = F.cross_entropy(model(images, domain_index), labels, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            count += len(labels)
        _synchronize(device)
        results.append((count, now() - start))
        if scheduler is not None:
            scheduler.step()
    return results


def warm_throughputs(epochs: list[tuple[int, float]]) -> list[float]:
    """Images/s of every epoch but the first (worker start-up, allocator warm-up)."""
    return [images / seconds for images, seconds in epochs[1:] if seconds > 0]


def profile_fit(demo_args: list[str], epochs: int, extra_args: list[str]) -> dict:
    """One more `fit` under cProfile (wall clock): where the training loop's time goes.

    `parts`: cumulative seconds and calls of the per-step work the bare loop does not do
    (`PROFILED_PARTS`); `top_own`: the framework functions (project code outside the model,
    Lightning, torchmetrics, MLflow) with the most own time. cProfile slows Python code, so
    these are shares of a profiled run, not timings.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    _, timed_epochs, _ = run_fit(demo_args, epochs, extra_args)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    parts: dict[str, dict] = {}
    own = []
    for (filename, line, function), (_, calls, own_s, cumulative, _) in stats.items():
        for label, (fragment, name) in PROFILED_PARTS.items():
            if fragment in filename and function == name:
                part = parts.setdefault(label, {"calls": 0, "cumulative_s": 0.0})
                part["calls"] += calls
                part["cumulative_s"] = round(part["cumulative_s"] + cumulative, 4)
        framework = any(f"/{package}/" in filename for package in PROFILED_PACKAGES)
        if framework and "/lightning_modules/models/" not in filename:
            short = filename.split("site-packages/")[-1]
            own.append(
                (round(own_s, 4), calls, f"{'/'.join(short.split('/')[-2:])}:{line}({function})")
            )
    own.sort(reverse=True)
    return {
        "training_loop_s": sum(seconds for _, seconds in timed_epochs),
        "parts": parts,
        "top_own": [{"function": f, "calls": c, "own_s": t} for t, c, f in own[:15]],
    }


def run(
    repeats: int = 3,
    epochs: int = 3,
    extra_args: list[str] | None = None,
    limit_batches: int | None = None,
    threads: int = 1,
    profile: bool = False,
    clock: str = "auto",
) -> dict:
    """Alternate (a) and (b) `repeats` times; return the result dictionary.

    `clock`: `wall`, `cpu` (the main thread's CPU time: the training loop runs there, the
    loader workers in other processes for both paths alike) or `auto` (`cpu` without CUDA and
    with one torch thread, else `wall`).
    """
    extra_args = list(extra_args or [])
    if limit_batches is not None:
        extra_args += ["--trainer.limit_train_batches", str(limit_batches)]
    previous_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    if clock == "auto":
        single = torch.get_num_threads() == 1
        clock = "cpu" if single and not torch.cuda.is_available() else "wall"
    set_clock(time.thread_time if clock == "cpu" else time.perf_counter)
    fit_rates, bare_rates, walls, pairs, images = [], [], [], [], {}
    machine = machine_description("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with demo_environment(DEMO_CONFIG) as demo_args:
            for _ in range(repeats):
                cli, fit_epochs, wall = run_fit(demo_args, epochs, extra_args)
                bare_epochs = run_bare(cli.model, cli.datamodule, epochs, limit_batches)
                del cli
                # Both paths took the same steps: the same images in every epoch.
                images = {"fit": [n for n, _ in fit_epochs], "bare": [n for n, _ in bare_epochs]}
                fit_warm, bare_warm = warm_throughputs(fit_epochs), warm_throughputs(bare_epochs)
                fit_rates += fit_warm
                bare_rates += bare_warm
                walls.append(wall)
                pairs.append(statistics.median(fit_warm) / statistics.median(bare_warm))
            profiled = profile_fit(demo_args, epochs, extra_args) if profile else None
    finally:
        torch.set_num_threads(previous_threads)
        set_clock(time.perf_counter)
    fit_rate, bare_rate = statistics.median(fit_rates), statistics.median(bare_rates)
    ratio = fit_rate / bare_rate
    rows = [
        {
            "path": "fit (CLI, callbacks, MLflow)",
            "images_per_s": fit_rate,
            "epochs": len(fit_rates),
        },
        {"path": "bare PyTorch loop", "images_per_s": bare_rate, "epochs": len(bare_rates)},
    ]
    result = {
        "name": NAME,
        "machine": machine,
        "settings": {
            "config": DEMO_CONFIG.name,
            "repeats": repeats,
            "epochs_per_run": epochs,
            "extra_args": " ".join(extra_args),
            "threads": threads if threads > 0 else previous_threads,
            "clock": clock,
        },
        "bare_loop_ratio": ratio,
        "ratio_per_repeat": pairs,
        "fit_wall_s_median": statistics.median(walls),
        "images_per_epoch": images,
        "rows": rows,
        "targets": {f"bare_loop_ratio_ge_{TARGET}": ratio >= TARGET},
    }
    if profiled is not None:
        result["profile"] = profiled
    return result


COLUMNS = ("path", "images_per_s", "epochs")

NOTES = """
Training images/s of each epoch's training loop (first epoch of each run left out), median over
the runs; (a) and (b) alternate in one process and take the same steps on the same DataLoader
with the same model and optimizer. `bare_loop_ratio` (in the JSON) = (a) / (b); target >= 0.95.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--repeats", type=int, default=3, help="(a, b) pairs")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first untimed)")
    parser.add_argument("--limit-batches", type=int, default=None, help="training batches/epoch")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)"
    )
    parser.add_argument("--profile", action="store_true", help="one more fit under cProfile")
    parser.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto")
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None, extra_args=None) -> dict:
    """Run with parsed options and write the result files."""
    result = run(
        args.repeats,
        args.epochs,
        extra_args,
        args.limit_batches,
        args.threads,
        args.profile,
        getattr(args, "clock", "auto"),
    )
    notes = NOTES + f"\nbare_loop_ratio: {result['bare_loop_ratio']:.3f}\n"
    write_result(args.name, result, COLUMNS, notes, results_dir)
    return result


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.framework_cost [--repeats ...] [-- fit args]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("fit_args", nargs=argparse.REMAINDER, help="extra `fit` arguments")
    args = parser.parse_args(argv)
    extra = [a for a in args.fit_args if a != "--"]
    return run_from_args(args, extra_args=extra)


if __name__ == "__main__":
    main()
