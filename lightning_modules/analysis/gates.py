"""The gates of the recalibration modules, recorded per image through forward hooks.

Every recalibration module maps its input `x` to `y = x * g` (`base.py`). `GateRecorder`
registers a forward hook on each module of a backbone (`recalibration_modules()`), so the
modules' forward code is untouched, and reads the gate back as the ratio of output to input:

    g[b, c] = mean over the positions (h, w) with |x[b, c, h, w]| > min_abs_input of
              y[b, c, h, w] / x[b, c, h, w]

- Channel-wise gates (SE, SRM, global Gather-Excite, "none" = 1) are constant over positions,
  so the ratio is exact up to float rounding wherever x != 0.
- Per-position gates (Gather-Excite with a limited extent, MS-SAR) are averaged over the
  positions where x is not tiny: the image's mean gate per channel (not weighted by |x|).
- Positions with |x| <= min_abs_input (default 1e-6) are skipped (the gate cannot be read
  there). If every position of a channel is skipped, that image's gate for that channel is
  undefined (NaN): it is left out of that channel's statistics, and counted in
  `undefined_by_domain` / `undefined_by_class`. The statistics of a channel without any
  defined gate are NaN.
- SRM's fused block kernel is bypassed while a hook is registered (the hook needs `x` and `y`),
  which gives the same outputs.

Statistics are aggregated online: per block, float64 running counts, sums and sums of squares
per (domain, channel) and (class, channel); no gate tensor is kept, except, when asked
(`keep_per_domain`), at most that many per-image gate vectors per domain and block for a probe.
Standard deviations are population ones (divided by the count, not count - 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

DEFAULT_MIN_ABS_INPUT = 1e-6


def gate_from_ratio(x: Tensor, y: Tensor, min_abs_input: float = DEFAULT_MIN_ABS_INPUT) -> Tensor:
    """Each image's gate per channel from a module's input and output, by the rule above.

    Args:
        x: The module's input, (B, C, H, W).
        y: Its output `x * g`, same shape.
        min_abs_input: Positions with |x| at or below this are skipped.

    Returns:
        (B, C) float32 gates; NaN where every position of a channel was skipped.
    """
    x = x.detach().float().flatten(2)
    y = y.detach().float().flatten(2)
    valid = x.abs() > min_abs_input
    ratio = torch.where(valid, y / torch.where(valid, x, torch.ones_like(x)), torch.zeros_like(x))
    count = valid.sum(dim=-1)
    gates = ratio.sum(dim=-1) / count.clamp_min(1)
    return torch.where(count > 0, gates, torch.full_like(gates, float("nan")))


def mean_pairwise_cosine_distance(vectors: Tensor) -> float:
    """Mean of 1 - cos(u, v) over the distinct pairs of rows (e.g. the domains' mean gates).

    Rows with a NaN are dropped first; NaN with fewer than two rows left.
    """
    vectors = vectors[~torch.isnan(vectors).any(dim=1)].double()
    if len(vectors) < 2:
        return float("nan")
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cosine = unit @ unit.T
    rows, cols = torch.triu_indices(len(vectors), len(vectors), offset=1)
    return float((1.0 - cosine[rows, cols]).mean())


@dataclass
class BlockGateStatistics:
    """One block's gate statistics (population std; NaN where a group has no defined gate).

    Attributes:
        channels: C, the number of channels the module gates.
        count_by_domain: (D,) images seen per domain.
        mean_by_domain: (D, C) mean gate per domain and channel.
        std_by_domain: (D, C) its standard deviation over the domain's images.
        count_by_class: (K,) images seen per class.
        mean_by_class: (K, C) mean gate per class and channel.
        std_by_class: (K, C) its standard deviation.
        mean: (C,) mean gate over all images.
        std: (C,) its standard deviation over all images.
        undefined_by_domain: (D, C) images whose gate was undefined (every |x| tiny).
        undefined_by_class: (K, C) the same per class.
        domain_spread: (C,) std across domains of the domains' mean gates (NaN domains
            dropped): how much a channel's mean gate depends on the domain.
        class_spread: (C,) the same across classes.
        domain_separation: Mean pairwise cosine distance between the domains' mean gate
            vectors (`mean_pairwise_cosine_distance` of `mean_by_domain`; domains without images
            are dropped).
        class_separation: The same between the classes' mean gate vectors.
    """

    channels: int
    count_by_domain: Tensor
    mean_by_domain: Tensor
    std_by_domain: Tensor
    count_by_class: Tensor
    mean_by_class: Tensor
    std_by_class: Tensor
    mean: Tensor
    std: Tensor
    undefined_by_domain: Tensor
    undefined_by_class: Tensor
    domain_spread: Tensor = field(init=False)
    class_spread: Tensor = field(init=False)
    domain_separation: float = field(init=False)
    class_separation: float = field(init=False)

    def __post_init__(self) -> None:
        self.domain_spread = _spread(self.mean_by_domain)
        self.class_spread = _spread(self.mean_by_class)
        self.domain_separation = mean_pairwise_cosine_distance(self.mean_by_domain)
        self.class_separation = mean_pairwise_cosine_distance(self.mean_by_class)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (NaN as None), for JSON."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, Tensor):
                value = value.tolist()
            out[key] = _nan_to_none(value)
        return out


def _spread(means: Tensor) -> Tensor:
    rows = means[~torch.isnan(means).any(dim=1)]
    if len(rows) < 2:
        return torch.full((means.shape[1],), float("nan"), dtype=means.dtype)
    return rows.std(dim=0, unbiased=False)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, float) and value != value:
        return None
    return value


class _RunningMoments:
    """float64 counts, sums and sums of squares per (group, channel), NaN gates left out."""

    def __init__(self, groups: int, channels: int) -> None:
        self.images = torch.zeros(groups, dtype=torch.float64)
        self.count = torch.zeros(groups, channels, dtype=torch.float64)
        self.total = torch.zeros(groups, channels, dtype=torch.float64)
        self.squares = torch.zeros(groups, channels, dtype=torch.float64)

    def add(self, gates: Tensor, group: Tensor) -> None:
        defined = ~torch.isnan(gates)
        values = torch.where(defined, gates, torch.zeros_like(gates))
        self.images.index_add_(0, group, torch.ones(len(group), dtype=torch.float64))
        self.count.index_add_(0, group, defined.double())
        self.total.index_add_(0, group, values)
        self.squares.index_add_(0, group, values * values)

    @staticmethod
    def moments(count: Tensor, total: Tensor, squares: Tensor) -> tuple[Tensor, Tensor]:
        mean = total / count
        variance = (squares / count - mean * mean).clamp_min(0.0)
        nan = torch.full_like(mean, float("nan"))
        return torch.where(count > 0, mean, nan), torch.where(count > 0, variance.sqrt(), nan)


class GateRecorder:
    """Forward hooks on every recalibration module of a backbone (no change to the modules'
    forward code); per block, the gate of every image, aggregated online.

    Use as a context manager around the forward passes, calling `update` after each::

        with GateRecorder(model.backbone, num_domains, num_classes) as recorder:
            for images, labels, domain_index in batches:
                model(images, domain_index)
                recorder.update(labels, domain_index)
        statistics = recorder.statistics()

    Args:
        backbone: A `RecalibratedBackbone` (anything with `recalibration_modules()`, or an
            `nn.Module` whose modules named `...recalibration` are taken).
        num_domains: D, the number of domain indices.
        num_classes: K, the number of classes.
        keep_per_domain: Keep at most this many per-image gate vectors per domain and block
            (the first ones seen), for `per_image_gates()`; 0 keeps none.
        min_abs_input: Positions whose |x| is at or below this are skipped (module docstring).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_domains: int,
        num_classes: int,
        keep_per_domain: int = 0,
        min_abs_input: float = DEFAULT_MIN_ABS_INPUT,
    ) -> None:
        if hasattr(backbone, "recalibration_modules"):
            modules = dict(backbone.recalibration_modules())
        else:
            modules = {
                name: module
                for name, module in backbone.named_modules()
                if name.rsplit(".", 1)[-1] == "recalibration"
            }
        if not modules:
            raise ValueError(
                f"{type(backbone).__name__} has no recalibration modules to record; the backbone "
                "must be a RecalibratedBackbone (lightning_modules/models/recalibrated.py)."
            )
        self.modules = modules
        self.num_domains = num_domains
        self.num_classes = num_classes
        self.keep_per_domain = keep_per_domain
        self.min_abs_input = min_abs_input
        self._handles: list[Any] = []
        self._pending: dict[str, list[Tensor]] = {name: [] for name in modules}
        self._by_domain: dict[str, _RunningMoments] = {}
        self._by_class: dict[str, _RunningMoments] = {}
        self._kept: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {name: [] for name in modules}
        self._kept_count = torch.zeros(num_domains, dtype=torch.long)
        self._kept_blocks: set[str] = set()

    def __enter__(self) -> GateRecorder:
        """Register the hooks."""
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        """Remove the hooks (pending, un-`update`d gates are dropped)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for pending in self._pending.values():
            pending.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self._pending[name].append(gate_from_ratio(inputs[0], output, self.min_abs_input))

        return hook

    def update(self, labels: Tensor, domain_index: Tensor) -> None:
        """Fold the gates of the forward pass(es) since the last call into the running sums.

        Args:
            labels: (B,) class index of each image of the batch.
            domain_index: (B,) domain index of each image.

        Raises:
            RuntimeError: If a block saw a different number of images than `labels` holds
                (a forward pass without `update`, or none at all).
        """
        labels = labels.detach().to("cpu", torch.long)
        domain_index = domain_index.detach().to("cpu", torch.long)
        keep = self._keep_mask(domain_index)
        for name, pending in self._pending.items():
            gates = torch.cat(pending).to("cpu", torch.float64) if pending else None
            pending.clear()
            if gates is None or len(gates) != len(labels):
                seen = 0 if gates is None else len(gates)
                raise RuntimeError(
                    f"GateRecorder: block {name!r} saw {seen} images since the last update() but "
                    f"{len(labels)} labels were given; call update() once after each forward pass, "
                    "inside the `with GateRecorder(...)` block."
                )
            if name not in self._by_domain:
                channels = gates.shape[1]
                self._by_domain[name] = _RunningMoments(self.num_domains, channels)
                self._by_class[name] = _RunningMoments(self.num_classes, channels)
            self._by_domain[name].add(gates, domain_index)
            self._by_class[name].add(gates, labels)
            if keep.any():
                self._kept[name].append((gates[keep].float(), domain_index[keep], labels[keep]))

    def _keep_mask(self, domain_index: Tensor) -> Tensor:
        """Which images of the batch to keep per image, up to `keep_per_domain` per domain."""
        keep = torch.zeros(len(domain_index), dtype=torch.bool)
        if self.keep_per_domain <= 0:
            return keep
        for position, domain in enumerate(domain_index.tolist()):
            if self._kept_count[domain] < self.keep_per_domain:
                self._kept_count[domain] += 1
                keep[position] = True
        return keep

    def statistics(self) -> dict[str, BlockGateStatistics]:
        """Block name -> its statistics, in the backbone's block order (blocks seen only)."""
        result = {}
        for name in self.modules:
            if name not in self._by_domain:
                continue
            domain, klass = self._by_domain[name], self._by_class[name]
            mean_d, std_d = _RunningMoments.moments(domain.count, domain.total, domain.squares)
            mean_k, std_k = _RunningMoments.moments(klass.count, klass.total, klass.squares)
            mean, std = _RunningMoments.moments(
                domain.count.sum(0), domain.total.sum(0), domain.squares.sum(0)
            )
            result[name] = BlockGateStatistics(
                channels=domain.count.shape[1],
                count_by_domain=domain.images.clone(),
                mean_by_domain=mean_d,
                std_by_domain=std_d,
                count_by_class=klass.images.clone(),
                mean_by_class=mean_k,
                std_by_class=std_k,
                mean=mean,
                std=std,
                undefined_by_domain=domain.images[:, None] - domain.count,
                undefined_by_class=klass.images[:, None] - klass.count,
            )
        return result

    def per_image_gates(self) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """Block -> (gates (N, C) float32, domain index (N,), labels (N,)) of the kept images.

        At most `keep_per_domain` images per domain (the first seen); empty without it.
        """
        result = {}
        for name, kept in self._kept.items():
            if kept:
                gates, domains, labels = zip(*kept, strict=True)
                result[name] = (torch.cat(gates), torch.cat(domains), torch.cat(labels))
        return result


def record_gates(
    model: nn.Module,
    loader,
    normalize,
    num_domains: int,
    num_classes: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
    keep_per_domain: int = 0,
) -> dict[str, BlockGateStatistics]:
    """Run a classifier in eval mode over a loader and return its blocks' gate statistics.

    Args:
        model: A `MultiDomainClassifier` (`.backbone`, `forward(images, domain_index)`) or a
            backbone itself (called on the images only).
        loader: Batches of (uint8 images, labels, domain_index).
        normalize: `datamodule.on_after_batch_transfer`, called as `normalize(batch, 0)` on the
            batch after it is moved to `device`.
        num_domains: D.
        num_classes: K.
        device: Where the model runs.
        progress: Show a tqdm bar over the batches.
        keep_per_domain: See `GateRecorder`; with it, use `record_gates_and_samples`.

    Returns:
        Block name -> `BlockGateStatistics`.
    """
    return record_gates_and_samples(
        model, loader, normalize, num_domains, num_classes, device, progress, keep_per_domain
    )[0]


def record_gates_and_samples(
    model: nn.Module,
    loader,
    normalize,
    num_domains: int,
    num_classes: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
    keep_per_domain: int = 0,
) -> tuple[dict[str, BlockGateStatistics], dict[str, tuple[Tensor, Tensor, Tensor]]]:
    """`record_gates`, also returning `GateRecorder.per_image_gates()` (for a probe)."""
    from tqdm.auto import tqdm

    backbone = getattr(model, "backbone", model)
    was_training = model.training
    model.to(device).eval()
    recorder = GateRecorder(backbone, num_domains, num_classes, keep_per_domain)
    try:
        with recorder, torch.inference_mode():
            for batch in tqdm(loader, desc="recording gates", unit="batch", disable=not progress):
                images, labels, domain_index = normalize(
                    tuple(item.to(device) for item in batch), 0
                )
                if backbone is model:
                    model(images)
                else:
                    model(images, domain_index)
                recorder.update(labels, domain_index)
    finally:
        model.train(was_training)
    return recorder.statistics(), recorder.per_image_gates()
