"""Channel pruning by gate importance: mask each block's least important channels, re-evaluate.

Source: the SRM paper (Lee, Kim, Nam, "SRM: A Style-based Recalibration Module for
Convolutional Neural Networks", ICCV 2019, arXiv:1903.10829) has a channel-pruning study:
channels are pruned by the importance the module assigns them, and accuracy is kept better with
SRM than with SE or GE. The paper's exact ranking rule is not available to this project; the
rule here is **the project's reading** of that study:

- **Importance** of a channel = the module's mean gate for that channel over the training split
  (`BlockGateStatistics.mean` of `lightning_modules/analysis/gates.py`: every training image,
  evaluation preprocessing, model in eval mode), per block.
- **Ranking**: per block, channels sorted by importance, lowest first (ties by channel index,
  a stable sort). The random baseline ranks each block by a seeded permutation instead
  (`random_rankings`: one `torch.Generator` seeded with `seed`, one permutation per block in
  the backbone's block order), so the two rules prune the same number of channels per block.
- **Count**: per block, `floor(ratio * C)` channels (`pruned_count`; a 1e-9 tolerance keeps
  products such as 0.7 * 10 from rounding down to 6). Ratio 0 prunes nothing, and a block
  with C channels keeps at least `C - floor(0.9 * C)` at ratio 0.9.
- **Masking** = zeroing that channel of the block's recalibrated residual branch, i.e. the
  module's output, before the shortcut addition (in a DenseNet: the dense layer's new feature
  maps before they are concatenated). `ChannelMask` does it with a forward hook on each module
  that multiplies the output by a (C,) 0/1 mask; the modules are not changed. Blocks with
  nothing to prune get no hook, so ratio 0 runs exactly the unhooked model (SRM keeps its
  fused kernel, which a hook disables) and reproduces the checkpoint's validation numbers.

Evaluation (`evaluate_domains`) follows the classifier's validation: eval mode, inference mode,
each image through its own domain's head, one confusion matrix per domain (`DomainAccuracy`),
`acc_mean` / `acc_worst` over the trained (head) domains and `acc_held_out_mean` over the rest
(`summarize_domains`). Model side only: the loader and its normalisation are passed in.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lightning_modules.metrics import (
    DomainAccuracy,
    accuracy_from_confusion,
    summarize_domains,
)
from lightning_modules.names import (
    ACC_HELD_OUT_MEAN,
    ACC_MEAN,
    ACC_WORST,
    NUM_SAMPLES,
    PRUNE,
    domain_metric_name,
    metric_key,
)

#: The ranking rules, in the order they are evaluated and drawn.
RULES = ("gate", "random")
#: Tolerance of `pruned_count` against float products just below an integer.
_COUNT_TOLERANCE = 1e-9


def pruned_count(channels: int, ratio: float) -> int:
    """How many of a block's `channels` channels a pruning `ratio` masks: floor(ratio * C).

    Args:
        channels: The block's channel count C.
        ratio: Fraction in [0, 1).

    Returns:
        The number of channels to mask, in [0, C).

    Raises:
        ValueError: If `ratio` is not in [0, 1).
    """
    if not (0.0 <= ratio < 1.0):
        raise ValueError(f"pruning ratio {ratio} must be in [0, 1) (1 would mask every channel)")
    return min(channels, math.floor(ratio * channels + _COUNT_TOLERANCE))


def ratio_step(ratio: float) -> int:
    """The MLflow step of a ratio: round(100 * ratio) (MLflow steps are integers)."""
    return round(100 * ratio)


def gate_rankings(mean_gates: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each block's channels, least important (lowest mean gate) first.

    Args:
        mean_gates: Block name -> (C,) mean gate per channel. NaN (a channel whose gate was
            never defined) ranks first: it is treated as the least important.

    Returns:
        Block name -> (C,) long tensor of channel indices, lowest mean gate first; ties keep
        channel order (stable sort).
    """
    rankings = {}
    for name, gates in mean_gates.items():
        values = torch.nan_to_num(gates.detach().double().cpu(), nan=-math.inf)
        rankings[name] = torch.sort(values, stable=True).indices
    return rankings


def random_rankings(channels: Mapping[str, int], seed: int = 0) -> dict[str, Tensor]:
    """The random baseline: a seeded permutation of each block's channels.

    Args:
        channels: Block name -> channel count, in the backbone's block order (the order
            fixes which permutation each block gets).
        seed: Seed of the one generator all blocks draw from in turn.

    Returns:
        Block name -> (C,) long tensor, a permutation of range(C).
    """
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(count, generator=generator) for name, count in channels.items()}


def channel_masks(rankings: Mapping[str, Tensor], ratio: float) -> dict[str, Tensor]:
    """0/1 float masks that zero the first `pruned_count(C, ratio)` channels of each ranking.

    Args:
        rankings: Block name -> (C,) channel indices, least important first.
        ratio: Pruning ratio in [0, 1).

    Returns:
        Block name -> (C,) float mask (1 = kept, 0 = pruned).
    """
    masks = {}
    for name, ranking in rankings.items():
        mask = torch.ones(len(ranking))
        mask[ranking[: pruned_count(len(ranking), ratio)]] = 0.0
        masks[name] = mask
    return masks


class ChannelMask:
    """Context manager: multiply each named module's output by its (C,) channel mask.

    A forward hook per module returns `output * mask[None, :, None, None]` (any trailing
    dimensions broadcast); modules whose mask keeps every channel get no hook. Hooks are
    removed on exit.

    Args:
        modules: Module name -> module (e.g. `backbone.recalibration_modules()`).
        masks: Module name -> (C,) mask; every name must be in `modules`, with C matching
            the output's channel dimension (dimension 1).
    """

    def __init__(self, modules: Mapping[str, nn.Module], masks: Mapping[str, Tensor]) -> None:
        unknown = sorted(set(masks) - set(modules))
        if unknown:
            raise KeyError(f"masks for unknown blocks {unknown}; known: {sorted(modules)}")
        self.modules = modules
        self.masks = {name: mask for name, mask in masks.items() if bool((mask != 1).any())}
        self._handles: list = []

    def __enter__(self) -> ChannelMask:
        for name, mask in self.masks.items():
            self._handles.append(self.modules[name].register_forward_hook(_mask_hook(name, mask)))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _mask_hook(name: str, mask: Tensor) -> Callable:
    def hook(module: nn.Module, inputs, output: Tensor) -> Tensor:
        if output.shape[1] != len(mask):
            raise ValueError(
                f"block {name}: its output has {output.shape[1]} channels but the mask {len(mask)}"
            )
        shape = (1, len(mask)) + (1,) * (output.dim() - 2)
        return output * mask.to(device=output.device, dtype=output.dtype).view(shape)

    return hook


def evaluate_domains(
    model: nn.Module,
    loader: Iterable,
    normalize: Callable,
    device: str | torch.device = "cpu",
    progress: bool = True,
    description: str = "evaluating",
) -> dict[str, float]:
    """Per-domain accuracy of a `MultiDomainClassifier`, as its validation computes it.

    Args:
        model: The classifier (`domain_names`, `trained_domains`, `forward(images, domain_index)`,
            `hparams.num_classes`).
        loader: Batches of (uint8 images, labels, domain_index); None batches are skipped.
        normalize: The DataModule's `on_after_batch_transfer`, called as `normalize(batch, 0)`
            on the batch once it is on `device`.
        device: Where the model runs.
        progress: Show a tqdm bar over the batches.
        description: The bar's label.

    Returns:
        `acc/<domain>` (metric-safe names) for every domain with samples, `acc_mean`,
        `acc_worst` (head domains), `acc_held_out_mean` (when other domains were evaluated)
        and `num_samples`.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.to(device).eval()
    metric = DomainAccuracy(model.domain_names, model.hparams.num_classes).to(device)
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=description, unit="batch", disable=not progress):
                if batch is None:
                    continue
                images, labels, domain_index = normalize(
                    tuple(item.to(device) for item in batch), 0
                )
                logits = model(images, domain_index)
                metric.update(logits.argmax(dim=1), labels, domain_index)
    finally:
        model.train(was_training)
    matrices = metric.confusion_matrices()
    accuracies = {name: accuracy_from_confusion(m).item() for name, m in matrices.items()}
    results = {domain_metric_name(name): value for name, value in accuracies.items()}
    results.update(summarize_domains(accuracies, model.trained_domains))
    results[NUM_SAMPLES] = float(sum(m.sum().item() for m in matrices.values()))
    return results


@dataclass
class PruningPoint:
    """One evaluation of the curve: a rule at a ratio.

    Attributes:
        rule: `gate` or `random`.
        ratio: The pruning ratio.
        pruned_channels: Channels masked, summed over blocks.
        total_channels: Channels of all blocks.
        metrics: What `evaluate_domains` returned.
    """

    rule: str
    ratio: float
    pruned_channels: int
    total_channels: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """The MLflow step of the ratio (`ratio_step`)."""
        return ratio_step(self.ratio)


def pruning_curve(
    model: nn.Module,
    loader: Iterable,
    normalize: Callable,
    mean_gates: Mapping[str, Tensor],
    ratios: Sequence[float],
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[PruningPoint]:
    """Accuracy vs pruning ratio for the gate ranking and the random baseline.

    Ratio 0 is evaluated once (both rules prune nothing) and reported under both rules.

    Args:
        model: The classifier; its backbone's `recalibration_modules()` are the blocks.
        loader: The evaluation batches (see `evaluate_domains`).
        normalize: The DataModule's `on_after_batch_transfer`.
        mean_gates: Block name -> (C,) mean gate over the training split (the importance).
        ratios: Pruning ratios in [0, 1), evaluated in the order given.
        seed: Seed of the random baseline's permutations.
        device: Where the model runs.
        progress: Show a tqdm bar over the batches of each evaluation.

    Returns:
        One `PruningPoint` per rule and ratio, gate points first.
    """
    modules = model.backbone.recalibration_modules()
    missing = sorted(set(modules) - set(mean_gates))
    if missing:
        raise KeyError(f"no mean gate for blocks {missing}")
    channels = {name: len(mean_gates[name]) for name in modules}
    rankings = {
        "gate": gate_rankings({name: mean_gates[name] for name in modules}),
        "random": random_rankings(channels, seed),
    }
    total = sum(channels.values())
    unpruned: dict[str, float] | None = None
    points = []
    for rule in RULES:
        for ratio in ratios:
            masks = channel_masks(rankings[rule], ratio)
            pruned = int(sum((mask == 0).sum().item() for mask in masks.values()))
            if pruned == 0 and unpruned is not None:
                metrics = dict(unpruned)
            else:
                with ChannelMask(modules, masks):
                    metrics = evaluate_domains(
                        model,
                        loader,
                        normalize,
                        device,
                        progress,
                        description=f"{rule} ratio {ratio:g}",
                    )
                if pruned == 0:
                    unpruned = dict(metrics)
            points.append(PruningPoint(rule, float(ratio), pruned, total, metrics))
    return points


def metric_names(points: Sequence[PruningPoint]) -> list[str]:
    """The metric keys of the points, summaries first, then the domains in order seen."""
    order = [ACC_MEAN, ACC_WORST, ACC_HELD_OUT_MEAN]
    seen: list[str] = []
    for point in points:
        for key in point.metrics:
            if key not in seen and key != NUM_SAMPLES:
                seen.append(key)
    return [k for k in order if k in seen] + [k for k in seen if k not in order]


def points_to_csv(points: Sequence[PruningPoint]) -> str:
    """The curve as CSV text: rule, ratio, step, pruned/total channels, then the metrics."""
    names = metric_names(points)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rule", "ratio", "step", "pruned_channels", "total_channels", *names])
    for p in points:
        row = [p.rule, f"{p.ratio:g}", p.step, p.pruned_channels, p.total_channels]
        writer.writerow(row + [repr(p.metrics[n]) if n in p.metrics else "" for n in names])
    return out.getvalue()


def points_from_csv(text: str) -> list[PruningPoint]:
    """Read back `points_to_csv` output (e.g. an earlier run's `pruning/accuracy.csv`)."""
    points = []
    fixed = {"rule", "ratio", "step", "pruned_channels", "total_channels"}
    for row in csv.DictReader(io.StringIO(text)):
        metrics = {k: float(v) for k, v in row.items() if k not in fixed and v not in ("", None)}
        points.append(
            PruningPoint(
                row["rule"],
                float(row["ratio"]),
                int(row["pruned_channels"]),
                int(row["total_channels"]),
                metrics,
            )
        )
    return points


def as_logged(value: float) -> float:
    """A metric value as Lightning's `self.log` stores it: rounded to float32.

    The classifier's `acc_mean` is a Python mean of float32 accuracies, which `self.log` turns
    into a float32 tensor before MLflow sees it; rounding the same way makes ratio 0 compare
    equal, bit for bit, with the checkpoint's logged `val/acc_mean`.
    """
    return torch.tensor(value, dtype=torch.float32).item()


def mlflow_metrics(point: PruningPoint) -> dict[str, float]:
    """`prune/<rule>/<metric>` for one point (logged at step `point.step`), rounded to float32
    as the training run's metrics are (`as_logged`)."""
    rule = f"{PRUNE}/{point.rule}"
    return {metric_key(rule, key): as_logged(v) for key, v in point.metrics.items()}
