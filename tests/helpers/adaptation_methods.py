"""What the CDAN and MCC tests share: a tiny model with two labelled source domains and an
unlabelled target, synthetic source + target batches (the class is a bright channel, each domain a
style), a fit that records every step's loss, the kill-and-resume comparison, and the model's
heads and bottleneck written out with functional ops (so the tests' independent computations do
not call the method's code)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from datamodules.base import UNLABELLED
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.methods import TrainingBatch
from tests.helpers.trainers import fit_in_order

#: Art and Clipart are labelled; Product is the unlabelled target (no head of its own).
DOMAINS = ["Art", "Clipart", "Product"]
TARGET = 2
NUM_CLASSES = 3


def sgd(params):
    return torch.optim.SGD(params, lr=0.02, momentum=0.9)


def tiny_model(
    method: str,
    method_kwargs: dict | None = None,
    seed: int = 0,
    optimizer: Callable = sgd,
    **kwargs,
) -> MultiDomainClassifier:
    """A 16-px CIFAR ResNet-20 (64 features) without recalibration, heads for Art and Clipart."""
    torch.manual_seed(seed)
    settings = dict(
        backbone="resnet20",
        recalibration="none",
        weights=None,
        num_classes=NUM_CLASSES,
        domain_names=DOMAINS,
        trained_domains=DOMAINS[:2],
        image_size=16,
        method=method,
        method_kwargs=method_kwargs,
        optimizer=optimizer,
    )
    return MultiDomainClassifier(**{**settings, **kwargs})


def styled_images(labels: torch.Tensor, domains: torch.Tensor, generator) -> torch.Tensor:
    """Class c brightens channel c; domain d scales the contrast by 1 + d/2 and adds 0.3 d."""
    images = 0.5 * torch.randn(len(labels), 3, 16, 16, generator=generator)
    images[torch.arange(len(labels)), labels] += 1.5
    style = domains.float()[:, None, None, None]
    return images * (1 + style / 2) + 0.3 * style


def adaptation_batch(seed: int, per_domain: int = 4, targets: int = 6) -> dict:
    """A CombinedLoader-style batch: `source` (images, labels, domains) of Art and Clipart in
    shuffled order, `target` (images, UNLABELLED, Product's index); the target's true labels
    under `target_labels` (for the tests only)."""
    generator = torch.Generator().manual_seed(seed)
    domains = torch.arange(2 * per_domain) % 2
    labels = torch.randint(0, NUM_CLASSES, (2 * per_domain,), generator=generator)
    order = torch.randperm(2 * per_domain, generator=generator)
    domains, labels = domains[order], labels[order]
    source = styled_images(labels, domains, generator)
    target_labels = torch.randint(0, NUM_CLASSES, (targets,), generator=generator)
    target_domains = torch.full((targets,), TARGET)
    target = styled_images(target_labels, target_domains, generator)
    return {
        "source": (source, labels, domains),
        "target": (target, torch.full((targets,), UNLABELLED), target_domains),
        "target_labels": target_labels,
    }


def training_batch(batch: dict) -> TrainingBatch:
    return TrainingBatch(*batch["source"], batch["target"][0])


def loader_batches(batches: list[dict]) -> list[dict]:
    """What the DataModule's CombinedLoader gives the model (no target labels)."""
    return [{"source": b["source"], "target": b["target"]} for b in batches]


def fit(
    model: MultiDomainClassifier,
    batches: list[dict],
    epochs: int,
    ckpt_path: str | None = None,
    save_to: Path | None = None,
) -> list[float]:
    """Fit `epochs` epochs over the batches in order (resumed from `ckpt_path` if given), save a
    checkpoint to `save_to` if given; the losses of the steps taken."""
    return fit_in_order(model, loader_batches(batches), epochs, ckpt_path, save_to)


@torch.no_grad()
def accuracies(model: MultiDomainClassifier, batches: list[dict]) -> tuple[float, float]:
    """(source accuracy, target accuracy) in evaluation mode; the target through the model's
    prediction for its domain (which has no head)."""
    model.eval()
    hits = {"source": [0, 0], "target": [0, 0]}
    for batch in batches:
        source, labels, domains = batch["source"]
        target, _, target_domains = batch["target"]
        for side, images, truth, index in (
            ("source", source, labels, domains),
            ("target", target, batch["target_labels"], target_domains),
        ):
            predictions = model(images, index).argmax(dim=1)
            hits[side][0] += int((predictions == truth).sum())
            hits[side][1] += len(truth)
    return hits["source"][0] / hits["source"][1], hits["target"][0] / hits["target"][1]


def assert_resume_is_seamless(
    tmp_path: Path,
    method: str,
    method_kwargs: dict,
    state: Callable[[MultiDomainClassifier], list[torch.Tensor]],
    **model_settings,
) -> None:
    """Fit 3 epochs of 2 batches in one go, and fit 1, save, build a new model (another
    initialisation) and resume for the rest: the per-step losses are equal, and so is `state`."""
    batches = [adaptation_batch(seed) for seed in range(2)]
    whole = tiny_model(method, method_kwargs, **model_settings)
    expected = fit(whole, batches, 3)
    first = tiny_model(method, method_kwargs, **model_settings)
    checkpoint = tmp_path / "interrupted.ckpt"
    before = fit(first, batches, 1, save_to=checkpoint)
    resumed = tiny_model(method, method_kwargs, seed=1, **model_settings)
    after = fit(resumed, batches, 3, ckpt_path=str(checkpoint))
    assert len(before) == 2 and len(before) + len(after) == len(expected) == 6
    torch.testing.assert_close(
        torch.tensor(before + after), torch.tensor(expected), rtol=1e-5, atol=1e-6
    )
    for resumed_state, whole_state in zip(state(resumed), state(whole), strict=True):
        torch.testing.assert_close(resumed_state, whole_state)


# ----- the model's layers written out (for the independent computations) --------------------------
def bottleneck_by_hand(model: MultiDomainClassifier, features: torch.Tensor) -> torch.Tensor:
    """Linear, BatchNorm1d with the batch's statistics (training), ReLU."""
    linear, norm = model.method.bottleneck[0], model.method.bottleneck[1]
    hidden = features @ linear.weight.t() + linear.bias
    mean, variance = hidden.mean(0), hidden.var(0, unbiased=False)
    return torch.relu((hidden - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias)


def source_and_target_logits(
    model: MultiDomainClassifier, features: torch.Tensor, domains: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source rows through their own domain's head (one at a time), target rows as the mean of
    the two heads' probabilities (log), the prediction for a domain without a head."""
    heads = list(model.head.heads.values())
    source = torch.stack([heads[int(d)](x) for x, d in zip(features[:count], domains, strict=True)])
    target = features[count:]
    mixture = sum(F.softmax(head(target), dim=1) for head in heads) / len(heads)
    return source, mixture.log()
