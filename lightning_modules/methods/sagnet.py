"""SagNet: style-agnostic networks (Nam, Lee, Park, Yoon, Yoo; CVPR 2021; arXiv:1910.11645), in
DomainBed's variant: the one of DomainBed's published table.

The network f (backbone) feeds two linear heads, the content head c (the model's heads) and a
style head s (this method's, one for all domains). In training, on the pooled feature vector z
(statistics over its feature dimensions: one mean mu and unbiased variance sigma^2 per sample,
eps = 1e-5), with alpha ~ U(0, 1) per sample and pi a random permutation of the batch, drawn
anew for each randomisation:

    style randomisation (content path):  n = (z - mu) / sqrt(sigma^2 + eps);
        mu' = alpha mu + (1 - alpha) mu[pi], sigma^2' likewise;  z' = n sqrt(sigma^2' + eps) + mu'
    content randomisation (style path):  z' = n[pi].detach() * sqrt(sigma^2 + eps) + mu

Three optimizer steps per batch, each after its own forward pass through f:
    1. content: CE(c(style_rand(f(x))), y) steps f and c
    2. style:   CE(s(content_rand(f(x))), y) steps s
    3. adversarial: w_adv * mean_b[-(1/C) sum_k log_softmax(s(content_rand(f(x))))_k] steps
       all of f (no eps in the log, no gradient clipping)
Prediction (evaluation) is c(f(x)): no randomisation.

DomainBed uses three Adam optimizers (f, c, s) at its `lr` and `weight_decay`. Here f and c
share the model's optimizer (`model.init_args.optimizer`, over the backbone and the heads, with
the backbone's learning-rate multiplier): torch optimizers keep their state per parameter and
skip parameters whose gradient is None, and the adversarial step starts from zeroed (None)
gradients that never reach c, so one optimizer over f and c steps exactly as DomainBed's two.
The style head has its own optimizer of the same kind and settings (learning-rate multiplier
1, like the heads). Both follow the model's scheduler. The style step's forward pass runs
without a graph (DomainBed back-propagates the style loss into f and discards those gradients;
BatchNorm's statistics are updated the same). The content loss is the model's
`classification_loss` (per-domain heads, the shared head's term when there is one).

Default and random search (DomainBed's): sag_w_adv 0.1 / 10^U(-2,1).

The official SagNet (hyeonseobnam/sagnet) differs, and is not implemented here: its
randomisations act on the feature maps at the input of stage 3 (per-channel spatial
statistics); its style network is a separate copy of layer3 and layer4 initialised from the
pretrained weights, with its own pooling, dropout 0.5 and a fresh linear layer; the adversarial
loss (with log(softmax + 1e-5)) steps only the BatchNorm affine parameters of bn1, layer1 and
layer2 with gradient-norm clipping at 0.1; it uses ResNet-18, SGD lr 0.004 (momentum 0.9,
weight decay 1e-4) with a cosine schedule over 2000 iterations, 32 images per domain.

Logged: `train/loss` is the content loss; `train/style_loss`, `train/adversarial_loss` (with its
weight). One counted optimizer step per batch (the adversarial one), so `trainer.max_steps`
counts batches. One process only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.manual_steps import check_manual_support, optimizer_step

#: Added to the variance before its square root (DomainBed's `randomize`).
EPS = 1e-5


def randomize(features: Tensor, what: str, alpha: Tensor, partners: Tensor) -> Tensor:
    """DomainBed's `SagNet.randomize` of pooled features (B, F) along the feature dimension.

    Args:
        features: pooled features (B, F).
        what: "style" (mix each sample's statistics with its partner's, weight alpha) or
            "content" (the partner's normalised features, detached, with the sample's own
            statistics).
        alpha: (B, 1) mixing weights (used by "style").
        partners: (B,) partner indices.
    """
    mean = features.mean(-1, keepdim=True)
    var = features.var(-1, keepdim=True)
    normalised = (features - mean) / (var + EPS).sqrt()
    if what == "style":
        mean = alpha * mean + (1 - alpha) * mean[partners]
        var = alpha * var + (1 - alpha) * var[partners]
    elif what == "content":
        normalised = normalised[partners].detach()
    else:
        raise ValueError(f"randomize(what={what!r}); valid choices: style, content")
    return normalised * (var + EPS).sqrt() + mean


class SagNet(TrainingMethod):
    """DomainBed's SagNet: randomised pooled features, content and style heads, three steps per
    batch (see the module docstring)."""

    manual_optimization = True
    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "sag_w_adv": {"log_uniform": [1e-2, 1e1]},
    }

    def __init__(self, sag_w_adv: float = 0.1) -> None:
        """Settings (each one also a command-line option).

        Args:
            sag_w_adv: weight of the adversarial loss that makes the features useless to the
                style head (DomainBed default 0.1, random search 10^U(-2,1)).
        """
        super().__init__()
        if sag_w_adv < 0:
            raise ValueError(f"model.init_args.method_kwargs.sag_w_adv={sag_w_adv} must be >= 0")
        self.sag_w_adv = sag_w_adv
        self.style_head: nn.Linear | None = None

    def attach(self, model: MethodHost) -> None:
        self.style_head = nn.Linear(model.backbone.feature_dim, model.num_classes)

    def parameter_groups(self) -> list[dict]:
        return [
            {
                "name": "style_head",
                "params": list(self.style_head.parameters()),
                "lr_multiplier": 1.0,
            }
        ]

    def configure_optimizers(
        self, model: MethodHost, optimizer_factory: Callable, groups: list[dict]
    ) -> list[torch.optim.Optimizer]:
        """[backbone and heads (f and c), style head (s)], both the model's optimizer."""
        style = [g for g in groups if g.get("name") == "style_head"]
        network = [g for g in groups if g.get("name") != "style_head"]
        return [optimizer_factory(network), optimizer_factory(style)]

    def draw(self, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(alpha (B, 1) ~ U(0, 1), a random permutation (B,)) for one randomisation, drawn
        from torch's CPU generator like DomainBed's."""
        alpha = torch.rand(batch_size, 1).to(device)
        return alpha, torch.randperm(batch_size).to(device)

    def randomize(self, features: Tensor, what: str) -> Tensor:
        alpha, partners = self.draw(len(features), features.device)
        return randomize(features.float(), what, alpha, partners)

    def adversarial_loss(self, style_logits: Tensor) -> Tensor:
        """w_adv * mean over the batch of -(1/C) sum_k log_softmax_k: the cross-entropy to the
        uniform prediction, minimised when the style head cannot tell the classes apart."""
        return self.sag_w_adv * -F.log_softmax(style_logits, dim=1).mean(1).mean()

    def manual_training_step(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        check_manual_support(model, "sagnet")
        network, style = model.optimizers()
        images, labels = batch.images, batch.labels
        # 1. content: f and c on style-randomised features
        network.zero_grad()
        content = self.randomize(model.features(images), "style")
        content_loss, logits = model.classification_loss(content, labels, batch.domains)
        model.manual_backward(content_loss)
        optimizer_step(model, network, counted=False)
        # 2. style: s on content-randomised features
        style.zero_grad()
        with torch.no_grad():
            features = model.features(images)
        style_loss = F.cross_entropy(self.style_head(self.randomize(features, "content")), labels)
        model.manual_backward(style_loss)
        optimizer_step(model, style, counted=False)
        # 3. adversarial: f against the style head
        network.zero_grad()
        style_logits = self.style_head(self.randomize(model.features(images), "content"))
        adversarial_loss = self.adversarial_loss(style_logits)
        model.manual_backward(adversarial_loss)
        optimizer_step(model, network, counted=True)
        return MethodOutput(
            content_loss.detach(),
            logits.detach(),
            labels,
            metrics={
                "style_loss": style_loss.detach(),
                "adversarial_loss": adversarial_loss.detach(),
            },
        )

    def extra_repr(self) -> str:
        return f"sag_w_adv={self.sag_w_adv}"
