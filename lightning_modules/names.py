"""The names runs are logged and read under: metric keys, their parts, and the naming rule.

Every place that writes or reads a metric (the LightningModule, the callbacks, the CLI's
checkpoint monitor, model selection, reports, `compare`, `prune`) builds the key from these
constants, so a name exists once. Keys have the form `<stage>/<name>` or
`<stage>/<name>/<domain>`, with stage `train`, `val` or `test` (lightning-hydra-template's
convention), and domain names passed through `metric_safe_name`.

Domain roles also have one name each, used by the DataModule, the model and the metrics:
`domain_names` (every domain, in the data's order), `trained_domains` (labelled training data,
one classifier head each, and the only domains model selection reads), `held_out_domains`
(evaluated only) and `target_domains` (unlabelled adaptation targets, evaluated with labels).
"""

from __future__ import annotations

import re

TRAIN, VAL, TEST = "train", "val", "test"
STAGES = (TRAIN, VAL, TEST)

#: Cross-entropy (train: the training method's whole loss).
LOSS = "loss"
#: Accuracy: `train/acc` over the batch, `<stage>/acc/<domain>` per evaluated domain.
ACC = "acc"
#: Mean and worst accuracy over the trained domains (the model-selection criterion).
ACC_MEAN = "acc_mean"
ACC_WORST = "acc_worst"
#: Mean accuracy over the evaluated domains that were not trained on (held out, targets).
ACC_HELD_OUT_MEAN = "acc_held_out_mean"
#: Samples evaluated, summed over processes.
NUM_SAMPLES = "num_samples"
#: Style-shifted evaluation: `<stage>/style_acc/<domain>`, its mean over the trained domains,
#: and the ratio of that mean to `acc_mean`.
STYLE_ACC = "style_acc"
STYLE_ACC_MEAN = "style_acc_mean"
STYLE_ROBUSTNESS = "style_robustness"
#: Fraction of shape decisions on cue-conflict stimuli (test only).
SHAPE_BIAS = "shape_bias"
#: Pruning curves: `prune/<rule>/<name>` (rule `gate` or `random`), step = 100 x ratio.
PRUNE = "prune"
#: The epoch (0-based) Lightning logs beside every other metric, at the same step.
EPOCH = "epoch"
#: Images skipped under `data.on_bad_image: skip` (all splits; `data/bad_images/<split>`).
BAD_IMAGES = "data/bad_images"

#: The per-domain summaries every evaluation logs, in the order tables show them.
DOMAIN_SUMMARIES = (ACC_MEAN, ACC_WORST, ACC_HELD_OUT_MEAN)

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-.]+")


def metric_safe_name(name: str) -> str:
    """The form of a domain or class name used in metric names, tags and module keys.

    Every run of characters other than letters, digits, `_`, `-` and `.` becomes one `_`
    (`Real World` -> `Real_World`), and dots become `_` too since torch module keys cannot hold
    them. The same function serves MLflow metric names, head keys and artifact names.
    """
    safe = _UNSAFE.sub("_", name).replace(".", "_").strip("_")
    if not safe:
        raise ValueError(f"name {name!r} has no letters or digits to build a metric name from")
    return safe


def metric_key(stage: str, name: str) -> str:
    """`<stage>/<name>`, e.g. `metric_key("val", ACC_MEAN)` -> `val/acc_mean`."""
    return f"{stage}/{name}"


def stage_prefix(stage: str) -> str:
    """`<stage>/`: what every key logged in that stage starts with."""
    return f"{stage}/"


def domain_metric_name(domain: str, name: str = ACC) -> str:
    """`<name>/<safe domain>`: a per-domain metric without its stage (`acc/Real_World`), as the
    pruning curves name their columns."""
    return f"{name}/{metric_safe_name(domain)}"


def domain_metric_key(stage: str, domain: str, name: str = ACC) -> str:
    """`<stage>/<name>/<safe domain>`, e.g. `val/acc/Real_World`."""
    return metric_key(stage, domain_metric_name(domain, name))


def domain_metric_prefix(stage: str | None, name: str = ACC) -> str:
    """`<stage>/<name>/`: what every per-domain key of that metric starts with (`<name>/`
    without a stage, for `domain_metric_name`)."""
    return f"{name}/" if stage is None else f"{stage}/{name}/"


#: What the CLI's checkpoint monitors and model selection ranks by.
MONITOR = metric_key(VAL, ACC_MEAN)
