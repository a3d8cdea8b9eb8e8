"""SD: spectral decoupling (Pezeshki et al., "Gradient Starvation", NeurIPS 2021,
arXiv:2011.09468, eq. 25), as DomainBed implements it.

The cross-entropy plus an L2 penalty on the logits, which keeps the features that are learnt
first from starving the others of gradient:

    loss = CE(h(f(x)), y) + sd_reg * mean_{i,c} h(f(x))_ic^2

One backbone pass over the whole batch (the domains share BatchNorm statistics, as in
DomainBed's SD).

Details of DomainBed (HEAD b93c22a) followed because they change the numbers:
- The penalty is the mean over the batch and the classes of the squared logits, without the
  paper's 1/2 (eq. 25 writes lambda/2 ||y_hat||^2).
- Defaults / random search: `sd_reg` 0.1 / 10^U(-5,-1).

In this project the penalty is on each sample's own head's logits and, with a shared head, the
same penalty on the shared head's logits is added (`classification_loss` adds its cross-entropy
the same way).
"""

from __future__ import annotations

from typing import ClassVar

from lightning_modules.methods.base import MethodHost, MethodOutput, TrainingBatch, TrainingMethod
from lightning_modules.methods.penalties import shared_head_logits


class SpectralDecoupling(TrainingMethod):
    """Spectral decoupling (DomainBed's SD): cross-entropy plus `sd_reg` times the mean squared
    logit. Logs `train/penalty` (the mean squared logit, summed over the trained heads)."""

    search_space: ClassVar[dict[str, dict[str, list]]] = {"sd_reg": {"log_uniform": [1e-5, 1e-1]}}

    def __init__(self, sd_reg: float = 0.1) -> None:
        """Settings (each one also a command-line option).

        Args:
            sd_reg: weight of the mean squared logit (DomainBed default 0.1, random search
                10^U(-5,-1)).
        """
        super().__init__()
        if sd_reg < 0:
            raise ValueError(f"model.init_args.method_kwargs.sd_reg={sd_reg} must be >= 0")
        self.sd_reg = sd_reg

    def training_loss(self, model: MethodHost, batch: TrainingBatch) -> MethodOutput:
        features = model.features(batch.images)
        loss, logits = model.classification_loss(features, batch.labels, batch.domains)
        penalty = logits.pow(2).mean()
        shared = shared_head_logits(self, model, features, batch.domains)
        if shared is not None:
            penalty = penalty + shared.pow(2).mean()
        return MethodOutput(
            loss + self.sd_reg * penalty, logits, batch.labels, metrics={"penalty": penalty}
        )
