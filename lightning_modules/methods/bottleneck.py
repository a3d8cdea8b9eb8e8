"""What the Transfer-Learning-Library's (TLlib's) adaptation methods share (CDAN, MCC): a
bottleneck between the backbone and the heads, one pass over source and target together, the
target's logits, and the entropy their weights use.

TLlib's `ImageClassifier` for CDAN and MCC puts a bottleneck, Linear(feature_dim, d), BatchNorm1d
(d), ReLU, between the pooled backbone features and the linear classifier, and the methods read
its output as "the features" (CDAN's f). Here the bottleneck is the method's own layer, read
through the `head_inputs` hook, so every head reads it, in training, validation, test and
prediction alike; `attach` rebuilds `model.head` (every domain head and the shared head, when
there is one) for d inputs. Its parameters are the method's parameter group `bottleneck`, at the
heads' learning rate (TLlib: backbone 0.1x, bottleneck and head 1x).

In training the whole step is one backbone pass over concat(source, target) and one bottleneck
pass over both, as in TLlib, so the BatchNorm layers of the backbone and of the bottleneck see
source and target alike (their running statistics too). The heads then read those bottleneck
outputs directly (`features_given`), not a second bottleneck pass.

The target images have no labels and no head of their own: their logits are the model's for a
domain without a head, the prediction that evaluates the target (the shared head, or the mean of
the domain heads' probabilities; `MultiDomainHead`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_modules.methods.base import MethodHost, TrainingBatch, TrainingMethod
from lightning_modules.models.heads import MultiDomainHead

#: TLlib's `entropy` adds this inside the log: H(p) = -sum_c p_c log(p_c + 1e-5).
ENTROPY_EPSILON = 1e-5


def entropy(probabilities: Tensor) -> Tensor:
    """Each row's entropy (B,), with TLlib's epsilon inside the log."""
    return -(probabilities * torch.log(probabilities + ENTROPY_EPSILON)).sum(dim=1)


def head_less_domain(model: MethodHost) -> int:
    """The index of a domain without a head of its own (the target's logits are those of any
    such domain: `MultiDomainHead` routes them all to the same unseen-domain prediction)."""
    for index, name in enumerate(model.domain_names):
        if name not in model.trained_domains:
            return index
    raise ValueError(
        "every domain of the data is trained, so the unlabelled targets have no domain to be "
        "classified as; list the targets in data.init_args.target_domains (not among the "
        "trained domains)"
    )


@dataclass
class SourceTarget:
    """One step's pass over source and target.

    Attributes:
        loss: The source cross-entropy (the model's: each sample's head, plus the shared head).
        source_logits: Logits of the labelled source samples.
        target_logits: Logits of the unlabelled target samples.
        features: What the heads read, source rows then target rows (bottleneck outputs).
    """

    loss: Tensor
    source_logits: Tensor
    target_logits: Tensor
    features: Tensor


class BottleneckMethod(TrainingMethod):
    """Base of the adaptation methods with TLlib's bottleneck; subclasses compute the transfer
    term from `source_and_target`."""

    needs_target_domains = True

    def __init__(self, bottleneck_dim: int | None = 256) -> None:
        """Settings.

        Args:
            bottleneck_dim: width d of the bottleneck Linear-BatchNorm-ReLU between the backbone
                and the heads; null for none (the heads read the pooled backbone features).
        """
        super().__init__()
        if bottleneck_dim is not None and bottleneck_dim < 1:
            raise ValueError(
                f"model.init_args.method_kwargs.bottleneck_dim={bottleneck_dim} must be a "
                "positive width or null (no bottleneck)"
            )
        self.bottleneck_dim = bottleneck_dim
        self.bottleneck: nn.Module | None = None
        self._features_given = False

    @property
    def method_name(self) -> str:
        return type(self).__name__.lower()

    def feature_dim(self, model: MethodHost) -> int:
        """Width of what the heads read: the bottleneck's, or the backbone's without one."""
        return self.bottleneck_dim or model.backbone.feature_dim

    def attach(self, model: MethodHost) -> None:
        if self.bottleneck_dim is None:
            return
        width = self.bottleneck_dim
        self.bottleneck = nn.Sequential(
            nn.Linear(model.backbone.feature_dim, width), nn.BatchNorm1d(width), nn.ReLU()
        )
        head = model.head
        model.head = MultiDomainHead(
            width,
            next(iter(head.heads.values())).out_features,
            head.domain_names,
            trained_domains=head.trained_domains,
            shared_head=head.shared is not None,
        )

    def head_inputs(self, model: MethodHost, features: Tensor, domains: Tensor) -> Tensor:
        if self.bottleneck is None or self._features_given:
            return features
        return self.bottleneck(features)

    @contextmanager
    def features_given(self) -> Iterator[None]:
        """Within it the heads read the features they are given: bottleneck outputs computed
        once for source and target together."""
        self._features_given = True
        try:
            yield
        finally:
            self._features_given = False

    def source_and_target(self, model: MethodHost, batch: TrainingBatch) -> SourceTarget:
        """One backbone (and bottleneck) pass over concat(source, target), the source's
        cross-entropy and both sides' logits."""
        if batch.target_images is None:
            raise ValueError(
                f"method {self.method_name} needs unlabelled target images in every training "
                "batch; set data.init_args.target_domains (e.g. "
                "configs/officehome/art_to_clipart.yaml)"
            )
        count = len(batch.images)
        features = model.features(torch.cat([batch.images, batch.target_images]))
        if self.bottleneck is not None:
            features = self.bottleneck(features)
        source, target = features[:count], features[count:]
        target_domains = torch.full(
            (len(target),), head_less_domain(model), dtype=torch.long, device=target.device
        )
        with self.features_given():
            loss, source_logits = model.classification_loss(source, batch.labels, batch.domains)
            target_logits = model.classify(target, target_domains)
        return SourceTarget(loss, source_logits, target_logits, features)

    def parameter_groups(self) -> list[dict]:
        if self.bottleneck is None:
            return []
        params = list(self.bottleneck.parameters())
        return [{"name": "bottleneck", "params": params, "lr_multiplier": 1.0}]
