"""What the MixStyle, DSU and EFDMix tests share: recording a layer's random draws, a tiny
model, the placement check, and a tiny fit on synthetic data whose domains differ in style."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_modules.classifier import MultiDomainClassifier
from tests.helpers.trainers import RecordLosses, quiet_trainer


def record_draws(layer: nn.Module) -> list:
    """Make `layer.draw` keep what it returns (the layer's lambda and partners, or noise)."""
    draws: list = []
    original = layer.draw

    def draw(*args):
        values = original(*args)
        draws.append(values)
        return values

    layer.draw = draw
    return draws


def tiny_model(method: str, method_kwargs=None, **kwargs) -> MultiDomainClassifier:
    torch.manual_seed(0)
    settings = dict(
        backbone="resnet20",
        recalibration="none",
        weights=None,
        num_classes=3,
        domain_names=["Art", "Clipart", "Product"],
        trained_domains=["Art", "Clipart"],
        image_size=16,
        method=method,
        method_kwargs=method_kwargs,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    )
    return MultiDomainClassifier(**{**settings, **kwargs})


def check_placement(
    method: str, method_kwargs, backbone: str, image_size: int, expected: tuple[int, ...]
) -> None:
    """The method's layers sit after exactly the `expected` stages and see those stages' maps:
    each layer's input has the shape of its stage's output in the plain backbone."""
    method_kwargs = {**(method_kwargs or {}), "p": 1.0}  # always act, to see the effect
    model = tiny_model(method, method_kwargs, backbone=backbone, image_size=image_size)
    plain = tiny_model("erm", backbone=backbone, image_size=image_size)
    assert sorted(model.method.stage_layers()) == list(expected)
    assert sorted(int(stage) for stage in model.backbone.stage_layers) == list(expected)
    stage_shapes = {}
    for stage, module in enumerate(plain.backbone.stage_outputs()):
        module.register_forward_hook(
            lambda m, a, out, stage=stage: stage_shapes.__setitem__(stage, tuple(out.shape))
        )
    layer_shapes = {}
    for stage, layer in model.method.stage_layers().items():
        layer.register_forward_hook(
            lambda m, a, out, stage=stage: layer_shapes.__setitem__(stage, tuple(a[0].shape))
        )
    images = torch.randn(4, 3, image_size, image_size)
    plain.eval(), model.eval()
    with torch.no_grad():
        plain.features(images), model.features(images)
    assert layer_shapes == {stage: stage_shapes[stage] for stage in expected}
    # a layer passes its maps on: a training forward (p=1) changes the features
    model.train()
    with torch.no_grad():
        trained = model.features(images)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(trained, model.features(images))


def synthetic_batches(steps: int, per_domain: int = 12, seed: int = 0) -> list:
    """Batches of 16 px images: the class is where a bright square sits (content); each domain
    scales and shifts the channels differently (style). Domains interleaved in each batch."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor([[1.0, 0.5, 2.0], [2.0, 1.0, 0.5]]).view(2, 3, 1, 1)
    shifts = torch.tensor([[0.5, -1.0, 0.0], [-0.5, 1.0, 1.0]]).view(2, 3, 1, 1)
    corners = [(0, 0), (0, 8), (8, 4)]
    batches = []
    for _ in range(steps):
        labels = torch.randint(0, 3, (2 * per_domain,), generator=generator)
        domains = torch.arange(2 * per_domain) % 2
        images = 0.5 * torch.randn(2 * per_domain, 3, 16, 16, generator=generator)
        for index, label in enumerate(labels.tolist()):
            row, column = corners[label]
            images[index, :, row : row + 8, column : column + 8] += 2.0
        images = images * scales[domains] + shifts[domains]
        batches.append((images, labels, domains))
    return batches


def tiny_fit(method: str, method_kwargs=None, epochs: int = 4) -> tuple[list[float], float, int]:
    """(per-step training losses, accuracy on held-out batches in evaluation mode, how many
    times the layers acted) of a tiny resnet20 fit on `synthetic_batches`."""
    pl.seed_everything(0, verbose=False)
    model = tiny_model(method, method_kwargs)
    draws = [record_draws(layer) for layer in model.method.stage_layers().values()]
    losses = RecordLosses()
    trainer = quiet_trainer(max_epochs=epochs, callbacks=[losses])
    loader = torch.utils.data.DataLoader(synthetic_batches(8), batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels, domains in synthetic_batches(2, seed=1):
            logits = model.classify(model.features(images), domains)
            correct += int((logits.argmax(1) == labels).sum())
            total += len(labels)
    return losses.losses, correct / total, sum(len(d) for d in draws)
