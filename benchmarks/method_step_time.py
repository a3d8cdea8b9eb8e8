"""Training-step time of every registered training method relative to ERM (same backbone, same
batch).

Each method trains the same `MultiDomainClassifier` (one backbone, a head per domain, Adam as in
DomainBed) on the same fixed batch: `batch_per_domain` images of each of `domains` training
domains, ordered by domain. A step is what Lightning runs for one batch (forward passes, the
method's terms, backward and the optimizer step(s), manual methods included), timed from
`on_train_batch_start` to `on_train_batch_end`. The methods take turns in rounds: each round
fits every method for `steps` steps in a fresh `Trainer` (the first step of a fit is left out:
it creates the optimizer state), so a slow spell of a shared machine hits all of them alike.
A method's time is its median step over the rounds, reported as a ratio to ERM's.

Methods that need unlabelled target domains (`needs_target_domains`, DANN) get a target batch
of the same size beside the labelled one, as their configs give them.

    python -m benchmarks.method_step_time --image-size 64 --batch-per-domain 8 --repeats 5

With one torch thread (the default) steps are timed on the main thread's CPU clock, so the
ratios hold on a machine other processes keep busy (`--clock wall` for wall time).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import traceback
import warnings

import torch
from pytorch_lightning import Callback, Trainer
from torch.utils.data import DataLoader, Dataset

from benchmarks import machine_description, write_result
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.methods import TRAINING_METHODS

NAME = "method_step_time"
NUM_CLASSES = 10


class FixedBatches(Dataset):
    """The same batch `length` times (the loader adds no work of its own: batch_size=None)."""

    def __init__(self, batch, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.batch


class StepTimer(Callback):
    """Seconds of each training batch, from its start hook to its end hook, on `clock`."""

    def __init__(self, clock=time.perf_counter) -> None:
        self.clock = clock
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(self.clock() - self._started)


def make_batch(domains: int, per_domain: int, image_size: int, seed: int = 0):
    """(images, labels, domain indices): `per_domain` random images of each domain, in order."""
    generator = torch.Generator().manual_seed(seed)
    size = domains * per_domain
    images = torch.randn(size, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
    domain_index = torch.arange(domains).repeat_interleave(per_domain)
    return images, labels, domain_index


def build_model(method: str, backbone: str, domains: int, image_size: int, target: bool):
    names = [f"domain{d}" for d in range(domains)] + (["target"] if target else [])
    return MultiDomainClassifier(
        backbone=backbone,
        recalibration="none",
        weights=None,
        num_classes=NUM_CLASSES,
        domain_names=names,
        trained_domains=names[:domains],
        image_size=image_size,
        optimizer=lambda groups: torch.optim.Adam(groups, lr=5e-5),
        lr_scheduler=None,
        method=method,
    )


def fit_steps(model, batch, steps: int, clock=time.perf_counter) -> list[float]:
    """`steps` training steps in a fresh Trainer; the seconds of each but the first."""
    timer = StepTimer(clock)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = DataLoader(FixedBatches(batch, steps), batch_size=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's hints about workers and logging
        trainer.fit(model, loader)
    return timer.seconds[1:]


def run(
    methods=None,
    backbone: str = "resnet18",
    image_size: int = 64,
    domains: int = 3,
    batch_per_domain: int = 8,
    repeats: int = 5,
    steps: int = 3,
    clock: str = "auto",
) -> dict:
    """Time every method in rounds; return the result dictionary (see `write_result`).

    `clock`: `wall`, or `cpu`: the calling thread's CPU time, which with one torch thread is
    the step's compute (CPU ops and autograd's backward run on that thread) and leaves out the
    time other processes of a shared machine hold the core; `auto` is `cpu` with one thread.
    """
    if clock == "auto":
        clock = "cpu" if torch.get_num_threads() == 1 else "wall"
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    # One Trainer per method and round: their start-up lines would fill the output.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    methods = list(methods or TRAINING_METHODS)
    if "erm" not in methods:
        methods.insert(0, "erm")
    torch.manual_seed(0)
    source = make_batch(domains, batch_per_domain, image_size)
    target_images = make_batch(1, domains * batch_per_domain, image_size, seed=1)[0]
    target = (target_images, torch.full((len(target_images),), -1), torch.full_like(source[2], 0))
    models, batches, errors = {}, {}, {}
    for name in methods:
        needs_target = TRAINING_METHODS[name].needs_target_domains
        try:
            models[name] = build_model(name, backbone, domains, image_size, needs_target)
        except Exception as error:  # reported in the table; the others go on
            errors[name] = f"{type(error).__name__}: {error}"
            continue
        if needs_target:
            target_domain = torch.full_like(source[2], domains)  # the "target" domain index
            batches[name] = {"source": source, "target": (target[0], target[1], target_domain)}
        else:
            batches[name] = source
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name in list(models):
            try:
                times[name] += fit_steps(models[name], batches[name], steps, timer)
            except Exception as error:  # likewise
                errors[name] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
                del models[name]
    rows = []
    for name in methods:
        row = {"method": name, "file": TRAINING_METHODS[name].__module__.rsplit(".", 1)[-1]}
        if name in errors or not times.get(name):
            row["error"] = errors.get(name, "no timed step")
        else:
            row["step_ms_median"] = 1000 * statistics.median(times[name])
            row["step_ms_min"] = 1000 * min(times[name])
            row["timed_steps"] = len(times[name])
            row["manual"] = TRAINING_METHODS[name].manual_optimization
        rows.append(row)
    erm = next(r for r in rows if r["method"] == "erm")
    for row in rows:
        if "step_ms_median" in row and "step_ms_median" in erm:
            row["time_ratio"] = row["step_ms_median"] / erm["step_ms_median"]
    return {
        "name": NAME,
        "machine": machine_description("cpu"),
        "settings": {
            "backbone": backbone,
            "image_size": image_size,
            "domains": domains,
            "batch_per_domain": batch_per_domain,
            "rounds": repeats,
            "steps_per_round": steps,
            "optimizer": "Adam 5e-5",
            "clock": clock,
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
    }


COLUMNS = ("method", "step_ms_median", "step_ms_min", "timed_steps", "time_ratio", "error")

NOTES = """
A step = one batch as Lightning trains it (the method's forward passes and terms, backward and
optimizer step(s)) on the same fixed batch for every method: `batch_per_domain` images of each
training domain (DANN also gets a target batch of the same size). All methods round-robin in
one process, each round a fresh fit of `steps_per_round` steps per method (the first step of
each fit, which creates the optimizer state, is not timed); `step_ms_median` is the median over
the timed steps, `time_ratio` that median over ERM's. With `clock: cpu` (one torch thread) a
step's time is the main thread's CPU time: its compute, without the time a busy machine's other
processes hold the core. Per-domain methods (GroupDRO, CORAL, MMD,
MTL) run one backbone pass per domain, as DomainBed does, so their cost also depends on how
well small batches use the cores.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--batch-per-domain", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps per fit (the first untimed)")
    parser.add_argument("--clock", choices=("auto", "wall", "cpu"), default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: per-core ratios, steadier on a shared machine)",
    )
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None) -> dict:
    """Run with parsed options and write the result files."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = run(
        methods=args.methods,
        backbone=args.backbone,
        image_size=args.image_size,
        domains=args.domains,
        batch_per_domain=args.batch_per_domain,
        repeats=args.repeats,
        steps=args.steps,
        clock=args.clock,
    )
    write_result(args.name, result, COLUMNS, NOTES, results_dir)
    return result


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.method_step_time [--methods ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
