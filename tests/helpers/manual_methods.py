"""What the tests of MLDG, Fish, DANN-DG, CDANN, SagNet and ARM share: a tiny model, synthetic
batches whose class is a bright square's position, a Lightning fit that records the method's
per-step losses, a tiny fit's held-out accuracy, and a kill-and-resume comparison."""

from __future__ import annotations

import copy
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_modules.classifier import MultiDomainClassifier
from tests.helpers.trainers import quiet_trainer

DOMAINS = ["Art", "Clipart", "Product"]


def tiny_model(
    method: str, method_kwargs=None, domains: int = 2, lr: float = 1e-3, **kwargs
) -> MultiDomainClassifier:
    """A CIFAR resnet20 for 16 px images, `domains` trained domains, Adam (DomainBed's)."""
    torch.manual_seed(0)
    settings = dict(
        backbone="resnet20",
        recalibration="none",
        weights=None,
        num_classes=3,
        domain_names=DOMAINS,
        trained_domains=DOMAINS[:domains],
        image_size=16,
        method=method,
        method_kwargs=method_kwargs,
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
    )
    return MultiDomainClassifier(**{**settings, **kwargs})


def synthetic_batches(
    steps: int, per_domain: int = 8, domains: int = 2, seed: int = 0, interleave: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of 16 px images: the class is where a bright square sits; each domain scales and
    shifts the channels differently. Domains interleaved (or in blocks) in each batch."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor([[1.0, 0.5, 2.0], [2.0, 1.0, 0.5], [0.7, 1.5, 1.0]])[:domains]
    shifts = torch.tensor([[0.5, -1.0, 0.0], [-0.5, 1.0, 1.0], [0.0, 0.3, -0.6]])[:domains]
    corners = [(0, 0), (0, 8), (8, 4)]
    batches = []
    for _ in range(steps):
        size = domains * per_domain
        labels = torch.randint(0, 3, (size,), generator=generator)
        order = torch.arange(size) % domains if interleave else torch.arange(size) // per_domain
        images = 0.5 * torch.randn(size, 3, 16, 16, generator=generator)
        for index, label in enumerate(labels.tolist()):
            row, column = corners[label]
            images[index, :, row : row + 8, column : column + 8] += 2.0
        images = images * scales[order].view(-1, 3, 1, 1) + shifts[order].view(-1, 3, 1, 1)
        batches.append((images, labels, order))
    return batches


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
    """Seed torch before each batch, so that a resumed run draws what an uninterrupted one does
    (Lightning does not restore the random generators, and the DataLoader draws a seed for
    each epoch's iterator)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(1000 + trainer.global_step)


class KeepStates(pl.Callback):
    """Keep a copy of the model's state after every training batch."""

    def __init__(self, states: list[dict]) -> None:
        self.states = states

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append(copy.deepcopy(pl_module.state_dict()))


def trainer(**kwargs) -> pl.Trainer:
    return quiet_trainer(**{"max_epochs": 1, "callbacks": [Reseed()], **kwargs})


def fit(model: MultiDomainClassifier, batches: list, ckpt_path=None, **kwargs) -> list[float]:
    """Fit on the batches (one epoch unless told); the per-step losses."""
    losses = record_losses(model)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    run = trainer(**kwargs)
    run.fit(model, train_dataloaders=loader, ckpt_path=ckpt_path)
    return losses


def accuracy(model: MultiDomainClassifier, batches: list) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels, domains in batches:
            logits = model(images, domains)
            correct += int((logits.argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def tiny_fit(method: str, method_kwargs=None, domains: int = 2, epochs: int = 4, **kwargs):
    """(per-step losses, held-out accuracy, the model) of a tiny fit on synthetic batches."""
    model = tiny_model(method, method_kwargs, domains=domains, **kwargs)
    losses = fit(model, synthetic_batches(8, domains=domains), max_epochs=epochs)
    assert model.trainer.global_step == 8 * epochs  # one counted step per batch
    return losses, accuracy(model, synthetic_batches(3, domains=domains, seed=1)), model


def resumed_losses(
    tmp_path: Path, method: str, method_kwargs=None, domains: int = 2, **kwargs
) -> tuple[list[float], list[float]]:
    """(losses of 2 epochs of 2 batches in one go, losses of the same killed after epoch 1 and
    resumed from its checkpoint in a new model)."""
    batches = synthetic_batches(2, domains=domains)
    whole = fit(tiny_model(method, method_kwargs, domains, **kwargs), batches, max_epochs=2)
    first = tiny_model(method, method_kwargs, domains, **kwargs)
    losses = fit(first, batches, max_epochs=1)
    path = tmp_path / "killed.ckpt"
    first.trainer.save_checkpoint(path)
    resumed = tiny_model(method, method_kwargs, domains, **kwargs)
    torch.manual_seed(12345)  # anything the new model's construction drew is overwritten
    losses += fit(resumed, batches, ckpt_path=path, max_epochs=2)
    assert resumed.trainer.global_step == 4
    return whole, losses
