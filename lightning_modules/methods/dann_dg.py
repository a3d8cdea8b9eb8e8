"""DANN for domain generalisation (Ganin et al., JMLR 2016, arXiv:1505.07818), as DomainBed
implements it: a discriminator tells the *training domains* apart, and the network learns
features it cannot tell apart. CDANN (cdann.py) conditions it on the class.

Not the `dann` method, which adapts from labelled sources to unlabelled `target_domains` with a
gradient reversal layer: here there are no target images (DomainBed's unlabelled minibatches
are not read), no reversal layer, and two optimizers taking alternating steps. Each batch:

    count += 1                                             (a buffer: checkpointed)
    z = f(x)                                               one pass over the whole batch
    d_in = z (+ E[y] for CDANN)
    L_d = CE(disc(d_in), training-domain index)            (class-balanced for CDANN)
          + grad_penalty * mean_i || d/d d_in_i sum_k CE_k ||^2
    if count mod (1 + d_steps_per_g_step) < d_steps_per_g_step:
        discriminator step on L_d                          (discriminator, CDANN's E)
    else:
        network step on CE(h(z), y) - dann_lambda * L_d    (backbone and heads; the
                                                            discriminator does not step)

With d_steps_per_g_step = 1 the steps alternate, starting with the network's. The penalty is
part of L_d in both steps (the network also maximises it), as in DomainBed. The discriminator
is DomainBed's MLP: `mlp_depth` linear layers of width `mlp_width` (input, mlp_depth - 2
hidden, output with one logit per training domain), each but the last followed by dropout
(`mlp_dropout`) then ReLU. Training domain k is `model.trained_domains[k]`; the batch may hold
its domains in any order.

Optimizers: both Adam-like with betas (beta1, 0.9), DomainBed's. The discriminator's is Adam at
`lr_d` / `weight_decay_d` (L2, as torch's Adam). The network's is the model's optimizer
(`model.init_args.optimizer`): DomainBed's `lr_g` and `weight_decay_g` *are* its `lr` and
`weight_decay` (DomainBed draws them from the same distributions as the shared `lr` and
`weight_decay`, 5e-5 / 10^U(-5,-3.5) and 0 / 10^U(-6,-2), so a sweep over the model's optimizer
is a sweep over them), with the backbone's learning-rate multiplier; its betas are set to
(beta1, 0.9) when it has betas (Adam, AdamW; DomainBed's config is Adam), and otherwise (SGD)
beta1 concerns the discriminator only (a warning says so). The model's learning-rate scheduler,
if any, is applied to both optimizers (DomainBed has none).

Defaults / random search (DomainBed's): dann_lambda (DomainBed's `lambda`, a Python keyword)
1 / 10^U(-2,2); d_steps_per_g_step 1 / int(2^U(0,3)); grad_penalty 0 / 10^U(-2,1); beta1 0.5 /
choice {0, 0.5}; mlp_width 256 / int(2^U(6,10)); mlp_depth 3 / choice {3, 4, 5}; mlp_dropout 0 /
choice {0, 0.1, 0.5}; lr_d 5e-5 / 10^U(-5,-3.5); weight_decay_d 0 / 10^U(-6,-2).

Differences from DomainBed that leave the numbers unchanged: the discriminator step's features
are computed without a graph (DomainBed back-propagates the discriminator's loss into the
featurizer and then zeroes those gradients). The classifier h is the model's heads
(`model.classification_loss`: per-domain heads by default, plus the shared head's term when the
model has one; DomainBed has one classifier). [DB-2020] used an older softmax-based penalty;
this is HEAD's. Logged: `train/loss` is the loss of the step taken (L_d or the network's), plus
`train/disc_loss`, `train/grad_penalty`, `train/generator_step` (1 for the network's step) and,
on network steps, `train/class_loss`. One counted optimizer step per batch, so
`trainer.max_steps` counts batches. One process only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.manual_steps import check_manual_support, optimizer_step

#: Names of the parameter groups the discriminator's optimizer takes.
DISCRIMINATOR_GROUPS = ("discriminator", "class_embeddings")


class DomainMLP(nn.Module):
    """DomainBed's `networks.MLP`: input, `depth - 2` hidden and output linear layers; dropout
    then ReLU after each but the last."""

    def __init__(self, in_features: int, out_features: int, width: int, depth: int, dropout: float):
        """Build the layers.

        Args:
            in_features: size of the discriminator's input (the pooled features).
            out_features: number of training domains.
            width: width of the input and hidden layers.
            depth: number of linear layers (at least 2).
            dropout: dropout probability after each linear layer but the last.
        """
        super().__init__()
        self.input = nn.Linear(in_features, width)
        self.dropout = nn.Dropout(dropout)
        self.hiddens = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 2))
        self.output = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.dropout(self.input(x)))
        for hidden in self.hiddens:
            x = F.relu(self.dropout(hidden(x)))
        return self.output(x)


class DANNDG(TrainingMethod):
    """DomainBed's DANN: alternating discriminator and network steps over the training domains
    (see the module docstring)."""

    manual_optimization = True
    #: The registered name, for messages.
    method_name: ClassVar[str] = "dann_dg"
    #: CDANN: the class embedding added to the discriminator's input, and the class-balanced
    #: discriminator loss.
    conditional: ClassVar[bool] = False
    search_space: ClassVar[dict[str, dict[str, list]]] = {
        "dann_lambda": {"log_uniform": [1e-2, 1e2]},
        "d_steps_per_g_step": {"int_log_uniform": [1, 8]},
        "grad_penalty": {"log_uniform": [1e-2, 1e1]},
        "beta1": {"choice": [0.0, 0.5]},
        "mlp_width": {"int_log_uniform": [64, 1024]},
        "mlp_depth": {"choice": [3, 4, 5]},
        "mlp_dropout": {"choice": [0.0, 0.1, 0.5]},
        "lr_d": {"log_uniform": [1e-5, 10**-3.5]},
        "weight_decay_d": {"log_uniform": [1e-6, 1e-2]},
    }

    def __init__(
        self,
        dann_lambda: float = 1.0,
        d_steps_per_g_step: int = 1,
        grad_penalty: float = 0.0,
        beta1: float = 0.5,
        mlp_width: int = 256,
        mlp_depth: int = 3,
        mlp_dropout: float = 0.0,
        lr_d: float = 5e-5,
        weight_decay_d: float = 0.0,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            dann_lambda: weight of the discriminator's loss subtracted from the network's
                (DomainBed's `lambda`: default 1, random search 10^U(-2,2)).
            d_steps_per_g_step: discriminator steps per network step (default 1: alternate;
                random search int(2^U(0,3))).
            grad_penalty: weight of the gradient penalty on the discriminator's input (default
                0, random search 10^U(-2,1)).
            beta1: first Adam beta of both optimizers, the second being 0.9 (default 0.5,
                random search choice {0, 0.5}).
            mlp_width: width of the discriminator's layers (default 256, random search
                int(2^U(6,10))).
            mlp_depth: linear layers in the discriminator (default 3, choice {3, 4, 5}).
            mlp_dropout: dropout in the discriminator (default 0, choice {0, 0.1, 0.5}).
            lr_d: the discriminator's Adam learning rate (default 5e-5, random search
                10^U(-5,-3.5)); the network's is the model optimizer's `lr` (DomainBed's lr_g).
            weight_decay_d: the discriminator's Adam weight decay (default 0, random search
                10^U(-6,-2)); the network's is the model optimizer's (weight_decay_g).
        """
        super().__init__()
        name = "model.init_args.method_kwargs"
        if d_steps_per_g_step < 1:
            raise ValueError(f"{name}.d_steps_per_g_step={d_steps_per_g_step} must be >= 1")
        if mlp_depth < 2 or mlp_width < 1:
            raise ValueError(f"{name}.mlp_depth={mlp_depth} must be >= 2, mlp_width >= 1")
        if not 0 <= mlp_dropout < 1 or not 0 <= beta1 < 1:
            raise ValueError(f"{name}.mlp_dropout and beta1 must be in [0, 1)")
        if lr_d <= 0 or weight_decay_d < 0 or grad_penalty < 0 or dann_lambda < 0:
            raise ValueError(
                f"{name}: lr_d must be > 0; weight_decay_d, grad_penalty, dann_lambda >= 0"
            )
        self.dann_lambda = dann_lambda
        self.d_steps_per_g_step = d_steps_per_g_step
        self.grad_penalty = grad_penalty
        self.beta1 = beta1
        self.mlp_width, self.mlp_depth, self.mlp_dropout = mlp_width, mlp_depth, mlp_dropout
        self.lr_d, self.weight_decay_d = lr_d, weight_decay_d
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))
        self.discriminator: DomainMLP | None = None
        self.class_embeddings: nn.Embedding | None = None

    def attach(self, model: MethodHost) -> None:
        feature_dim = model.backbone.feature_dim
        self.discriminator = DomainMLP(
            feature_dim,
            len(model.trained_domains),
            self.mlp_width,
            self.mlp_depth,
            self.mlp_dropout,
        )
        if self.conditional:
            self.class_embeddings = nn.Embedding(model.num_classes, feature_dim)
        # domain index (into domain_names) -> training-domain index, -1 for the others
        positions = [
            model.trained_domains.index(name) if name in model.trained_domains else -1
            for name in model.domain_names
        ]
        self.register_buffer("domain_positions", torch.tensor(positions), persistent=False)

    def parameter_groups(self) -> list[dict]:
        groups = [{"name": "discriminator", "params": list(self.discriminator.parameters())}]
        if self.class_embeddings is not None:
            groups.append(
                {"name": "class_embeddings", "params": list(self.class_embeddings.parameters())}
            )
        return [{**group, "lr_multiplier": 1.0} for group in groups]

    def configure_optimizers(
        self, model: MethodHost, optimizer_factory: Callable, groups: list[dict]
    ) -> list[torch.optim.Optimizer]:
        """[network's (the model's optimizer), discriminator's (Adam)]."""
        betas = (self.beta1, 0.9)
        network = optimizer_factory(
            [g for g in groups if g.get("name") not in DISCRIMINATOR_GROUPS]
        )
        if all("betas" in group for group in network.param_groups):
            for group in network.param_groups:
                group["betas"] = betas
        else:
            rank_zero_warn(
                f"method {self.method_name}: the model's optimizer "
                f"({type(network).__name__}) has no betas, so beta1={self.beta1} applies to the "
                "discriminator only; DomainBed uses Adam for both (set model.init_args.optimizer "
                "to torch.optim.Adam)"
            )
        discriminator = torch.optim.Adam(
            [g for g in groups if g.get("name") in DISCRIMINATOR_GROUPS],
            lr=self.lr_d,
            weight_decay=self.weight_decay_d,
            betas=betas,
        )
        return [network, discriminator]

    def domain_labels(self, domains: Tensor) -> Tensor:
        """Each sample's training-domain index (the discriminator's target)."""
        labels = self.domain_positions[domains]
        if bool((labels < 0).any()):
            raise ValueError(
                f"method {self.method_name}: a training batch holds a domain without a head (not "
                "in model.trained_domains); its discriminator tells the trained domains apart"
            )
        return labels

    def discriminator_input(self, features: Tensor, labels: Tensor) -> Tensor:
        """z, or z + E[y] for CDANN."""
        if self.conditional:
            return features + self.class_embeddings(labels)
        return features

    def discriminator_loss(self, logits: Tensor, domain_labels: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy (CDANN: class-balanced, see cdann.py)."""
        return F.cross_entropy(logits, domain_labels)

    def manual_training_step(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        check_manual_support(model, self.method_name)
        network, discriminator = model.optimizers()
        self.update_count += 1
        k = self.d_steps_per_g_step
        discriminator_step = int(self.update_count) % (1 + k) < k
        with torch.set_grad_enabled(not discriminator_step):
            features = model.features(batch.images)
        if discriminator_step:  # its gradient stops at the discriminator's input
            features = features.detach().requires_grad_()
        disc_input = self.discriminator_input(features, batch.labels)
        disc_logits = self.discriminator(disc_input)
        domain_labels = self.domain_labels(batch.domains)
        disc_loss = self.discriminator_loss(disc_logits, domain_labels, batch.labels)
        input_grad = torch.autograd.grad(
            F.cross_entropy(disc_logits, domain_labels, reduction="sum"),
            [disc_input],
            create_graph=True,
        )[0]
        penalty = (input_grad**2).sum(dim=1).mean(dim=0)
        disc_loss = disc_loss + self.grad_penalty * penalty
        metrics = {
            "disc_loss": disc_loss.detach(),
            "grad_penalty": penalty.detach(),
            "generator_step": float(not discriminator_step),
        }
        if discriminator_step:
            discriminator.zero_grad()
            model.manual_backward(disc_loss)
            optimizer_step(model, discriminator, counted=True)
            return MethodOutput(disc_loss.detach(), None, batch.labels, metrics)
        class_loss, logits = model.classification_loss(features, batch.labels, batch.domains)
        loss = class_loss - self.dann_lambda * disc_loss
        discriminator.zero_grad()
        network.zero_grad()
        model.manual_backward(loss)
        optimizer_step(model, network, counted=True)
        metrics["class_loss"] = class_loss.detach()
        return MethodOutput(loss.detach(), logits.detach(), batch.labels, metrics)

    def extra_repr(self) -> str:
        return (
            f"dann_lambda={self.dann_lambda}, d_steps_per_g_step={self.d_steps_per_g_step}, "
            f"grad_penalty={self.grad_penalty}, beta1={self.beta1}"
        )
