"""Helpers of the tests of DomainBed's per-domain-batch methods (IRM, VREx, GroupDRO, Mixup,
CORAL, MMD, RSC, SD, MTL): a tiny three-domain model, synthetic batches whose classes are
separable and whose domains differ in style, a fit that records every step's loss, and the
kill-and-resume comparison."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.methods import TrainingBatch
from tests.helpers.trainers import fit_in_order

DOMAINS = ["Art", "Clipart", "Product"]
NUM_CLASSES = 3


def sgd(params):
    return torch.optim.SGD(params, lr=0.02, momentum=0.9)


def adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def tiny_model(
    method: str,
    method_kwargs: dict | None = None,
    seed: int = 0,
    optimizer: Callable = sgd,
    **kwargs,
) -> MultiDomainClassifier:
    """A 16-px CIFAR ResNet-20 without recalibration, one head per domain, three trained
    domains."""
    torch.manual_seed(seed)
    settings = dict(
        backbone="resnet20",
        recalibration="none",
        weights=None,
        num_classes=NUM_CLASSES,
        domain_names=DOMAINS,
        trained_domains=DOMAINS,
        image_size=16,
        method=method,
        method_kwargs=method_kwargs,
        optimizer=optimizer,
    )
    return MultiDomainClassifier(**{**settings, **kwargs})


def separable_batch(
    seed: int, sizes: tuple[int, ...] = (4, 4, 4), shuffle: bool = True
) -> TrainingBatch:
    """Class c brightens channel c; domain d scales the contrast by 1 + d/2 and adds 0.3 d (a
    style). `sizes` samples of each domain, their order shuffled unless `shuffle` is False."""
    generator = torch.Generator().manual_seed(seed)
    domains = torch.cat([torch.full((n,), d, dtype=torch.long) for d, n in enumerate(sizes)])
    count = len(domains)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    images = 0.5 * torch.randn(count, 3, 16, 16, generator=generator)
    images[torch.arange(count), labels] += 1.5
    style = domains.float()[:, None, None, None]
    images = images * (1 + style / 2) + 0.3 * style
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    return TrainingBatch(images[order], labels[order], domains[order])


def as_tuples(batches: list[TrainingBatch]) -> list[tuple[torch.Tensor, ...]]:
    return [(b.images, b.labels, b.domains) for b in batches]


def fit(
    model: MultiDomainClassifier,
    batches: list[TrainingBatch],
    epochs: int,
    ckpt_path: str | None = None,
    save_to: Path | None = None,
) -> list[float]:
    """Fit `epochs` epochs over the batches (in order; resumed from `ckpt_path` if given), save
    a checkpoint to `save_to` if given; returns the losses of the steps taken."""
    return fit_in_order(model, as_tuples(batches), epochs, ckpt_path, save_to)


@torch.no_grad()
def accuracy(model: MultiDomainClassifier, batches: list[TrainingBatch]) -> float:
    """Accuracy in evaluation mode, each sample through its domain's head."""
    model.eval()
    correct = total = 0
    for batch in batches:
        predictions = model(batch.images, batch.domains).argmax(dim=1)
        correct += int((predictions == batch.labels).sum())
        total += len(batch.labels)
    return correct / total


def assert_learns(
    method: str, method_kwargs: dict | None = None, epochs: int = 4, **kwargs
) -> float:
    """A tiny fit with the method: the last epoch's mean loss is below the first's, and the
    accuracy on fresh batches is well above chance (1/3); returns that accuracy."""
    train = [separable_batch(seed) for seed in range(6)]
    model = tiny_model(method, method_kwargs, **kwargs)
    losses = fit(model, train, epochs)
    assert len(losses) == epochs * len(train)
    first, last = losses[: len(train)], losses[-len(train) :]
    assert sum(last) < sum(first), f"{method} did not learn: {first} -> {last}"
    held = accuracy(model, [separable_batch(seed) for seed in range(100, 104)])
    assert held >= 0.75, f"{method} reached accuracy {held}"
    return held


def assert_resume_is_seamless(
    tmp_path: Path,
    method: str,
    method_kwargs: dict | None = None,
    state: Callable[[MultiDomainClassifier], torch.Tensor] | None = None,
    optimizer: Callable = sgd,
    epochs: int = 3,
    stop_after: int = 1,
) -> tuple[MultiDomainClassifier, MultiDomainClassifier]:
    """Fit `epochs` epochs in one go, and fit `stop_after` epochs, save, build a new model
    (another initialisation) and resume for the rest: the per-step losses are equal, and so is
    the method's `state` at the end. Returns (uninterrupted, resumed) models."""
    batches = [separable_batch(seed) for seed in range(2)]
    whole = tiny_model(method, method_kwargs, optimizer=optimizer)
    expected = fit(whole, batches, epochs)

    first = tiny_model(method, method_kwargs, optimizer=optimizer)
    checkpoint = tmp_path / "interrupted.ckpt"
    before = fit(first, batches, stop_after, save_to=checkpoint)
    resumed = tiny_model(method, method_kwargs, seed=1, optimizer=optimizer)
    after = fit(resumed, batches, epochs, ckpt_path=str(checkpoint))
    assert len(before) + len(after) == len(expected)
    torch.testing.assert_close(
        torch.tensor(before + after), torch.tensor(expected), rtol=1e-5, atol=1e-6
    )
    if state is not None:
        torch.testing.assert_close(state(resumed), state(whole))
    return whole, resumed


def own_head_logits(
    model: MultiDomainClassifier, inputs: torch.Tensor, domains: torch.Tensor
) -> torch.Tensor:
    """Each sample's logits from its domain's linear head, one sample at a time (written here
    without the model's routing)."""
    heads = list(model.head.heads.values())  # one per trained domain, in domain order
    return torch.stack([heads[int(d)](x) for x, d in zip(inputs, domains, strict=True)])


def rows_of(batch: TrainingBatch) -> dict[int, list[int]]:
    """Positions of each domain's samples, in the order they appear in the batch."""
    rows: dict[int, list[int]] = {}
    for position, domain in enumerate(batch.domains.tolist()):
        rows.setdefault(domain, []).append(position)
    return dict(sorted(rows.items()))


def backbone_gradient(loss: torch.Tensor, model: MultiDomainClassifier) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(model.backbone.parameters()), retain_graph=True))


def assert_same_gradients(first: list[torch.Tensor], second: list[torch.Tensor]) -> None:
    """Equal up to float32 rounding, relative to each tensor's largest entry."""
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-8)
