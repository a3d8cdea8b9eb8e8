"""The contract every training method follows: what it gets from the model, what it returns.

A training method decides how a labelled (and, for adaptation, an unlabelled) batch becomes a
loss and an optimizer step; the model (`MultiDomainClassifier`) owns the backbone, the heads, the
metrics and the loops. Methods talk to the model only through `MethodHost`, so the model needs
no method-specific code, and a new method is one file in this package plus one line in
`TRAINING_METHODS` (`lightning_modules/methods/__init__.py`).

The hooks, each with a default that is plain ERM:
- `training_loss(model, batch)`: the loss of one batch (automatic optimisation).
- `attach(model)`: build the method's own layers once the model's sizes are known.
- `parameter_groups()`: the method's own parameters, as optimizer groups.
- `stage_layers()`: parameter-free layers placed after chosen backbone stages (MixStyle and its
  family); they see the training flag, so they act only in training.
- `manual_optimization = True` with `manual_training_step(model, batch)`: methods that take
  several optimizer steps per batch (meta-learning, alternating adversarial steps).
- `configure_optimizers(model, optimizer_factory, groups)`: more than one optimizer.
- `transform_images(model, images)` and `head_inputs(model, features, domains)`: change what
  the backbone or the heads read, in training and evaluation alike (ARM's context channel,
  MTL's domain embedding).
A method is an `nn.Module` held by the model as `model.method`, so its parameters and buffers
(a discriminator, a running weight per domain) are saved in checkpoints and restored on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning_modules.models.backbones import Backbone
    from lightning_modules.models.heads import MultiDomainHead


@dataclass
class TrainingBatch:
    """One training step's data.

    Attributes:
        images: Normalised labelled images (B, 3, H, W).
        labels: Their classes (B,).
        domains: Their domain indices into the model's `domain_names` (B,).
        target_images: Unlabelled images of the adaptation targets (`data.target_domains`), or
            None when the data has no targets.
    """

    images: Tensor
    labels: Tensor
    domains: Tensor
    target_images: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def domain_groups(self) -> list[tuple[int, Tensor]]:
        """(domain index, positions of its samples in the batch) per domain present, in domain
        order: the per-domain minibatches DomainBed's algorithms compute their terms on."""
        present = torch.unique(self.domains).tolist()
        return [(index, torch.nonzero(self.domains == index).squeeze(1)) for index in present]

    def per_domain(self) -> list[tuple[Tensor, Tensor]]:
        """(images, labels) of each domain present, in domain order."""
        return [(self.images[rows], self.labels[rows]) for _, rows in self.domain_groups()]


@dataclass
class MethodOutput:
    """What a training step produced.

    Attributes:
        loss: The loss to minimise (automatic optimisation) or the one that was minimised
            (manual), logged as `train/loss`.
        logits: Class logits of the labelled samples, for `train/acc` (None: not reported).
        labels: Their labels.
        metrics: Extra values to log as `train/<name>` (a domain loss, a penalty weight).
    """

    loss: Tensor
    logits: Tensor | None
    labels: Tensor
    metrics: dict[str, Tensor | float] = field(default_factory=dict)


class MethodHost(Protocol):
    """What a method may use of the model (`MultiDomainClassifier` provides all of it)."""

    backbone: Backbone
    head: MultiDomainHead
    domain_names: list[str]
    trained_domains: list[str]
    num_classes: int
    training: bool
    global_step: int

    def features(self, images: Tensor) -> Tensor:
        """Pooled backbone features (B, feature_dim) of normalised images (after the method's
        `transform_images`)."""

    def classify(self, features: Tensor, domains: Tensor) -> Tensor:
        """Logits (B, classes) of features through each sample's head (after the method's
        `head_inputs`)."""

    def classification_loss(
        self, features: Tensor, labels: Tensor, domains: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(cross-entropy, logits) of features through each sample's head (plus the shared
        head's cross-entropy in training when the model has one)."""

    def training_progress(self) -> float:
        """Fraction of the training's optimizer steps done, in [0, 1]."""

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The configured optimizer(s) (manual optimisation)."""

    def lr_schedulers(self) -> Any:
        """The configured scheduler(s) (manual optimisation)."""

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """`loss.backward()` through the strategy (precision, DDP) (manual optimisation)."""


class TrainingMethod(nn.Module):
    """Base class of the training methods; as it stands, empirical risk minimisation (ERM).

    Subclasses take their options as keyword arguments (`model.init_args.method_kwargs`, checked
    against the constructor's signature) and override only the hooks they need.

    Attributes:
        needs_target_domains: Class-level. True for unsupervised adaptation: training needs
            the DataModule's unlabelled `target_domains` (refused before training without).
        manual_optimization: Class-level. True if the method steps the optimizers itself
            (`manual_training_step`); Lightning's automatic optimisation is then off.
        implementation_options: Class-level. Options that change how, not what, it computes:
            left out of the run's name.
        search_space: Class-level. The random-search distribution of each option, in the
            sweep files' vocabulary (`{log_uniform: [low, high]}`, `{uniform: [low, high]}`,
            `{int_log_uniform: [low, high]}`, `{int_uniform: [low, high]}`,
            `{choice: [...]}`): DomainBed's, or the method's official repository's where
            DomainBed lacks the method. The defaults are the constructor's.
    """

    needs_target_domains: ClassVar[bool] = False
    manual_optimization: ClassVar[bool] = False
    implementation_options: ClassVar[frozenset[str]] = frozenset()
    search_space: ClassVar[dict[str, dict[str, list]]] = {}

    def attach(self, model: MethodHost) -> None:
        """Build what depends on the model (feature size, classes, domains); called once by the
        model's constructor, after the backbone and heads exist."""

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        """The loss of one batch (automatic optimisation). ERM: cross-entropy of every labelled
        sample through its domain's head, on one pass over the whole batch."""
        features = model.features(batch.images)
        loss, logits = model.classification_loss(features, batch.labels, batch.domains)
        return MethodOutput(loss, logits, batch.labels)

    def manual_training_step(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        """One whole step with `manual_optimization`: losses, `model.manual_backward`, the
        optimizer steps (`model.optimizers()`)."""
        raise NotImplementedError(
            f"{type(self).__name__} sets manual_optimization but has no manual_training_step"
        )

    def parameter_groups(self) -> list[dict]:
        """The method's own trainable parameters as optimizer groups (`name`, `params`,
        `lr_multiplier`, optionally `weight_decay`); none by default."""
        return []

    def configure_optimizers(
        self, model: MethodHost, optimizer_factory: Callable, groups: list[dict]
    ) -> list[torch.optim.Optimizer]:
        """The optimizers: by default one, over the model's and the method's groups."""
        return [optimizer_factory(groups)]

    def transform_images(self, model: MethodHost, images: Tensor) -> Tensor:
        """What the backbone reads, from the normalised images, in training and evaluation
        (default: the images)."""
        return images

    def head_inputs(self, model: MethodHost, features: Tensor, domains: Tensor) -> Tensor:
        """What the heads read, from the pooled features, in training and evaluation (default:
        the features; a method that widens them rebuilds `model.head` in `attach`)."""
        return features

    def stage_layers(self) -> dict[int, nn.Module]:
        """Layers to place after backbone stages, by stage number (0: after the stem; 1..N:
        after stage N, e.g. `layer1` of a ResNet, `denseblock1` of a DenseNet)."""
        return {}

    def extra_repr(self) -> str:
        return ""
