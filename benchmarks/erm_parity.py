"""ERM parity with DomainBed: held-out and training-domain accuracy per training setup.

On the generated Office-Home tree (10 classes x 100 images per domain, 64 px), Art held out, a
ResNet-18 from scratch, Adam 5e-5, 32 images of every training domain per step, 100 steps:
`configs/officehome/domainbed_demo.yaml` (DomainBed's protocol at this scale) and variants of it,
each a list of command-line overrides, trained with `experiments.officehome fit` for every seed
(seed and split seed alike, so that seed s of every variant trains and evaluates on the same
split). After training, this module evaluates the final model itself (no checkpoint selection,
as DomainBed's last evaluation at 100 steps): held-out Art and the mean of the trained domains'
holdout accuracies (`val/acc_mean`, training-domain validation), through the variant's own
evaluation transform and through the other one, the holdout also through the training
augmentation (how DomainBed's code scores its training-domain validation: the holdout is a
slice of the augmented training environment), and with both a shared head and domain heads,
Art through the mean of the domain heads as well.

    python -m benchmarks.erm_parity                       # every variant, 3 seeds (hours on CPU)
    python -m benchmarks.erm_parity --variants project domainbed --seeds 0
    python -m benchmarks.erm_parity --quick --results-dir /tmp/parity   # seconds: a smoke run

Results go to `results/erm_parity.{json,md}` after every run; runs already there (same
variant, seed and settings) are skipped, so an interrupted invocation continues where it
stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks import RESULTS_DIR, demo_environment, machine_description, markdown_table
from datamodules.data.transforms import AugmentationConfig, seed_dataset_transform

NAME = "erm_parity"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "officehome" / "domainbed_demo.yaml"
HELD_OUT = "Art"
#: The issue's measurement of DomainBed's own ERM on this tree (3 seeds, 100 steps).
DOMAINBED_REFERENCE = {"art_acc": 0.481, "val_acc_mean": 0.701}

#: The project's leave-one-domain-out augmentation (configs/officehome/leave_out_art.yaml):
#: ImageNet-style crops, colour jitter 0.3 on 80% of the images, centre-crop evaluation.
PROJECT_AUGMENTATION = AugmentationConfig(
    crop="random_resized", scale=(0.08, 1.0), color_jitter=0.3, evaluation="center_crop"
)
FREEZE_BN = "lightning_modules.callbacks.frozen_batchnorm.FreezeBatchNorm"


def augmentation_args(config: AugmentationConfig) -> list[str]:
    """The override that sets every augmentation field (a whole value, not merged)."""
    return ["--data.init_args.augmentation", json.dumps(dataclasses.asdict(config))]


def heads_args(domain_heads: bool, shared_head: bool) -> list[str]:
    """The override that sets the head setup."""
    return [
        *("--model.init_args.domain_heads", str(domain_heads).lower()),
        *("--model.init_args.shared_head", str(shared_head).lower()),
    ]


def domainbed_with(**changes) -> AugmentationConfig:
    """DomainBed's augmentation as the demo config sets it, with `changes`."""
    from datamodules.data.transforms import domainbed_augmentation

    return dataclasses.replace(domainbed_augmentation(), **changes)


#: name -> (what changes from the domainbed protocol, overrides of domainbed_demo.yaml), in the
#: order they run (the ones that locate the gap first).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "project": (
        "the project's defaults: per-domain heads (Art: mean of their probabilities), the "
        "project's augmentation and centre-crop evaluation",
        [*heads_args(True, False), *augmentation_args(PROJECT_AUGMENTATION)],
    ),
    "domainbed": ("DomainBed's protocol (configs/officehome/domainbed_demo.yaml)", []),
    "domainbed+domain_heads": (
        "per-domain heads instead of the shared one (Art: mean of their probabilities)",
        heads_args(True, False),
    ),
    "domainbed+project_augmentation": (
        "the project's training augmentation (evaluation stays DomainBed's resize)",
        augmentation_args(dataclasses.replace(PROJECT_AUGMENTATION, evaluation="resize")),
    ),
    "domainbed+frozen_bn": (
        "BatchNorm frozen in evaluation mode (DomainBed 2020; from scratch: no normalisation)",
        ["--trainer.callbacks+=" + FREEZE_BN],
    ),
    "domainbed+both_heads": (
        "per-domain heads beside the shared one (Art: shared head; mean of heads reported too)",
        heads_args(True, True),
    ),
    "domainbed+project_crop": (
        "the project's crop scale (0.08-1) only, DomainBed's colour augmentation",
        augmentation_args(domainbed_with(scale=(0.08, 1.0))),
    ),
    "project+srm": (
        "the project's defaults with the classifier's default module, SRM, in every block",
        [
            *heads_args(True, False),
            *augmentation_args(PROJECT_AUGMENTATION),
            *("--model.init_args.recalibration", "srm"),
        ],
    ),
}
#: The variant every other one is compared with (paired by seed).
BASELINE = "domainbed"
OTHER_EVALUATION = {"resize": "center_crop", "center_crop": "resize"}

# Tiny settings that run every code path in seconds (tests, --quick).
QUICK_ARGS = [
    *("--data.init_args.demo_classes", "4", "--data.init_args.images_per_class", "10"),
    *("--data.init_args.demo_image_size", "32", "--data.init_args.image_size", "32"),
    *("--data.init_args.batch_size_per_domain", "4", "--data.init_args.num_workers", "0"),
    *("--trainer.max_steps", "3"),
]


def evaluation_loader(datamodule, evaluation: str, augment: bool, seed: int) -> DataLoader:
    """The validation split (the trained domains' holdout and all of the held-out domain)
    through the `evaluation` transform, or through the training augmentation (seeded)."""
    configured = datamodule.augmentation
    datamodule.augmentation = dataclasses.replace(configured, evaluation=evaluation)
    try:
        dataset = datamodule.make_dataset("val", augment=augment)
    finally:
        datamodule.augmentation = configured
    if augment:
        seed_dataset_transform(dataset, seed)
    return DataLoader(dataset, batch_size=200, num_workers=0)


@torch.no_grad()
def domain_accuracies(model, datamodule, loader: DataLoader) -> dict[str, dict[str, float]]:
    """Per-domain accuracy of the model's own routing (`model`), and with per-domain heads
    beside a shared head, of the mean-of-heads rule for domains without a head (`mean_rule`)."""
    model.eval()
    head = model.head
    both = head.shared is not None and len(head.heads) > 0
    counts = {"model": {}, "mean_rule": {}, "total": {}}
    for batch in loader:
        images, labels, domains = datamodule.on_after_batch_transfer(batch, 0)
        features = model.features(images)
        predictions = {"model": model.classify(features, domains).argmax(dim=1)}
        if both:
            mean = head.all_domain_logits(features).softmax(dim=-1).mean(dim=1)
            own = head.routing[domains] >= 0
            predictions["mean_rule"] = torch.where(own, predictions["model"], mean.argmax(dim=1))
        for index, name in enumerate(datamodule.domain_names):
            in_domain = domains == index
            counts["total"][name] = counts["total"].get(name, 0) + int(in_domain.sum())
            for rule, predicted in predictions.items():
                correct = int((predicted[in_domain] == labels[in_domain]).sum())
                counts[rule][name] = counts[rule].get(name, 0) + correct
    return {
        rule: {name: counts[rule][name] / counts["total"][name] for name in counts[rule]}
        for rule in ("model", "mean_rule")
        if counts[rule]
    }


def trained_mean(accuracies: dict[str, float], trained: list[str]) -> float:
    return statistics.fmean(accuracies[name] for name in trained)


def evaluate(cli, seed: int) -> dict[str, float]:
    """The run's numbers (see the module docstring)."""
    model, data = cli.model, cli.datamodule
    trained = data.trained_domains
    own = data.augmentation.evaluation
    row: dict[str, float] = {}
    for label, evaluation in (("", own), ("_other_eval", OTHER_EVALUATION[own])):
        accuracies = domain_accuracies(model, data, evaluation_loader(data, evaluation, False, 0))
        row[f"art_acc{label}"] = accuracies["model"][HELD_OUT]
        row[f"val_acc_mean{label}"] = trained_mean(accuracies["model"], trained)
        if "mean_rule" in accuracies and not label:
            row["art_acc_mean_of_heads"] = accuracies["mean_rule"][HELD_OUT]
    augmented = domain_accuracies(model, data, evaluation_loader(data, own, True, seed))
    row["val_acc_mean_augmented"] = trained_mean(augmented["model"], trained)
    return row


def mean_and_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


#: Two-sided 95% Student t quantiles by degrees of freedom (paired intervals over few seeds).
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


def summarize(runs: list[dict], key: str = "art_acc") -> list[dict]:
    """Per variant: mean +- SE over seeds of each number, and the paired difference in `key`
    (and in `val_acc_mean`) from the baseline with its 95% t interval, over shared seeds."""
    rows = []
    by_variant: dict[str, dict[int, dict]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], {})[run["seed"]] = run
    baseline = by_variant.get(BASELINE, {})
    for variant in [v for v in VARIANTS if v in by_variant]:
        seeds = by_variant[variant]
        row: dict = {"variant": variant, "seeds": len(seeds)}
        numbers = sorted({k for r in seeds.values() for k in r if k.startswith(("art_", "val_"))})
        for number in numbers:
            values = [r[number] for r in seeds.values() if number in r]
            mean, se = mean_and_se(values)
            row[number] = f"{mean:.3f} ± {se:.3f}" if len(values) > 1 else f"{mean:.3f}"
        for number in (key, "val_acc_mean"):
            shared = sorted(set(seeds) & set(baseline))
            if variant == BASELINE or len(shared) < 2:
                continue
            differences = [seeds[s][number] - baseline[s][number] for s in shared]
            mean, se = mean_and_se(differences)
            half = T_95[len(shared) - 1] * se
            row[f"{number}_minus_{BASELINE}"] = (
                f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"
            )
        rows.append(row)
    return rows


SUMMARY_COLUMNS = (
    "variant",
    "seeds",
    "art_acc",
    "art_acc_minus_domainbed",
    "val_acc_mean",
    "val_acc_mean_minus_domainbed",
    "art_acc_other_eval",
    "val_acc_mean_other_eval",
    "val_acc_mean_augmented",
    "art_acc_mean_of_heads",
)
RUN_COLUMNS = (
    "variant",
    "seed",
    "art_acc",
    "val_acc_mean",
    "art_acc_other_eval",
    "val_acc_mean_other_eval",
    "val_acc_mean_augmented",
    "art_acc_mean_of_heads",
    "seconds",
)

NOTES = """
Each variant changes one thing from DomainBed's protocol at this scale
(`configs/officehome/domainbed_demo.yaml`), except `project` (the project's defaults) and
`project+srm`. Numbers are accuracies of the model after the last step, mean ± standard error
over the seeds; `*_minus_domainbed` is the paired difference from `domainbed` (same seed, same
split) with its 95% t interval over the seeds. `art_acc`: the held-out domain, whole, through
the variant's evaluation transform; `val_acc_mean`: the mean of the trained domains' 20%
holdout accuracies (training-domain validation); `*_other_eval`: through the other evaluation
transform (centre crop <-> resize); `val_acc_mean_augmented`: the holdout through the training
augmentation (how DomainBed's code scores it); `art_acc_mean_of_heads`: with per-domain heads
beside the shared one, Art through the mean of the domain heads' probabilities instead.
DomainBed's own ERM on this tree (the issue's measurement, 3 seeds, 100 steps): held-out Art
0.481, training-domain validation 0.701.
"""


def variant_description(runs: list[dict]) -> str:
    """The variants that ran, each with what it changes."""
    ran = {run["variant"] for run in runs}
    lines = [f"- `{name}`: {what}" for name, (what, _) in VARIANTS.items() if name in ran]
    return "Variants:\n\n" + "\n".join(lines)


def write(result: dict, results_dir: Path) -> None:
    """`<name>.json` and `<name>.md`: summary table, per-seed table, command, notes."""
    results_dir.mkdir(parents=True, exist_ok=True)
    result["rows"] = summarize(result["runs"])
    (results_dir / f"{NAME}.json.tmp").write_text(json.dumps(result, indent=2) + "\n")
    (results_dir / f"{NAME}.json.tmp").replace(results_dir / f"{NAME}.json")
    machine = ", ".join(f"{k}: {v}" for k, v in result["machine"].items())
    settings = ", ".join(f"{k}: {v}" for k, v in result["settings"].items())
    markdown = (
        f"# Benchmark: {NAME}\n\nMachine: {machine}\n\nSettings: {settings}\n\n"
        f"Command: `{result['command']}`\n\n"
        f"{markdown_table(SUMMARY_COLUMNS, result['rows'])}\n\n{NOTES.strip()}\n\n"
        f"{variant_description(result['runs'])}\n\nPer seed:\n\n"
        f"{markdown_table(RUN_COLUMNS, result['runs'])}\n"
    )
    (results_dir / f"{NAME}.md").write_text(markdown)


def run(
    variants: list[str],
    seeds: list[int],
    results_dir: Path = RESULTS_DIR,
    extra_args: list[str] | None = None,
    command: str = "",
) -> dict:
    """Train and evaluate every (variant, seed) not yet in the results; return the result."""
    from experiments.officehome import main

    settings = {"config": CONFIG.name, "held_out": HELD_OUT, "extra_args": extra_args or []}
    path = results_dir / f"{NAME}.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    runs = previous.get("runs", []) if previous.get("settings") == settings else []
    result = {
        "name": NAME,
        "machine": machine_description("cpu"),
        "settings": settings,
        "command": command,
        "runs": runs,
    }
    done = {(r["variant"], r["seed"]) for r in runs}
    with demo_environment(CONFIG) as demo_args:
        for variant in variants:
            for seed in seeds:
                if (variant, seed) in done:
                    continue
                start = time.perf_counter()
                cli = main(
                    [
                        "fit",
                        *demo_args,
                        *("--seed_everything", str(seed), "--data.init_args.split_seed", str(seed)),
                        # The final model is evaluated here: no validation, no checkpoint.
                        *("--trainer.val_check_interval", "1000000"),
                        *("--trainer.num_sanity_val_steps", "0"),
                        *VARIANTS[variant][1],
                        *(extra_args or []),
                    ]
                )
                trainer = cli.trainer
                if trainer.global_step < trainer.max_steps:  # stopped (SIGTERM): not recorded
                    raise RuntimeError(
                        f"{variant} seed {seed} stopped after {trainer.global_step} of "
                        f"{trainer.max_steps} steps; its result is not recorded"
                    )
                row = {"variant": variant, "seed": seed, **evaluate(cli, seed)}
                row["seconds"] = round(time.perf_counter() - start, 1)
                result["runs"].append(row)
                result["machine"] = machine_description("cpu")
                write(result, results_dir)
                print(json.dumps(row), flush=True)
    return result


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.erm_parity [--variants ...] [--seeds ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="tiny data and 3 steps: a smoke run")
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.erm_parity", *(argv or [])])
    extra_args = QUICK_ARGS if args.quick else None
    return run(args.variants, args.seeds, args.results_dir, extra_args, command)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
