"""What the compile and mixed-precision tests of every module and method share: a tiny model
(CIFAR ResNet-20 at 16 px, SRM), separable synthetic batches for every method (with an unlabelled
target domain for the adaptation methods), and a Lightning fit that records each step's loss."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from datamodules.base import UNLABELLED
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.methods import TRAINING_METHODS
from tests.helpers.trainers import quiet_trainer

DOMAINS = ["Art", "Clipart", "Product"]
#: Art and Clipart are labelled; Product is the unlabelled target of the adaptation methods.
TARGET = 2
NUM_CLASSES = 3
METHODS = list(TRAINING_METHODS)


def tiny_model(method: str, recalibration: str = "srm", **kwargs) -> MultiDomainClassifier:
    """ResNet-20 at 16 px with heads for Art and Clipart, Adam at 1e-3, seeded weights."""
    torch.manual_seed(0)
    settings = dict(
        backbone="resnet20",
        recalibration=recalibration,
        weights=None,
        num_classes=NUM_CLASSES,
        domain_names=DOMAINS,
        trained_domains=DOMAINS[:2],
        image_size=16,
        method=method,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )
    return MultiDomainClassifier(**{**settings, **kwargs})


def separable_images(labels: torch.Tensor, domains: torch.Tensor, generator) -> torch.Tensor:
    """Class c puts a bright 8x8 square in corner c; domain d scales the contrast by 1 + d/2
    and shifts it by 0.3 d (a style)."""
    images = 0.5 * torch.randn(len(labels), 3, 16, 16, generator=generator)
    corners = [(0, 0), (0, 8), (8, 4)]
    for index, label in enumerate(labels.tolist()):
        row, column = corners[label]
        images[index, :, row : row + 8, column : column + 8] += 2.0
    style = domains.float()[:, None, None, None]
    return images * (1 + style / 2) + 0.3 * style


def batches(method: str, steps: int, per_domain: int = 8, seed: int = 0) -> list:
    """Training batches for the method: (images, labels, domains) of Art and Clipart
    interleaved, or for an adaptation method the CombinedLoader's {source, target} dict."""
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(steps):
        domains = torch.arange(2 * per_domain) % 2
        labels = torch.randint(0, NUM_CLASSES, (2 * per_domain,), generator=generator)
        source = (separable_images(labels, domains, generator), labels, domains)
        if not TRAINING_METHODS[method].needs_target_domains:
            result.append(source)
            continue
        target_domains = torch.full((per_domain,), TARGET)
        target_labels = torch.randint(0, NUM_CLASSES, (per_domain,), generator=generator)
        target = separable_images(target_labels, target_domains, generator)
        unlabelled = torch.full((per_domain,), UNLABELLED)
        result.append({"source": source, "target": (target, unlabelled, target_domains)})
    return result


def record_losses(model: MultiDomainClassifier) -> list[float]:
    """Make the model's method keep the loss of every training step."""
    losses: list[float] = []
    method = model.method
    name = "manual_training_step" if method.manual_optimization else "training_loss"
    original = getattr(method, name)

    def step(*args):
        output = original(*args)
        losses.append(float(output.loss))
        return output

    setattr(method, name, step)
    return losses


class Reseed(pl.Callback):
    """Seed torch before each batch, so that two runs of a random method draw the same."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(1000 + batch_idx)


def fit(
    model: MultiDomainClassifier, data: list, epochs: int = 1, callbacks=(), **kwargs
) -> list[float]:
    """Fit on the batches; the per-step losses."""
    losses = record_losses(model)
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[Reseed(), *callbacks], **kwargs)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return losses


def accuracy(model: MultiDomainClassifier, data: list) -> float:
    """Accuracy of the model's own domain heads on labelled batches."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels, domains in data:
            correct += int((model(images, domains).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (L2 over all elements), in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))
