"""What the methods that step their optimizers themselves share (MLDG, Fish, DANN-DG, CDANN,
SagNet): one counted optimizer step per batch, the checks of what they support, and the loss of
the network at other weights (a copy's).

`trainer.global_step` and `trainer.max_steps` count batches for these methods. Under manual
optimisation Lightning's `global_step` is the number of `LightningOptimizer.step()` calls, of
any optimizer (pytorch_lightning 2.6: `_ManualOptimization.optim_step_progress`, advanced by the
hooks `LightningOptimizer.step` runs around the step; `_TrainingEpochLoop.global_step` reads its
`total.completed`), so a method stepping three optimizers per batch (SagNet) would count three
and one stepping only copies (Fish) none. DomainBed's "5001 steps" are 5001 batches
(`update()` calls), and the model's `training_progress()` divides `global_step` by the batches
of the training. So each method takes exactly one counted step per batch, its last
(`optimizer_step(..., counted=True)`), and its other steps through
`trainer.strategy.optimizer_step`: what `LightningOptimizer.step` runs between its counting
hooks (precision handling such as AMP's gradient scaling, the `on_before_optimizer_step`
hooks), so they differ from counted steps only in not being counted. The logger's step
(`_batches_that_stepped`) counts batches in any case.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

#: The model's modules that make up "the network" the meta-learning methods copy: the backbone
#: and the heads (DomainBed's featurizer and classifier).
NETWORK_MODULES = ("backbone", "head")


def optimizer_step(model: Any, optimizer: Any, *, counted: bool) -> None:
    """Step one of `model.optimizers()` (a `LightningOptimizer`).

    Args:
        model: The `MultiDomainClassifier` (it has a trainer).
        optimizer: The `LightningOptimizer` to step.
        counted: True for the batch's one counted step (it advances `trainer.global_step`);
            False for its other steps (same precision handling and hooks, not counted).
    """
    if counted:
        optimizer.step()
    else:
        model.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)


def _no_closure() -> None:
    return None


def check_manual_support(model: Any, method: str, *, hand_made_gradients: bool = False) -> None:
    """Refuse what these methods do not support, naming the setting.

    Args:
        model: The model, attached to its trainer.
        method: The method's registered name, for the message.
        hand_made_gradients: The method writes gradients it computed with `torch.autograd.grad`
            into `.grad` (MLDG): they are not scaled like `manual_backward`'s, so float16 AMP
            (a gradient scaler) would unscale gradients that were never scaled.

    Raises:
        ValueError: With several processes (DDP): the steps on copies and the several
            backward passes per batch are not synchronised across processes (DomainBed trains
            on one GPU); or with a gradient scaler and `hand_made_gradients`.
    """
    trainer = model.trainer
    if trainer.world_size > 1:
        raise ValueError(
            f"method {method} takes several optimizer steps (or steps on copies of the network) "
            "per batch, which are not synchronised across processes; train it in one process "
            f"(trainer.devices: 1, trainer.num_nodes: 1; got world size {trainer.world_size})"
        )
    if hand_made_gradients and getattr(trainer.precision_plugin, "scaler", None) is not None:
        raise ValueError(
            f"method {method} computes its gradients with torch.autograd.grad, which float16 AMP's "
            "gradient scaler does not scale; set trainer.precision to bf16-mixed or 32-true "
            f"(got {trainer.precision})"
        )


def network_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The network's parameters and persistent buffers (the backbone's and the heads'), by
    their names in the model's state dict: the tensors themselves, not copies."""
    return {
        f"{prefix}.{name}": tensor
        for prefix in NETWORK_MODULES
        for name, tensor in getattr(model, prefix).state_dict(keep_vars=True).items()
    }


def clone_network(model: nn.Module) -> dict[str, Tensor]:
    """A copy of `network_tensors`: the parameters as new leaves that require gradients where
    the originals do (a deep copy of the network, as tensors)."""
    return {
        name: tensor.detach().clone().requires_grad_(tensor.requires_grad)
        for name, tensor in network_tensors(model).items()
    }


class _ClassificationLoss(nn.Module):
    """`model.classification_loss(model.features(images), ...)` as a module's forward, so that
    `torch.func.functional_call` can run it with other tensors in place of the model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, labels: Tensor, domains: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.classification_loss(self.model.features(images), labels, domains)


def classification_loss_with(
    model: nn.Module, tensors: dict[str, Tensor], images: Tensor, labels: Tensor, domains: Tensor
) -> tuple[Tensor, Tensor]:
    """(cross-entropy, logits) of the model's network with `tensors` (names as in
    `network_tensors`) in place of its own: a copy's forward without copying the modules.

    Everything else is the model's own (the method's hooks, label smoothing, the shared head's
    term in training). BatchNorm's running statistics are updated in `tensors`, not in the
    model (torch.func.functional_call writes in-place updates to the tensors it was given).
    """
    return torch.func.functional_call(
        _ClassificationLoss(model),
        {f"model.{name}": tensor for name, tensor in tensors.items()},
        (images, labels, domains),
    )
